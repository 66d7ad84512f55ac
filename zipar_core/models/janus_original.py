"""DeepSeek's own Janus / Janus-Pro layout, converted in memory into transformers' ``JanusForConditionalGeneration``.

What DeepSeek publishes (deepseek-ai/Janus-Pro-7B, -1B, Janus-1.3B), read from the deepseek-ai/Janus code
(``janus/models/modeling_vlm.py``, ``projector.py``, ``vq_model.py``, ``siglip_vit.py``, ``processing_vlm.py``):

- ``config.json``: ``model_type`` "multi_modality" (``MultiModalityConfig``) with sub-configs
  ``language_config`` (LlamaConfig arguments), ``vision_config`` / ``aligner_config`` (understanding),
  ``gen_vision_config`` (``cls`` "VQ-16", ``params.image_token_size``, ``params.n_embed``),
  ``gen_aligner_config`` and ``gen_head_config`` (``params.n_embed``, ``image_token_embed``,
  ``image_token_size``). The VQ model is always built as VQ-16 with its fixed architecture (the config
  does not carry it), the vision tower from a fixed table keyed by ``params.model_name``.
- weights (``pytorch_model.bin`` or shards with ``pytorch_model.bin.index.json``; ``.safetensors`` read the
  same way) under the module names of ``MultiModalityCausalLM``: ``language_model.{model.*, lm_head}``,
  ``vision_model.vision_tower.*`` (timm-style SigLIP: ``blocks.N.attn.qkv`` fused), ``aligner.layers.{0,2}``,
  ``gen_vision_model.*`` (``encoder/decoder.conv_blocks.N.res.M``, ``mid.{0,1,2}``),
  ``gen_aligner.layers.{0,2}``, ``gen_head.{output_mlp_projector, vision_head}``, ``gen_embed``.
- the tokenizer as ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``, and
  ``processor_config.json`` naming the tags (``<begin_of_image>``, pad ``<｜▁pad▁｜>``, ``<image_placeholder>``).

The renames follow transformers' ``convert_janus_weights_to_hf.py``: the fused ``qkv`` of the vision tower is
split in three, its ``pos_embed`` loses its leading axis, ``attn_pool`` (unused) and the VQ's
``codebook_used`` statistic are dropped. Sizes the config does not carry (VQ channels and levels, the vision
tower's width and depth) are read off the tensor shapes, which for the published checkpoints gives exactly
VQ-16 and SigLIP-L. The tokenizer is read from ``tokenizer.json`` as written (transformers would rebuild
a Llama tokenizer from ``tokenizer_config.json``'s class name instead, with other ids).
"""
from __future__ import annotations

import json
import os
import re

import torch

from ..checkpoints import CheckpointError, find_weight_files, read_weight_files
from ..loading import LoadOptions

MODEL_TYPE = "multi_modality"
PUBLISHED = "huggingface.co/deepseek-ai/Janus-Pro-7B (or Janus-Pro-1B, Janus-1.3B)"
WHAT = "Janus-Pro (DeepSeek layout)"
# Heads of the SigLIP towers the original code knows by name (siglip_vit.SigLIP_MODEL_CONFIG); width and depth
# come from the weights.
SIGLIP_HEADS = {"siglip_large_patch16_384": 16, "siglip_so400m_patch14_384": 16, "siglip_so400m_patch14_224": 16}
TAGS = {"image_start_tag": "<begin_of_image>", "pad_tag": "<｜▁pad▁｜>", "image_tag": "<image_placeholder>"}
_DROPPED = re.compile(r"^(vision_model\.vision_tower\.attn_pool\..*|gen_vision_model\.quantize\.codebook_used"
                      r"|.*rotary_emb\.inv_freq)$")


def is_original(config: dict) -> bool:
    return config.get("model_type") == MODEL_TYPE


def check_generates_images(config: dict, folder: str) -> None:
    """``multi_modality`` is also DeepSeek-VL's (no generation head) and JanusFlow's (rectified flow)."""
    if "gen_head_config" not in config or "gen_vision_config" not in config:
        raise CheckpointError(
            f"{folder} is a DeepSeek multi_modality model without Janus' image-token head (gen_head_config / "
            "gen_vision_config): DeepSeek-VL or JanusFlow, which do not generate images token by token, so ZipAR "
            "cannot run it. ZipAR runs Janus-1.3B, Janus-Pro-1B and Janus-Pro-7B")


