"""``zipar demo``: NTP against ZipAR on one model, in one process, with passes and seconds.

Until a trained demo model ships with the package, the model is a small LlamaGen with RANDOM weights:
the pass counts and timings are real, the images are noise.
"""
from __future__ import annotations

import time


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="NTP vs ZipAR on a small random-weight LlamaGen: passes and seconds")
    p.add_argument("--preset", default="tiny",
                   help="'tiny' (dim 256, 4 layers) or a LlamaGen size: GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-3B")
    p.add_argument("--grid", type=int, default=16, help="tokens per side (16 = 256px with the VQ-16 tokenizer)")
    p.add_argument("--windows", type=int, nargs="+", default=[8, 4], help="ZipAR windows to run")
    p.add_argument("--adaptive", type=int, nargs="*", default=[4], help="adaptive minimum windows to run")
    p.add_argument("--guidance-scale", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def random_llamagen(preset: str, grid: int, device: str = "cpu", seed: int = 0):
    """A class-conditional LlamaGen with random weights (no download)."""
    import torch

    from .zipar_core.models.llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer

    torch.manual_seed(seed)
    if preset == "tiny":
        cfg = LlamaGenConfig(dim=256, n_layer=4, n_head=8, vocab_size=4096, num_classes=10,
                             block_size=grid * grid, multiple_of=64)
    else:
        cfg = LlamaGenConfig.from_preset(preset, "c2i", grid * grid)
    return LlamaGenAdapter(LlamaGenTransformer(cfg).to(device).eval())


def run(args) -> None:
    import torch

    from .zipar_core import ZipARConfig, generate

    torch.set_grad_enabled(False)
    model = random_llamagen(args.preset, args.grid, args.device, args.seed)
    labels = [i % model.config.num_classes for i in range(args.batch_size)]
    cond = model.prepare(class_labels=labels, rows=args.grid, cols=args.grid, guidance_scale=args.guidance_scale)
    configs = [("ntp", ZipARConfig(mode="ntp"))]
    configs += [(f"fixed s={s}", ZipARConfig(mode="fixed", window=s)) for s in args.windows]
    configs += [(f"adaptive s_min={s}", ZipARConfig(mode="adaptive", window=s)) for s in args.adaptive]
    print(f"LlamaGen {args.preset} with RANDOM weights (timings are real, images would be noise), "
          f"{args.grid}x{args.grid} tokens, batch {args.batch_size}, guidance {args.guidance_scale}, {args.device}")
    generate(model, cond, ZipARConfig(window=args.grid // 2, guidance_scale=args.guidance_scale))  # warm-up
    print(f"{'mode':<20}{'passes':>8}{'seconds':>10}{'pass ratio':>12}{'speed-up':>10}")
    base = None
    for name, cfg in configs:
        cfg.guidance_scale = args.guidance_scale
        t = time.perf_counter()
        result = generate(model, cond, cfg, generator=torch.Generator(args.device).manual_seed(args.seed))
        seconds = time.perf_counter() - t
        base = base or (result.stats.passes, seconds)
        print(f"{name:<20}{result.stats.passes:>8}{seconds:>10.2f}{base[0] / result.stats.passes:>11.2f}x"
              f"{base[1] / seconds:>9.2f}x")
