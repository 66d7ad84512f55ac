"""``zipar bench``: NTP against ZipAR on one LlamaGen model (random weights) in one process: passes,
seconds per image, efficiency (the harness is ``zipar_core.benchmark``)."""
from __future__ import annotations

from ..zipar_core.models.registry import RANDOM_PRESETS
from .common import finite_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="NTP vs ZipAR on one model in one process: passes, seconds, efficiency")
    p.add_argument("--preset", default="GPT-B", choices=RANDOM_PRESETS,
                   help="LlamaGen size, with random weights (speed does not depend on them); tiny: dim 256, 4 layers")
    p.add_argument("--grid", type=positive_int, default=24, help="tokens per side of the square image grid")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images decoded together")
    p.add_argument("--windows", type=positive_int, nargs="*", default=[4, 8, 12, 16],
                   help="fixed ZipAR windows to run (each at most --grid)")
    p.add_argument("--adaptive", type=positive_int, nargs="*", default=[8],
                   help="adaptive minimum windows to run (each at most --grid)")
    p.add_argument("--sjd", type=positive_int, nargs="*", default=[], help="sjd draft lengths to run")
    p.add_argument("--zipar-sjd", type=positive_int, nargs="*", default=[],
                   help="zipar_sjd windows to run (--draft-length drafts; each at most --grid)")
    p.add_argument("--draft-length", type=positive_int, default=8, help="zipar_sjd: drafts per row")
    p.add_argument("--guidance-scale", type=finite_float, default=None, help="default: the model's (LlamaGen c2i: 2.0)")
    p.add_argument("--reps", type=positive_int, default=3,
                   help="timed runs of every configuration, interleaved (after one warm-up run each)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the decoding steps")
    p.add_argument("--cuda-graphs", action="store_true", help="on CUDA: one CUDA graph per number of rows in flight")
    p.add_argument("--json", help="also write the results to this JSON file (its folder is created)")
    p.set_defaults(func=run)


def run(args) -> None:
    import dataclasses

    import torch

    from ..zipar_core.benchmark import default_configs, format_table, run_configs
    from ..zipar_core.config import resolve
    from ..zipar_core.files import writable_file, write_json
    from ..zipar_core.models import registry

    if args.json:
        writable_file(args.json, "--json")  # before minutes of benchmarking, not after
    configs = default_configs(args.grid, args.windows, args.adaptive, args.sjd, args.zipar_sjd, args.draft_length)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = registry.build_tiny("llamagen", preset=args.preset, grid=args.grid, device=device)
    model.gpt.to(getattr(torch, args.dtype))
    guidance = resolve(model.defaults(), args.grid, {"guidance_scale": args.guidance_scale}).guidance_scale
    cond = model.prepare(class_labels=[i % model.config.num_classes for i in range(args.batch_size)],
                         rows=args.grid, cols=args.grid, guidance_scale=guidance)
    configs = {name: dataclasses.replace(cfg, guidance_scale=guidance) for name, cfg in configs.items()}
    results = run_configs(model, cond, configs, args.reps, compile=args.compile, cuda_graphs=args.cuda_graphs)
    title = (f"LlamaGen {args.preset} (random weights), {args.grid}x{args.grid}, batch {args.batch_size}, "
             f"guidance {guidance}, {device} {args.dtype}, {torch.get_num_threads()} threads")
    print(format_table(title, results))
    if args.json:
        write_json(args.json, {"title": title, "results": results})
