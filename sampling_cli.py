"""``zipar generate`` and ``zipar sample``: images from the command line through :class:`ZipARPipeline`.

``generate`` makes a few images of one prompt or class and writes PNG files whose metadata (text chunk
``zipar``, JSON) records the model, the condition, the seed and every decoding setting.

``sample`` makes a whole evaluation set (every line of a prompt file, or every class of a list, each
``--images-per-prompt`` times) into a folder, one ``{index:06d}.png`` per image, then packs them into an
``.npz`` (``arr_0``: uint8 N x H x W x 3, the layout FID evaluators read). Image ``i`` always uses the seed
``seed + i``, so the set does not depend on how it was split or batched. It is:

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

SETTINGS = ("mode", "window_size", "guidance_scale", "temperature", "top_k", "top_p", "paper_first_row", "height",
            "width", "negative_prompt")
STATE_FILE = "zipar_sample.json"


# -- arguments -----------------------------------------------------------------------------------------

def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="images of one prompt or class to PNG files (settings in PNG metadata)")
    _model_args(p)
    cond = p.add_mutually_exclusive_group(required=True)
    cond.add_argument("--prompt", help="text prompt (text-to-image models)")
    cond.add_argument("--class-label", type=int, help="class id (class-conditional LlamaGen, ImageNet 0..999)")
    p.add_argument("-n", "--num-images", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("-o", "--output", default="zipar.png",
                   help="PNG path; with several images NAME-0.png, NAME-1.png, ... (default zipar.png)")
    _setting_args(p)
    p.set_defaults(func=run_generate)

    p = sub.add_parser("sample", help="an evaluation set into a folder and an .npz; resumable, sharded over processes "
                                      "with accelerate launch")
    _model_args(p)
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
    _setting_args(p)
    p.set_defaults(func=run_sample)


def _model_args(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="a ZipAR pipeline folder (save_pretrained), a Janus-Pro / Emu3-Gen / Lumina-mGPT "
                                   "transformers folder or hub id, or a folder of LlamaGen checkpoint files")
    g.add_argument("--llamagen-gpt", help="LlamaGen GPT checkpoint file (c2i_L_384.pt, t2i_XL_stage2_512.pt, ...)")
    g.add_argument("--llamagen-vq", help="LlamaGen VQ checkpoint file (vq_ds16_c2i.pt / vq_ds16_t2i.pt)")
    g.add_argument("--t5", help="FLAN-T5-XL folder (text-to-image LlamaGen)")
    g.add_argument("--image-size", type=int, help="LlamaGen training size, when the GPT file name does not say")
    g.add_argument("--n-head", type=int, help="LlamaGen heads, for a GPT file that matches no preset")
    g.add_argument("--vqgan", help="Chameleon vqgan.ckpt file or folder (Lumina-mGPT), if not in the model folder")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    g.add_argument("--device", help="default: cuda:$LOCAL_RANK when CUDA is available, else cpu")


def _setting_args(p) -> None:
    g = p.add_argument_group("decoding (default: the pipeline's config, then the model family's own defaults)")
    g.add_argument("--mode", choices=["ntp", "fixed", "adaptive"])
    g.add_argument("--window", dest="window_size", type=int, help="ZipAR window s (adaptive: the minimum window)")
    g.add_argument("--cfg", "--guidance-scale", dest="guidance_scale", type=float)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--paper-first-row", action="store_true", default=None,
                   help="decode row 0 fully first (the authors' code; the paper's step counts)")
    g.add_argument("--height", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--negative-prompt")
    g = p.add_argument_group("speed (same images, not part of a sample set's settings)")
    g.add_argument("--compile", action="store_true", help="torch.compile the decoding steps")
    g.add_argument("--cuda-graphs", action="store_true", help="on CUDA: one CUDA graph per number of rows in flight")


# -- shared helpers --------------------------------------------------------------------------------------

def _settings(args) -> dict:
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}


def _speed(args) -> dict:
    return {"compile": args.compile, "cuda_graphs": args.cuda_graphs}


def _device(args) -> str:
    if args.device:
        return args.device
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def _model_name(args) -> str:
    return args.model or os.path.basename(args.llamagen_gpt or "")


def load_pipeline(args, device: str):
    """The pipeline the model arguments name, on ``device``, with its progress bar off."""
    import torch

    from .pipelines import ZipARPipeline

    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    if args.llamagen_gpt or args.llamagen_vq:
        if not (args.llamagen_gpt and args.llamagen_vq):
            raise ValueError("LlamaGen needs both --llamagen-gpt and --llamagen-vq")
        pipe = ZipARPipeline.from_llamagen_checkpoints(args.llamagen_gpt, args.llamagen_vq, args.t5,
                                                       image_size=args.image_size, n_head=args.n_head, dtype=dtype,
                                                       device=device)
    elif args.model:
        kw = {"dtype": dtype} if dtype is not None else {}
        if not os.path.isfile(os.path.join(args.model, "model_index.json")) and os.path.isdir(args.model):
            # an original release folder: transformers (Janus-Pro, Emu3-Gen, Lumina-mGPT) or LlamaGen files
            extra = {"vqgan": args.vqgan, "image_size": args.image_size, "n_head": args.n_head, "t5_path": args.t5}
            kw.update(device=device, **{k: v for k, v in extra.items() if v is not None})
        pipe = ZipARPipeline.from_pretrained(args.model, **kw)
    else:
        raise ValueError("give --model (a folder or hub id) or --llamagen-gpt and --llamagen-vq")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generators(device: str, seeds) -> list:
    import torch

    return [torch.Generator(torch.device(device).type).manual_seed(s) for s in seeds]


def save_png(image, path: str, meta: dict) -> None:
    """Write atomically (a temporary name, then a rename): a killed process never leaves a half image."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("zipar", json.dumps(meta, sort_keys=True))
    if meta.get("prompt"):
        info.add_text("prompt", meta["prompt"])
    tmp = f"{os.path.dirname(path) or '.'}/.{os.path.basename(path)}.{os.getpid()}.tmp"
    image.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)


