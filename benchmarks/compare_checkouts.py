"""Speed of this checkout against another one (e.g. the commit before a refactor), interleaved in one process.

    git worktree add /tmp/before <commit>
    python benchmarks/compare_checkouts.py --other /tmp/before --preset GPT-B --grid 16 --reps 3

The other checkout is imported under another package name (the package uses relative imports only), the same
random LlamaGen weights are loaded into both, and every configuration runs once per checkout to warm up, then
``--reps`` times alternating between the two (the order reversed every other repetition), so drift in machine
speed hits both alike. Prints seconds per image (median, min, max) per configuration and checkout, the ratio of
the medians, and checks that both produced the same codes.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tree(path: str, name: str):
    """The package at ``path`` imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build(package: str, preset: str, grid: int, state=None):
    tiny = importlib.import_module(f"{package}.zipar_core.models.tiny")
    model = tiny.random_llamagen(preset, grid)
    if state is not None:
        model.gpt.load_state_dict(state)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", required=True, help="the other checkout's root folder")
    p.add_argument("--preset", default="GPT-B")
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--windows", type=int, nargs="*", default=[8])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    trees = {"this": load_tree(HERE, "zipar_this"), "other": load_tree(os.path.abspath(args.other), "zipar_other")}
    torch.manual_seed(0)
    models = {"this": build("zipar_this", args.preset, args.grid)}
    models["other"] = build("zipar_other", args.preset, args.grid, models["this"].gpt.state_dict())
    configs = [dict(mode="ntp", guidance_scale=2.0)] + [dict(mode="fixed", window=s, guidance_scale=2.0)
                                                          for s in args.windows]
    times = {(t, i): [] for t in trees for i in range(len(configs))}
    codes = {}

    def run(tree: str, i: int) -> float:
        core = importlib.import_module(f"zipar_{tree}.zipar_core")
        model = models[tree]
        cond = model.prepare(class_labels=[1], rows=args.grid, cols=args.grid, guidance_scale=2.0)
        t = time.perf_counter()
        out = core.generate(model, cond, core.ZipARConfig(**configs[i]), generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - t
        codes.setdefault(i, {})[tree] = out.codes
        return seconds

    order = [(t, i) for i in range(len(configs)) for t in trees]
    for key in order:  # warm-up
        run(*key)
    for rep in range(args.reps):
        for key in order[::-1] if rep % 2 else order:
            times[key].append(run(*key))
    print(f"LlamaGen {args.preset} (random weights), {args.grid}x{args.grid}, batch 1, guidance 2, "
          f"{args.threads} threads, {args.reps} interleaved repetitions; seconds per image")
    print(f"{'decoding':<14}{'this (median, min-max)':>28}{'other (median, min-max)':>28}{'this / other':>14}")
    for i, cfg in enumerate(configs):
        name = cfg["mode"] + (f" s={cfg['window']}" if "window" in cfg else "")
        a, b = times[("this", i)], times[("other", i)]
        same = torch.equal(codes[i]["this"], codes[i]["other"])
        print(f"{name:<14}{statistics.median(a):>10.3f} ({min(a):.3f}-{max(a):.3f}){statistics.median(b):>12.3f} "
              f"({min(b):.3f}-{max(b):.3f}){statistics.median(a) / statistics.median(b):>12.3f}"
              f"   {'same codes' if same else 'CODES DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
