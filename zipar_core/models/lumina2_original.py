"""Alpha-VLLM's Lumina-mGPT 2.0 folder, and ZipAR's converted copy of it, as transformers'
``ChameleonForConditionalGeneration`` plus the MoVQGAN decoder.

What Alpha-VLLM publishes (Alpha-VLLM/Lumina-mGPT-2.0), read from the Alpha-VLLM/Lumina-mGPT-2.0 code
(``lumina_mgpt/finetune_solver.py``, ``model/``: its fork of transformers' Chameleon, ``inference_solver.py``,
``data/item_processor.py``, ``xllmx/model/tokenizer.py``, ``movqgan/__init__.py``):

- ``config.json`` of ``ChameleonXLLMXConfig`` (``model_type`` "chameleon"): transformers' Chameleon fields
  plus ``z_loss_weight``, ``dropout`` and ``mask_image_logits`` (training only), as Lumina-mGPT; a vocabulary
  of 171,385 ids whose image tokens are 155000 + code (the item processor's ``get_image_token``).
- weights in transformers' Chameleon names written by ``save_pretrained`` (safetensors shards with an index),
  q/k norms with one row per model-parallel shard (the fork's ``ChameleonLayerNorm``, as in Lumina-mGPT), and no
  ``model.vqmodel.*``: the training deletes Chameleon's image encoder before saving, and 2.0 never uses it.
- ``tokenizer.json`` (Qwen2.5-style byte-level BPE with Lumina's special tokens) read with ``AutoTokenizer``.
- its image tokenizer is not in the folder: MoVQGAN 270M, ``movqgan_270M.ckpt`` from ai-forever/MoVQGAN, which
  the original reads from ``movqgan/270M/`` below its working folder (``movqgan.py`` here).

Conversion, in memory: the q/k norm rows are broadcast to one per head (``lumina_original.convert_state_dict``,
Lumina-mGPT's), the Lumina-only config fields are dropped, and the model is built without Chameleon's image
encoder (transformers always builds one: a minimal one is built and deleted). ``zipar convert`` writes the
same model in transformers' layout (norms per head) with ``movqgan.safetensors``; this module reads both.

No torch is imported until a function runs (the registry asks :func:`is_lumina2_config` without it).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from ..loading import LoadOptions

IMAGE_TOKEN_BASE = 155000  # id of image code 0 (FlexARItemProcessor.get_image_token); the codes follow in order
ENCODER = "model.vqmodel."  # transformers' name of Chameleon's image encoder, which 2.0 has no weights for
PUBLISHED = "huggingface.co/Alpha-VLLM/Lumina-mGPT-2.0"
WHAT = "Lumina-mGPT 2.0"
# the smallest image encoder transformers' ChameleonModel builds (it always builds one); deleted after loading
STUB_ENCODER = {"embed_dim": 1, "num_embeddings": 1, "latent_channels": 1, "base_channels": 32,
                "channel_multiplier": [1], "num_res_blocks": 0, "resolution": 1, "in_channels": 1,
                "attn_resolutions": [], "attn_type": "none", "double_latent": False}


def is_lumina2_config(config: Mapping) -> bool:
    """A Chameleon config.json of Lumina-mGPT 2.0: its vocabulary reaches the image tokens at 155000 and up,
    beyond every id of Chameleon's 65,536-token vocabulary (Lumina-mGPT and Chameleon itself)."""
    return (config.get("vocab_size") or 0) > IMAGE_TOKEN_BASE


def movqgan_missing(folder: str) -> str:
    return (f"{WHAT} in {folder} needs its image decoder, MoVQGAN 270M: movqgan_270M.ckpt from "
            "huggingface.co/ai-forever/MoVQGAN is not in the folder, in its movqgan/270M/ subfolder or beside it. "
            "Download it there (the original's README puts it in lumina_mgpt/movqgan/270M/), or give the file or its "
            "folder as vqgan= (--vqgan)")


def find_movqgan(folder: str, vqgan: str | None) -> str:
    """The MoVQGAN file for a model folder: ``vqgan`` (a file or folder) when given, else in or beside the folder."""
    from ..checkpoints import CheckpointError
    from .movqgan import find_movqgan_file

    found = find_movqgan_file(vqgan, beside=False) if vqgan else find_movqgan_file(folder)
    if found is None:
        raise CheckpointError(movqgan_missing(vqgan or folder))
    return found


