"""``zipar sample``: a whole evaluation set into a folder, through :class:`ZipARPipeline`.

Every line of a prompt file, or every class of a list, each ``--images-per-prompt`` times, one
``{index:06d}.png`` per image, then packed into an ``.npz`` (``arr_0``: uint8 N x H x W x 3, the layout
FID evaluators read). Image ``i`` always uses the seed ``seed + i``, so the set does not depend on how it
was split or batched. It is:

- resumable: an image is written to a temporary name and renamed when complete, and images that exist are
  skipped, so a killed run restarted with the same command finishes the set;
- sharded: under ``accelerate launch`` (or torchrun; both set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``),
  process ``r`` of ``w`` takes the indices ``i`` with ``i % w == r``: disjoint shares that cover the set.
  No collective communication is needed: each process writes its images, and whichever process finds the
  set complete when it finishes writes the ``.npz`` (atomically; the last one to finish always does).
"""
from __future__ import annotations

import json
import os
import sys
import time

from .common import (
    device_of,
    fail_clearly,
    generators,
    load_pipeline,
    model_args,
    model_name,
    png_meta,
    save_png,
    setting_args,
    settings_of,
    speed_of,
)

STATE_FILE = "zipar_sample.json"


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="an evaluation set into a folder and an .npz; resumable, sharded over processes "
                                      "with accelerate launch")
    model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="text file, one prompt per non-empty line")
    src.add_argument("--classes", help="class ids: '0-999', '1,5,9' or '0-9,20'")
    p.add_argument("--images-per-prompt", type=int, default=1, help="images per prompt or class (e.g. 50 for FID-50k)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward batch in each process")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--npz", default="samples.npz", help="file name of the packed set inside --out ('' to skip)")
    p.add_argument("--rank", type=int, help="this process's share (default: $RANK, set by accelerate launch)")
    p.add_argument("--world-size", type=int, help="number of processes (default: $WORLD_SIZE)")
    setting_args(p)
    p.set_defaults(func=run)


def parse_classes(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                out += range(lo, hi + 1)
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--classes: cannot read {part!r}; write ids and ranges like '0-999' or '1,5,9'") from None
    if not out:
        raise ValueError("--classes is empty")
    return out


def sample_items(args) -> tuple[str, list]:
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
        if not prompts:
            raise ValueError(f"{args.prompts} has no prompts (one per non-empty line)")
        return "prompt", prompts
    return "class_label", parse_classes(args.classes)


def shard(indices, rank: int, world: int) -> list[int]:
    """Process ``rank`` of ``world`` takes the indices i with i % world == rank."""
    return [i for i in indices if i % world == rank]


def _rank_world(args) -> tuple[int, int]:
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", "0"))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1} (world size {world})")
    return rank, world


def image_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"{index:06d}.png")


def _check_state(folder: str, state: dict) -> None:
    """The folder's sample set must be the one asked for, or resuming would mix two sets."""
    path = os.path.join(folder, STATE_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != state:
            diff = sorted(k for k in set(old) | set(state) if old.get(k) != state.get(k))
            raise ValueError(f"{folder} holds a different sample set (differs in {', '.join(diff)}); use a new --out "
                             "folder, or the same arguments to resume")
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # every process writes the same content; the rename is atomic


def write_npz(folder: str, total: int, name: str) -> str | None:
    """Pack 000000.png .. into ``name`` once all ``total`` images exist; None while some are missing."""
    import numpy as np
    from PIL import Image

    if not name or not all(os.path.isfile(image_path(folder, i)) for i in range(total)):
        return None
    arr = np.stack([np.asarray(Image.open(image_path(folder, i)).convert("RGB")) for i in range(total)])
    path = os.path.join(folder, name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, arr_0=arr)
    os.replace(tmp, path)
    return path


@fail_clearly
def run(args) -> None:
    kind, items = sample_items(args)
    if args.images_per_prompt < 1 or args.batch_size < 1:
        raise ValueError("--images-per-prompt and --batch-size must be >= 1")
    rank, world = _rank_world(args)
    per = args.images_per_prompt
    total = len(items) * per
    folder = args.out
    os.makedirs(folder, exist_ok=True)
    _check_state(folder, {"model": model_name(args), "kind": kind, "items": items, "images_per_prompt": per,
                          "seed": args.seed, "settings": settings_of(args)})
    todo = [i for i in shard(range(total), rank, world) if not os.path.isfile(image_path(folder, i))]
    tag = f"[rank {rank}/{world}]"
    print(f"{tag} {total} images in the set, {len(shard(range(total), rank, world))} in this share, {len(todo)} to make",
          file=sys.stderr)
    if todo:
        device = device_of(args)
        pipe = load_pipeline(args, device)
        log = os.path.join(folder, f"log-rank{rank}-of-{world}.jsonl")
        done = 0
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start:start + args.batch_size]
            conds = [items[i // per] for i in batch]
            call = {"prompt": conds} if kind == "prompt" else {"class_labels": conds}
            t = time.perf_counter()
            out = pipe(**call, generator=generators(device, [args.seed + i for i in batch]), **settings_of(args),
                       **speed_of(args))
            for b, (i, image) in enumerate(zip(batch, out.images)):
                save_png(image, image_path(folder, i), {**png_meta(args, out, b, args.seed + i, {kind: conds[b]}),
                                                        "index": i})
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"indices": batch, "passes": out.stats.passes,
                                    "seconds": time.perf_counter() - t}) + "\n")
            done += len(batch)
            print(f"{tag} {done}/{len(todo)}", file=sys.stderr)
    npz = write_npz(folder, total, args.npz)
    if npz:
        print(npz)
    elif args.npz:
        missing = sum(not os.path.isfile(image_path(folder, i)) for i in range(total))
        print(f"{tag} share done; {missing} images of other shares still missing, the last process packs {args.npz}",
              file=sys.stderr)
