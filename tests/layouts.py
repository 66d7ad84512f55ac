"""Tiny checkpoints in the layouts the original publishers release, for the loading tests.

Each writer takes a tiny transformers model (``zipar.zipar_core.models.tiny``) and writes the same weights the
way the original code saves them: its module names and shapes, its config.json fields, its tokenizer and
processor files. The names are written here from the facts of each layout (docstrings of
``zipar_core/models/*_original.py`` say where they were read), independently of the package's converters,
so a test that loads these folders and gets the reference's codes checks the converters against a second
account of the layout. No code of the original projects is used.
"""
from __future__ import annotations

import base64
import json
import os
import re

import regex
import torch
from safetensors.torch import save_file


def save_tensors(sd: dict, folder, stem: str, fmt: str = "bin", shards: int = 1) -> list[str]:
    """``stem``.bin / .safetensors, or ``shards`` files with transformers' index (``<stem>.<ext>.index.json``
    and ``<stem>-0000i-of-0000n.<ext>``)."""
    os.makedirs(folder, exist_ok=True)
    ext = "safetensors" if fmt == "safetensors" else "bin"

    def write(part, name):
        path = os.path.join(folder, name)
        if ext == "safetensors":
            save_file({k: v.contiguous() for k, v in part.items()}, path, metadata={"format": "pt"})
        else:
            torch.save({k: v.clone() for k, v in part.items()}, path)
        return name

    if shards == 1:
        return [write(sd, f"{stem}.{ext}")]
    keys = list(sd)
    names, weight_map = [], {}
    for i in range(shards):
        part = {k: sd[k] for k in keys[i::shards]}
        name = write(part, f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}")
        names.append(name)
        weight_map.update(dict.fromkeys(part, name))
    with open(os.path.join(folder, f"{stem}.{ext}.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
                   "weight_map": weight_map}, f)
    return names


def write_json(path, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)


# -- Janus: DeepSeek's MultiModalityCausalLM -----------------------------------------------------------

def janus_original_state_dict(model) -> dict:
    """JanusForConditionalGeneration tensors under MultiModalityCausalLM's names (deepseek-ai/Janus)."""
    out, qkv = {}, {}
    for k, v in model.state_dict().items():
        k2 = k
        if k == "lm_head.weight":
            k2 = "language_model.lm_head.weight"
        elif k.startswith("model.language_model."):
            k2 = "language_model.model." + k[len("model.language_model."):]
        elif k.startswith("model.vision_model."):
            rest = k[len("model.vision_model."):]
            if rest == "embeddings.position_embedding.weight":
                k2, v = "vision_model.vision_tower.pos_embed", v[None]  # timm keeps a batch axis
            else:
                rest = rest.replace("embeddings.patch_embedding.", "patch_embed.proj.").replace("post_layernorm.", "norm.")
                rest = rest.replace("encoder.layers.", "blocks.").replace("layer_norm1", "norm1").replace("layer_norm2", "norm2")
                rest = rest.replace("self_attn.projection_layer", "attn.proj")
                m = re.match(r"^(blocks\.\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", rest)
                if m:  # timm's fused attention projection: rows q, then k, then v
                    qkv.setdefault(f"vision_model.vision_tower.{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = v
                    continue
                k2 = "vision_model.vision_tower." + rest
        elif k.startswith(("model.aligner.", "model.generation_aligner.")):
            prefix, rest = k.split(".", 2)[1], k.split(".", 2)[2]
            prefix = {"aligner": "aligner", "generation_aligner": "gen_aligner"}[prefix]
            m = re.match(r"^hidden_layers\.(\d+)\.(.*)$", rest)  # MlpProjector: Linear, GELU, Linear, ...
            rest = f"layers.{2 * int(m.group(1)) + 2}.{m.group(2)}" if m else rest.replace("fc1.", "layers.0.")
            k2 = f"{prefix}.{rest}"
        elif k.startswith("model.generation_head."):
            k2 = k.replace("model.generation_head.proj_out.", "gen_head.output_mlp_projector.").replace(
                "model.generation_head.vision_head.", "gen_head.vision_head.")
        elif k.startswith("model.generation_embeddings."):
            k2 = k.replace("model.generation_embeddings.", "gen_embed.")
        elif k.startswith("model.vqmodel."):
            rest = k[len("model.vqmodel."):]
            rest = rest.replace("encoder.down.", "encoder.conv_blocks.").replace("decoder.up.", "decoder.conv_blocks.")
            rest = re.sub(r"(conv_blocks\.\d+)\.block\.", r"\1.res.", rest)
            rest = rest.replace("mid.block_1.", "mid.0.").replace("mid.attn_1.", "mid.1.").replace("mid.block_2.", "mid.2.")
            k2 = "gen_vision_model." + rest
        out[k2] = v
    for name, parts in qkv.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    width = model.config.vision_config.hidden_size
    g = torch.Generator().manual_seed(5)
    for n, shape in (("latent", (1, 1, width)), ("q.weight", (width, width)), ("kv.weight", (2 * width, width)),
                     ("proj.weight", (width, width)), ("norm.weight", (width,)), ("mlp.fc1.weight", (4 * width, width))):
        out[f"vision_model.vision_tower.attn_pool.{n}"] = torch.randn(shape, generator=g)  # unused by generation
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(65536)  # VQ-16's usage statistic
    return out


def janus_original_config(model) -> dict:
    cfg = model.config
    text, vision, vq = cfg.text_config, cfg.vision_config, cfg.vq_config
    language = {k: getattr(text, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "max_position_embeddings")}
    language.update(model_type="llama", torch_dtype="float32")
    return {
        "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "float32",
        "transformers_version": "4.33.1",
        "language_config": language,
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
                          "params": {"image_size": vision.image_size, "model_name": "siglip_large_patch16_384",
                                     "select_feature": "same", "select_layer": -1}},
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                           "params": {"depth": vision.depth, "input_dim": vision.hidden_size,
                                      "n_embed": vision.projection_dim, "projector_type": "mlp_gelu"}},
        "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                              "params": {"image_token_size": vq.num_embeddings, "n_embed": vq.embed_dim}},
        "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                               "params": {"depth": vq.num_hidden_layers, "input_dim": vq.embed_dim,
                                          "n_embed": vq.projection_dim, "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                            "params": {"image_token_embed": vq.image_token_embed_dim,
                                       "image_token_size": vq.num_embeddings, "n_embed": text.hidden_size}},
    }


