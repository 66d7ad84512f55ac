"""NTP through the ZipAR sampler against a plain KV-cached raster loop of the same model, alternating which
runs first in each repetition (so neither profits from running right after the other), one warm-up each.

    python benchmarks/ntp_vs_plain.py --preset GPT-B --grid 16 --batch-size 8 --reps 6
"""
from __future__ import annotations

import argparse

import torch
from zipar.zipar_core import ZipARConfig
from zipar.zipar_core.benchmark import run_configs
from zipar.zipar_core.config import resolve
from zipar.zipar_core.models import registry


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="GPT-B")
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the model's (LlamaGen c2i: 2.0)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)  # a command-line process: inference only
    model = registry.build_tiny("llamagen", preset=args.preset, grid=args.grid)
    B = args.batch_size
    guidance = resolve(model.defaults(), args.grid, {"guidance_scale": args.guidance_scale}).guidance_scale
    cond = model.prepare(class_labels=list(range(B)), rows=args.grid, cols=args.grid, guidance_scale=guidance)
    ntp = ZipARConfig(mode="ntp", guidance_scale=guidance)
    results = run_configs(model, cond, {"ntp (ZipAR sampler)": ntp}, args.reps, alternate=True)
    print(f"{args.preset}, {args.grid}x{args.grid}, batch {B}, guidance {guidance}, "
          f"{torch.get_num_threads()} threads; seconds per batch over {args.reps} alternating repetitions")
    for r in results:  # run_configs reports seconds per image
        print(f"{r['name']:22s} median {r['sec_per_image_median'] * B:7.3f}  min {r['sec_per_image_min'] * B:7.3f}  "
              f"max {r['sec_per_image_max'] * B:7.3f}")
    print(f"ntp / plain: {results[0]['latency_ratio']:.3f}")  # the plain row: NTP median / plain median


if __name__ == "__main__":
    main()
