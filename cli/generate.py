"""``zipar generate``: images of one prompt or class to PNG files, through :class:`ZipARPipeline`.

Everything is checked before the model loads where the model's facts allow (``runner.preflight``), the
output folder is created and proved writable first, and images are decoded in batches of
``--batch-size`` (written as each batch finishes), after a memory estimate. The PNG metadata (text chunk
``zipar``, JSON) records what reproduces the image: model files, dtype, device type, condition and
negative prompt, seed, every resolved setting, the batch it was made in, versions.
``zipar generate --from-png FILE`` makes that image again.
"""
from __future__ import annotations

import inspect
import sys

from .common import (
    count,
    device_of,
    duration,
    layout_matters,
    model_args,
    positive_int,
    setting_args,
    settings_of,
    warn,
)
from .outputs import OutputError, image_paths, png_meta_of, save_png
from .runner import decode, image_meta, load_checked, memory_plan, preflight
from .source import resolve_source

DERIVED = ("family", "rows", "cols")  # settings-record entries that follow from the others


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="images of one prompt or class to PNG files (settings in PNG metadata)")
    model_args(p)
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--prompt", help="text prompt (text-to-image models; Lumina-mGPT 2.0's dual-panel tasks start it "
                                       "with <depth>, <canny>, <hed> or <openpose>)")
    cond.add_argument("--class-label", type=int,
                      help="class id, for class-conditional models, in the model's own range (LlamaGen c2i: ImageNet "
                           "0..999; the demo model: its shape classes, which zipar demo lists); refused outside it")
    cond.add_argument("--from-png", metavar="FILE",
                      help="make the image FILE holds again: its model, condition, seed and settings from its metadata "
                           "(--model, -o and decoding flags given here override it)")
    p.add_argument("-n", "--num-images", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward batch (memory)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("-o", "--output", default="zipar.png",
                   help="PNG path; with several images NAME-0.png, NAME-1.png, ...; a folder (DIR/) gets zipar.png")
    setting_args(p)
    p.set_defaults(func=run)


def run(args) -> None:
    settings = settings_of(args)
    batch_plan = None
    if args.from_png:
        settings, batch_plan = restore(args, settings)
    if args.prompt is None and args.class_label is None:
        raise ValueError("give --prompt, --class-label or --from-png")
    source = resolve_source(args)  # a missing local path fails here
    n = args.num_images
    condition = {"prompt": args.prompt} if args.prompt is not None else {"class_label": args.class_label}
    cond_key, cond_value = ("prompt", args.prompt) if args.prompt is not None else ("class_labels", args.class_label)
    batch = min(args.batch_size, n)
    what = f"a batch of {batch} images"
    preflight(source, args, {cond_key: [cond_value]}, settings, batch, what)  # before the weights load
    paths = image_paths(args.output, n)  # the folder exists and is writable before anything loads
    device = device_of(args)
    pipe, checked = load_checked(source, args, {cond_key: [cond_value]}, settings, device)
    if batch_plan is not None:
        settings = _known_settings(pipe, settings)
        return _reproduce(pipe, checked, source, args, settings, condition, cond_key, batch_plan, device, paths[0])
    est = memory_plan(checked, batch, device, what)
    pipe.set_progress_bar_config(disable=False)
    n_batches = -(-n // batch)
    if n_batches > 1:
        print(f"{count(n, 'image')} in {count(n_batches, 'batch', 'batches')} of {batch} ({paths[0]} .. {paths[n - 1]})",
              file=sys.stderr)
    passes = seconds = 0.0
    for start in range(0, n, batch):
        seeds = [args.seed + i for i in range(start, min(n, start + batch))]
        conditions = [cond_value] * len(seeds)
        out = decode(pipe, {cond_key: conditions}, seeds, device, settings, args, est)
        layout = {"size": batch, "conditions": conditions, "seeds": seeds}
        for b, seed in enumerate(seeds):
            save_png(out.images[b], paths[start + b],
                     image_meta(source, args, checked, device, out, b, condition_with(condition, settings), seed,
                                layout))
            print(paths[start + b])
        passes, seconds = out.stats.passes, seconds + out.stats.seconds
        tokens = out.stats.tokens
        if start == 0 and n_batches > 1:
            print(f"batch 1 of {n_batches}: {seconds:.1f} s; at this rate the rest takes about "
                  f"{duration(seconds * (n - batch) / batch)}", file=sys.stderr)
    print(f"{passes} forward passes for {tokens} tokens per image ({tokens / max(passes, 1):.2f} tokens/pass), "
          f"{seconds:.2f} s", file=sys.stderr)


def condition_with(condition: dict, settings: dict) -> dict:
    """The condition record: prompt or class label, and the negative prompt when one was given."""
    neg = settings.get("negative_prompt")
    return {**condition, **({"negative_prompt": neg} if neg is not None else {})}


# -- --from-png ----------------------------------------------------------------------------------------

def restore(args, flags: dict) -> tuple[dict, dict]:
    """Fill ``args`` from a PNG's metadata (what the command line gave explicitly wins); the settings to use and
    the batch the image was made in."""
    if args.prompt is not None or args.class_label is not None:
        raise ValueError("--from-png takes the condition from the image; leave --prompt / --class-label out")
    if args.num_images != 1:
        raise ValueError("--from-png makes one image: leave -n out")
    meta = png_meta_of(args.from_png)
    model = meta["model"]
    if not args.model and not args.llamagen_gpt:
        args.model = model["source"]
    for key in ("vq", "t5", "vqgan"):
        if getattr(args, key) is None and model.get(key) and (args.model == model["source"]):
            setattr(args, key, model[key])
    for key, value in model.get("options", {}).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.dtype == "auto":
        args.dtype = meta["dtype"]
    cond = meta["condition"]
    if "prompt" in cond:
        args.prompt = cond["prompt"]
    else:
        args.class_label = cond["class_label"]
    args.seed = meta["seed"]
    settings = {k: v for k, v in meta["settings"].items() if k not in DERIVED}
    if cond.get("negative_prompt") is not None:
        settings["negative_prompt"] = cond["negative_prompt"]
    settings.update(flags)
    return settings, {**meta["batch"], "layout_matters": meta.get("layout_matters", True),
                      "device_type": meta.get("device_type")}


def _known_settings(pipe, settings: dict) -> dict:
    params = set(inspect.signature(type(pipe).__call__).parameters)
    unknown = sorted(set(settings) - params)
    if unknown:
        raise ValueError(f"--from-png: the image records settings this zipar does not know ({', '.join(unknown)}); "
                         "make it again with the zipar version that wrote it")
    return settings


def _reproduce(pipe, checked, source, args, settings, condition, cond_key, plan, device, path) -> None:
    """Decode the image again: alone where batch composition cannot change it, else in its own batch."""
    slot, seeds, conditions = plan["slot"], plan["seeds"], plan["conditions"]
    device_type = device.split(":")[0]
    if plan.get("device_type") and plan["device_type"] != device_type:
        warn(f"the image was made on {plan['device_type']}, this run is on {device_type}: kernels differ, so the "
             "image may differ slightly")
    if plan["layout_matters"] or layout_matters(checked.facts["dtype"], device_type):
        print(f"decoding its batch of {len(seeds)} again (slot {slot}): in {checked.facts['dtype']} on "
              f"{plan.get('device_type') or device_type} an image may depend on the batch it was made in", file=sys.stderr)
    else:
        seeds, conditions, slot = [seeds[slot]], [conditions[slot]], 0
    if seeds[slot] != args.seed:
        raise OutputError(f"--from-png {args.from_png}: its batch record does not match its seed")
    out = decode(pipe, {cond_key: conditions}, seeds, device, settings, args)
    layout = {"size": plan["size"], "conditions": plan["conditions"], "seeds": plan["seeds"]}
    meta = image_meta(source, args, checked, device, out, slot, condition_with(condition, settings), args.seed, layout)
    meta["batch"]["slot"] = plan["slot"]
    save_png(out.images[slot], path, meta)
    print(path)
