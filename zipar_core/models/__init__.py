"""Model families behind the ZipAR sampler, and ``load_model``: one front door that detects the family.

Heavy imports (transformers model classes) happen inside ``load_model``, so importing this package is
cheap.
"""
from __future__ import annotations

import os

import torch

from ..model_files import CHECKPOINT_SUFFIXES, llamagen_parts  # noqa: F401  (CHECKPOINT_SUFFIXES re-exported)


def load_model(path_or_id: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, device=None,
               vq_path: str | None = None, t5_path: str | None = None, **kwargs):
    """An adapter for a local model folder, a checkpoint file or a hub id; the family is detected.

    - a folder or hub id with a transformers ``config.json``: Janus-Pro, Emu3-Gen or Lumina-mGPT
      (by ``model_type``);
    - a LlamaGen GPT checkpoint file (``c2i_L_384.pt``, ``.safetensors``), with ``vq_path`` or a VQ
      checkpoint (``vq_ds16_*``) beside it;
    - a folder holding LlamaGen files: a GPT checkpoint, a VQ checkpoint (name contains ``vq``) and, for
      text-to-image, a FLAN-T5 folder (``t5_path`` or a subfolder whose name contains ``t5``).
    """
    path = os.fspath(path_or_id)
    if os.path.isfile(path):
        return _load_llamagen(path, vq_path, t5_path, torch_dtype, device, **kwargs)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        gpt, vq, t5 = find_llamagen_files(path)
        return _load_llamagen(gpt, vq_path or vq, t5_path or t5, torch_dtype, device, **kwargs)
    if not os.path.exists(path) and (os.path.isabs(path) or path.startswith(".") or path.count("/") != 1):
        raise FileNotFoundError(f"no model at {path}: give a model folder, a checkpoint file or a hub id "
                                "(owner/name)")
    from .hf_common import load_adapter

    return load_adapter(path, torch_dtype=torch_dtype, device=device, **kwargs)


def find_llamagen_files(folder: str) -> tuple[str, str | None, str | None]:
    """(gpt, vq, t5 folder) inside a LlamaGen model folder, chosen by name; errors list what was found."""
    gpt, vq, t5 = llamagen_parts(folder)
    if len(gpt) != 1 or len(vq) > 1:
        raise ValueError(
            f"{folder} is neither a transformers model folder (no config.json) nor a LlamaGen folder with one "
            f"GPT checkpoint and one VQ checkpoint (name containing 'vq'): found {gpt + vq or 'no checkpoint files'}")
    join = lambda names: os.path.join(folder, names[0]) if names else None  # noqa: E731
    return join(gpt), join(vq), join(t5)


def _load_llamagen(gpt_path, vq_path, t5_path, torch_dtype, device, **kwargs):
    from .llamagen import load_llamagen

    if vq_path is None:
        folder = os.path.dirname(os.path.abspath(gpt_path))
        beside = llamagen_parts(folder)[1]  # the VQ checkpoints beside the GPT file
        vq_path = os.path.join(folder, beside[0]) if len(beside) == 1 else None
    if vq_path is None:
        raise ValueError(f"no VQ tokenizer for {gpt_path}: pass vq_path= or put one VQ checkpoint "
                         "(e.g. vq_ds16_c2i.pt) beside it")
    return load_llamagen(gpt_path, vq_path, t5_path, dtype=torch_dtype or torch.float32,
                         device=device or ("cuda" if torch.cuda.is_available() else "cpu"), **kwargs)
