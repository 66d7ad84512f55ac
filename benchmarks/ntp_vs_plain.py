"""NTP through the ZipAR sampler against a plain KV-cached raster loop of the same model, alternating which
runs first in each repetition (so neither profits from running right after the other), one warm-up each.

    python benchmarks/ntp_vs_plain.py --preset GPT-B --grid 16 --batch-size 8 --reps 6
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from zipar.bench import plain_raster_loop
from zipar.demo import random_llamagen
from zipar.zipar_core import ZipARConfig, generate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="GPT-B")
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--guidance-scale", type=float, default=2.0)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)  # a command-line process: inference only
    model = random_llamagen(args.preset, args.grid)
    B = args.batch_size
    cond = model.prepare(class_labels=list(range(B)), rows=args.grid, cols=args.grid,
                         guidance_scale=args.guidance_scale)
    config = ZipARConfig(mode="ntp", guidance_scale=args.guidance_scale)
    runs = {"plain KV-cached loop": lambda: plain_raster_loop(model, cond, config, torch.Generator().manual_seed(0)),
            "ntp (ZipAR sampler)": lambda: generate(model, cond, config,
                                                    generator=[torch.Generator().manual_seed(i) for i in range(B)])}
    seconds = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for rep in range(args.reps):
        for name in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            t = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - t)
    print(f"{args.preset}, {args.grid}x{args.grid}, batch {B}, guidance {args.guidance_scale}, "
          f"{torch.get_num_threads()} threads; seconds per batch over {args.reps} alternating repetitions")
    for name, s in seconds.items():
        print(f"{name:22s} median {statistics.median(s):7.3f}  min {min(s):7.3f}  max {max(s):7.3f}")
    ratio = statistics.median(seconds["ntp (ZipAR sampler)"]) / statistics.median(seconds["plain KV-cached loop"])
    print(f"ntp / plain: {ratio:.3f}")


if __name__ == "__main__":
    main()