def _meta(args, out, b: int, seed: int, condition: dict) -> dict:
    from . import __version__

    stats = out.stats
    return {"zipar": __version__, "model": _model_name(args), **condition, "seed": seed, **out.settings,
            "passes": stats.passes, "tokens": stats.tokens, "sample_passes": stats.sample_passes[b]}


def _fail_clearly(fn):
    def wrapped(args):
        try:
            return fn(args)
        except FileNotFoundError as e:  # the CLI reports ValueErrors without a traceback
            raise ValueError(str(e)) from e
    return wrapped


# -- generate ----------------------------------------------------------------------------------------------

@_fail_clearly
def run_generate(args) -> None:
    if args.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
    device = _device(args)
    pipe = load_pipeline(args, device)
    pipe.set_progress_bar_config(disable=False)
    seeds = [args.seed + i for i in range(args.num_images)]
    condition = {"prompt": args.prompt} if args.prompt is not None else {"class_label": args.class_label}
    call = {"prompt": args.prompt} if args.prompt is not None else {"class_labels": [args.class_label]}
    out = pipe(**call, num_images_per_prompt=args.num_images, generator=_generators(device, seeds), **_settings(args),
               **_speed(args))
    stem, ext = os.path.splitext(args.output)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    for b, (image, seed) in enumerate(zip(out.images, seeds)):
        path = args.output if args.num_images == 1 else f"{stem}-{b}{ext or '.png'}"
        save_png(image, path, _meta(args, out, b, seed, condition))
        print(path)
    s = out.stats
    print(f"{s.passes} forward passes for {s.tokens} tokens per image ({s.tokens_per_pass:.2f} tokens/pass), "
          f"{s.seconds:.2f} s", file=sys.stderr)


# -- sample ------------------------------------------------------------------------------------------------

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


@_fail_clearly
def run_sample(args) -> None:
    kind, items = sample_items(args)
    if args.images_per_prompt < 1 or args.batch_size < 1:
        raise ValueError("--images-per-prompt and --batch-size must be >= 1")
    rank, world = _rank_world(args)
    per = args.images_per_prompt
    total = len(items) * per
    folder = args.out
    os.makedirs(folder, exist_ok=True)
    _check_state(folder, {"model": _model_name(args), "kind": kind, "items": items, "images_per_prompt": per,
                          "seed": args.seed, "settings": _settings(args)})
    todo = [i for i in shard(range(total), rank, world) if not os.path.isfile(image_path(folder, i))]
    tag = f"[rank {rank}/{world}]"
    print(f"{tag} {total} images in the set, {len(shard(range(total), rank, world))} in this share, {len(todo)} to make",
          file=sys.stderr)
    if todo:
        device = _device(args)
        pipe = load_pipeline(args, device)
        log = os.path.join(folder, f"log-rank{rank}-of-{world}.jsonl")
        done = 0
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start:start + args.batch_size]
            conds = [items[i // per] for i in batch]
            call = {"prompt": conds} if kind == "prompt" else {"class_labels": conds}
            t = time.perf_counter()
            out = pipe(**call, generator=_generators(device, [args.seed + i for i in batch]), **_settings(args),
                       **_speed(args))
            for b, (i, image) in enumerate(zip(batch, out.images)):
                save_png(image, image_path(folder, i), {**_meta(args, out, b, args.seed + i, {kind: conds[b]}),
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
