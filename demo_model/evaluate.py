"""Quality against speed of ZipAR on the embedded demo model: the table, plot and grids in docs/demo_model.md.

    python -m zipar.demo_model.evaluate --samples 1000 --threads 1 --json docs/demo_eval.json \
        --plot docs/demo_fd_vs_passes.png --ntp-grid docs/demo_ntp_grid.png

Decoding configurations are a list of ``ZipARConfig`` keyword dicts (``configs_from_args``): NTP, then one
per ``--fixed`` window, ``--adaptive`` minimum window and ``--paper-fixed`` window (fixed, row 0 decoded
first as in the authors' code), then any ``--config '{"mode": ..., ...}'`` given as JSON (for modes this
script has no flag for, e.g. ``--config '{"mode": "sjd", "draft_length": 4}'``; the sampling settings are
added unless the dict sets them). Rows and the plot's lines are named from the mode registry (each mode's
label and window name; zipar_core.modes), so a new mode gets its own rows and line. For each configuration, ``--samples`` images (labels
0..9 in turn, image i drawn with its own generator seeded ``seed + i``, the same in every row):

- passes: forward passes per image (prefill included; adaptive: the mean of what each image needed alone);
- s/image (batch 1): median wall time of one image alone, guidance included (what a user waits);
- s/1000 (batch B): wall time to sample and decode 1000 images in batches of ``--batch``;
- accuracy: how often the demo classifier (``classifier.py``, trained on real images) recognises the class
  the image was asked for (chance: 10%);
- FD: Frechet distance between the classifier's penultimate features of the samples and of ``--real``
  held-out real images (a seed no training saw); lower is better;
- 95% bootstrap intervals for both (``bootstrap.py``: ``--resamples`` resamples of the images, stratified
  by class, the same resamples for every row, so rows are paired);
- the paired comparison of each adaptive row against fixed windows at the same number of passes
  (``--compare adaptive:fixed``): the FD and accuracy differences against the fixed row with the nearest
  pass count, and against the linear interpolation of the two fixed rows around it, with intervals.

Reference rows: held-out real images and their VQ reconstructions (the floor and what the tokenizer
allows), and the same architecture with random weights (what an untrained model gives).

``--features FILE.npz`` keeps every row's per-image predictions and features; ``--rescore FILE.npz``
recomputes the intervals, comparisons, table and plot from such a file without sampling again.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from ..zipar_core import ZipARConfig, generate
from ..zipar_core.config import MODE_SETTINGS, Defaults, resolve
from ..zipar_core.files import writable_file, write_json
from ..zipar_core.modes import MODES
from ..zipar_core.modes import get as get_mode
from . import GUIDANCE_SCALE, load_demo_model
from .bootstrap import RESAMPLES, Bootstrap, strip
from .classifier import classify, frechet_distance, load_classifier
from .dataset import CLASSES, HELDOUT_SEED, IMAGE_SIZE, NUM_CLASSES, make_images, to_tensor, to_uint8

DEFAULT_FIXED = (1, 2, 3, 4, 5, 6, 8, 10, 12)
DEFAULT_ADAPTIVE = (1, 2, 3, 4, 5, 7, 9)
DEFAULT_PAPER_FIXED = (2, 4, 8)
SAMPLING_KEYS = ("guidance_scale", "guidance_interval", "temperature", "top_k", "top_p")

# How rows are named and compared comes from the mode registry (zipar_core.modes): each mode's label, the name of
# its window in row names, and, for a Jacobi mode, the schedule it keeps (sjd: ntp; zipar_sjd at window s: fixed at
# window s), which its row is paired against (same sampling settings, same images' generators).
DRAFT_KEYS = tuple(k for k in MODE_SETTINGS if k != "window")  # draft_length, draft_init, draft_coupling, ...


def family(kw: dict) -> str:
    """The plot line a configuration belongs to: its mode, plus ", paper first row" where set."""
    return kw.get("mode", Defaults.mode) + (", paper first row" if kw.get("paper_first_row") else "")


def family_label(fam: str) -> str:
    mode, _, rest = fam.partition(", ")
    label = MODES[mode].label if mode in MODES else mode  # a name the registry does not know: its own line
    return f"{label} ({rest})" if rest else label


def row_name(kw: dict) -> str:
    """'ntp', 'fixed s=4', 'adaptive s_min=3', 'fixed s=4 (paper first row)', 'sjd draft_length=4',
    'zipar_sjd s=4 draft_length=8'."""
    name = kw.get("mode", Defaults.mode)
    mode = MODES.get(name)  # None: a name the registry does not know, named from its keywords
    window_name = mode.window_name if mode else "window"
    parts = [name]
    if window_name and "window" in kw:
        parts.append(f"{window_name}={kw['window']}")
    defaults = {**ZipARConfig().to_dict(), **Defaults().as_dict()}
    if mode and mode.keeps:  # the draft length names a Jacobi row even at its default
        defaults.pop("draft_length")
        kw = {"draft_length": Defaults.draft_length, **kw}
    parts += [f"{k}={v}" for k, v in kw.items() if k not in ("mode", "window", "paper_first_row", *SAMPLING_KEYS)
              and defaults.get(k, object()) != v]
    name = " ".join(parts)
    return name + " (paper first row)" if kw.get("paper_first_row") else name


def configs_from_args(args) -> list[dict]:
    """The decoding configurations of a run, as ZipARConfig keyword dicts (validated here)."""
    sampling = dict(guidance_scale=args.guidance_scale, temperature=args.temperature, top_k=args.top_k)
    kws = [dict(mode="ntp")]
    kws += [dict(mode="fixed", window=s) for s in args.fixed]
    kws += [dict(mode="adaptive", window=s) for s in args.adaptive]
    kws += [dict(mode="fixed", window=s, paper_first_row=True) for s in args.paper_fixed]
    for text in args.config or ():
        kw = json.loads(text)
        if not isinstance(kw, dict) or "mode" not in kw:
            raise SystemExit(f"--config takes a JSON object with a 'mode', got {text!r}")
        kws.append(kw)
    out = []
    for kw in kws:
        kw = {**sampling, **kw}
        try:
            ZipARConfig(**kw)
        except TypeError as e:  # a keyword this version of ZipARConfig does not have
            raise SystemExit(f"configuration {kw} is not a ZipARConfig of this version: {e}") from None
        out.append(kw)
    return out


@torch.no_grad()
def decode(model, codes: torch.Tensor, batch: int = 250) -> np.ndarray:
    """codes (n, h, w) -> uint8 images (n, H, W, 3), in float32 (bfloat16 autocast is slower on CPUs without
    bf16 hardware)."""
    return np.concatenate([to_uint8(model.decode(codes[i: i + batch])) for i in range(0, len(codes), batch)])


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


# ------------------------------------------------------------------------------------------------------
# Statistics over the rows: intervals and the paired fixed-vs-adaptive comparison


def score_rows(rows: list[dict], per_image: dict, real_feats: np.ndarray, real_labels: np.ndarray,
               resamples: int = RESAMPLES, seed: int = 0) -> Bootstrap | None:
    """Adds accuracy / FD with 95% intervals to every row (in place), from ``per_image[name]`` =
    (labels, predictions, features). Rows that ask for the same labels share one bootstrap (paired); returns
    the bootstrap of the last row (the one of every row when all ask for the same labels)."""
    boots, bs = {}, None
    for row in rows:
        labels, pred, feats = per_image[row["name"]]
        key = np.asarray(labels).tobytes()
        if key not in boots:
            boots[key] = Bootstrap(labels, real_feats, real_labels, resamples=resamples, seed=seed)
        bs = boots[key]
        row["_acc"], row["_fd"] = bs.accuracy(pred == labels), bs.fd(feats)
        row["accuracy"], row["accuracy_ci"] = row["_acc"]["value"], row["_acc"]["ci"]
        row["fd"], row["fd_ci"] = row["_fd"]["value"], row["_fd"]["ci"]
    return bs if len(boots) == 1 else None


def compare_at_equal_passes(rows: list[dict], boot: Bootstrap, a: str = "adaptive", b: str = "fixed") -> list[dict]:
    """Each row of family ``a`` against family ``b`` at the same passes per image, paired.

    For a row of ``a`` at p passes: the row of ``b`` with the nearest pass count ("nearest"), and the linear
    interpolation of the two rows of ``b`` whose pass counts bracket p ("interpolated"; absent when p is
    outside ``b``'s range). Differences are a - b: FD below zero / accuracy above zero favour ``a``."""
    rows_a = [r for r in rows if r.get("family") == a]
    rows_b = sorted((r for r in rows if r.get("family") == b), key=lambda r: r["passes"])
    out = []
    for ra in rows_a:
        if not rows_b:
            break
        p = ra["passes"]
        near = min(rows_b, key=lambda r: abs(r["passes"] - p))
        item = {"a": ra["name"], "passes_a": p, "nearest": {"b": near["name"], "passes_b": near["passes"],
                "fd_diff": strip(boot.diff(ra["_fd"], near["_fd"])),
                "accuracy_diff": strip(boot.diff(ra["_acc"], near["_acc"]))}}
        lo = [r for r in rows_b if r["passes"] <= p]
        hi = [r for r in rows_b if r["passes"] >= p]
        if lo and hi:
            lo, hi = lo[-1], hi[0]
            t = 0.0 if hi["passes"] == lo["passes"] else (p - lo["passes"]) / (hi["passes"] - lo["passes"])
            item["interpolated"] = {
                "b": f"{lo['name']} .. {hi['name']}", "t": t,
                "fd_b": (1 - t) * lo["fd"] + t * hi["fd"],
                "accuracy_b": (1 - t) * lo["accuracy"] + t * hi["accuracy"],
                "fd_diff": strip(boot.diff(ra["_fd"], lo["_fd"], (t, hi["_fd"]))),
                "accuracy_diff": strip(boot.diff(ra["_acc"], lo["_acc"], (t, hi["_acc"])))}
        out.append(item)
    return out


def schedule_key(kw: dict) -> str:
    """A configuration without its draft settings (and without a window its mode ignores): a Jacobi row's key with
    its mode replaced by the mode it ``keeps`` is the key of the row it is measured against."""
    uses = get_mode(kw.get("mode", Defaults.mode)).uses
    kw = {k: v for k, v in kw.items() if k not in DRAFT_KEYS and not (k == "window" and k not in uses)}
    return json.dumps(kw, sort_keys=True)


def compare_with_base(rows: list[dict], boot: Bootstrap) -> list[dict]:
    """Each Jacobi row against its base row (same configuration, in the mode it ``keeps``: sjd against ntp,
    zipar_sjd at window s against fixed at window s) and against NTP when that is another row, paired: pass ratio
    and FD / accuracy differences (a - b) with 95% intervals. Rows whose base was not run are left out."""
    def keeps(r):
        return get_mode(r["config"]["mode"]).keeps if (r.get("config") or {}).get("mode") else None

    by_key = {schedule_key(r["config"]): r for r in rows if r.get("config") and not keeps(r)}
    ntp = next((r for r in rows if r.get("config") and get_mode(r["config"]["mode"]).baseline), None)
    out = []
    for r in rows:
        b = by_key.get(schedule_key({**r["config"], "mode": keeps(r)})) if keeps(r) else None
        for other in [b] + ([ntp] if b is not None and ntp is not b else []):
            if other is None:
                continue
            out.append({"a": r["name"], "passes_a": r["passes"], "b": other["name"], "passes_b": other["passes"],
                        "pass_ratio": r["passes"] / other["passes"],
                        "fd_diff": strip(boot.diff(r["_fd"], other["_fd"])),
                        "accuracy_diff": strip(boot.diff(r["_acc"], other["_acc"]))})
    return out


def verdict(diff: dict, lower_is_better: bool = True) -> str:
    lo, hi = diff["ci"]
    if lo > 0:
        return "a worse" if lower_is_better else "a better"
    if hi < 0:
        return "a better" if lower_is_better else "a worse"
    return "no difference shown"


# ------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1000, help="images per decoding mode")
    p.add_argument("--batch", type=int, default=250, help="images per generate() call")
    p.add_argument("--real", type=int, default=2000, help="held-out real images for the Frechet distance")
    p.add_argument("--fixed", type=int, nargs="*", default=list(DEFAULT_FIXED), help="fixed windows")
    p.add_argument("--adaptive", type=int, nargs="*", default=list(DEFAULT_ADAPTIVE), help="adaptive minimum windows")
    p.add_argument("--paper-fixed", type=int, nargs="*", default=list(DEFAULT_PAPER_FIXED),
                   help="fixed windows with row 0 decoded first (paper_first_row=True)")
    p.add_argument("--config", action="append", metavar="JSON",
                   help="one more row: ZipARConfig keywords as JSON, e.g. '{\"mode\": \"sjd\", \"draft_length\": 4}'")
    p.add_argument("--compare", default="adaptive:fixed", help="families A:B compared at equal passes")
    p.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--latency-reps", type=int, default=5, help="single-image runs timed per mode (0: skip)")
    p.add_argument("--no-random", action="store_true", help="skip the random-weight reference row")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpt", help="GPT weights to evaluate instead of the shipped ones")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--json", help="write all numbers to this JSON file")
    p.add_argument("--table", help="write the markdown table (and comparison) to this file")
    p.add_argument("--plot", help="write FD (and accuracy) against passes, one line per mode family, to this PNG")
    p.add_argument("--ntp-grid", help="write 10 NTP samples per class, labelled, to this PNG")
    p.add_argument("--samples-png", help="save the first 20 images of every row, one row each, to this PNG")
    p.add_argument("--features", help="save per-image predictions and features of every row to this .npz")
    p.add_argument("--rescore", nargs="+", help="recompute statistics and outputs from --features files (several: "
                   "their rows together; a row in more than one must have the same predictions); no sampling")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    outputs = {"--json": args.json, "--table": args.table, "--plot": args.plot, "--ntp-grid": args.ntp_grid,
               "--samples-png": args.samples_png, "--features": args.features}
    for flag, path in outputs.items():  # the folders exist and are writable before the run, not after it
        if path:
            try:
                writable_file(path, flag)
            except ValueError as e:
                parser().error(str(e))
    if args.plot:
        _matplotlib()
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.no_grad():  # inference only (and a caller's grad mode is left as it was)
        return _run(args, argv)


