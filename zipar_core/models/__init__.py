"""Model families behind the ZipAR sampler (``registry``), and ``load_model``: one front door that
detects the family.

Heavy imports (transformers model classes) happen inside ``load_model``, so importing this package is
cheap.
"""
from __future__ import annotations

import os

import torch

from ..model_files import is_hub_id
from . import registry


def load_model(path_or_id: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, device=None,
               **kwargs):
    """An adapter for a local model folder, a checkpoint file or a hub id; the family is detected
    (``registry.detect``) and its adapter's ``from_pretrained`` loads it:

    - a folder or hub id with a ``config.json``: Janus-Pro, Emu3-Gen or Lumina-mGPT (by ``model_type``), in
      transformers' layout or in the original publisher's (DeepSeek's, BAAI's, Alpha-VLLM's), which the
      family's adapter converts in memory (README, "Model folders you can download");
    - a LlamaGen GPT checkpoint file (``c2i_L_384.pt``, ``.safetensors``), with ``vq_path`` or a VQ
      checkpoint (``vq_ds16_*``) beside it;
    - a folder holding LlamaGen files: a GPT checkpoint, a VQ checkpoint (name contains ``vq``) and, for
      text-to-image, a FLAN-T5 folder (``t5_path`` or a subfolder whose name contains ``t5``).

    kwargs go to the adapter's loader (``vq_path``, ``t5_path``, ``image_size``, ``n_head`` for LlamaGen;
    ``attn_implementation``, ``vqgan``, ``target_size`` for the transformers families, ``vision_tokenizer``
    for Emu3-Gen in BAAI's layout).
    """
    path = os.fspath(path_or_id)
    if os.path.exists(path):
        family = registry.detect(path)
    elif not is_hub_id(path):
        raise FileNotFoundError(f"no model at {path}: give a model folder, a checkpoint file or a hub id "
                                "(owner/name)")
    else:  # a hub id: its config.json (cached by huggingface_hub) says the family and the layout
        from .hub import read_config

        family = registry.family_for_config(read_config(path, **kwargs), path)
    return registry.adapter_class(family.name).from_pretrained(path, torch_dtype=torch_dtype, device=device, **kwargs)
