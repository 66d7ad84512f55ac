"""The embedded demo model quantized (issue 22): accuracy and FD of int8, nf4 and fp4 against float32, paired, with
the shipped evaluation protocol (``demo_model/evaluate.py``: 1000 samples, 100 per class, image i of class i % 10
with generator seed + i, the shipped classifier, FD against 2000 held-out real images, 95% stratified bootstrap
intervals over the same resamples for every row), and the bytes of each one's weights.

Every row decodes with the demo model's defaults (fixed window 4, guidance 2.0, temperature 1) and the same
float32 VQ decoder; only the GPT's linear layers outside ``keep_unquantized`` differ. The paired differences (row
minus float32) resample the same images in both rows. Also reported: how many image tokens each quantized row
shares with float32 at the same position (same seeds: sampling diverges at the first token whose distribution the
quantization moved enough).

    python benchmarks/quantized_demo.py --samples 1000 --threads 2 --json docs/demo_quantized.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def main(argv=None) -> dict:
    from zipar.demo_model import GUIDANCE_SCALE, load_demo_model
    from zipar.demo_model.bootstrap import RESAMPLES, strip
    from zipar.demo_model.classifier import classify, load_classifier
    from zipar.demo_model.dataset import HELDOUT_SEED, NUM_CLASSES, make_images
    from zipar.demo_model.evaluate import decode, sample, score_rows, verdict
    from zipar.zipar_core import ZipARConfig
    from zipar.zipar_core.models import registry
    from zipar.zipar_core.quantization import resident_bytes

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--real", type=int, default=2000)
    p.add_argument("--quantizations", nargs="+", default=["int8", "nf4", "fp4"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=RESAMPLES)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    clf = load_classifier()
    real, real_labels = make_images(args.real, HELDOUT_SEED)
    _, real_feats = classify(clf, real)
    labels = np.arange(args.samples) % NUM_CLASSES
    rows, per_image, codes_of = [], {}, {}
    for q in ["float32", *args.quantizations]:
        model = load_demo_model(quantization=None if q == "float32" else q)
        d = registry.defaults_for(model)
        config = ZipARConfig(mode=d.mode, window=d.window, guidance_scale=GUIDANCE_SCALE, temperature=d.temperature,
                             top_k=d.top_k)
        out = sample(model, config, args.samples, args.batch, args.seed)
        images = decode(model, out["codes"])
        pred, feats = classify(clf, images)
        per_image[q] = (labels, pred, feats)
        codes_of[q] = out["codes"]
        row = {"name": q, "weights_bytes": resident_bytes(model.gpt), "vq_bytes": resident_bytes(model.vq),
               "passes": float(np.mean(out["passes"])), "seconds_sampling": out["seconds_sampling"],
               "config": config.to_dict()}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    boot = score_rows(rows, per_image, real_feats, real_labels, args.resamples)
    base = rows[0]
    for r in rows[1:]:
        r["fd_diff"] = strip(boot.diff(r["_fd"], base["_fd"]))
        r["accuracy_diff"] = strip(boot.diff(r["_acc"], base["_acc"]))
        r["fd_verdict"] = verdict(r["fd_diff"])
        r["tokens_equal_to_float32"] = float((codes_of[r["name"]] == codes_of["float32"]).float().mean())
    result = {"meta": {"command": "python benchmarks/quantized_demo.py " + " ".join(argv or sys.argv[1:]),
                       "samples": args.samples, "batch": args.batch, "real": args.real, "resamples": args.resamples,
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "seconds_total": time.perf_counter() - t_all},
              "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]}
    print(table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


def table(result: dict) -> str:
    lines = ["| GPT weights | bytes (GPT) | accuracy [95% CI] | FD [95% CI] | accuracy - float32 | FD - float32 | "
             "tokens as float32 | s / 1000 images |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    n = result["meta"]["samples"]
    for r in result["rows"]:
        acc = f"{r['accuracy'] * 100:.1f}% [{r['accuracy_ci'][0] * 100:.1f}%, {r['accuracy_ci'][1] * 100:.1f}%]"
        fd = f"{r['fd']:.1f} [{r['fd_ci'][0]:.1f}, {r['fd_ci'][1]:.1f}]"
        if "fd_diff" in r:
            a, f = r["accuracy_diff"], r["fd_diff"]
            da = f"{a['value'] * 100:+.1f}% [{a['ci'][0] * 100:+.1f}%, {a['ci'][1] * 100:+.1f}%]"
            df = f"{f['value']:+.1f} [{f['ci'][0]:+.1f}, {f['ci'][1]:+.1f}]"
            same = f"{r['tokens_equal_to_float32'] * 100:.1f}%"
        else:
            da = df = same = ""
        lines.append(f"| {r['name']} | {r['weights_bytes']:,} | {acc} | {fd} | {da} | {df} | {same} | "
                     f"{r['seconds_sampling'] * 1000 / n:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