# -- names ------------------------------------------------------------------------------------------

def _vq_name(rest: str) -> str:
    """VQ-16 module names (``vq_model.VQModel``) -> ``JanusVQVAE``'s."""
    rest = re.sub(r"^encoder\.conv_blocks\.", "encoder.down.", rest)
    rest = re.sub(r"^decoder\.conv_blocks\.", "decoder.up.", rest)
    rest = re.sub(r"^(encoder\.down|decoder\.up)\.(\d+)\.res\.", r"\1.\2.block.", rest)
    return re.sub(r"^(encoder|decoder)\.mid\.([012])\.",
                  lambda m: f"{m.group(1)}.mid.{('block_1', 'attn_1', 'block_2')[int(m.group(2))]}.", rest)


def _mlp_name(rest: str) -> str:
    """``MlpProjector.layers`` (Linear, GELU, Linear, ...) -> ``fc1`` + ``hidden_layers``."""
    m = re.match(r"^layers\.(\d+)\.(.*)$", rest)
    if not m or int(m.group(1)) % 2:
        return rest
    i = int(m.group(1)) // 2
    return f"fc1.{m.group(2)}" if i == 0 else f"hidden_layers.{i - 1}.{m.group(2)}"


_TOWER = (("pos_embed", "embeddings.position_embedding.weight"), ("patch_embed.proj.", "embeddings.patch_embedding."),
          ("norm.", "post_layernorm."))
_BLOCK = (("norm1.", "layer_norm1."), ("norm2.", "layer_norm2."), ("attn.proj.", "self_attn.projection_layer."),
          ("mlp.", "mlp."))


def _tower_name(rest: str) -> list[str] | str:
    for old, new in _TOWER:
        if rest.startswith(old):
            return "model.vision_model." + new + rest[len(old):]
    m = re.match(r"^blocks\.(\d+)\.(.*)$", rest)
    if m:
        layer, inner = f"model.vision_model.encoder.layers.{m.group(1)}.", m.group(2)
        if inner.startswith("attn.qkv."):
            tail = inner[len("attn.qkv."):]
            return [f"{layer}self_attn.{p}_proj.{tail}" for p in "qkv"]
        for old, new in _BLOCK:
            if inner.startswith(old):
                return layer + new + inner[len(old):]
    return "vision_model.vision_tower." + rest  # unknown: kept, reported as unexpected


_PREFIXES = (("gen_head.output_mlp_projector.", "model.generation_head.proj_out."),
             ("gen_head.vision_head.", "model.generation_head.vision_head."),
             ("gen_embed.", "model.generation_embeddings."), ("language_model.model.", "model.language_model."),
             ("language_model.lm_head.", "lm_head."))


def hf_name(key: str) -> list[str] | str | None:
    """An original tensor name -> transformers' name (a list for the fused qkv, which splits), None: dropped."""
    if _DROPPED.match(key):
        return None
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("vision_model.vision_tower."):
        return _tower_name(key[len("vision_model.vision_tower."):])
    if key.startswith("gen_vision_model."):
        return "model.vqmodel." + _vq_name(key[len("gen_vision_model."):])
    for old, new in (("gen_aligner.", "model.generation_aligner."), ("aligner.", "model.aligner.")):
        if key.startswith(old):
            return new + _mlp_name(key[len(old):])
    return key


