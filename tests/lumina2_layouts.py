"""Tiny Lumina-mGPT 2.0 folders in the layout Alpha-VLLM publishes, and the MoVQGAN file as ai-forever publishes
it, for the loading tests.

Written from the facts of the layout (``zipar_core/models/lumina2_original.py`` says where they were read),
independently of the package's loader: ``config.json`` as their ``save_pretrained`` writes a
``ChameleonXLLMXConfig`` under transformers 4.46 (the file the side-by-side script gets from their own code has
these fields), safetensors shards with an index, q/k norms with one row per model-parallel shard, no
``model.vqmodel.*``, the tokenizer files, and ``movqgan_270M.ckpt`` as a flat pickle of the whole MOVQ (encoder,
quant_conv, quantize, post_quant_conv, decoder). No code of the original projects is used.
"""
from __future__ import annotations

import os
import re

import torch
from layouts import save_tensors, shard_uniform_norms, write_json

PARALLEL = 2


def tiny_reference():
    """The tiny adapter, its q/k norms uniform per model-parallel shard (all the published layout can hold)."""
    from zipar.zipar_core.models.tiny import tiny_lumina2_adapter

    adapter = tiny_lumina2_adapter(max_positions=10240)  # the release's context: 768 px (96 x 97 slots) fits
    shard_uniform_norms(adapter.model, PARALLEL)
    return adapter


def original_state_dict(model) -> dict:
    """Transformers' Chameleon names, q/k norms with one row per shard (their ChameleonLayerNorm's weight)."""
    out = {}
    for k, v in model.state_dict().items():
        if re.search(r"self_attn\.(q|k)_norm\.", k):
            v = v[:: v.shape[0] // PARALLEL].clone()
        out[k] = v
    return out


def original_config(model) -> dict:
    """config.json of their ChameleonXLLMXConfig as transformers 4.46 writes it (rope_theta, not rope_parameters;
    the image encoder's config reduced to its type: the fork's defaults)."""
    cfg = model.config
    keep = ("attention_bias", "attention_dropout", "bos_token_id", "eos_token_id", "hidden_act", "hidden_size",
            "initializer_range", "intermediate_size", "max_position_embeddings", "mlp_bias", "num_attention_heads",
            "num_hidden_layers", "num_key_value_heads", "rms_norm_eps", "swin_norm", "tie_word_embeddings", "use_cache",
            "vocab_size", "vocabulary_map")
    out = {k: getattr(cfg, k) for k in keep}
    out.update(architectures=["ChameleonXLLMXForConditionalGeneration"], model_type="chameleon", dropout=0.05,
               mask_image_logits=False, model_parallel_size=PARALLEL, rope_scaling=None, rope_theta=10000.0,
               z_loss_weight=1e-05, torch_dtype="float32", transformers_version="4.46.2",
               vq_config={"_attn_implementation_autoset": True, "model_type": "chameleon_vqgan"})
    return out


def movqgan_file(decoder, path) -> str:
    """movqgan_270M.ckpt: a flat pickled state dict of the whole MOVQ (the encoder half here a few tensors)."""
    sd = {k: v.clone() for k, v in decoder.state_dict().items()}
    ch = decoder.config.ch
    sd.update({"encoder.conv_in.weight": torch.zeros(ch, 3, 3, 3), "encoder.conv_out.weight": torch.zeros(4, ch, 3, 3),
               "quant_conv.weight": torch.zeros(4, 4, 1, 1), "quant_conv.bias": torch.zeros(4)})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(sd, path)
    return path


def write_original(adapter, folder, movqgan: str | None = "inside", shards: int = 2) -> str:
    """Alpha-VLLM/Lumina-mGPT-2.0 as downloaded; the MoVQGAN file ``inside`` it (movqgan/270M/), ``beside`` it
    (the parent's movqgan/270M/, as the original's README lays it out) or nowhere (None)."""
    from zipar.zipar_core.models.tiny import write_lumina2_tokenizer

    folder = os.fspath(folder)
    save_tensors(original_state_dict(adapter.model), folder, "model", "safetensors", shards)
    write_json(os.path.join(folder, "config.json"), original_config(adapter.model))
    write_lumina2_tokenizer(folder)
    if movqgan is not None:
        root = folder if movqgan == "inside" else os.path.dirname(folder)
        movqgan_file(adapter.vqgan, os.path.join(root, "movqgan", "270M", "movqgan_270M.ckpt"))
    return folder