def _run(args, argv) -> dict:
    if args.rescore:
        rows, per_image, real_feats, real_labels, meta, images = merge_features(args.rescore)
        return finish(rows, per_image, real_feats, real_labels, meta, images, args)
    t_all = time.perf_counter()

    if args.gpt:
        from ..zipar_core.models.llamagen import load_llamagen
        from . import VQ_WEIGHTS

        model = load_llamagen(args.gpt, VQ_WEIGHTS, dtype=torch.float32)
    else:
        model = load_demo_model()
    clf = load_classifier()
    real, real_labels = make_images(args.real, HELDOUT_SEED)
    _, real_feats = classify(clf, real)
    configs = configs_from_args(args)

    rows, per_image, images_of = [], {}, {}

    def score(name: str, images: np.ndarray, labels: np.ndarray, **extra) -> dict:
        pred, feats = classify(clf, images)
        row = {"name": name, "n": len(images), **extra}
        rows.append(row)
        per_image[name] = (labels, pred, feats)
        images_of[name] = images[:200]
        print(json.dumps({"name": name, "accuracy": float((pred == labels).mean()),
                          "fd": frechet_distance(feats, real_feats),
                          **{k: v for k, v in extra.items() if k != "config"}}), flush=True)
        return row

    # References: other held-out real images (the floor), their VQ reconstructions (the tokenizer's limit).
    other, other_labels = make_images(args.samples, HELDOUT_SEED, start=args.real)
    score("held-out real images", other, other_labels, kind="reference", family="reference")
    rec_codes = torch.cat([model.vq.encode(to_tensor(other[i: i + 250])) for i in range(0, len(other), 250)])
    score("VQ reconstructions of them", decode(model, rec_codes), other_labels, kind="reference", family="reference")

    labels = np.arange(args.samples) % NUM_CLASSES

    def settings(kw: dict) -> ZipARConfig:  # a row's keywords, completed with the demo model's defaults
        return resolve(model.defaults(), IMAGE_SIZE // model.pixels_per_token, kw, warn=False)

    if not args.no_random:
        rnd = random_weight_model(model)
        out = sample(rnd, settings(configs[0]), args.samples, args.batch, args.seed)
        score("random weights, ntp", decode(model, out["codes"]), labels, kind="reference", family="reference",
              passes=float(np.mean(out["passes"])))
    ntp_latency = None
    for kw in configs:
        cfg = settings(kw)
        out = sample(model, cfg, args.samples, args.batch, args.seed)
        t = time.perf_counter()
        images = decode(model, out["codes"])
        seconds_1000 = (out["seconds_sampling"] + time.perf_counter() - t) * 1000 / args.samples
        lat = latency(model, cfg, args.latency_reps, args.seed) if args.latency_reps else None
        if get_mode(cfg.mode).baseline:
            ntp_latency = ntp_latency or lat
        score(row_name(kw), images, labels, kind=cfg.mode, family=family(kw), config=kw,
              passes=float(np.mean(out["passes"])), passes_min=min(out["passes"]), passes_max=max(out["passes"]),
              acceptance=out["acceptance"], seconds_per_image_batch1=lat,
              speedup_batch1=(ntp_latency / lat) if lat and ntp_latency else None, seconds_per_1000=seconds_1000)

    meta = {"command": "python -m zipar.demo_model.evaluate " + " ".join(argv if argv is not None else _argv()),
            "gpt": args.gpt or "shipped", "samples": args.samples, "seed": args.seed, "batch": args.batch,
            "real": args.real,
            "sampling": {k: configs[0][k] for k in ("guidance_scale", "temperature", "top_k")},
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "seconds_sampling_total": time.perf_counter() - t_all}
    if args.features:
        save_features(args.features, rows, per_image, real_feats, real_labels, meta, images_of)
    return finish(rows, per_image, real_feats, real_labels, meta, images_of, args)


def finish(rows, per_image, real_feats, real_labels, meta, images_of, args) -> dict:
    """Intervals, comparison, table, JSON and pictures from scored rows."""
    t = time.perf_counter()
    ref = [r for r in rows if r["kind"] == "reference"]
    gen = [r for r in rows if r["kind"] != "reference"]
    for r in gen:  # the window the schedule used (ntp, sjd: the grid width)
        r["window"] = ZipARConfig(**r["config"]).window_for(IMAGE_SIZE // 2)
    score_rows(ref, per_image, real_feats, real_labels, args.resamples)
    boot = score_rows(gen, per_image, real_feats, real_labels, args.resamples)
    fam_a, _, fam_b = args.compare.partition(":")
    comparison = compare_at_equal_passes(gen, boot, fam_a, fam_b) if boot is not None else []
    jacobi = compare_with_base(gen, boot) if boot is not None else []
    meta = {**meta, "resamples": args.resamples, "ci_level": 0.95, "compare": args.compare,
            "seconds_bootstrap": round(time.perf_counter() - t, 1)}
    ntp = next((r for r in gen if r["kind"] in MODES and MODES[r["kind"]].baseline), None)
    text = "\n\n".join(t for t in (format_table(rows, ntp["passes"] if ntp else None, meta),
                                    format_comparison(comparison), format_jacobi(jacobi)) if t)
    print()
    print(text)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    result = {"meta": meta, "rows": clean, "comparison": comparison, "jacobi_vs_base": jacobi}
    if args.json:
        write_json(args.json, result)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot_fd_vs_passes(clean, args.plot, meta)
    if args.ntp_grid and ntp is not None:
        labels = per_image[ntp["name"]][0]
        save_class_grid(images_of[ntp["name"]], labels[: len(images_of[ntp["name"]])], args.ntp_grid,
                        title=f"{ntp['name']}, guidance {meta['sampling']['guidance_scale']}: the first 10 samples "
                              "of each class")
    if args.samples_png:
        save_rows([(r["name"], images_of[r["name"]][:20]) for r in rows], args.samples_png)
    return result


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


# ------------------------------------------------------------------------------------------------------
# Per-image data on disk (for --rescore)


def save_features(path, rows, per_image, real_feats, real_labels, meta, images_of) -> None:
    arrays = {"real_feats": real_feats.astype(np.float32), "real_labels": real_labels}
    for i, r in enumerate(rows):
        labels, pred, feats = per_image[r["name"]]
        arrays[f"labels_{i}"], arrays[f"pred_{i}"], arrays[f"feats_{i}"] = labels, pred, feats.astype(np.float32)
        arrays[f"images_{i}"] = images_of[r["name"]]
    np.savez_compressed(path, rows=json.dumps(rows), meta=json.dumps(meta), **arrays)
    print(f"saved per-image predictions and features to {path}")


def load_features(path):
    """Features are stored as float32: FD values agree with the run that wrote them to ~1e-4."""
    z = np.load(path)
    rows, meta = json.loads(str(z["rows"])), json.loads(str(z["meta"]))
    per_image = {r["name"]: (z[f"labels_{i}"], z[f"pred_{i}"], z[f"feats_{i}"].astype(np.float64))
                 for i, r in enumerate(rows)}
    images = {r["name"]: z[f"images_{i}"] for i, r in enumerate(rows)}
    return rows, per_image, z["real_feats"].astype(np.float64), z["real_labels"], meta, images


def merge_features(paths: list[str]):
    """The rows of several --features files as one run: the same protocol (samples, seeds, real images) is
    required, and a row present in more than one file must have identical per-image predictions."""
    rows, per_image, real_feats, real_labels, meta, images = load_features(paths[0])
    for path in paths[1:]:
        r2, p2, f2, l2, m2, i2 = load_features(path)
        same = ("samples", "seed", "real", "sampling")

        def protocol(m):  # files written before the seed was recorded used the default seed, 0
            return {k: m.get(k, 0 if k == "seed" else None) for k in same}

        if protocol(meta) != protocol(m2) or not np.array_equal(l2, real_labels):
            raise SystemExit(f"--rescore: {path} was made with another protocol than {paths[0]} "
                             f"({', '.join(same)} must match)")
        for r in r2:
            name = r["name"]
            if name in per_image:
                if not np.array_equal(per_image[name][1], p2[name][1]):
                    raise SystemExit(f"--rescore: row {name!r} differs between {paths[0]} and {path}")
                continue
            rows.append(r)
            per_image[name], images[name] = p2[name], i2[name]
    return rows, per_image, real_feats, real_labels, meta, images


# ------------------------------------------------------------------------------------------------------
# Text


def _ci(value: float, ci, pct: bool = False) -> str:
    if pct:
        return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"
    return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def format_table(rows: list[dict], ntp_passes: float | None, meta: dict) -> str:
    side = IMAGE_SIZE // 2
    lines = [f"Demo model, {side}x{side} tokens ({IMAGE_SIZE}x{IMAGE_SIZE} px), guidance "
             f"{meta['sampling']['guidance_scale']}, {meta['samples']} samples per row, FD against {meta['real']} "
             f"held-out real images, 95% bootstrap intervals ({meta.get('resamples', RESAMPLES)} resamples), "
             f"torch threads: {meta['threads']}.", "",
             "| decoding | passes | of NTP | s/image (batch 1) | speed-up | s/1000 images (batch "
             f"{meta['batch']}) | accuracy [95% CI] | FD [95% CI] |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc, fd = _ci(r["accuracy"], r["accuracy_ci"], pct=True), _ci(r["fd"], r["fd_ci"])
        if r["kind"] == "reference":
            passes = f"{r['passes']:.0f}" if r.get("passes") else ""
            lines.append(f"| *{r['name']}* | {passes} | | | | | {acc} | {fd} |")
            continue
        lat = "" if r.get("seconds_per_image_batch1") is None else f"{r['seconds_per_image_batch1']:.3f}"
        sp = "" if r.get("speedup_batch1") is None else f"{r['speedup_batch1']:.2f}x"
        passes = f"{r['passes']:.0f}" if float(r["passes"]).is_integer() else f"{r['passes']:.1f}"
        share = f"{r['passes'] / ntp_passes:.0%}" if ntp_passes else ""
        lines.append(f"| {r['name']} | {passes} | {share} | {lat} | {sp} | "
                     f"{r['seconds_per_1000']:.0f} | {acc} | {fd} |")
    return "\n".join(lines)


def _diff_cells(d: dict) -> str:
    """'FD a - b | accuracy a - b | FD verdict' cells of a paired difference, with their intervals."""
    fd, acc = d["fd_diff"], d["accuracy_diff"]
    return (f"{fd['value']:+.1f} [{fd['ci'][0]:+.1f}, {fd['ci'][1]:+.1f}] | {acc['value']:+.1%} "
            f"[{acc['ci'][0]:+.1%}, {acc['ci'][1]:+.1%}] | {verdict(fd)}")


def format_comparison(comparison: list[dict]) -> str:
    if not comparison:
        return ""
    lines = ["Paired comparison at equal passes (a - b; FD < 0 or accuracy > 0 favours a; 95% bootstrap intervals):",
             "", "| a | passes | b | passes | FD a - b | accuracy a - b | FD verdict |", "|---|---:|---|---:|---:|---:|---|"]
    for c in comparison:
        for kind in ("nearest", "interpolated"):
            if kind not in c:
                continue
            d = c[kind]
            pb = f"{d['passes_b']:.0f}" if kind == "nearest" else f"{c['passes_a']:.1f} (interpolated)"
            lines.append(f"| {c['a']} | {c['passes_a']:.1f} | {d['b']} | {pb} | {_diff_cells(d)} |")
    return "\n".join(lines)


def format_jacobi(jacobi: list[dict]) -> str:
    if not jacobi:
        return ""
    lines = [("Jacobi drafts against the schedule they draft for (a - b, paired; FD < 0 or accuracy > 0 favours a; "
              "95% bootstrap intervals):"), "",
             "| a | passes | b | passes | passes a / b | FD a - b | accuracy a - b | FD verdict |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for c in jacobi:
        lines.append(f"| {c['a']} | {c['passes_a']:.1f} | {c['b']} | {c['passes_b']:.0f} | {c['pass_ratio']:.2f} | "
                     f"{_diff_cells(c)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
# Pictures


def _matplotlib():
    """matplotlib with its file backend, or the error that says how to get it (checked before a run)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit('--plot needs matplotlib: pip install "zipar[eval]" (or pip install matplotlib), '
                         "or leave out --plot") from None
    matplotlib.use("Agg")
    return matplotlib


def plot_fd_vs_passes(rows: list[dict], path: str, meta: dict | None = None) -> None:
    """FD (left) and accuracy (right) against passes per image, one line per family, 95% CI bars;
    reference rows (real images, VQ reconstructions) as horizontal lines. Needs matplotlib."""
    matplotlib = _matplotlib()
    import matplotlib.pyplot as plt

    gen = [r for r in rows if r["kind"] != "reference"]
    fams = list(dict.fromkeys(r["family"] for r in gen))
    markers = {"ntp": "*", "fixed": "o", "adaptive": "s"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in ((axes[0], "fd", "FD to held-out real images (lower is better)"),
                           (axes[1], "accuracy", "class accuracy (higher is better)")):
        for fam in fams:
            rs = sorted((r for r in gen if r["family"] == fam), key=lambda r: r["passes"])
            x = [r["passes"] for r in rs]
            y = np.array([r[key] for r in rs])
            ci = np.array([r[f"{key}_ci"] for r in rs])
            err = np.stack([np.clip(y - ci[:, 0], 0, None), np.clip(ci[:, 1] - y, 0, None)])
            mode = fam.partition(", ")[0]
            ls = "--" if "paper" in fam else "-"
            baseline = get_mode(mode).baseline
            ax.errorbar(x, y, yerr=err, marker=markers.get(mode, "^"), ms=9 if baseline else 5, ls=ls,
                        capsize=3, label=family_label(fam))
            if key == "fd":
                for r in rs:  # each point names its window (sjd: its draft length)
                    if not baseline and r.get("window") is not None:
                        length = r["config"].get("draft_length", Defaults.draft_length)
                        text = str(r["window"]) if get_mode(mode).window_name else f"L={length}"
                        ax.annotate(text, (r["passes"], r[key]), textcoords="offset points", xytext=(4, 4),
                                    fontsize=7)
        for r in rows:
            if r["kind"] == "reference" and "random" not in r["name"]:
                ax.axhline(r[key], color="grey", lw=0.8, ls=":")
                ax.annotate(r["name"], (ax.get_xlim()[1], r[key]), fontsize=7, color="grey", xytext=(-2, 2),
                            textcoords="offset points", ha="right")
        ax.set_xlabel("forward passes per image (prefill included)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key == "accuracy":
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[0].legend(fontsize=8)
    if meta:
        fig.suptitle(f"Demo model: {meta['samples']} samples per point, guidance {meta['sampling']['guidance_scale']}, "
                     f"95% bootstrap intervals (numbers: window s / s_min; L: sjd draft length)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"saved {path}")


def save_class_grid(images: np.ndarray, labels: np.ndarray, path: str, per_class: int = 10, scale: int = 3,
                    title: str | None = None) -> None:
    """One row per class: the first ``per_class`` images of that class, upscaled, class name on the left."""
    from PIL import Image, ImageDraw, ImageFont

    from .dataset import grid_image

    per_class = min([per_class] + [int((labels == c).sum()) for c in range(NUM_CLASSES)])
    if per_class == 0:
        raise ValueError("need at least one image of every class")
    order = [np.flatnonzero(labels == c)[:per_class] for c in range(NUM_CLASSES)]
    grid = grid_image(images[np.concatenate(order)], per_class, pad=4, scale=scale)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    label_w, top = 190, 30 if title else 0
    canvas = Image.new("RGB", (grid.shape[1] + label_w, grid.shape[0] + top), "white")
    canvas.paste(Image.fromarray(grid), (label_w, top))
    draw = ImageDraw.Draw(canvas)
    cell = IMAGE_SIZE * scale + 4
    for c, name in enumerate(CLASSES):
        draw.text((8, top + 4 + c * cell + cell // 2 - 10), f"{c} {name}", fill="black", font=font)
    if title:
        draw.text((8, 6), title, fill="black", font=font)
    canvas.save(path)
    print(f"saved {path}")


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
