"""What ``zipar generate`` and ``zipar sample`` share: the model and decoding arguments, loading the
pipeline they name, PNG files with reproducible metadata, and how a setting is spelled as a flag.
"""
from __future__ import annotations

import json
import os

from ..zipar_core.config import DRAFT_INITS, MODES

# ZipAR settings a user can set on the command line: the ZipARPipeline.__call__ argument of each name.
SETTINGS = ("mode", "window", "draft_length", "draft_init", "guidance_scale", "temperature", "top_k", "top_p",
            "paper_first_row", "height", "width", "negative_prompt")
# Setting / argument names whose flag is not --name-with-dashes.
FLAGS = {"vq_path": "--llamagen-vq", "t5_path": "--t5", "class_labels": "--class-label", "vqgan": "--vqgan",
         "torch_dtype": "--dtype", "num_images_per_prompt": "--num-images"}


def flag(name: str) -> str:
    """The command-line spelling of a setting (``window`` -> ``--window``), for error messages."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def model_args(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="a ZipAR pipeline folder (save_pretrained), a Janus-Pro / Emu3-Gen / Lumina-mGPT "
                                   "folder or hub id (as published, or transformers' layout), or a folder of "
                                   "LlamaGen checkpoint files")
    g.add_argument("--llamagen-gpt", help="LlamaGen GPT checkpoint file (c2i_L_384.pt, t2i_XL_stage2_512.pt, ...)")
    g.add_argument("--llamagen-vq", help="LlamaGen VQ checkpoint file (vq_ds16_c2i.pt / vq_ds16_t2i.pt)")
    g.add_argument("--t5", help="FLAN-T5-XL folder (text-to-image LlamaGen)")
    g.add_argument("--image-size", type=int, help="LlamaGen training size, when the GPT file name does not say")
    g.add_argument("--n-head", type=int, help="LlamaGen heads, for a GPT file that matches no preset")
    g.add_argument("--vqgan", help="Chameleon vqgan.ckpt file or folder (Lumina-mGPT), if not in the model folder")
    g.add_argument("--vision-tokenizer", help="Emu3-VisionTokenizer folder or hub id (BAAI's Emu3-Gen layout), if "
                                              "neither inside nor beside the model folder")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    g.add_argument("--device", help="default: cuda:$LOCAL_RANK when CUDA is available, else cpu")


def setting_args(p) -> None:
    g = p.add_argument_group("decoding (default: the pipeline's config, then the model family's own defaults)")
    g.add_argument("--mode", choices=MODES, help="ntp, fixed (ZipAR), adaptive (ZipAR, speculative row starts), sjd "
                                                "(speculative Jacobi drafts, raster), zipar_sjd (ZipAR rows with drafts)")
    g.add_argument("--window", type=int, help="ZipAR window s (adaptive: the minimum window)")
    g.add_argument("--draft-length", type=int, help="sjd / zipar_sjd: draft tokens per chain")
    g.add_argument("--draft-init", choices=DRAFT_INITS, help="sjd / zipar_sjd: new drafts start random or spatial")
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

def settings_of(args) -> dict:
    return {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}


def speed_of(args) -> dict:
    return {"compile": args.compile, "cuda_graphs": args.cuda_graphs}


def device_of(args) -> str:
    if args.device:
        return args.device
    import torch

    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def model_name(args) -> str:
    return args.model or os.path.basename(args.llamagen_gpt or "")


def load_pipeline(args, device: str):
    """The pipeline the model arguments name, on ``device``, with its progress bar off."""
    import torch

    from ..pipelines import ZipARPipeline

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
            extra = {"vqgan": args.vqgan, "image_size": args.image_size, "n_head": args.n_head, "t5_path": args.t5,
                     "vision_tokenizer": getattr(args, "vision_tokenizer", None)}
            kw.update(device=device, **{k: v for k, v in extra.items() if v is not None})
        pipe = ZipARPipeline.from_pretrained(args.model, **kw)
    else:
        raise ValueError("give --model (a folder or hub id) or --llamagen-gpt and --llamagen-vq")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generators(device: str, seeds) -> list:
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


def png_meta(args, out, b: int, seed: int, condition: dict) -> dict:
    from .. import __version__

    stats = out.stats
    return {"zipar": __version__, "model": model_name(args), **condition, "seed": seed, **out.settings,
            "passes": stats.passes, "tokens": stats.tokens, "sample_passes": stats.sample_passes[b]}


def fail_clearly(fn):
    def wrapped(args):
        try:
            return fn(args)
        except FileNotFoundError as e:  # the CLI reports ValueErrors without a traceback
            raise ValueError(str(e)) from e
    return wrapped