def write_janus_original(model, tok, folder, fmt: str = "bin", shards: int = 1) -> str:
    """deepseek-ai/Janus-Pro-style folder: config.json, pytorch_model*.bin, tokenizer and processor files."""
    folder = os.fspath(folder)
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    save_tensors(janus_original_state_dict(model), folder, stem, fmt, shards)
    write_json(os.path.join(folder, "config.json"), janus_original_config(model))
    tok.save_pretrained(folder)
    with open(os.path.join(folder, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["tokenizer_class"] = "LlamaTokenizerFast"  # as DeepSeek's tokenizer_config.json says
    for name in ("bos_token", "eos_token", "pad_token"):  # named in special_tokens_map.json (below) instead
        tc.pop(name, None)
    write_json(os.path.join(folder, "tokenizer_config.json"), tc)
    write_json(os.path.join(folder, "special_tokens_map.json"),
               {"bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token})
    write_json(os.path.join(folder, "processor_config.json"),
               {"processor_class": "VLChatProcessor", "image_tag": "<image_placeholder>",
                "image_start_tag": "<begin_of_image>", "image_end_tag": "<end_of_image>", "pad_tag": "<pad>",
                "num_image_tokens": 16, "add_special_token": False, "sft_format": "deepseek", "mask_prompt": True,
                "ignore_id": -100})
    write_json(os.path.join(folder, "preprocessor_config.json"),
               {"image_processor_type": "VLMImageProcessor", "image_size": 64, "min_size": 14,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255,
                "do_normalize": True, "processor_class": "VLChatProcessor"})
    return folder


# -- Emu3: BAAI's remote code ------------------------------------------------------------------------

EMU3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
EMU3_WORDS = ["a", "cat", "on", "the", "mat", "dog", "red", "lowres", "bad", "*", "blue"]


def emu3_tiktoken_ranks() -> dict[bytes, int]:
    """A small byte-level BPE: the 256 bytes, then every prefix of a few words (with and without a leading
    space), ranked in the order added."""
    ranks = {bytes([b]): b for b in range(256)}
    for word in EMU3_WORDS:
        for text in (word, " " + word):
            data = text.encode()
            for n in range(2, len(data) + 1):
                ranks.setdefault(data[:n], len(ranks))
    return ranks


def emu3_specials(codebook: int) -> list[str]:
    vision = ["<|image token|>", "<|image start|>", "<|image end|>", *(f"<|visual token {c:06d}|>" for c in range(codebook))]
    return ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *(f"<|extra_{i}|>" for i in range(205)), *vision]


def emu3_vocab(codebook: int = 64) -> dict[str, int]:
    """The id map of the tiny tiktoken tokenizer (BPE tokens by their byte-level spelling, then the specials)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    enc = bytes_to_unicode()
    ranks = emu3_tiktoken_ranks()
    vocab = {"".join(enc[b] for b in token): rank for token, rank in ranks.items()}
    vocab.update({t: len(ranks) + i for i, t in enumerate(emu3_specials(codebook))})
    return vocab


def tiktoken_encode(text: str, codebook: int = 64) -> list[int]:
    """tiktoken's algorithm on the tiny vocabulary, every special token allowed (Emu3Tokenizer.tokenize): split
    off specials, split the rest with the pattern, merge each piece's lowest-ranked adjacent pair until none is
    in the vocabulary. The reference the converted tokenizer is checked against."""
    ranks = emu3_tiktoken_ranks()
    specials = {t: len(ranks) + i for i, t in enumerate(emu3_specials(codebook))}
    ids = []
    for chunk in regex.split("(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")", text):
        if chunk in specials:
            ids.append(specials[chunk])
            continue
        for piece in regex.findall(EMU3_PATTERN, chunk):
            parts = [bytes([b]) for b in piece.encode()]
            while True:
                pairs = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in ranks]
                if not pairs:
                    break
                _, i = min(pairs)
                parts[i:i + 2] = [parts[i] + parts[i + 1]]
            ids += [ranks[p] for p in parts]
    return ids


def emu3_original_state_dicts(model) -> tuple[dict, dict]:
    """(Emu3ForCausalLM tensors, Emu3VisionVQModel tensors) under the names of BAAI's code."""
    text, vq = {}, {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            text[k] = v
        elif k.startswith("model.text_model."):
            text["model." + k[len("model.text_model."):]] = v
        elif k.startswith("model.vqmodel."):
            rest = k[len("model.vqmodel."):]
            rest = rest.replace("encoder.down_block.down.", "encoder.down.").replace("decoder.up_block.up.", "decoder.up.")
            rest = rest.replace(".middle_block.", ".mid.").replace(".mid.attn_norm.", ".mid.attn_1.norm.")
            rest = re.sub(r"\.attn_norms\.(\d+)\.", r".attn.\1.norm.", rest)
            m = re.search(r"\.(q|k|v|out)_proj\.(weight|bias)$", rest)
            if m:  # the original attention projections are 1x1 convolutions
                rest = rest[:m.start()] + f".{'proj_out' if m.group(1) == 'out' else m.group(1)}.{m.group(2)}"
                v = v[:, :, None, None] if m.group(2) == "weight" else v
            vq[rest] = v
    return text, vq


def write_emu3_original(model, folder, codebook: int = 64, vq_folder=None, fmt: str = "safetensors",
                        shards: int = 1) -> str:
    """BAAI/Emu3-Gen-style folder (config.json model_type "Emu3", Emu3ForCausalLM weights, emu3.tiktoken +
    emu3_vision_tokens.txt), and an Emu3-VisionTokenizer folder (default: ``vision_tokenizer/`` inside)."""
    folder = os.fspath(folder)
    text_sd, vq_sd = emu3_original_state_dicts(model)
    save_tensors(text_sd, folder, "model", fmt, shards)
    t = model.config.text_config
    vocab = emu3_vocab(codebook)
    write_json(os.path.join(folder, "config.json"), {
        "architectures": ["Emu3ForCausalLM"], "model_type": "Emu3",
        "auto_map": {"AutoConfig": "configuration_emu3.Emu3Config", "AutoModelForCausalLM": "modeling_emu3.Emu3ForCausalLM"},
        **{k: getattr(t, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                      "num_attention_heads", "num_key_value_heads", "hidden_act",
                                      "max_position_embeddings", "rms_norm_eps", "pad_token_id", "bos_token_id",
                                      "eos_token_id")},
        "rope_theta": t.rope_parameters["rope_theta"], "rope_scaling": None, "attention_dropout": 0.1,
        "img_token_id": vocab["<|image token|>"], "boi_token_id": vocab["<|image start|>"],
        "eoi_token_id": vocab["<|image end|>"], "eol_token_id": vocab["<|extra_200|>"],
        "eof_token_id": vocab["<|extra_201|>"], "image_area": 518400, "pretraining_tp": 1,
        "tie_word_embeddings": False, "torch_dtype": "float32"})
    with open(os.path.join(folder, "emu3.tiktoken"), "w") as f:
        for token, rank in emu3_tiktoken_ranks().items():
            f.write(f"{base64.b64encode(token).decode()} {rank}\n")
    with open(os.path.join(folder, "emu3_vision_tokens.txt"), "w") as f:
        f.write("\n".join(emu3_specials(codebook)[208:]) + "\n")
    write_json(os.path.join(folder, "tokenizer_config.json"), {
        "auto_map": {"AutoTokenizer": ["tokenization_emu3.Emu3Tokenizer", None]}, "tokenizer_class": "Emu3Tokenizer",
        "bos_token": "<|extra_203|>", "eos_token": "<|extra_204|>", "pad_token": "<|endoftext|>",
        "model_max_length": 5120, "padding_side": "left", "special_tokens_file": "emu3_vision_tokens.txt"})
    vq_folder = os.fspath(vq_folder) if vq_folder is not None else os.path.join(folder, "vision_tokenizer")
    c = model.config.vq_config
    save_tensors(vq_sd, vq_folder, "model", "safetensors")
    write_json(os.path.join(vq_folder, "config.json"), {
        "architectures": ["Emu3VisionVQModel"], "model_type": "Emu3VisionVQ",
        "auto_map": {"AutoConfig": "configuration_emu3visionvq.Emu3VisionVQConfig",
                     "AutoModel": "modeling_emu3visionvq.Emu3VisionVQModel"},
        "codebook_size": c.codebook_size, "embed_dim": c.embed_dim, "z_channels": c.latent_channels,
        "double_z": c.double_latent, "in_channels": c.in_channels, "out_channels": c.out_channels,
        "temporal_downsample_factor": c.temporal_downsample_factor, "ch": c.base_channels,
        "ch_mult": list(c.channel_multiplier), "num_res_blocks": c.num_res_blocks,
        "attn_resolutions": list(c.attn_resolutions), "dropout": 0.0, "torch_dtype": "float32"})
    write_json(os.path.join(vq_folder, "preprocessor_config.json"), {
        "image_processor_type": "Emu3VisionVQImageProcessor", "spatial_factor": 8, "min_pixels": 512 * 512,
        "max_pixels": 1024 * 1024, "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    return folder


# -- Lumina-mGPT: Alpha-VLLM's ChameleonXLLMX + Meta's Chameleon tokenizer files --------------------------

LUMINA_VQ = {"embed_dim": 8, "n_embed": 32, "ddconfig": {"double_z": False, "z_channels": 8, "resolution": 64,
                                                        "in_channels": 3, "out_ch": 3, "ch": 32,
                                                        "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1,
                                                        "attn_resolutions": [], "dropout": 0.0}}


def lumina_hf_vq_config() -> dict:
    """The same VQGAN in transformers' ChameleonVQVAEConfig names (the encoder half)."""
    dd = LUMINA_VQ["ddconfig"]
    return {"embed_dim": 8, "num_embeddings": 32, "double_latent": False, "latent_channels": dd["z_channels"],
            "resolution": dd["resolution"], "in_channels": 3, "out_channels": 3, "base_channels": dd["ch"],
            "channel_multiplier": dd["ch_mult"], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def shard_uniform_norms(model, parallel: int) -> None:
    """Make each model-parallel shard's heads share one q/k-norm row (all a layout with ``parallel`` rows holds)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(r"self_attn\.(q|k)_norm\.", name):
                rows = p.shape[0] // parallel
                p.copy_(p[::rows].repeat_interleave(rows, dim=0))


def lumina_original_state_dict(model, parallel: int) -> dict:
    """ChameleonXLLMX tensors: transformers' names, q/k norms with one row per model-parallel shard, and no
    ``model.vqmodel`` (Lumina's fine-tuning deletes it before saving)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.vqmodel."):
            continue
        if re.search(r"self_attn\.(q|k)_norm\.", k):
            v = v[::v.shape[0] // parallel].clone()
        out[k] = v
    return out


def write_chameleon_tokenizer(folder, model, decoder, tok) -> str:
    """Meta's tokenizer/ folder: vqgan.ckpt (a Lightning-style {"state_dict": ...} pickle of the whole taming
    VQModel: encoder, quantize, quant_conv, post_quant_conv, decoder, loss), vqgan.yaml, text_tokenizer.json."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    sd = {k[len("model.vqmodel."):]: v for k, v in model.state_dict().items() if k.startswith("model.vqmodel.")}
    sd.update({k: v for k, v in decoder.state_dict().items() if k.startswith("decoder.")})
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)  # training-only parts of the file
    torch.save({"epoch": 3, "global_step": 1000, "state_dict": sd}, os.path.join(folder, "vqgan.ckpt"))
    with open(os.path.join(folder, "vqgan.yaml"), "w") as f:
        yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel",
                                  "params": {**LUMINA_VQ, "lossconfig": {"target": "taming.modules.losses.DummyLoss"}}}}, f)
    text = json.loads(tok.backend_tokenizer.to_str())
    text["model"]["vocab"].update({k: v for k, v in model.config.vocabulary_map.items() if k.startswith("IMGIMG")})
    write_json(os.path.join(folder, "text_tokenizer.json"), text)
    return folder


def write_lumina_original(model, tok, decoder, folder, parallel: int = 1, fmt: str = "safetensors",
                          shards: int = 1, config_maps: bool = True, chameleon=None) -> str:
    """Alpha-VLLM/Lumina-mGPT-style folder with Meta's Chameleon files in tokenizer/ (or at ``chameleon``);
    config_maps False: config.json without vocabulary_map / vq_config (read from the Chameleon files)."""
    folder = os.fspath(folder)
    save_tensors(lumina_original_state_dict(model, parallel), folder, "model", fmt, shards)
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in ("transformers_version", "_attn_implementation_autoset")}
    # the fields of Lumina's fork of ChameleonConfig (transformers 4.4x era: rope_theta, not rope_parameters)
    rope = cfg.pop("rope_parameters", None) or {}
    cfg.update(architectures=["ChameleonXLLMXForConditionalGeneration"], model_type="chameleon",
               model_parallel_size=parallel, z_loss_weight=1e-5, mask_image_logits=True, dropout=0.05,
               rope_theta=rope.get("rope_theta", 10000.0), rope_scaling=None, torch_dtype="float32")
    if not config_maps:
        cfg.pop("vocabulary_map", None)
        cfg.pop("vq_config", None)
    write_json(os.path.join(folder, "config.json"), cfg)
    tok.save_pretrained(folder)
    write_chameleon_tokenizer(chameleon or os.path.join(folder, "tokenizer"), model, decoder, tok)
    return folder


def tiny_lumina_parts(parallel: int = 2, seed: int = 3):
    """A tiny Chameleon whose image encoder and VQGAN decoder are one VQGAN (shared codebook and
    post_quant_conv, as in one taming checkpoint), q/k norms uniform per model-parallel shard."""
    from zipar.zipar_core.models.chameleon_vqgan import ChameleonVQGANDecoder, VQGANConfig
    from zipar.zipar_core.models.tiny import tiny_chameleon

    model, tok = tiny_chameleon(vq_config=lumina_hf_vq_config())
    shard_uniform_norms(model, parallel)
    dd = LUMINA_VQ["ddconfig"]
    torch.manual_seed(seed)
    decoder = ChameleonVQGANDecoder(VQGANConfig(n_embed=LUMINA_VQ["n_embed"], embed_dim=LUMINA_VQ["embed_dim"],
                                                z_channels=dd["z_channels"], ch=dd["ch"], ch_mult=dd["ch_mult"],
                                                num_res_blocks=dd["num_res_blocks"], resolution=dd["resolution"])).eval()
    vq = model.model.vqmodel
    with torch.no_grad():
        decoder.quantize.embedding.weight.copy_(vq.quantize.embedding.weight)
        decoder.post_quant_conv.load_state_dict(vq.post_quant_conv.state_dict())
    return model, tok, decoder


def live_models(cls) -> set[int]:
    """ids of the instances of ``cls`` alive now with real (not meta) weights."""
    import gc

    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o) is cls and any(p.device.type != "meta" for p in o.parameters())}
