"""Which files of a model folder are what, by name. No torch import: ComfyUI's loader lists its model
folders with these rules, and the loaders in ``models`` find a model's parts with the same ones.

LlamaGen ships a GPT checkpoint and a VQ tokenizer checkpoint (its name contains "vq") side by side and,
for text-to-image, a FLAN-T5 folder (its name contains "t5"). Some folders with a config.json are a part of
a model, never a model by themselves (BAAI's Emu3-VisionTokenizer): ``is_part_folder``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def is_checkpoint(name: str) -> bool:
    return name.lower().endswith(CHECKPOINT_SUFFIXES)


def is_vq_checkpoint(name: str) -> bool:
    """LlamaGen's VQ tokenizer: found by the loaders beside its GPT checkpoint, never a model by itself."""
    return is_checkpoint(name) and "vq" in name.lower()


def llamagen_parts(folder: str) -> tuple[list[str], list[str], list[str]]:
    """Names directly inside ``folder``, sorted: (GPT checkpoints, VQ checkpoints, T5 folders)."""
    entries = sorted(os.listdir(folder))
    files = [e for e in entries if is_checkpoint(e) and os.path.isfile(os.path.join(folder, e))]
    vq = [f for f in files if is_vq_checkpoint(f)]
    gpt = [f for f in files if f not in vq]
    t5 = [e for e in entries if "t5" in e.lower() and os.path.isdir(os.path.join(folder, e))]
    return gpt, vq, t5


# config.json model_type of folders that are a part of a model -> what it is and what to do with it
PART_MODEL_TYPES = {
    "Emu3VisionVQ": "Emu3-Gen's vision tokenizer (BAAI/Emu3-VisionTokenizer), a part of Emu3-Gen, not a model: put "
                    "it inside the Emu3-Gen folder as vision_tokenizer/ (or beside it) and load the Emu3-Gen folder",
}


def config_model_type(folder: str) -> str | None:
    """``model_type`` of a folder's config.json (None without one, or when it is unreadable)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def is_part_folder(folder: str) -> bool:
    """A folder whose config.json says it is a part of a model (listed and loaded only with its model)."""
    return config_model_type(folder) in PART_MODEL_TYPES


def is_hub_id(name: str) -> bool:
    """Whether ``name``, which is not on disk, can only be a hub id ("owner/name"); a path that looks local
    (absolute, ``./``, ``~``, several parts, or whose first part is a local folder) is a missing file instead."""
    name = os.fspath(name)
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") != 1 or os.sep != "/" and os.sep in name:
        return False
    owner, repo = name.split("/")
    return bool(owner and repo) and not os.path.isdir(owner)


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safetensors_metadata(path: str) -> dict:
    """The ``__metadata__`` of a safetensors file, read from its JSON header (no torch); {} when the file is
    missing or damaged (the loader says what is wrong when it reads the weights)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            return json.loads(f.read(n)).get("__metadata__") or {}
    except (OSError, ValueError, struct.error):
        return {}