def original_name(key: str) -> str:
    """transformers' name -> the name the original checkpoint uses (for messages about a missing tensor)."""
    for old, new in _PREFIXES:
        if key.startswith(new):
            return old + key[len(new):]
    if key.startswith("model.vqmodel."):
        rest = key[len("model.vqmodel."):]
        rest = re.sub(r"^(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.",
                      lambda m: f"{m.group(1)}.mid.{('block_1', 'attn_1', 'block_2').index(m.group(2))}.", rest)
        rest = re.sub(r"^(encoder\.down|decoder\.up)\.(\d+)\.block\.", r"\1.\2.res.", rest)
        rest = re.sub(r"^encoder\.down\.", "encoder.conv_blocks.", rest)
        return "gen_vision_model." + re.sub(r"^decoder\.up\.", "decoder.conv_blocks.", rest)
    for old, new in (("gen_aligner.", "model.generation_aligner."), ("aligner.", "model.aligner.")):
        if key.startswith(new):
            rest = key[len(new):]
            m = re.match(r"^hidden_layers\.(\d+)\.(.*)$", rest)
            rest = f"layers.{2 * int(m.group(1)) + 2}.{m.group(2)}" if m else re.sub(r"^fc1\.", "layers.0.", rest)
            return old + rest
    if key.startswith("model.vision_model."):
        rest = key[len("model.vision_model."):]
        for old, new in _TOWER:
            if rest.startswith(new):
                return "vision_model.vision_tower." + old + rest[len(new):]
        m = re.match(r"^encoder\.layers\.(\d+)\.(.*)$", rest)
        if m:
            inner = re.sub(r"^self_attn\.[qkv]_proj\.", "attn.qkv.", m.group(2))
            for old, new in _BLOCK:
                if inner.startswith(new):
                    inner = old + inner[len(new):]
            return f"vision_model.vision_tower.blocks.{m.group(1)}.{inner}"
    return key


def convert_state_dict(sd: dict[str, torch.Tensor], origin: dict[str, str]):
    """Original tensors -> (transformers' state dict, {transformers name: (file, original name)})."""
    out, sources = {}, {}
    for key, value in sd.items():
        name = hf_name(key)
        if name is None:
            continue
        if isinstance(name, list):  # fused q, k, v rows of the vision tower
            if value.shape[0] % 3:
                raise CheckpointError(f"tensor {key!r} in {origin[key]} has shape {tuple(value.shape)}: a fused "
                                      "q/k/v projection needs a first dimension divisible by 3")
            parts = value.chunk(3, dim=0)
        else:
            name, parts = [name], [value[0] if key.endswith("pos_embed") and value.dim() == 3 else value]
        for n, v in zip(name, parts):
            out[n] = v
            sources[n] = (origin[key], key)
    return out, sources


# -- configuration -----------------------------------------------------------------------------------

