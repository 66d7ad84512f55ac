"""BAAI's own Emu3-Gen layout, converted in memory into transformers' ``Emu3ForConditionalGeneration``.

What BAAI publishes, read from the baaivision/Emu3 code (``emu3/mllm/{configuration,modeling,tokenization}_emu3.py``,
``emu3/tokenizer/{configuration,modeling}_emu3visionvq.py``, ``image_generation.py``):

- BAAI/Emu3-Gen: ``config.json`` with ``model_type`` "Emu3" (``Emu3Config``: Llama-style fields plus
  ``rope_theta`` / ``rope_scaling`` and the special ids), weights of ``Emu3ForCausalLM`` (``model.*``,
  ``lm_head``), and a tiktoken tokenizer: ``emu3.tiktoken`` (base64 token, rank per line) and
  ``emu3_vision_tokens.txt`` (one token per line); the special tokens are ``<|endoftext|>``, ``<|im_start|>``,
  ``<|im_end|>``, ``<|extra_0..204|>`` and then the vision tokens, numbered from the end of the BPE ranks
  (the code pins that at 151643, the size of the published file); text is NFC-normalised.
- BAAI/Emu3-VisionTokenizer, a separate folder: ``config.json`` with ``model_type`` "Emu3VisionVQ" (``ch``,
  ``ch_mult``, ``z_channels``, ``double_z``, ``codebook_size``, ``embed_dim``, ``attn_resolutions``, ...) and
  the weights of ``Emu3VisionVQModel`` (``encoder``, ``decoder``, ``quantize``, ``quant_conv``,
  ``post_quant_conv``).

The renames follow transformers' ``convert_emu3_weights_to_hf.py``: the language model goes under
``model.text_model``, the VQ under ``model.vqmodel`` with its ``down`` / ``up`` / ``mid`` stages renamed
(``down_block.down``, ``up_block.up``, ``middle_block``), the attention norms moved out of the attention
blocks (``attn_norms``, ``attn_norm``) and the attention's 1x1 convolutions turned into linear layers
(``q``/``k``/``v``/``proj_out`` -> ``q_proj``/``k_proj``/``v_proj``/``out_proj``, weights squeezed). The
tiktoken vocabulary becomes a byte-level BPE with transformers' own ``TikTokenConverter`` (its file reader
replaced by one that needs no ``tiktoken`` package).

Where the vision tokenizer is: the ``vision_tokenizer`` argument (folder or hub id), else a subfolder of the
model folder or a folder beside it whose ``config.json`` says "Emu3VisionVQ".
"""
from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import replace

from ..checkpoints import CheckpointError, find_weight_files, read_weight_files
from ..loading import LoadOptions
from ..model_files import config_model_type

MODEL_TYPE = "Emu3"
VQ_MODEL_TYPE = "Emu3VisionVQ"
PUBLISHED = "huggingface.co/BAAI/Emu3-Gen"
VQ_PUBLISHED = "huggingface.co/BAAI/Emu3-VisionTokenizer"
VQ_HUB_ID = "BAAI/Emu3-VisionTokenizer"
WHAT = "Emu3-Gen (BAAI layout)"
VQ_WHAT = "Emu3-VisionTokenizer"
TIKTOKEN, VISION_TOKENS = "emu3.tiktoken", "emu3_vision_tokens.txt"
# the split pattern of Emu3Tokenizer (Qwen's, with single digits)
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIAL_NAMES = {"bos_token": "<|extra_203|>", "eos_token": "<|extra_204|>", "pad_token": "<|endoftext|>"}
IMAGE_NAMES = {"boi_token": "<|image start|>", "eoi_token": "<|image end|>", "image_wrapper_token": "<|image token|>",
               "eof_token": "<|extra_201|>"}


def is_original(config: dict) -> bool:
    return config.get("model_type") == MODEL_TYPE


# -- names ------------------------------------------------------------------------------------------

def text_name(key: str) -> str:
    return "model.text_model." + key[len("model."):] if key.startswith("model.") else key


def vq_name(key: str) -> str:
    """An ``Emu3VisionVQModel`` tensor name -> ``model.vqmodel.*`` of transformers' ``Emu3VQVAE``."""
    key = re.sub(r"\.attn\.(\d+)\.norm\.", r".attn_norms.\1.", key)
    key = re.sub(r"\.mid\.attn_1\.norm\.", ".mid.attn_norm.", key)
    key = re.sub(r"\.(q|k|v)\.(weight|bias)$", r".\1_proj.\2", key)
    key = re.sub(r"\.proj_out\.(weight|bias)$", r".out_proj.\1", key)
    key = re.sub(r"^encoder\.down\.", "encoder.down_block.down.", key)
    key = re.sub(r"^decoder\.up\.", "decoder.up_block.up.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.", r"\1.middle_block.", key)
    return "model.vqmodel." + key


