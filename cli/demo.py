"""``zipar demo``: NTP against ZipAR on one model, in one process: passes, seconds and the images.

By default the model is the embedded demo model (``zipar.demo_model``: a small class-conditional
LlamaGen trained on a procedural dataset of 10 shape and texture classes, 32x32 px, 16x16 tokens), so the
images are real and the same seeds give comparable images in every mode. ``--random`` (or ``--preset``)
runs a LlamaGen of a chosen size with RANDOM weights instead: real pass counts and timings, noise images.
"""
from __future__ import annotations

import os
import time

from ..zipar_core.models.registry import RANDOM_PRESETS
from .common import finite_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="NTP vs ZipAR on the embedded demo model: passes, seconds, images side by side")
    p.add_argument("--windows", type=positive_int, nargs="+", default=[4, 2],
                   help="ZipAR fixed windows to run (each at most the grid width: 16 for the demo model)")
    p.add_argument("--adaptive", type=positive_int, nargs="*", default=[3],
                   help="adaptive minimum windows to run (each at most the grid width)")
    p.add_argument("--sjd", type=positive_int, nargs="*", default=[8], help="sjd draft lengths to run")
    p.add_argument("--zipar-sjd", type=positive_int, nargs="*", default=[4], help="zipar_sjd windows to run")
    p.add_argument("--draft-length", type=positive_int, default=None,
                   help="zipar_sjd drafts per row (default: the model's)")
    p.add_argument("--guidance-scale", type=finite_float, default=None, help="default: the model's (2.0 for the demo model)")
    p.add_argument("--batch-size", type=positive_int, default=10,
                   help="images per mode (demo model: classes 0..9 in turn, one generate() call)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="zipar_demo.png", help="PNG of the images, one row per mode ('' to skip)")
    p.add_argument("--random", action="store_true", help="a LlamaGen with RANDOM weights instead (--preset sets its size)")
    p.add_argument("--preset", default=None, choices=RANDOM_PRESETS,
                   help="with --random: tiny (dim 256, 4 layers; the default) or a LlamaGen size (implies --random)")
    p.add_argument("--grid", type=positive_int, default=16, help="with --random: tokens per side")
    p.set_defaults(func=run)


def run(args) -> None:
    import torch

    from ..zipar_core import ZipARConfig, generate
    from ..zipar_core.benchmark import default_configs
    from ..zipar_core.config import resolve
    from ..zipar_core.models import registry

    random = args.random or args.preset is not None
    # the windows against the grid before anything loads (a window wider than the grid is refused, not dropped)
    default_configs(args.grid if random else demo_grid(), args.windows, args.adaptive, args.sjd, args.zipar_sjd)
    t = time.perf_counter()
    if random:
        preset = args.preset or "tiny"
        model = registry.build_tiny("llamagen", preset=preset, grid=args.grid, device=args.device, seed=args.seed)
        rows = cols = args.grid
        about = f"LlamaGen {preset} with RANDOM weights (timings are real, images would be noise)"
    else:
        from ..demo_model import CLASSES, load_demo_model

        model = load_demo_model(device=args.device)
        rows, cols = model.default_grid
        about = (f"embedded demo model (LlamaGen architecture, {model.config.n_layer} layers, dim {model.config.dim}, "
                 f"trained on procedural shapes; loaded in {time.perf_counter() - t:.1f} s)")
    chosen = resolve(model.defaults(), cols, {"guidance_scale": args.guidance_scale, "draft_length": args.draft_length})
    guidance = chosen.guidance_scale
    print(f"{about}: {rows}x{cols} tokens = {cols * model.pixels_per_token}x{rows * model.pixels_per_token} px, batch "
          f"{args.batch_size}, guidance {guidance}, {args.device}, torch threads: {torch.get_num_threads()}")
    if not random:
        print("classes: " + ", ".join(CLASSES[i % len(CLASSES)] for i in range(args.batch_size)))
    labels = [i % model.config.num_classes for i in range(args.batch_size)]
    cond = model.prepare(class_labels=labels, rows=rows, cols=cols, guidance_scale=guidance)
    configs = default_configs(cols, args.windows, args.adaptive, args.sjd, args.zipar_sjd, chosen.draft_length,
                              guidance_scale=guidance).items()
    generate(model, cond, ZipARConfig(window=max(1, cols // 2), guidance_scale=guidance))  # warm-up
    print(f"{'mode':<24}{'passes':>8}{'seconds':>10}{'pass ratio':>12}{'speed-up':>10}")
    base, results = None, []
    for name, cfg in configs:
        gens = [torch.Generator(args.device).manual_seed(args.seed + i) for i in range(args.batch_size)]
        t = time.perf_counter()
        result = generate(model, cond, cfg, generator=gens)
        seconds = time.perf_counter() - t
        base = base or (result.stats.passes, seconds)
        results.append((name, result))
        extra = ""
        if result.stats.mean_accepted_length is not None:
            extra = f"   ({result.stats.mean_accepted_length:.2f} tokens per row and pass)"
        elif result.stats.acceptance_rate is not None:
            extra = f"   (drafts accepted {result.stats.acceptance_rate:.0%})"
        print(f"{name:<24}{result.stats.passes:>8}{seconds:>10.2f}{base[0] / result.stats.passes:>11.2f}x"
              f"{base[1] / seconds:>9.2f}x{extra}")
    if args.out and model.vq is not None:
        save_side_by_side(model, results, args.out)
        print(f"saved {args.out}: one row per mode, same seeds in every row")


def demo_grid() -> int:
    """Tokens per side of the embedded demo model, from its GPT file's metadata (no weights loaded)."""
    from ..zipar_core.model_files import safetensors_metadata
    from ..zipar_core.models.registry import DEMO_FILES, DEMO_FOLDER, builtin_path

    meta = safetensors_metadata(os.path.join(builtin_path("demo") or DEMO_FOLDER, DEMO_FILES[0]))
    return int(meta["image_size"]) // int(meta["pixels_per_token"])


def save_side_by_side(model, results, path: str, scale: int = 4) -> None:
    """One row of decoded images per mode, the mode's name and pass count on the left."""
    import numpy as np
    from PIL import Image, ImageDraw

    rows = []
    for _, result in results:
        pixels = model.decode(result.codes).float().add(1).mul(127.5).round().clamp(0, 255).byte()
        rows.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
    n, h, w, _ = rows[0].shape
    h, w, pad, label_w = h * scale, w * scale, 4, 120
    canvas = Image.new("RGB", (label_w + n * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, ((name, result), imgs) in enumerate(zip(results, rows)):
        y = pad + r * (h + pad)
        draw.text((8, y + h // 2 - 12), f"{name}\n{result.stats.passes} passes", fill="black")
        for i in range(n):
            tile = np.asarray(imgs[i]).repeat(scale, 0).repeat(scale, 1)
            canvas.paste(Image.fromarray(tile), (label_w + pad + i * (w + pad), y))
    canvas.save(path)