def _count(shapes: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def _params(config: dict, name: str) -> dict:
    return dict((config.get(name) or {}).get("params") or {})


def hf_config(config: dict, shapes: dict[str, tuple], tokenizer, tags: dict):
    """``MultiModalityConfig`` (+ the shapes of the converted tensors) -> ``JanusConfig``."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    language = {k: v for k, v in (config.get("language_config") or {}).items() if k not in ("model_type",)}
    language.setdefault("bos_token_id", tokenizer.bos_token_id)
    language.setdefault("eos_token_id", tokenizer.eos_token_id)
    language.setdefault("pad_token_id", tokenizer.convert_tokens_to_ids(tags["pad_tag"]))
    text = LlamaConfig(**language)

    vision_params, aligner = _params(config, "vision_config"), _params(config, "aligner_config")
    patch = shapes["model.vision_model.embeddings.patch_embedding.weight"]  # (width, 3, p, p)
    model_name = vision_params.get("model_name", "siglip_large_patch16_384")
    if model_name not in SIGLIP_HEADS:
        raise CheckpointError(f"vision_config.params.model_name {model_name!r} is not a SigLIP tower the Janus code "
                              f"builds ({', '.join(SIGLIP_HEADS)})")
    width, image_size = patch[0], vision_params.get("image_size", 384)
    fc1 = shapes["model.vision_model.encoder.layers.0.mlp.fc1.weight"]
    vision = JanusVisionConfig(
        hidden_size=width, num_hidden_layers=_count(shapes, r"^model\.vision_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=SIGLIP_HEADS[model_name], patch_size=patch[-1], image_size=image_size,
        num_image_tokens=(image_size // patch[-1]) ** 2, mlp_ratio=fc1[0] / width,
        projection_dim=aligner.get("n_embed", text.hidden_size), depth=aligner.get("depth", 2))

    gen_vision, gen_aligner, gen_head = (_params(config, n) for n in ("gen_vision_config", "gen_aligner_config",
                                                                      "gen_head_config"))
    base = shapes["model.vqmodel.encoder.conv_in.weight"][0]
    levels = _count(shapes, r"^model\.vqmodel\.encoder\.down\.(\d+)\.")
    mult = [shapes[f"model.vqmodel.encoder.down.{i}.block.0.conv1.weight"][0] // base for i in range(levels)]
    codebook = shapes["model.vqmodel.quantize.embedding.weight"]
    vq = JanusVQVAEConfig(
        embed_dim=gen_vision.get("n_embed", codebook[1]), num_embeddings=gen_vision.get("image_token_size", codebook[0]),
        base_channels=base, channel_multiplier=mult,
        num_res_blocks=_count(shapes, r"^model\.vqmodel\.encoder\.down\.0\.block\.(\d+)\."),
        latent_channels=shapes["model.vqmodel.decoder.conv_in.weight"][1],
        projection_dim=gen_aligner.get("n_embed", text.hidden_size), num_hidden_layers=gen_aligner.get("depth", 2),
        image_token_embed_dim=gen_head.get("image_token_embed", text.hidden_size))
    image_token = tokenizer.convert_tokens_to_ids(tags["image_tag"])
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token,
                       tie_word_embeddings=bool(language.get("tie_word_embeddings", False)),
                       architectures=["JanusForConditionalGeneration"])


def _tags(folder: str) -> dict:
    """The special tags, as ``processor_config.json`` names them (the processor's defaults otherwise)."""
    path = os.path.join(folder, "processor_config.json")
    tags = dict(TAGS)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            given = json.load(f)
        tags.update({k: given[k] for k in TAGS if isinstance(given.get(k), str)})
    return tags


def load_tokenizer(folder: str, tags: dict):
    """``tokenizer.json`` as written (with its special-token files), plus the image tag if it lacks one (as
    ``VLChatProcessor`` adds it)."""
    from transformers import PreTrainedTokenizerFast

    if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
        raise CheckpointError(f"{WHAT} in {folder} has no tokenizer.json: download it (with tokenizer_config.json "
                              f"and special_tokens_map.json) from {PUBLISHED}")
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    if tags["image_tag"] not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [tags["image_tag"]]})
    missing = [t for k, t in tags.items() if k != "image_tag" and t not in tok.get_vocab()]
    if missing:
        raise CheckpointError(f"the tokenizer in {folder} lacks {missing}: it is not Janus' tokenizer; download "
                              f"tokenizer.json from {PUBLISHED}")
    return tok


def load(folder: str, config: dict, options: LoadOptions, tokenizer=None):
    """(JanusForConditionalGeneration, tokenizer) from a folder in DeepSeek's layout."""
    from transformers import JanusForConditionalGeneration

    from .hf_common import load_converted, redownload_fix

    check_generates_images(config, folder)
    tags = _tags(folder)
    tok = tokenizer if tokenizer is not None else load_tokenizer(folder, tags)
    weights = find_weight_files(folder, WHAT, PUBLISHED)
    sd, sources = convert_state_dict(*read_weight_files(weights))
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for needed in ("model.vision_model.embeddings.patch_embedding.weight", "model.vqmodel.encoder.conv_in.weight",
                   "model.vqmodel.decoder.conv_in.weight", "model.vqmodel.quantize.embedding.weight",
                   "model.vision_model.encoder.layers.0.mlp.fc1.weight",
                   "model.vqmodel.encoder.down.0.block.0.conv1.weight"):
        if needed not in shapes:
            raise CheckpointError(f"{WHAT} does not load: tensor {original_name(needed)!r} is missing from "
                                  f"{weights.where(original_name(needed))}. Fix: {redownload_fix(PUBLISHED)}")
    hf = hf_config(config, shapes, tok, tags)

    def describe(name):
        if name in sources:
            return sources[name]
        return weights.where(original_name(name)), original_name(name)

    model = load_converted(JanusForConditionalGeneration, hf, sd, describe, options, what=f"{WHAT} in {folder}",
                           fix=redownload_fix(PUBLISHED), family="janus")
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id = tok.bos_token_id, tok.eos_token_id
    gen.pad_token_id = tok.convert_tokens_to_ids(tags["pad_tag"])  # the unconditional rows' pad (generation_inference.py)
    gen.generation_kwargs = {"boi_token_id": tok.convert_tokens_to_ids(tags["image_start_tag"])}
    gen.guidance_scale = 5.0  # DeepSeek's cfg_weight
    return model, tok