def original_vq_name(name: str) -> str:
    key = name[len("model.vqmodel."):]
    key = re.sub(r"^(encoder|decoder)\.middle_block\.", r"\1.mid.", key)
    key = re.sub(r"^decoder\.up_block\.up\.", "decoder.up.", key)
    key = re.sub(r"^encoder\.down_block\.down\.", "encoder.down.", key)
    key = re.sub(r"\.out_proj\.(weight|bias)$", r".proj_out.\1", key)
    key = re.sub(r"\.(q|k|v)_proj\.(weight|bias)$", r".\1.\2", key)
    key = re.sub(r"\.mid\.attn_norm\.", ".mid.attn_1.norm.", key)
    return re.sub(r"\.attn_norms\.(\d+)\.", r".attn.\1.norm.", key)


def original_text_name(name: str) -> str:
    return "model." + name[len("model.text_model."):] if name.startswith("model.text_model.") else name


def convert(text_sd, text_origin, vq_sd, vq_origin):
    """Both original state dicts -> (transformers' state dict, {name: (file, original name)})."""
    out, sources = {}, {}
    for key, value in text_sd.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        out[text_name(key)] = value
        sources[text_name(key)] = (text_origin[key], key)
    for key, value in vq_sd.items():
        name = vq_name(key)
        if re.search(r"\.(q|k|v|out)_proj\.weight$", name) and value.dim() == 4:
            value = value.flatten(1)  # a 1x1 convolution is a linear layer: (c, c, 1, 1) -> (c, c)
        out[name] = value
        sources[name] = (vq_origin[key], key)
    return out, sources


# -- configuration -----------------------------------------------------------------------------------

TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "initializer_range",
               "pad_token_id", "bos_token_id", "eos_token_id", "attention_dropout", "tie_word_embeddings")
VQ_FIELDS = {"codebook_size": "codebook_size", "embed_dim": "embed_dim", "z_channels": "latent_channels",
             "double_z": "double_latent", "in_channels": "in_channels", "out_channels": "out_channels",
             "temporal_downsample_factor": "temporal_downsample_factor", "ch": "base_channels",
             "ch_mult": "channel_multiplier", "num_res_blocks": "num_res_blocks",
             "attn_resolutions": "attn_resolutions"}


def rope_parameters(config: dict) -> dict:
    """``rope_theta`` / ``rope_scaling`` ({"type": "linear"|"dynamic", "factor"}) -> transformers' rope dict."""
    rope = {"rope_type": "default", "rope_theta": float(config.get("rope_theta", 1_000_000.0))}
    scaling = config.get("rope_scaling")
    if scaling:
        rope.update(rope_type=scaling.get("type", scaling.get("rope_type", "default")), factor=scaling["factor"])
    return rope


def hf_config(config: dict, vq_config: dict, vocabulary_map: dict):
    from transformers import Emu3Config

    text = {k: config[k] for k in TEXT_FIELDS if k in config}
    text["rope_parameters"] = rope_parameters(config)
    vq = {new: vq_config[old] for old, new in VQ_FIELDS.items() if old in vq_config}
    # transformers' VQ attention is a linear layer of ``hidden_size``: the width of the last (coarsest) level,
    # where the original puts its attention blocks
    vq["hidden_size"] = vq_config.get("ch", 256) * list(vq_config.get("ch_mult", [1, 2, 2, 4]))[-1]
    vq["num_attention_heads"] = 1
    return Emu3Config(text_config=text, vq_config=vq, vocabulary_map=vocabulary_map,
                      architectures=["Emu3ForConditionalGeneration"])


# -- tokenizer ---------------------------------------------------------------------------------------

def read_tiktoken(path: str) -> dict[bytes, int]:
    """``emu3.tiktoken``: one "base64-token rank" pair per line."""
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError as e:
                raise CheckpointError(f"{path} line {n} is not a 'base64-token rank' pair: the file is damaged; "
                                      f"download it again from {PUBLISHED}") from e
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise CheckpointError(f"{path}: ranks are not 0..{len(ranks) - 1}: the file is damaged; download it again "
                              f"from {PUBLISHED}")
    return ranks


