"""Alpha-VLLM's own Lumina-mGPT layout, converted in memory into transformers' ``ChameleonForConditionalGeneration``.

What Alpha-VLLM publishes (Alpha-VLLM/Lumina-mGPT-7B-512 / -768 / -768-Omni / -1024), read from the
Alpha-VLLM/Lumina-mGPT code (``lumina_mgpt/model/modeling_xllmx_chameleon.py``, its fork of transformers'
Chameleon in ``model/chameleon/``, ``finetune_solver.py``, ``data/item_processor.py``):

- ``config.json`` of ``ChameleonXLLMXConfig``: ``model_type`` "chameleon" (inherited), ``architectures``
  ["ChameleonXLLMXForConditionalGeneration"], transformers' Chameleon fields plus ``z_loss_weight``
  (training only) and ``model_parallel_size``.
- weights in transformers' Chameleon names, except that ``self_attn.q_norm`` / ``k_norm`` (weight and bias)
  have shape (model_parallel_size, head_dim): the fork repeats each shard's row over its heads at run
  time (``repeat_interleave(heads // model_parallel_size)``), transformers stores one row per head
  (num_heads / num_key_value_heads, head_dim), so loading one through transformers fails on the shape. The
  fine-tuning script deletes ``model.vqmodel`` (the image encoder) before saving, so those tensors are absent.
- the text tokenizer beside the weights, and Meta's Chameleon tokenizer files (``vqgan.yaml``,
  ``vqgan.ckpt``, ``text_tokenizer.json``, the ``tokenizer/`` folder of Meta's release), which Lumina's code
  reads from ``ckpts/chameleon/tokenizer/`` for the VQGAN.

Conversion (as transformers' ``convert_chameleon_weights_to_hf.py`` writes q/k norms and the image encoder):
the norm rows are broadcast to one per head; ``model.vqmodel.*`` (everything of the VQGAN but its decoder)
is taken from ``vqgan.ckpt`` when the checkpoint lacks it; ``vocabulary_map`` / ``vq_config`` come from the
Chameleon files when config.json lacks them. ``vqgan.ckpt`` is read once, with ``weights_only=True`` (or its
``vqgan.safetensors`` twin), for both the encoder tensors and ZipAR's decoder.
"""
from __future__ import annotations

import json
import os
import re

from ..checkpoints import CheckpointError, find_weight_files, load_state_dict, read_weight_files
from ..loading import LoadOptions

ARCHITECTURE = "ChameleonXLLMXForConditionalGeneration"
PUBLISHED = "huggingface.co/Alpha-VLLM/Lumina-mGPT-7B-768 (or -7B-512, -7B-1024, -7B-768-Omni)"
CHAMELEON_PUBLISHED = ("Meta's Chameleon release (the tokenizer/ folder of the download you request at "
                       "github.com/facebookresearch/chameleon)")
WHAT = "Lumina-mGPT (Alpha-VLLM layout)"
_NORM = re.compile(r"^model\.layers\.(\d+)\.self_attn\.(q|k)_norm\.(weight|bias)$")
_DROPPED = re.compile(r".*rotary_emb\.inv_freq$")
# config.json entries of Lumina's ChameleonXLLMXConfig / its ChameleonConfig fork that transformers' Chameleon
# does not have (training loss weight, residual dropout, the text-only logit mask)
LUMINA_ONLY = ("z_loss_weight", "dropout", "mask_image_logits")
# vqgan.yaml (taming) names -> transformers' ChameleonVQVAEConfig names
VQ_RENAMES = {"ch": "base_channels", "out_ch": "out_channels", "n_embed": "num_embeddings",
              "ch_mult": "channel_multiplier", "double_z": "double_latent", "z_channels": "latent_channels"}


def is_original(config: dict, weights=None) -> bool:
    """Lumina's own layout: its architecture name, or q/k norms with fewer rows than heads."""
    if ARCHITECTURE in (config.get("architectures") or ()):
        return True
    if weights is None:
        return False
    from ..checkpoints import tensor_shapes

    key = "model.layers.0.self_attn.q_norm.weight"
    if weights.weight_map and key not in weights.weight_map:
        return False
    shape = tensor_shapes(_only(weights, key)).get(key)
    return shape is not None and len(shape) == 2 and shape[0] != config.get("num_attention_heads", shape[0])


def _only(weights, key):
    """The WeightFiles of just the file holding ``key`` (to peek at one shape without reading every shard)."""
    from ..checkpoints import WeightFiles

    if key in weights.weight_map:
        return WeightFiles(weights.folder, [os.path.join(weights.folder, weights.weight_map[key])])
    return weights


# -- the Chameleon tokenizer files ------------------------------------------------------------------

def chameleon_files(folder: str, vqgan: str | None) -> dict[str, str | None]:
    """{"weights", "yaml", "text_tokenizer"}: Meta's Chameleon tokenizer files for a Lumina folder (the ``vqgan``
    argument, else the folder and its tokenizer/, chameleon/tokenizer/ ... subfolders, else chameleon/tokenizer
    beside it)."""
    from .chameleon_vqgan import find_vqgan_files

    try:
        weights, yaml_path = find_vqgan_files(vqgan or folder)
    except FileNotFoundError:
        raise CheckpointError(
            f"{WHAT} in {folder} needs Chameleon's image tokenizer: vqgan.ckpt and vqgan.yaml (with "
            f"text_tokenizer.json) from {CHAMELEON_PUBLISHED}. Put them in {os.path.join(folder, 'tokenizer')} "
            "(or a chameleon/tokenizer folder beside the model folder), or give the folder as vqgan=") from None
    text = os.path.join(os.path.dirname(weights), "text_tokenizer.json")
    return {"weights": weights, "yaml": yaml_path, "text_tokenizer": text if os.path.isfile(text) else None}


