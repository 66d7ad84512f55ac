"""Quality against speed of ZipAR on the embedded demo model: the table in docs/demo_model.md.

    python -m zipar.demo_model.evaluate --samples 1000 --json demo_eval.json

For NTP, fixed windows and adaptive minimum windows, ``--samples`` images each (labels 0..9 in turn, image
i drawn with its own generator seeded ``seed + i``, the same for every decoding mode):

- passes: forward passes per image (prefill included; adaptive: the mean of what each image needed alone);
- s/image (batch 1): median wall time of one image alone, guidance included (what a user waits);
- s/1000 (batch B): wall time to sample and decode 1000 images in batches of ``--batch``;
- accuracy: how often the demo classifier (``classifier.py``, trained on real images) recognises the class
  the image was asked for (chance: 10%);
- FD: Frechet distance between the classifier's penultimate features of the samples and of ``--real``
  held-out real images (a seed no training saw); lower is better.

Reference rows: held-out real images and their VQ reconstructions (the floor and what the tokenizer
allows), and the same architecture with random weights (what an untrained model gives).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from ..cli.outputs import writable_file, write_json
from ..zipar_core import ZipARConfig, generate
from . import GUIDANCE_SCALE, load_demo_model
from .classifier import classify, frechet_distance, load_classifier
from .dataset import HELDOUT_SEED, IMAGE_SIZE, NUM_CLASSES, make_images, to_tensor, to_uint8

DEFAULT_FIXED = (1, 2, 3, 4, 6, 8)
DEFAULT_ADAPTIVE = (1, 3, 7)


@torch.no_grad()
def decode(model, codes: torch.Tensor, batch: int = 250) -> np.ndarray:
    """codes (n, h, w) -> uint8 images (n, H, W, 3), VQ decoder under bfloat16 autocast on CPU."""
    out = []
    for i in range(0, len(codes), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model.device.type == "cpu"):
            out.append(to_uint8(model.decode(codes[i: i + batch])))
    return np.concatenate(out)


@torch.no_grad()
def sample(model, config: ZipARConfig, n: int, batch: int, seed: int) -> dict:
    """n images of classes i % 10 -> codes, per-image passes, adaptive acceptance, wall seconds."""
    codes, passes, proposed, accepted = [], [], 0, 0
    t = time.perf_counter()
    for start in range(0, n, batch):
        idx = list(range(start, min(n, start + batch)))
        cond = model.prepare(class_labels=[i % NUM_CLASSES for i in idx], guidance_scale=config.guidance_scale)
        gens = [torch.Generator().manual_seed(seed + i) for i in idx]
        result = generate(model, cond, config, generator=gens)
        codes.append(result.codes)
        passes += result.stats.sample_passes
        proposed += result.stats.drafts_proposed
        accepted += result.stats.drafts_accepted
    codes = torch.cat(codes)
    return {"codes": codes, "passes": passes, "seconds_sampling": time.perf_counter() - t,
            "acceptance": accepted / proposed if proposed else None}


@torch.no_grad()
def latency(model, config: ZipARConfig, reps: int, seed: int) -> float:
    """Median seconds for one image alone (sampling + decoding), classes 0.. in turn."""
    times = []
    for r in range(reps + 1):  # the first run warms up
        cond = model.prepare(class_labels=[r % NUM_CLASSES], guidance_scale=config.guidance_scale)
        t = time.perf_counter()
        codes = generate(model, cond, config, generator=torch.Generator().manual_seed(seed + r)).codes
        model.decode(codes)
        if r:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def random_weight_model(model):
    """The demo architecture with freshly initialised (random) GPT weights and the trained VQ decoder."""
    from ..zipar_core.models.llamagen import LlamaGenAdapter, LlamaGenTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gpt = LlamaGenTransformer(model.config)
    return LlamaGenAdapter(gpt.to(model.dtype).eval(), model.vq)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1000, help="images per decoding mode")
    p.add_argument("--batch", type=int, default=250, help="images per generate() call")
    p.add_argument("--real", type=int, default=2000, help="held-out real images for the Frechet distance")
    p.add_argument("--fixed", type=int, nargs="*", default=list(DEFAULT_FIXED), help="fixed windows")
    p.add_argument("--adaptive", type=int, nargs="*", default=list(DEFAULT_ADAPTIVE), help="adaptive minimum windows")
    p.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--latency-reps", type=int, default=5, help="single-image runs timed per mode (0: skip)")
    p.add_argument("--no-random", action="store_true", help="skip the random-weight reference row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--json", help="write all numbers to this JSON file")
    p.add_argument("--samples-png", help="save the first 20 images of every mode, one row each, to this PNG")
    args = p.parse_args(argv)
    for path in (args.json, args.samples_png):  # the folders exist and are writable before the run, not after it
        if path:
            try:
                writable_file(path, "--json" if path == args.json else "--samples-png")
            except ValueError as e:
                p.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)  # a command-line process: inference only
    t_all = time.perf_counter()

    model = load_demo_model()
    clf = load_classifier()
    real, real_labels = make_images(args.real, HELDOUT_SEED)
    _, real_feats = classify(clf, real)
    sampling = dict(guidance_scale=args.guidance_scale, temperature=args.temperature, top_k=args.top_k)
    modes = [("ntp", ZipARConfig(mode="ntp", **sampling))]
    modes += [(f"fixed s={s}", ZipARConfig(mode="fixed", window=s, **sampling)) for s in args.fixed]
    modes += [(f"adaptive s_min={s}", ZipARConfig(mode="adaptive", window=s, **sampling)) for s in args.adaptive]

    rows, previews = [], []

    def score(name: str, images: np.ndarray, labels: np.ndarray, **extra) -> dict:
        pred, feats = classify(clf, images)
        row = {"name": name, "n": len(images), "accuracy": float((pred == labels).mean()),
               "fd": frechet_distance(feats, real_feats), **extra}
        rows.append(row)
        previews.append((name, images[:20]))
        print(json.dumps({k: v for k, v in row.items() if k != "sample_passes"}), flush=True)
        return row

    # References: other held-out real images (the floor), their VQ reconstructions (the tokenizer's limit).
    other, other_labels = make_images(args.samples, HELDOUT_SEED, start=args.real)
    score("held-out real images", other, other_labels, kind="reference")
    with torch.no_grad():
        rec_codes = torch.cat([model.vq.encode(to_tensor(other[i: i + 250])) for i in range(0, len(other), 250)])
    score("VQ reconstructions of them", decode(model, rec_codes), other_labels, kind="reference")

    labels = np.arange(args.samples) % NUM_CLASSES
    if not args.no_random:
        rnd = random_weight_model(model)
        out = sample(rnd, modes[0][1], args.samples, args.batch, args.seed)
        score("random weights, ntp", decode(model, out["codes"]), labels, kind="reference",
              passes=float(np.mean(out["passes"])))
    ntp_latency = None
    for name, cfg in modes:
        out = sample(model, cfg, args.samples, args.batch, args.seed)
        t = time.perf_counter()
        images = decode(model, out["codes"])
        seconds_1000 = (out["seconds_sampling"] + time.perf_counter() - t) * 1000 / args.samples
        lat = latency(model, cfg, args.latency_reps, args.seed) if args.latency_reps else None
        ntp_latency = ntp_latency or lat
        score(name, images, labels, kind=cfg.mode, window=None if cfg.mode == "ntp" else cfg.window,
              passes=float(np.mean(out["passes"])), passes_min=min(out["passes"]), passes_max=max(out["passes"]),
              acceptance=out["acceptance"], seconds_per_image_batch1=lat,
              speedup_batch1=(ntp_latency / lat) if lat else None, seconds_per_1000=seconds_1000)

    ntp_passes = rows[-len(modes)]["passes"]
    meta = {"command": "python -m zipar.demo_model.evaluate " + " ".join(argv if argv is not None else _argv()),
            "samples": args.samples, "batch": args.batch, "real": args.real, "sampling": sampling,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or
            platform.machine(), "seconds_total": time.perf_counter() - t_all}
    print()
    print(format_table(rows, ntp_passes, meta))
    if args.json:
        write_json(args.json, {"meta": meta, "rows": rows})
    if args.samples_png:
        save_rows(previews, args.samples_png)


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


def format_table(rows: list[dict], ntp_passes: float, meta: dict) -> str:
    lines = [f"Demo model, 16x16 tokens ({IMAGE_SIZE}x{IMAGE_SIZE} px), guidance {meta['sampling']['guidance_scale']}, "
             f"{meta['samples']} samples per row, FD against {meta['real']} held-out real images, "
             f"torch threads: {meta['threads']}.", "",
             "| decoding | passes | of NTP | s/image (batch 1) | speed-up | s/1000 images (batch "
             f"{meta['batch']}) | accuracy | FD |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["kind"] == "reference":
            passes = f"{r['passes']:.0f}" if r.get("passes") else ""
            lines.append(f"| *{r['name']}* | {passes} | | | | | {r['accuracy']:.1%} | {r['fd']:.2f} |")
            continue
        lat = "" if r["seconds_per_image_batch1"] is None else f"{r['seconds_per_image_batch1']:.3f}"
        sp = "" if r["speedup_batch1"] is None else f"{r['speedup_batch1']:.2f}x"
        passes = f"{r['passes']:.0f}" if r["kind"] != "adaptive" else f"{r['passes']:.1f}"
        lines.append(f"| {r['name']} | {passes} | {r['passes'] / ntp_passes:.0%} | {lat} | {sp} | "
                     f"{r['seconds_per_1000']:.0f} | {r['accuracy']:.1%} | {r['fd']:.2f} |")
    return "\n".join(lines)


def save_rows(previews, path: str) -> None:
    from PIL import Image

    from .dataset import grid_image

    n = max(len(imgs) for _, imgs in previews)
    tiles = np.concatenate([np.pad(imgs, ((0, n - len(imgs)), (0, 0), (0, 0), (0, 0)), constant_values=255)
                            for _, imgs in previews])
    Image.fromarray(grid_image(tiles, n)).save(path)
    print(f"saved {path}: one row per line of the table ({'; '.join(name for name, _ in previews)})")


if __name__ == "__main__":
    main()