def build_tokenizer(folder: str, tokenizer_config: dict | None = None):
    """The Emu3 tiktoken vocabulary as a transformers fast tokenizer with the same ids."""
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    paths = [os.path.join(folder, n) for n in (TIKTOKEN, VISION_TOKENS)]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise CheckpointError(f"{WHAT} in {folder} has no tokenizer: {', '.join(missing)} missing; download them "
                              f"from {PUBLISHED}")
    ranks = read_tiktoken(paths[0])
    with open(paths[1], encoding="utf-8") as f:
        vision = [t.strip() for t in f if t.strip()]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *(f"<|extra_{i}|>" for i in range(205)), *vision]

    class _Converter(TikTokenConverter):  # transformers' converter; the ranks read above, no tiktoken package
        @staticmethod
        def load_tiktoken_bpe(_path):
            return ranks

    backend = _Converter(paths[0], pattern=PATTERN, extra_special_tokens=specials).converted()
    backend.normalizer = normalizers.NFC()  # Emu3Tokenizer.tokenize normalises to NFC
    given = {k: v for k, v in (tokenizer_config or {}).items() if k in SPECIAL_NAMES and isinstance(v, str)}
    names = {**SPECIAL_NAMES, **given}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **names,
                                  extra_special_tokens={k: v for k, v in IMAGE_NAMES.items() if v in specials})
    for k, v in IMAGE_NAMES.items():
        setattr(tok, k, v)
    assert tok.convert_tokens_to_ids(specials[0]) == len(ranks)  # specials numbered from the end of the ranks
    return tok


# -- the vision tokenizer ----------------------------------------------------------------------------

def find_vision_tokenizer(folder: str | None, given: str | None) -> str:
    """The Emu3-VisionTokenizer folder (or hub id) for a model folder (None: the model came from the hub); a
    clear error when there is none."""
    if given:
        return given
    if folder is None:
        return VQ_HUB_ID  # the model came from the hub: so does its vision tokenizer (as BAAI's example loads it)
    parent = os.path.dirname(os.path.abspath(folder))
    for place in (folder, parent):  # inside the model folder first, then beside it
        found = [os.path.join(place, d) for d in sorted(os.listdir(place))
                 if os.path.isdir(os.path.join(place, d)) and config_model_type(os.path.join(place, d)) == VQ_MODEL_TYPE]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CheckpointError(f"more than one Emu3-VisionTokenizer folder in {place}: "
                                  f"{', '.join(os.path.basename(f) for f in found)}; keep one, or pass vision_tokenizer=")
    raise CheckpointError(
        f"{WHAT} in {folder} needs its vision tokenizer, which BAAI publishes separately as {VQ_PUBLISHED}: "
        f"download that folder into {os.path.join(folder, 'vision_tokenizer')} (or beside the model folder), or "
        "give its path as vision_tokenizer=")


def load(folder: str, config: dict, options: LoadOptions, tokenizer=None, vision_tokenizer: str | None = None,
         from_hub: bool = False):
    """(Emu3ForConditionalGeneration, tokenizer) from a folder in BAAI's layout and its vision tokenizer."""
    from transformers import Emu3ForConditionalGeneration

    from .hf_common import load_converted, redownload_fix
    from .hub import is_hub_id, snapshot

    vq_folder = find_vision_tokenizer(None if from_hub else folder, vision_tokenizer)
    if is_hub_id(vq_folder):
        vq_folder = snapshot(vq_folder, replace(options.hub, revision=None))  # the model's revision is not its
    if not os.path.isdir(vq_folder) or config_model_type(vq_folder) != VQ_MODEL_TYPE:
        raise CheckpointError(f"{vq_folder} is not an Emu3-VisionTokenizer folder (config.json model_type "
                              f"{VQ_MODEL_TYPE!r}); download {VQ_PUBLISHED}")
    with open(os.path.join(vq_folder, "config.json"), encoding="utf-8") as f:
        vq_config = json.load(f)
    tok_config = {}
    if os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            tok_config = json.load(f)
    tok = tokenizer if tokenizer is not None else build_tokenizer(folder, tok_config)
    text_files = find_weight_files(folder, WHAT, PUBLISHED)
    vq_files = find_weight_files(vq_folder, VQ_WHAT, VQ_PUBLISHED)
    sd, sources = convert(*read_weight_files(text_files), *read_weight_files(vq_files))
    hf = hf_config(config, vq_config, tok.get_vocab())

    def describe(name):
        if name in sources:
            return sources[name]
        if name.startswith("model.vqmodel."):
            return vq_files.where(original_vq_name(name)), original_vq_name(name)
        return text_files.where(original_text_name(name)), original_text_name(name)

    model = load_converted(Emu3ForConditionalGeneration, hf, sd, describe, options, what=f"{WHAT} in {folder}",
                           fix=redownload_fix(f"{PUBLISHED} and {VQ_PUBLISHED}"), family="emu3")
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return model, tok