def _vq_config_from_yaml(path: str) -> dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        params = dict(yaml.safe_load(f)["model"]["params"])
    params.update(params.pop("ddconfig", {}))
    for old, new in VQ_RENAMES.items():
        if old in params:
            params[new] = params.pop(old)
    return {k: v for k, v in params.items() if k not in ("ckpt_path", "lossconfig", "ignore_keys")}


def load_tokenizer(folder: str, text_tokenizer: str | None):
    """The folder's tokenizer.json as written, else Chameleon's text_tokenizer.json."""
    from transformers import PreTrainedTokenizerFast

    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return PreTrainedTokenizerFast.from_pretrained(folder)
    if text_tokenizer:
        return PreTrainedTokenizerFast(tokenizer_file=text_tokenizer, bos_token="<s>", eos_token="</s>",
                                       pad_token="<pad>", unk_token="<unk>")
    raise CheckpointError(f"{WHAT} in {folder} has no tokenizer: neither tokenizer.json ({PUBLISHED}) nor "
                          f"Chameleon's text_tokenizer.json ({CHAMELEON_PUBLISHED}) is there")


# -- conversion --------------------------------------------------------------------------------------

def convert_state_dict(sd, origin, num_heads: int, num_kv_heads: int):
    """Lumina's tensors -> (transformers' names and shapes, {name: (file, name in the file)})."""
    out, sources = {}, {}
    for key, value in sd.items():
        if _DROPPED.match(key):
            continue
        m = _NORM.match(key)
        if m and value.dim() == 2:
            heads = num_heads if m.group(2) == "q" else num_kv_heads
            rows = value.shape[0]
            if heads % rows:
                raise CheckpointError(f"tensor {key!r} in {origin[key]} has {rows} rows, which do not divide the "
                                      f"{heads} heads of config.json: the config belongs to another model")
            value = value.repeat_interleave(heads // rows, dim=0)  # row r serves heads r*heads/rows ...
        out[key] = value
        sources[key] = (origin[key], key)
    return out, sources


def hf_config(config: dict, files: dict, tokenizer):
    from transformers import ChameleonConfig

    cfg = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", *LUMINA_ONLY)}
    cfg["architectures"] = ["ChameleonForConditionalGeneration"]
    if not cfg.get("vocabulary_map"):
        vocab = tokenizer.get_vocab()
        if not any(k.startswith("IMGIMG") for k in vocab) and files.get("text_tokenizer"):
            with open(files["text_tokenizer"], encoding="utf-8") as f:
                vocab = json.load(f)["model"]["vocab"]
        cfg["vocabulary_map"] = vocab
    if not cfg.get("vq_config") and files.get("yaml"):
        cfg["vq_config"] = _vq_config_from_yaml(files["yaml"])
    return ChameleonConfig(**cfg)


def load(folder: str, config: dict, options: LoadOptions, tokenizer=None, vqgan: str | None = None):
    """(ChameleonForConditionalGeneration, tokenizer, ChameleonVQGANDecoder) from a folder in Lumina's layout."""
    from transformers import ChameleonForConditionalGeneration

    from .chameleon_vqgan import ChameleonVQGANDecoder, VQGANConfig, _read_yaml, read_metadata_config
    from .hf_common import load_converted, redownload_fix

    files = chameleon_files(folder, vqgan)
    weights = find_weight_files(folder, WHAT, PUBLISHED)
    sd, origin = read_weight_files(weights)
    sd, sources = convert_state_dict(sd, origin, config.get("num_attention_heads", 32),
                                     config.get("num_key_value_heads") or config.get("num_attention_heads", 32))
    vq_sd = load_state_dict(files["weights"])  # weights_only pickle, or its safetensors twin
    if not any(k.startswith("model.vqmodel.") for k in sd):  # deleted before saving by Lumina's fine-tuning
        for k, v in vq_sd.items():
            if not k.startswith("decoder."):
                sd["model.vqmodel." + k] = v
                sources["model.vqmodel." + k] = (files["weights"], k)
    tok = tokenizer if tokenizer is not None else load_tokenizer(folder, files["text_tokenizer"])
    hf = hf_config(config, files, tok)
    vq_config = read_metadata_config(files["weights"]) or (_read_yaml(files["yaml"]) if files["yaml"] else VQGANConfig())
    try:  # the decoder first: it is small, and a mismatch must stop the load before the language model is built
        decoder = ChameleonVQGANDecoder(vq_config).load_weights(vq_sd, files["weights"])
    except ValueError as e:
        raise CheckpointError(str(e)) from None

    def describe(name):
        if name in sources:
            return sources[name]
        if name.startswith("model.vqmodel."):
            return files["weights"], name[len("model.vqmodel."):]
        return weights.where(name), name

    model = load_converted(ChameleonForConditionalGeneration, hf, sd, describe, options, what=f"{WHAT} in {folder}",
                           fix=redownload_fix(f"{PUBLISHED}; Chameleon files: {CHAMELEON_PUBLISHED}"), family="lumina")
    return model, tok, decoder.to(options.torch_device()).eval()
