"""``zipar sample``: a whole evaluation set into a folder, through :class:`ZipARPipeline`.

Every line of a prompt file, or every class of a list, each ``--images-per-prompt`` times, one
``{index:06d}.png`` per image, then packed into an ``.npz`` (``arr_0``: uint8 N x H x W x 3, the layout
FID evaluators read). Image ``i`` uses the seed ``seed + i`` and is decoded in batch ``i // batch_size``.

- Checked first: every argument against the model's facts before anything is written and, for LlamaGen,
  before the weights load; the output folder is created and proved writable before loading.
- One set per folder: ``zipar_sample.json`` holds the set's identity, everything that changes its pixels
  (the model's files, architecture and options, dtype, device type, the conditions, seeds and every
  resolved decoding setting, and where images depend on their batch, the batch size). A run whose
  identity differs is refused, naming each differing field with both values. Library versions are recorded
  too; a different version is a warning.
- Batches: in float32 on CPU an image is the same in any batch (tested), so a resumed run may use another
  ``--batch-size``. Elsewhere (bfloat16 / float16, or any dtype on a GPU) an image can depend on the batch
  it was decoded in, so the batch size is part of the identity and batch ``k`` is always the images
  ``k*B .. k*B+B-1``, decoded together, however the set is resumed or shared out.
- Resumable: images are written atomically and existing ones skipped; Ctrl-C stops with exit code 130.
- Shared: processes on one folder (a rerun, a second terminal, ``accelerate launch`` / torchrun ranks)
  claim images through claim files (``claims.py``) and never make one twice. Rank ``r`` of ``w`` starts with
  the batches ``k % w == r`` and then helps with the others. Whichever process finds the set complete packs
  the ``.npz``.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time

from ..zipar_core.files import atomic_write, check_space, png_bound, writable_folder
from .claims import Claims
from .common import (
    count,
    device_of,
    layout_matters,
    model_args,
    positive_int,
    setting_args,
    settings_of,
    versions,
    warn,
)
from .outputs import remove_dead_temps, save_png
from .runner import decode, image_meta, load_checked, memory_plan, preflight
from .source import fingerprint, model_options, resolve_source

STATE_FILE = "zipar_sample.json"
FORMAT = 2  # of the state file


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="an evaluation set into a folder and an .npz; resumable, shared between "
                                      "processes (accelerate launch, or several runs on one folder)")
    model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="text file, one prompt per non-empty line")
    src.add_argument("--classes", help="class ids: '0-999', '1,5,9' or '0-9,20'")
    p.add_argument("--images-per-prompt", type=positive_int, default=1,
                   help="images per prompt or class (e.g. 50 for FID-50k)")
    p.add_argument("--out", required=True, help="output folder (created with its parents)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward batch in each process")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--npz", default="samples.npz", help="file name of the packed set inside --out ('' to skip)")
    p.add_argument("--rank", type=int, help="this process's share (default: $RANK, set by accelerate launch)")
    p.add_argument("--world-size", type=int, help="number of processes (default: $WORLD_SIZE)")
    p.add_argument("--claim-timeout", type=positive_int, default=900,
                   help="seconds after which a claim of a process on another host that stopped refreshing it is taken "
                        "over (a claim of a dead process on this host is taken over at once)")
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
            lo, hi = (int(x) for x in part.split("-", 1)) if "-" in part[1:] else (int(part), int(part))
        except ValueError:
            raise ValueError(f"--classes: cannot read {part!r}; write ids and ranges like '0-999' or '1,5,9'") from None
        if hi < lo:
            raise ValueError(f"--classes: {part} is reversed; write {hi}-{lo}")
        out += range(lo, hi + 1)
    if not out:
        raise ValueError("--classes is empty")
    return out


def sample_items(args) -> tuple[str, list]:
    if args.prompts:
        try:
            with open(args.prompts, encoding="utf-8") as f:
                prompts = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise ValueError(f"--prompts {args.prompts}: cannot read it ({e.strerror or e})") from None
        if not prompts:
            raise ValueError(f"--prompts {args.prompts} has no prompts (one per non-empty line)")
        return "prompt", prompts
    return "class_label", parse_classes(args.classes)


def batches(total: int, size: int) -> list[list[int]]:
    """Batch k holds the indices k*size .. k*size+size-1 (the last one may be shorter)."""
    return [list(range(s, min(total, s + size))) for s in range(0, total, size)]


def share_order(n_batches: int, rank: int, world: int) -> list[int]:
    """Batch order of process ``rank`` of ``world``: its own share (k % world == rank), then the others."""
    own = [k for k in range(n_batches) if k % world == rank]
    return own + [k for k in range(n_batches) if k % world != rank]


def _rank_world(args) -> tuple[int, int]:
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", "0"))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1} (world size {world})")
    return rank, world


def image_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"{index:06d}.png")


# -- the set's identity --------------------------------------------------------------------------------

def identity(files: dict, args, checked, kind: str, items: list, device_type: str) -> dict:
    """Everything that changes the set's pixels. Every resolved decoding setting enters through the settings
    record (``out.settings``), so a setting added to the sampler enters unlisted; speed options do not."""
    facts = checked.facts
    ident = {"model": {"files": files, "options": model_options(args), "architecture": facts["architecture"]},
             "dtype": facts["dtype"], "device_type": device_type, "kind": kind, "items": items,
             "images_per_prompt": args.images_per_prompt, "seed": args.seed,
             "negative_prompt": args.negative_prompt, "settings": checked.record}
    # where images depend on their batch, the batch layout is part of the set; elsewhere any batch size resumes it
    ident["batch_size"] = args.batch_size if layout_matters(facts["dtype"], device_type) else "any"
    return ident


def _flat(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _short(v) -> str:
    if isinstance(v, list) and len(v) > 6:
        return f"[{', '.join(map(repr, v[:3]))}, ... {len(v)} in all]"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(old: dict, new: dict) -> list[str]:
    """'field: X in the folder, Y now' for every differing field (nested fields dotted)."""
    a, b = _flat(old), _flat(new)
    missing = object()
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out.append(f"{k}: {'(not set)' if va is missing else _short(va)} in the folder, "
                       f"{'(not set)' if vb is missing else _short(vb)} now")
    return out


def check_state(folder: str, ident: dict, write: bool) -> None:
    """The folder's set must be the one asked for, or resuming would mix two sets; ``write``: record it when the
    folder has none (atomically: the first process to link its file wins, the others compare with it)."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        if not write:
            return
        state = {"format": FORMAT, "identity": ident, "versions": versions(), "created": time.time()}
        tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1, sort_keys=True)
            try:
                os.link(tmp, path)  # fails if another process recorded the set first: then compare with it
                return
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    old = state.get("identity", state) if state.get("format") == FORMAT else state
    diff = differences(old, ident)
    if diff:
        raise ValueError(f"{folder} holds a different sample set; resuming would mix two sets. Differences:\n  "
                         + "\n  ".join(diff) + "\nUse a new --out folder, or the set's own arguments to resume")
    recorded = state.get("versions", {})
    for name, v in versions().items():
        if recorded.get(name) not in (None, v):
            warn(f"the set was started with {name} {recorded[name]}, this process has {v}: numerics may differ")


