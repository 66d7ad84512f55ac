"""``zipar generate``: images of one prompt or class to PNG files, through :class:`ZipARPipeline`.

The PNG metadata (text chunk ``zipar``, JSON) records the model, the condition, the seed and every
decoding setting.
"""
from __future__ import annotations

import os
import sys

from .common import (
    device_of,
    fail_clearly,
    generators,
    load_pipeline,
    model_args,
    png_meta,
    save_png,
    setting_args,
    settings_of,
    speed_of,
)


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="images of one prompt or class to PNG files (settings in PNG metadata)")
    model_args(p)
    cond = p.add_mutually_exclusive_group(required=True)
    cond.add_argument("--prompt", help="text prompt (text-to-image models)")
    cond.add_argument("--class-label", type=int, help="class id (class-conditional LlamaGen, ImageNet 0..999)")
    p.add_argument("-n", "--num-images", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("-o", "--output", default="zipar.png",
                   help="PNG path; with several images NAME-0.png, NAME-1.png, ... (default zipar.png)")
    setting_args(p)
    p.set_defaults(func=run)


@fail_clearly
def run(args) -> None:
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    device = device_of(args)
    pipe = load_pipeline(args, device)
    pipe.set_progress_bar_config(disable=False)
    seeds = [args.seed + i for i in range(args.num_images)]
    condition = {"prompt": args.prompt} if args.prompt is not None else {"class_label": args.class_label}
    call = {"prompt": args.prompt} if args.prompt is not None else {"class_labels": [args.class_label]}
    out = pipe(**call, num_images_per_prompt=args.num_images, generator=generators(device, seeds), **settings_of(args),
               **speed_of(args))
    stem, ext = os.path.splitext(args.output)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    for b, (image, seed) in enumerate(zip(out.images, seeds)):
        path = args.output if args.num_images == 1 else f"{stem}-{b}{ext or '.png'}"
        save_png(image, path, png_meta(args, out, b, seed, condition))
        print(path)
    s = out.stats
    print(f"{s.passes} forward passes for {s.tokens} tokens per image ({s.tokens_per_pass:.2f} tokens/pass), "
          f"{s.seconds:.2f} s", file=sys.stderr)