def load_tokenizer(folder: str, tokenizer=None):
    """The folder's tokenizer.json, as the original reads it (``AutoTokenizer.from_pretrained(model_path)``)."""
    from ..checkpoints import CheckpointError

    if tokenizer is not None:
        return tokenizer
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise CheckpointError(f"{WHAT} in {folder} has no tokenizer.json: download it with the model folder "
                              f"({PUBLISHED}: tokenizer.json, tokenizer_config.json)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def hf_config(config: dict):
    """(transformers ChameleonConfig to build the model with, the config's own image-encoder config). The build
    config carries a minimal image encoder (``STUB_ENCODER``) and an empty vocabulary map when there is none
    (transformers reads it; 2.0's image tokens are not named in it)."""
    from transformers import ChameleonConfig

    from .lumina_original import LUMINA_ONLY

    cfg = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", *LUMINA_ONLY)}
    cfg["architectures"] = ["ChameleonForConditionalGeneration"]
    cfg["vocabulary_map"] = cfg.get("vocabulary_map") or {}
    own = cfg.pop("vq_config", None) or {}
    return ChameleonConfig(**cfg, vq_config=dict(STUB_ENCODER)), own


def drop_image_encoder(model, vq_config: dict | None = None):
    """Delete the (minimal) image encoder transformers built and give the config back its own encoder config,
    so that ``save_pretrained`` writes the model as published: no ``model.vqmodel.*``."""
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

    if hasattr(model.model, "vqmodel"):
        del model.model.vqmodel
    if vq_config is not None:
        model.config.vq_config = ChameleonVQVAEConfig(**vq_config)
    return model


def _encoder_placeholders(dtype) -> dict:
    """Zeros for the minimal image encoder's tensors (it is deleted right after loading; with them the load
    reports no tensor as newly initialised)."""
    import torch
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig
    from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

    with torch.device("meta"):
        encoder = ChameleonVQVAE._from_config(ChameleonVQVAEConfig(**STUB_ENCODER))
    return {ENCODER + k: torch.zeros(v.shape, dtype=dtype) for k, v in encoder.state_dict().items()}


def read_weights(folder: str):
    """(state dict in transformers' names with q/k norms per head, {name: (file, name in the file)}, files)."""
    from ..checkpoints import CheckpointError, find_weight_files, read_weight_files

    weights = find_weight_files(folder, WHAT, PUBLISHED)
    try:
        sd, origin = read_weight_files(weights)
    except CheckpointError as e:  # a truncated or foreign shard: say which model folder it belongs to
        raise CheckpointError(f"{e} (a shard of {WHAT}, published at {PUBLISHED})") from None
    return sd, origin, weights


def load(folder: str, config: dict, options: LoadOptions, tokenizer=None, vqgan=None):
    """(ChameleonForConditionalGeneration without an image encoder, tokenizer, MoVQGANDecoder) from a folder in
    Alpha-VLLM's layout or transformers' (``zipar convert``). ``vqgan``: the MoVQGAN file or folder, or a
    ``MoVQGANDecoder``; None looks in and beside the folder. The parts that are quick to check (tokenizer,
    MoVQGAN file, shard index) are checked before any weight is read, and every tensor before the model is built."""
    from transformers import ChameleonForConditionalGeneration

    from ..checkpoints import CheckpointError
    from .hf_common import checkpoint_dtype, load_converted, redownload_fix
    from .lumina_original import convert_state_dict
    from .movqgan import MoVQGANDecoder, load_movqgan

    given = vqgan if isinstance(vqgan, MoVQGANDecoder) else None
    path = None if given is not None else find_movqgan(folder, vqgan)
    tok = load_tokenizer(folder, tokenizer)
    try:  # the decoder first: it is small, and a broken file must stop the load before the language model
        decoder = given if given is not None else load_movqgan(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if config.get("quantization_config"):  # saved quantized (zipar convert --quantize): transformers reads it as is
        from .hf_common import load_hf

        hf, own_vq = hf_config(config)
        model = load_hf(ChameleonForConditionalGeneration, folder, options, what=WHAT, published=PUBLISHED,
                        family="lumina2", config=hf, allow_missing=ENCODER)
        return drop_image_encoder(model, own_vq), tok, decoder.to(options.torch_device()).eval()
    sd, origin, weights = read_weights(folder)
    sd, sources = convert_state_dict(sd, origin, config.get("num_attention_heads", 32),
                                     config.get("num_key_value_heads") or config.get("num_attention_heads", 32))
    hf, own_vq = hf_config(config)
    options = replace(options, dtype=options.torch_dtype(checkpoint_dtype(sd)))
    model = load_converted(ChameleonForConditionalGeneration, hf, {**sd, **_encoder_placeholders(options.dtype)},
                           lambda name: sources.get(name, (weights.where(name), name)), options,
                           what=f"{WHAT} in {folder}", fix=redownload_fix(PUBLISHED), family="lumina2")
    return drop_image_encoder(model, own_vq), tok, decoder.to(options.torch_device()).eval()