# -- the run -------------------------------------------------------------------------------------------

def run(args) -> None:
    kind, items = sample_items(args)
    source = resolve_source(args)  # a missing local path fails here
    rank, world = _rank_world(args)
    per = args.images_per_prompt
    total = len(items) * per
    folder = os.path.abspath(args.out)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--out {args.out}: is a file, not a folder")
    call = {"prompt": items} if kind == "prompt" else {"class_labels": items}
    settings = settings_of(args)
    what = f"a batch of {args.batch_size} images"
    device = device_of(args)
    device_type = device.split(":")[0]
    files = fingerprint(source)
    early = preflight(source, args, call, settings, args.batch_size, what)  # before the weights load
    if early is not None:
        check_state(folder, identity(files, args, early, kind, items, device_type), write=False)
    created = not os.path.isdir(folder)
    writable_folder(folder, "--out")
    remove_dead_temps(folder)  # what a process killed mid-write left
    tag = f"[rank {rank}/{world}]"
    missing = [i for i in range(total) if not os.path.isfile(image_path(folder, i))]
    print(f"{tag} {count(total, 'image')} in the set, {len(missing)} to make", file=sys.stderr)
    if missing:
        try:
            pipe, checked = load_checked(source, args, call, settings, device)
            check_state(folder, identity(files, args, checked, kind, items, device_type), write=True)
        except BaseException:
            if created and not os.listdir(folder):
                os.rmdir(folder)  # refused before anything was written: leave nothing behind
            raise
        est = memory_plan(checked, args.batch_size, device, what)
        made = _make(pipe, checked, source, args, folder, kind, items, total, rank, world, device, settings, est, tag)
        print(f"{tag} made {count(made, 'image')}", file=sys.stderr)
    npz = write_npz(folder, total, args.npz)
    if npz:
        print(npz)
    elif args.npz:
        left = sum(not os.path.isfile(image_path(folder, i)) for i in range(total))
        print(f"{tag} done; {left} images are still being made by other processes, the last one packs {args.npz}",
              file=sys.stderr)


