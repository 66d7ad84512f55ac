"""What ``zipar generate`` and ``zipar sample`` share: the model and decoding arguments, the argument types
that refuse bad numbers at once, and how a setting is spelled as a flag. Where the model comes from is
``source.py``; output files ``outputs.py``; memory ``memory.py``; a run of batches ``run_batches``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from ..zipar_core.config import DRAFT_COUPLINGS, DRAFT_INITS, DRAFT_VISIBILITIES
from ..zipar_core.modes import MODES, NAMES

# ZipAR settings a user can set on the command line: the ZipARPipeline.__call__ argument of each name.
SETTINGS = ("mode", "window", "draft_length", "draft_init", "draft_coupling", "draft_visibility", "guidance_scale",
            "temperature", "top_k", "top_p",
            "paper_first_row", "height", "width", "negative_prompt")
# Setting / argument names whose flag is not --name-with-dashes.
FLAGS = {"vq_path": "--vq", "t5_path": "--t5", "class_labels": "--class-label", "vqgan": "--vqgan",
         "torch_dtype": "--dtype", "dtype": "--dtype", "num_images_per_prompt": "--num-images",
         "gpt_path": "--model", "output": "-o/--output", "quantization": "--quantize"}


def flag(name: str) -> str:
    """The command-line spelling of a setting (``window`` -> ``--window``), for error messages."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


# -- argument types: a bad number is refused by argparse, before anything loads --------------------------

def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _whole(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"whole number >= {low}"
    return parse


positive_int = _whole(1)
nonnegative_int = _whole(0)


def model_args(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="'demo' (the embedded demo model), a ZipAR pipeline folder (save_pretrained), a "
                                   "Janus-Pro / Emu3-Gen / Lumina-mGPT / Lumina-mGPT 2.0 folder (as published, or "
                                   "transformers' layout) or hub id (owner/name), a folder of LlamaGen checkpoint "
                                   "files, or a LlamaGen GPT checkpoint file")
    g.add_argument("--vq", "--llamagen-vq", dest="vq",
                   help="LlamaGen VQ tokenizer file (vq_ds16_c2i.pt), when it is not the one beside the GPT file")
    g.add_argument("--llamagen-gpt", help=argparse.SUPPRESS)  # the old spelling of --model GPT_FILE
    g.add_argument("--t5", help="FLAN-T5-XL folder (text-to-image LlamaGen)")
    g.add_argument("--image-size", type=positive_int, help="LlamaGen training size, when the GPT file name does not say")
    g.add_argument("--n-head", type=positive_int, help="LlamaGen heads, for a GPT file that matches no preset")
    g.add_argument("--vqgan", help="Chameleon vqgan.ckpt file or folder (Lumina-mGPT), or movqgan_270M.ckpt or its "
                                   "folder (Lumina-mGPT 2.0), if not in or beside the model folder")
    g.add_argument("--vision-tokenizer", help="Emu3-VisionTokenizer folder or hub id (BAAI's Emu3-Gen layout), if "
                                              "neither inside nor beside the model folder")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype; auto: the checkpoint's (LlamaGen files and the demo model: float32)")
    quantize_arg(g)
    g.add_argument("--device", help="default: cuda:$LOCAL_RANK when CUDA is available, else cpu")


def quantize_arg(group) -> None:
    """``--quantize nf4|fp4|int8``: the transformer's linear layers through bitsandbytes (README, "Memory")."""
    from ..zipar_core.quantization import CHOICES

    group.add_argument("--quantize", choices=CHOICES, metavar="{" + ",".join(CHOICES) + "}",
                       help="the transformer's linear layers in 4-bit (nf4, fp4) or 8-bit (int8) weights through "
                            "bitsandbytes; the image head, embeddings, norms and the image decoder stay in --dtype. "
                            "A folder saved quantized loads as saved")


def setting_args(p) -> None:
    g = p.add_argument_group("decoding (default: the pipeline's config, then the model family's own defaults)")
    g.add_argument("--mode", choices=NAMES, help="; ".join(f"{m}: {MODES[m].help}" for m in NAMES).replace("`", ""))
    g.add_argument("--window", type=positive_int, help="ZipAR window s (adaptive: the minimum window)")
    g.add_argument("--draft-length", type=positive_int, help="sjd / zipar_sjd: draft tokens per chain")
    g.add_argument("--draft-init", choices=DRAFT_INITS, help="sjd / zipar_sjd: new drafts start random or spatial")
    g.add_argument("--draft-coupling", choices=DRAFT_COUPLINGS,
                   help="sjd / zipar_sjd: a draft left unverified is drawn again independently (none, as SJD), kept "
                        "when the distributions allow (maximal) or from the position's fixed noise (gumbel)")
    g.add_argument("--draft-visibility", choices=DRAFT_VISIBILITIES,
                   help="zipar_sjd: a query sees its own chain's drafts (chain) or also the row above's (rows)")
    g.add_argument("--cfg", "--guidance-scale", dest="guidance_scale", type=finite_float)
    g.add_argument("--temperature", type=finite_float)
    g.add_argument("--top-k", type=nonnegative_int)
    g.add_argument("--top-p", type=finite_float)
    g.add_argument("--paper-first-row", action="store_true", default=None,
                   help="decode row 0 fully first (the authors' code; the paper's step counts)")
    g.add_argument("--height", type=positive_int)
    g.add_argument("--width", type=positive_int)
    g.add_argument("--negative-prompt")
    g = p.add_argument_group("speed (same images, not part of a sample set's settings)")
    g.add_argument("--compile", action="store_true", help="torch.compile the decoding steps")
    g.add_argument("--cuda-graphs", action="store_true", help="on CUDA: one CUDA graph per number of rows in flight")


# -- shared helpers --------------------------------------------------------------------------------------

def settings_of(args) -> dict:
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}


def speed_of(args) -> dict:
    return {"compile": args.compile, "cuda_graphs": args.cuda_graphs}


def device_of(args) -> str:
    if args.device:
        return args.device
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def generators(device: str, seeds) -> list:
    import torch

    return [torch.Generator(torch.device(device).type).manual_seed(s) for s in seeds]


def layout_matters(dtype: str, device_type: str) -> bool:
    """Whether an image's tokens may depend on the batch it is decoded in. Exact batch invariance is tested
    in float32 / float64 on CPU (docs/design.md rule 4); in reduced precision, or on a GPU (whose kernels are
    chosen by the batch's shape), a row can round differently in another batch, so the batch an image was made
    in is part of what made it."""
    return not (dtype in ("float32", "float64") and device_type == "cpu")


def versions() -> dict:
    """Library versions that can change numerics (recorded; a difference is a warning, not a refusal)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"zipar": __version__}
    for name in ("torch", "transformers", "diffusers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '2 images'; '3 batches' with plural="batches"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2.1 h', '4.3 days'."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
