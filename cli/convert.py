"""``zipar convert SRC DST``: write a model once in the layout that loads fastest and needs no pickle.

SRC is anything the loaders take (a folder or hub id in an original publisher's layout or transformers',
a LlamaGen checkpoint file or folder). ``--quantize nf4|fp4|int8`` writes the transformer quantized once (transformers'
bitsandbytes format; LlamaGen: the packed layers in its safetensors, the setting in their metadata), which every face
then loads as saved. DST is a folder in **transformers' own layout** for Janus-Pro, Emu3-Gen
and Lumina-mGPT (``save_pretrained``: safetensors, ``config.json``, generation config, tokenizer; Lumina also
``vqgan.safetensors`` with its config in the metadata, Lumina-mGPT 2.0 ``movqgan.safetensors``), and a folder of
``.safetensors`` files for LlamaGen.

Why not a ZipAR pipeline folder (``model_index.json``)? A transformers folder is what every face reads
directly (``load_model``, ``ZipARPipeline.from_pretrained``, the ComfyUI loader, ``--model``) and what
transformers and other tools read too; a pipeline folder would only load through diffusers. Converting once
saves the in-memory conversion on every load (Emu3's tokenizer alone takes seconds to rebuild) and drops the
pickles (Janus' ``.bin`` shards, Chameleon's ``vqgan.ckpt``, MoVQGAN's ``movqgan_270M.ckpt``).

No torch is imported until the command runs.
"""
from __future__ import annotations

import os

DTYPES = ("keep", "float32", "bfloat16", "float16")
DESCRIPTION = ("SRC is anything the loaders take: a folder or hub id in an original publisher's layout or transformers', "
               "a LlamaGen checkpoint file or folder, or 'demo'. DST becomes a folder in transformers' own layout "
               "(safetensors, config.json, generation config, tokenizer; Lumina-mGPT also vqgan.safetensors) for "
               "Janus-Pro, Emu3-Gen and Lumina-mGPT, and a folder of .safetensors files for LlamaGen. Every face loads "
               "it with no conversion and no pickle.")


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="write a model once in transformers' layout (safetensors, no pickles)",
                       description=DESCRIPTION)
    p.add_argument("src", help="model folder, hub id or LlamaGen checkpoint file, in any layout ZipAR loads, or 'demo' "
                               "(the embedded demo model)")
    p.add_argument("dst", help="new (or empty) folder to write")
    p.add_argument("--dtype", default="keep", choices=DTYPES, help="weights' dtype (default: as in SRC)")
    from .common import quantize_arg

    quantize_arg(p)
    p.add_argument("--vision-tokenizer", help="Emu3-VisionTokenizer folder or hub id (BAAI's Emu3-Gen layout)")
    p.add_argument("--vqgan", help="Chameleon vqgan.ckpt file or folder (Lumina-mGPT), or movqgan_270M.ckpt "
                                   "(Lumina-mGPT 2.0)")
    p.add_argument("--vq", "--llamagen-vq", dest="vq", help="LlamaGen VQ checkpoint, if not beside the GPT file")
    p.add_argument("--t5", help="FLAN-T5-XL folder (text-to-image LlamaGen)")
    p.add_argument("--image-size", type=int, help="LlamaGen training size, when the GPT file name does not say")
    p.add_argument("--n-head", type=int, help="LlamaGen heads, for a GPT file that matches no preset")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..zipar_core.models.registry import builtin_path

    src, dst = builtin_path(args.src) or os.fspath(args.src), os.fspath(args.dst)
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise ValueError(f"{dst} exists and is not an empty folder: give a new folder to write the converted model to")
    if os.path.exists(src) and os.path.abspath(dst) == os.path.abspath(src):
        raise ValueError("DST must be another folder than SRC")
    import torch

    from ..zipar_core.models import load_model

    options = {k: v for k, v in (("vision_tokenizer", args.vision_tokenizer), ("vqgan", args.vqgan),
                                 ("vq_path", args.vq), ("t5_path", args.t5), ("image_size", args.image_size),
                                 ("n_head", args.n_head)) if v}
    dtype = None if args.dtype == "keep" else getattr(torch, args.dtype)
    quantize = None if args.quantize in (None, "none") else args.quantize
    adapter = load_model(src, torch_dtype=dtype, device="cpu", quantization=quantize, **options)
    names = llamagen_names(src, args.vq) if adapter.family == "llamagen" else {}
    written = adapter.save_pretrained(dst, **names)
    how = f", quantized {quantize} (loads as saved)" if quantize else ""
    print(f"zipar convert: wrote {adapter.family} model to {dst}{how}: {', '.join(written)}")


def llamagen_names(src: str, vq: str | None) -> dict:
    """Keep the release's file names (c2i_L_384, vq_ds16_c2i): the loaders read the sizes from them too."""
    from ..zipar_core.model_files import llamagen_parts

    stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    gpt, vqs, _ = llamagen_parts(folder)
    names = {}
    if os.path.isfile(src):
        names["gpt_name"] = stem(src)
    elif len(gpt) == 1:
        names["gpt_name"] = stem(gpt[0])
    if vq or len(vqs) == 1:
        names["vq_name"] = stem(vq or vqs[0])
    return names
