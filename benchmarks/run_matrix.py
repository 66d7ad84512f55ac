"""Speed matrix: NTP against ZipAR, interleaved in one process, for LlamaGen sizes and the transformers
families (random weights: speed does not depend on them).

    python benchmarks/run_matrix.py --suite cpu      # what README's CPU table was measured with
    python benchmarks/run_matrix.py --suite full     # the whole matrix (meant for a GPU)

Prints one Markdown table per case and writes all results to JSON (--json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform

import torch
from zipar.zipar_core.benchmark import default_configs, format_summary, format_table, run_configs
from zipar.zipar_core.models import registry

SMALL_TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=8)
# Each family's random model at a benchmark size (registry.build_tiny options) and the image size it decodes.
SIZES = {
    "janus": lambda grid: (dict(text_size=dict(SMALL_TEXT, max_position_embeddings=4096),
                                vision_size={"image_size": grid * 16},
                                vq_size={"projection_dim": 512, "image_token_embed_dim": 512}), {}),
    "emu3": lambda grid: (dict(codebook=1024, max_positions=4096, text_size=SMALL_TEXT),
                          {"height": grid * 8, "width": grid * 8}),
    "lumina": lambda grid: (dict(codebook=1024, max_positions=4096, text_size=SMALL_TEXT),
                            {"height": grid * 16, "width": grid * 16}),
}


def llamagen_case(preset, grid, batch, device, dtype):
    model = registry.build_tiny("llamagen", preset=preset, grid=grid, device=device)
    model.gpt.to(dtype)
    return f"LlamaGen {preset}, {grid}x{grid}, batch {batch}", model, {"class_labels": [i % 1000 for i in range(batch)],
                                                                         "rows": grid, "cols": grid}


def transformers_case(family, grid, batch, device, dtype):
    options, size = SIZES[family](grid)
    model = registry.build_tiny(family, device=device, dtype=dtype, **options)
    return (f"{family} (hidden 512, 8 layers), {grid}x{grid}, batch {batch}", model,
            {"prompt": ["a red cat on the mat"] * batch, **size})


SUITES = {
    # what README's CPU matrix was measured with (2 cores: GPT-B at 24x24 is README's `zipar bench` table)
    "cpu": [("transformers", f, 16, 1) for f in ("janus", "emu3", "lumina")]
    + [("llamagen", "GPT-B", 16, 1), ("llamagen", "GPT-B", 16, 8), ("llamagen", "GPT-L", 16, 1),
       ("llamagen", "GPT-B", 32, 1)],
    # the 24x24 cases the 2-core CPU can afford in half an hour (window 8 and adaptive only)
    "cpu-24": [("llamagen", "GPT-L", 24, 1), ("llamagen", "GPT-B", 24, 8)],
    "full": [("llamagen", p, g, b) for p in ("GPT-B", "GPT-L") for g in (16, 24, 32) for b in (1, 8)]
    + [("transformers", f, 24, b) for f in ("janus", "emu3", "lumina") for b in (1, 8)],
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), default="cpu")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--windows", type=int, nargs="*", help="fixed windows (default: 4 8 12 16; 4 8 for transformers)")
    p.add_argument("--adaptive", type=int, nargs="*", help="adaptive s_min (default: 8; 4 for transformers)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the decoding steps")
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs per number of rows in flight")
    p.add_argument("--json", default="benchmark_results.json")
    p.add_argument("--summarize", metavar="JSON", help="print the tables of an earlier run's JSON and exit")
    args = p.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            done = json.load(f)
        print(f"machine: {done['machine']}; torch {done['torch']}; {done['dtype']}\n")
        for case in done["cases"]:
            print(format_table(case["title"], case["results"]) + "\n")
        print(format_summary(done["cases"]))
        return
    torch.set_grad_enabled(False)  # a command-line process: inference only
    dtype = getattr(torch, args.dtype)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda") else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads")
    print(f"machine: {machine}; torch {torch.__version__}; {args.dtype}; reps {args.reps}\n")
    out = {"machine": machine, "torch": torch.__version__, "dtype": args.dtype, "cases": []}
    for kind, name, grid, batch in SUITES[args.suite]:
        build = llamagen_case if kind == "llamagen" else transformers_case
        title, model, request = build(name, grid, batch, args.device, dtype)
        sampling = {"guidance_scale": registry.defaults_for(model).guidance_scale}  # the family's default
        cond = model.prepare(**request, **sampling)
        windows = args.windows if args.windows is not None else (4, 8) if kind == "transformers" else (4, 8, 12, 16)
        adaptive = args.adaptive if args.adaptive is not None else (4,) if kind == "transformers" else (8,)
        wide = sorted({s for s in (*windows, *adaptive) if s > grid})
        if wide:  # the matrix mixes grids: a window one case cannot use is said, not dropped in silence
            print(f"{title}: windows {wide} skipped (wider than the {grid}-token grid)")
        configs = default_configs(grid, [s for s in windows if s <= grid], [s for s in adaptive if s <= grid],
                                  **sampling)
        results = run_configs(model, cond, configs, args.reps, compile=args.compile, cuda_graphs=args.cuda_graphs)
        print(format_table(title, results) + "\n", flush=True)
        out["cases"].append({"title": title, "results": results})
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(format_summary(out["cases"]))


if __name__ == "__main__":
    main()
