"""Coupled drafts and rows visibility on the embedded demo model (issue 21): passes, and seconds per image.

Two measurements, both on the demo model (classes 0..9 in turn, image i with seed i, guidance 2, temperature 1,
the shipped protocol's sampling settings):

1. Passes per image (``--images`` images per row, each image decoded alone in effect: per-image generators, the
   pass count each image needed on its own) for every row of the grid: ``sjd`` at draft lengths 8 and 16, and
   ``zipar_sjd`` at windows 2, 3, 4, 8 and draft lengths 8 and 16, each with every ``draft_coupling`` and every
   ``draft_visibility`` (zipar_sjd), against its base schedule (sjd: ntp; zipar_sjd at window s: fixed at s) and
   NTP, paired image by image (mean of the per-image ratios, and its 95% bootstrap interval).
2. Seconds per image at batch 1 and at batch 10, interleaved: every rep runs each selected row and its base in a
   rotating order, so load on a shared machine hits them alike; the median over reps.

    python benchmarks/jacobi_frontier.py --images 200 --timing-reps 3 --threads 2 \\
        --json docs/jacobi_frontier.json --table docs/jacobi_frontier.md
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from zipar import ZipARConfig, generate, load_model
from zipar.zipar_core.config import DRAFT_COUPLINGS, DRAFT_VISIBILITIES
from zipar.zipar_core.modes import get as get_mode

GUIDANCE = 2.0


def grid_rows(lengths=(8, 16), windows=(2, 3, 4, 8)) -> list[dict]:
    rows = [dict(mode="sjd", draft_length=L, draft_coupling=c) for L in lengths for c in DRAFT_COUPLINGS]
    rows += [dict(mode="zipar_sjd", window=s, draft_length=L, draft_coupling=c, draft_visibility=v)
             for s, L, c, v in itertools.product(windows, lengths, DRAFT_COUPLINGS, DRAFT_VISIBILITIES)]
    return rows


def base_of(row: dict) -> dict:
    """The schedule a Jacobi row keeps exactly (the mode registry's ``keeps``), at the row's window if it has one."""
    keeps = get_mode(row["mode"]).keeps
    return dict(mode=keeps, **({"window": row["window"]} if "window" in get_mode(keeps).uses else {}))


def name(row: dict) -> str:
    keys = [f"s={row['window']}"] if "window" in row else []
    keys += [f"{k.removeprefix('draft_')}={v}" for k, v in row.items() if k.startswith("draft_")]
    return " ".join([row["mode"], *keys])


def run(model, row: dict, labels: list[int], seeds: list[int]):
    cond = model.prepare(class_labels=labels, guidance_scale=GUIDANCE)
    cfg = ZipARConfig(guidance_scale=GUIDANCE, temperature=1.0, **row)
    t0 = time.perf_counter()
    result = generate(model, cond, cfg, generator=[torch.Generator().manual_seed(s) for s in seeds])
    return result, time.perf_counter() - t0


def per_image_passes(model, row: dict, images: int, batch: int) -> list[int]:
    passes = []
    for start in range(0, images, batch):
        ids = list(range(start, min(start + batch, images)))
        passes += run(model, row, [i % 10 for i in ids], ids)[0].stats.sample_passes
    return passes


def paired(a: list[float], b: list[float], resamples: int = 2000) -> dict:
    """Mean of the per-image ratios a/b with a 95% bootstrap interval."""
    ratios = torch.tensor([x / y for x, y in zip(a, b)], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(ratios), (resamples, len(ratios)), generator=g)
    boot = ratios[idx].mean(1).sort().values
    return {"mean": float(ratios.mean()), "ci": [float(boot[int(0.025 * resamples)]),
                                                  float(boot[int(0.975 * resamples) - 1])]}


def timing(model, rows: list[dict], reps: int, batch: int) -> dict:
    """Median seconds per image over ``reps`` runs of ``batch`` images (classes 0.., seeds 0..), each rep running
    every row once, the order rotated by one every rep."""
    seconds = {name(r): [] for r in rows}
    run(model, rows[0], [0], [0])  # warm-up
    for rep in range(reps):
        order = rows[rep % len(rows):] + rows[: rep % len(rows)]
        for row in order:
            seconds[name(row)].append(run(model, row, [i % 10 for i in range(batch)], list(range(batch)))[1] / batch)
    return {k: statistics.median(v) for k, v in seconds.items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="images per row for the pass counts (0: timing only)")
    p.add_argument("--batch", type=int, default=100, help="images per generate() call for the pass counts")
    p.add_argument("--lengths", type=int, nargs="+", default=[8, 16])
    p.add_argument("--windows", type=int, nargs="+", default=[2, 3, 4, 8])
    p.add_argument("--timing-reps", type=int, default=3, help="interleaved reps per batch size (0: no timing)")
    p.add_argument("--timing-batches", type=int, nargs="+", default=[1, 10])
    p.add_argument("--timing-coupling", default="maximal", help="the coupling of the timed rows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--table")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("demo")
    rows = grid_rows(tuple(args.lengths), tuple(args.windows))
    bases = [dict(mode="ntp")] + [dict(mode="fixed", window=s) for s in args.windows]
    passes = {}
    for row in (bases + rows) if args.images else []:
        t0 = time.perf_counter()
        passes[name(row)] = per_image_passes(model, row, args.images, args.batch)
        print(f"{name(row)}: {statistics.mean(passes[name(row)]):.1f} passes/image "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    table = []
    for row in rows if args.images else []:
        ntp = passes["ntp"]
        mine, base = passes[name(row)], passes[name(base_of(row))]
        table.append({"row": name(row), "config": row, "passes": statistics.mean(mine), "base": name(base_of(row)),
                      "base_passes": statistics.mean(base), "vs_base": paired(mine, base), "vs_ntp": paired(mine, ntp)})
    timed, timed_bases = {}, {}
    if args.timing_reps:
        for B in args.timing_batches:
            chosen = [r for r in rows if r.get("draft_coupling") == args.timing_coupling and r["draft_length"] == 8]
            chosen += [dict(r, draft_coupling="none") for r in chosen]
            for r in list(chosen):
                if base_of(r) not in chosen:
                    chosen.append(base_of(r))
            timed[B] = timing(model, chosen, args.timing_reps, B)
            timed_bases = {name(r): name(base_of(r)) for r in chosen if get_mode(r["mode"]).keeps}
            print(f"batch {B}: " + ", ".join(f"{k} {v:.3f}s" for k, v in timed[B].items()), flush=True)
    out = {"meta": {"images": args.images, "guidance_scale": GUIDANCE, "temperature": 1.0, "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(), "timing_reps": args.timing_reps,
                    "command": "python benchmarks/jacobi_frontier.py " + " ".join(argv or sys.argv[1:])},
           "passes": {k: statistics.mean(v) for k, v in passes.items()}, "rows": table,
           "seconds_per_image": {str(B): v for B, v in timed.items()},
           "timed_base": timed_bases}
    text = format_table(out)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.table:
        Path(args.table).write_text(text)
    return out


def format_table(out: dict) -> str:
    lines = [f"Passes per image, {out['meta']['images']} images per row (demo model, guidance 2, temperature 1); "
             "ratios: mean of per-image ratios [95% bootstrap interval]", "",
             "| row | passes | base | base passes | vs base | vs NTP |", "|---|---:|---|---:|---:|---:|"]
    if not out["rows"]:
        lines = []
    for r in out["rows"]:
        vb, vn = r["vs_base"], r["vs_ntp"]
        lines.append(f"| {r['row']} | {r['passes']:.1f} | {r['base']} | {r['base_passes']:.0f} | "
                     f"{vb['mean']:.3f} [{vb['ci'][0]:.3f}, {vb['ci'][1]:.3f}] | "
                     f"{vn['mean']:.3f} [{vn['ci'][0]:.3f}, {vn['ci'][1]:.3f}] |")
    for B, secs in out["seconds_per_image"].items():
        lines += ["", f"Seconds per image at batch {B} (median of {out['meta']['timing_reps']} interleaved reps, "
                      f"{out['meta']['threads']} threads)", "", "| row | s/image | base | ratio to base |",
                  "|---|---:|---|---:|"]
        for k, v in secs.items():
            base = out["timed_base"].get(k)
            if base is None:
                continue
            lines.append(f"| {k} | {v:.3f} | {base} {secs[base]:.3f} | {v / secs[base]:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