def _make(pipe, checked, source, args, folder, kind, items, total, rank, world, device, settings, est, tag) -> int:
    """Make the missing images this process can claim; returns how many it wrote."""
    per, size = args.images_per_prompt, args.batch_size
    together = layout_matters(checked.facts["dtype"], device.split(":")[0])  # a batch is made whole
    claims = Claims(folder, stale_after=args.claim_timeout)
    log = os.path.join(folder, f"log-rank{rank}-of-{world}.jsonl")
    all_batches = batches(total, size)
    made = 0
    try:
        for k in share_order(len(all_batches), rank, world):
            todo = [i for i in all_batches[k] if not os.path.isfile(image_path(folder, i))]
            if not todo:
                continue
            if together:
                if not claims.take_all(todo):
                    continue
                run_on = all_batches[k]
            else:
                todo = [i for i in todo if claims.take(i)]
                run_on = todo
            todo = [i for i in todo if not os.path.isfile(image_path(folder, i))]  # finished while we claimed
            if not todo:
                claims.release_all()
                continue
            # the PNGs this batch writes must fit before it is decoded (a full disk found after minutes of work)
            check_space(folder, len(todo) * png_bound(checked.record["height"], checked.record["width"]),
                        f"batch {k} ({len(todo)} images)", "--out")
            conds = [items[i // per] for i in run_on]
            call = {"prompt": conds} if kind == "prompt" else {"class_labels": conds}
            t = time.perf_counter()
            out = decode(pipe, call, [args.seed + i for i in run_on], device, settings, args, est,
                         on_pass=claims.heartbeat)
            layout = {"size": size if together else len(run_on), "conditions": conds,
                      "seeds": [args.seed + i for i in run_on], "indices": run_on}
            for b, i in enumerate(run_on):
                if i in todo:
                    condition = {kind: conds[b], **({"negative_prompt": args.negative_prompt}
                                                    if args.negative_prompt is not None else {})}
                    meta = image_meta(source, args, checked, device, out, b, condition, args.seed + i, layout)
                    save_png(out.images[b], image_path(folder, i), {**meta, "index": i})
            claims.release_all()
            made += len(todo)
            line = {"indices": todo, "batch": k, "passes": out.stats.passes, "seconds": time.perf_counter() - t,
                    "host": socket.gethostname(), "pid": os.getpid()}
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            print(f"{tag} batch {k}: wrote {count(len(todo), 'image')} ({made} this run)", file=sys.stderr)
    except KeyboardInterrupt:
        left = sum(not os.path.isfile(image_path(folder, i)) for i in range(total))
        raise KeyboardInterrupt(f"{made} images written by this run, {left} of {total} missing; rerun the same command "
                                "to resume") from None
    finally:
        claims.release_all()
        try:
            remove_dead_temps(claims.dir)  # a claim's temporary file left by a process killed while writing it
            os.rmdir(claims.dir)  # gone once no process holds a claim
        except OSError:
            pass
    others = claims.claimed_by_others(range(total))
    if others:
        print(f"{tag} {count(others, 'image')} claimed by other processes", file=sys.stderr)
    return made


def write_npz(folder: str, total: int, name: str) -> str | None:
    """Pack 000000.png .. into ``name`` once all ``total`` images exist; None while some are missing."""
    import numpy as np
    from PIL import Image

    if not name or not all(os.path.isfile(image_path(folder, i)) for i in range(total)):
        return None
    arr = np.stack([np.asarray(Image.open(image_path(folder, i)).convert("RGB")) for i in range(total)])
    path = os.path.join(folder, name)
    check_space(folder, arr.nbytes + (1 << 20), f"packing {name} ({total} images)", "--out")

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=arr)
    atomic_write(path, write)
    return path
