"""Model families behind the ZipAR sampler (``registry``), and ``load_model``: one front door that
detects the family.

Heavy imports (transformers model classes) happen inside ``load_model``, so importing this package is
cheap.
"""
from __future__ import annotations

import os

from ..loading import LoadOptions
from ..model_files import is_hub_id
from . import registry


def load_model(path_or_id: str | os.PathLike, options: LoadOptions | None = None, **keywords):
    """An adapter for a local model folder, a checkpoint file, a hub id or ``"demo"`` (the embedded demo model);
    the family is detected (``registry.detect``) and its adapter's ``from_pretrained`` loads it:

    - a folder or hub id with a ``config.json``: Janus-Pro, Emu3-Gen or Lumina-mGPT (by ``model_type``), in
      transformers' layout or in the original publisher's (DeepSeek's, BAAI's, Alpha-VLLM's), which the
      family's adapter converts in memory (README, "Model folders you can download");
    - a LlamaGen GPT checkpoint file (``c2i_L_384.pt``, ``.safetensors``), with ``vq_path`` or a VQ
      checkpoint (``vq_ds16_*``) beside it;
    - a folder holding LlamaGen files: a GPT checkpoint, a VQ checkpoint (name contains ``vq``) and, for
      text-to-image, a FLAN-T5 folder (``t5_path`` or a subfolder whose name contains ``t5``).

    options: :class:`~zipar.zipar_core.loading.LoadOptions` (dtype, device, attention, hub); its fields may also be
    given as keywords (``torch_dtype=`` / ``dtype=``, ``device=``, ``attn_implementation=``, ``revision=``, ...).
    Every other keyword is the family's own (LlamaGen ``vq_path``, ``t5_path``, ``image_size``, ``n_head``;
    Lumina-mGPT ``vqgan``, ``target_size``; Emu3-Gen ``vision_tokenizer``; Janus ``variant``; ``tokenizer``), and
    one the family does not take is a TypeError naming it.
    """
    options, parts = LoadOptions.split(options, **keywords)
    if options.quantization is not None:  # bitsandbytes there, a device it runs on: said before anything is read
        from ..quantization import check_available

        check_available(device=options.torch_device())
    path = registry.builtin_path(path_or_id) or os.fspath(path_or_id)  # "demo": the embedded demo model
    if os.path.exists(path):
        family = registry.detect(path)
    elif not is_hub_id(path):
        raise FileNotFoundError(f"no model at {path}: give a model folder, a checkpoint file or a hub id "
                                "(owner/name)")
    else:  # a hub id: its config.json (cached by huggingface_hub) says the family and the layout
        from .hub import read_config

        family = registry.family_for_config(read_config(path, options.hub), path)
    return registry.adapter_class(family.name).from_pretrained(path, options, **parts)


def keep_unquantized(family: str, quantization=None) -> tuple[str, ...]:
    """The module prefixes a family's transformer keeps in the compute dtype when quantized (its adapter's
    ``keep_unquantized``: the image head the sampler reads, the image-token embedding path, the VQ model), plus a
    setting's own ``skip``."""
    own = tuple(registry.adapter_class(family).keep_unquantized)
    return own + (tuple(quantization.skip) if quantization is not None else ())
