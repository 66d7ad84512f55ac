"""Tiny random models of every family, built offline in milliseconds: the registry's ``tiny`` builders
(``registry.build_tiny(name)``), used by the tests and the benchmarks.

Weights are random (seeded), scaled up where the default init makes greedy decoding collapse onto one
token (found by trying): exactness tests need varied, position-dependent argmaxes to mean something.
``*_size`` arguments override config entries (the benchmarks build larger random models this way), and
``preset`` builds a LlamaGen of a real size (GPT-B, GPT-L, ...) with random weights.

Imports transformers and tokenizers (the transformers families) or nothing beyond torch (LlamaGen) when
a builder runs.
"""
from __future__ import annotations

import re

import torch

WORDS = ["a", "cat", "dog", "red", "blue", "on", "the", "mat", "photo", "of", "lowres", "bad", "Generate", "an",
         "image", "according", "to", "following", "prompt", "User", "Assistant", "x", "*", ":", "<|", "|>", "|>:"]
WORDS += [str(i) for i in range(10)]


def word_tokenizer(vocab: dict[str, int], specials: list[str], **named):
    """Word-level tokenizer over ``vocab``; ``specials`` are matched whole; named: bos_token=..., etc."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=named.get("unk_token", specials[0])))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(True)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **named)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in named.values()]})
    return fast


def _scale(model, factor: float):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "vq" not in name:
                p.mul_(factor)
    return model.eval()


# -- Janus -------------------------------------------------------------------------------------------

def tiny_janus(attn="sdpa", seed=0, text_size: dict | None = None, vision_size: dict | None = None,
               vq_size: dict | None = None):
    """``*_size`` override config entries (the benchmarks build larger random models this way)."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    specials = ["<unk>", "<pad>", "<bos>", "<eos>", "<begin_of_image>", "<image_placeholder>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    torch.manual_seed(seed)
    text = {"model_type": "llama", "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
                "bos_token_id": 2, "pad_token_id": 1, "eos_token_id": 3}
    vision = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 64, "patch_size": 16,
                  "num_image_tokens": 16, "projection_dim": 32, "intermediate_size": 64, "depth": 1}
    vq = {"embed_dim": 8, "num_embeddings": 48, "base_channels": 32, "channel_multiplier": [1, 1, 1, 1, 1], "num_res_blocks": 1,
              "latent_channels": 32, "projection_dim": 32, "image_token_embed_dim": 32}
    text.update(text_size or {})
    vision.update(vision_size or {})
    vq.update(vq_size or {})
    cfg = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=5)
    cfg._attn_implementation = attn
    model = _scale(JanusForConditionalGeneration(cfg), 8.0)
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id, gen.generation_kwargs = 2, 1, {"boi_token_id": 4}
    tok = word_tokenizer(vocab, specials, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    return model, tok


# -- Emu3 --------------------------------------------------------------------------------------------

EMU3_SPECIALS = ["<|endoftext|>", "<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image end|>",
                 "<|image token|>", "<image>", "<|extra_200|>", "<|extra_201|>", "<unk>"]


def tiny_emu3(codebook=64, attn="sdpa", seed=0, max_positions=256, text_size: dict | None = None,
              vocab: dict[str, int] | None = None):
    """vocab: a vocabulary map of its own (then no tokenizer is returned: the caller has the one that fits)."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    own = vocab is None
    if own:
        vocab = {w: i for i, w in enumerate(EMU3_SPECIALS + WORDS)}
        for c in range(codebook):
            vocab[f"<|visual token {c:06d}|>"] = len(vocab)
    torch.manual_seed(seed)
    text = {"vocab_size": max(vocab.values()) + 1, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": max_positions,
                "pad_token_id": vocab["<|endoftext|>"], "bos_token_id": vocab["<|extra_203|>"],
                "eos_token_id": vocab["<|extra_204|>"]}
    vq = {"codebook_size": codebook, "embed_dim": 4, "latent_channels": 4, "base_channels": 32, "channel_multiplier": [1, 1, 1, 1],
              "num_res_blocks": 1, "attn_resolutions": [], "hidden_size": 32, "num_attention_heads": 1}
    text.update(text_size or {})
    cfg = Emu3Config(text_config=text, vq_config=vq, vocabulary_map=vocab)
    cfg._attn_implementation = attn
    cfg.text_config._attn_implementation = attn
    model = Emu3ForConditionalGeneration(cfg).eval()  # diverse enough as initialised
    if not own:
        return model, None
    tok = word_tokenizer(vocab, EMU3_SPECIALS, unk_token="<unk>", pad_token="<|endoftext|>",
                         bos_token="<|extra_203|>", eos_token="<|extra_204|>")
    tok.boi_token, tok.image_wrapper_token = "<|image start|>", "<|image token|>"
    return model, tok


# -- Chameleon / Lumina-mGPT -------------------------------------------------------------------------

def chameleon_image_name(code: int) -> str:
    """Chameleon's vocabulary name of VQ code ``code``: digits spelled A..J between IMGIMG and Z."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def tiny_chameleon(codebook=32, attn="sdpa", seed=0, max_positions=512, text_size: dict | None = None,
                   vq_config: dict | None = None):
    """Lumina-mGPT's real special ids (8196/8197/8710/8803/8804+n) in a vocabulary of 8840 with
    ``codebook`` image tokens at ids 4.. and a few words after the size tokens. vq_config: the image
    encoder's (transformers' ChameleonVQVAEConfig fields), e.g. one that matches a tiny VQGAN decoder."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in range(codebook):
        vocab[chameleon_image_name(c)] = 4 + c
    vocab.update({"<eoss>": 8196, "<racm3:break>": 8197, "<reserved08706>": 8710, "<reserved08799>": 8803})
    for n in range(24):
        vocab[f"<reserved{8800 + n:05d}>"] = 8804 + n
    for w in WORDS + ["\n"]:
        vocab.setdefault(w, 8830 + len([k for k in vocab if vocab[k] >= 8830]))
    torch.manual_seed(seed)
    size = {**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2), **(text_size or {})}
    cfg = ChameleonConfig(vocab_size=max(vocab.values()) + 1, **size,
                          max_position_embeddings=max_positions, vocabulary_map=vocab,
                          # bos_token_id left at ChameleonConfig's default 1 (<pad> here), as Lumina's weight
                          # converter leaves it: BOS must come from the tokenizer's <s> (0), as in Lumina's code
                          pad_token_id=1, eos_token_id=2,
                          vq_config=vq_config or {"embed_dim": 8, "num_embeddings": codebook, "base_channels": 32,
                                                      "channel_multiplier": [1, 1], "num_res_blocks": 1,
                                                      "latent_channels": 8, "resolution": 32, "attn_resolutions": []})
    cfg._attn_implementation = attn
    model = _scale(ChameleonForConditionalGeneration(cfg), 2.0)
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<eoss>", "<racm3:break>", "<reserved08706>", "<reserved08799>"]
    tok = word_tokenizer({k: v for k, v in vocab.items() if not re.match(r"IMGIMG", k)}, specials,
                         unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    return model, tok


# -- LlamaGen ----------------------------------------------------------------------------------------

def tiny_llamagen_parts(model_type="c2i", seed=0):
    """GPT and VQ for a 4x4 grid, 64 codes, VQ with 16 px per token (64x64 images); t2i with 8 caption
    tokens of width 32."""
    from .llamagen import LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel

    torch.manual_seed(seed)
    extra = {"model_type": "t2i", "caption_dim": 32, "cls_token_num": 8} if model_type == "t2i" else {}
    gpt = LlamaGenTransformer(LlamaGenConfig(dim=64, n_layer=2, n_head=4, vocab_size=64, num_classes=10, block_size=16,
                                             multiple_of=32, **extra))
    with torch.no_grad():
        for p in gpt.parameters():  # sharper logits: varied, seed-dependent samples
            p.mul_(3.0)
    vq = VQModel(VQConfig(codebook_size=64, ch=32, ch_mult=(1, 1, 1, 1, 1), z_channels=16, num_res_blocks=1))
    return gpt.eval(), vq.eval()


def random_llamagen(preset: str, grid: int, device="cpu", seed: int = 0):
    """A class-conditional LlamaGen GPT with random weights (no VQ): 'tiny' (dim 256, 4 layers, 4096 codes,
    10 classes) or a LlamaGen size (GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-3B) on a grid x grid token grid."""
    from .llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer

    torch.manual_seed(seed)
    if preset == "tiny":
        cfg = LlamaGenConfig(dim=256, n_layer=4, n_head=8, vocab_size=4096, num_classes=10,
                             block_size=grid * grid, multiple_of=64)
    else:
        cfg = LlamaGenConfig.from_preset(preset, "c2i", grid * grid)
    return LlamaGenAdapter(LlamaGenTransformer(cfg).to(device).eval())


def tiny_llamagen(model_type="c2i", seed=0, preset: str | None = None, grid: int = 16, device="cpu"):
    """A LlamaGen adapter: the tiny 4x4 model with its 16-px VQ, or with ``preset`` a random-weight GPT of
    that size on a ``grid`` x ``grid`` grid (speed only: no VQ, class-conditional)."""
    from .llamagen import LlamaGenAdapter

    if preset is not None:
        return random_llamagen(preset, grid, device, seed)
    gpt, vq = tiny_llamagen_parts(model_type, seed)
    return LlamaGenAdapter(gpt.to(device), vq.to(device))


# -- adapters of the transformers families -----------------------------------------------------------

def tiny_janus_adapter(device="cpu", dtype=None, **options):
    from .janus import JanusAdapter

    model, tok = tiny_janus(**options)
    return JanusAdapter(_to(model, device, dtype), tok)


def tiny_emu3_adapter(device="cpu", dtype=None, **options):
    from .emu3 import Emu3Adapter

    model, tok = tiny_emu3(**options)
    return Emu3Adapter(_to(model, device, dtype), tok)


def tiny_vqgan(codebook=32, seed=2):
    """A Chameleon VQGAN decoder with 16 px per token, narrow."""
    from .chameleon_vqgan import ChameleonVQGANDecoder, VQGANConfig

    torch.manual_seed(seed)
    return ChameleonVQGANDecoder(VQGANConfig(n_embed=codebook, embed_dim=8, z_channels=32, ch=32,
                                             ch_mult=[1, 1, 1, 1, 1], num_res_blocks=1)).eval()


def tiny_lumina_adapter(device="cpu", dtype=None, target_size=None, vqgan=True, **options):
    """target_size None: any multiple of 32 px that fits the context (the tiny model has no training sizes);
    vqgan: with a tiny VQGAN decoder."""
    from .lumina import LuminaAdapter

    model, tok = tiny_chameleon(**options)
    decoder = tiny_vqgan(options.get("codebook", 32)).to(device) if vqgan else None
    return LuminaAdapter(_to(model, device, dtype), tok, decoder, target_size=target_size)


def _to(model, device, dtype):
    return model.to(device) if dtype is None else model.to(device, dtype)


# -- Lumina-mGPT 2.0 ---------------------------------------------------------------------------------

# Qwen2.5's special tokens (ids 151643..151664), then Lumina-mGPT 2.0's at the ids its code names (<racm3:break>
# 151665, <eoss> 151666, end of line 151670: inference_solver.decode_ids), then the others; the adapter reads every
# id by name
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
                 "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
LUMINA2_SPECIALS = QWEN_SPECIALS + ["<racm3:break>", "<eoss>", "<reserved08796>", "<reserved08797>",
                                    "<reserved08798>", "<reserved08799>", "<reserved08706>"] \
    + [f"<reserved{8800 + n:05d}>" for n in range(49)]
LUMINA2_CORPUS = ["Generate an image of 768x768 according to the following prompt:\na red cat on the mat, a photo",
                  "Generate a dual-panel image of 512x1024 where the <lower half> displays a <depth map>, while the "
                  "<upper half> retains the original image for direct visual comparison:\na blue dog, lowres, bad"]
# Qwen2's pre-tokenizer split (its tokenizer.json), so transformers' Qwen2Tokenizer tokenizes as the file does
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
              r"\s+(?!\S)|\s+")


def lumina2_tokenizer_json() -> str:
    """A tiny byte-level BPE in the form of Lumina-mGPT 2.0's tokenizer.json (Qwen2.5-style: Qwen's split, byte
    level, merges learnt here from two prompts), its special tokens at ids 151643 and up."""
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(LUMINA2_CORPUS, trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    data = json.loads(tok.to_str())
    specials = {name: 151643 + i for i, name in enumerate(LUMINA2_SPECIALS)}
    data["model"]["vocab"].update(specials)
    data["added_tokens"] = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for s, i in specials.items()]
    return json.dumps(data, ensure_ascii=False)


def write_lumina2_tokenizer(folder) -> None:
    """The tiny tokenizer as Lumina-mGPT 2.0's folder holds its own: tokenizer.json and a Qwen2.5-style
    tokenizer_config.json (Qwen2Tokenizer, no BOS, EOS and padding <|endoftext|>), readable by transformers 4
    (the original's) and 5."""
    import json
    import os

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(lumina2_tokenizer_json())
    added = {str(151643 + i): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                               "single_word": False, "special": True} for i, name in enumerate(LUMINA2_SPECIALS)}
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>", "unk_token": None, "add_prefix_space": False, "errors": "replace",
              "clean_up_tokenization_spaces": False, "model_max_length": 131072, "split_special_tokens": False,
              "added_tokens_decoder": added}
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)


def lumina2_tokenizer():
    """The tiny tokenizer as transformers loads it (no BOS, EOS and padding <|endoftext|>, as Qwen2.5's)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(lumina2_tokenizer_json()),
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_lumina2(codebook=32, attn="sdpa", seed=0, max_positions=512, text_size: dict | None = None):
    """Lumina-mGPT 2.0's layout at a tiny size: a Chameleon whose vocabulary holds the image tokens at 155000 +
    code (so 155,000 + codebook + 1 ids, as the release's 171,385), no image encoder, config BOS/EOS ids that are
    not the tokenizer's (the adapter must read them from the tokenizer)."""
    from transformers import ChameleonForConditionalGeneration

    from .lumina2_original import IMAGE_TOKEN_BASE, STUB_ENCODER, drop_image_encoder, hf_config

    tok = lumina2_tokenizer()
    size = {**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2), **(text_size or {})}
    config, own = hf_config({"model_type": "chameleon", "vocab_size": IMAGE_TOKEN_BASE + codebook + 1, **size,
                             "max_position_embeddings": max_positions, "vocabulary_map": tok.get_vocab(),
                             "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "swin_norm": False,
                             "vq_config": dict(STUB_ENCODER)})  # a saved copy reloads with a tiny unused encoder
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = _scale(drop_image_encoder(ChameleonForConditionalGeneration(config), own), 2.0)
    with torch.no_grad():  # every norm away from 1 / 0 and each head its own q/k norm: a wrong norm cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
    return model, tok


def tiny_movqgan(codebook=32, seed=2):
    """A MoVQGAN decoder with 8 px per token (three upsamplings), narrow, attention at the coarsest level."""
    from .movqgan import MoVQGANConfig, MoVQGANDecoder

    torch.manual_seed(seed)
    model = MoVQGANDecoder(MoVQGANConfig(n_embed=codebook, embed_dim=4, z_channels=4, ch=32, ch_mult=[1, 1, 1, 1],
                                         num_res_blocks=1, attn_levels=[3])).eval()
    with torch.no_grad():  # zq modulation away from the identity, so that a wrong zq path shows
        model.quantize.embedding.weight.normal_()
    return model


def tiny_lumina2_adapter(device="cpu", dtype=None, target_size=None, vqgan=True, **options):
    """target_size None: any multiple of 32 px that fits the context; vqgan: with a tiny MoVQGAN decoder."""
    from .lumina2 import Lumina2Adapter

    model, tok = tiny_lumina2(**options)
    codebook = options.get("codebook", 32)
    decoder = tiny_movqgan(codebook).to(device) if vqgan else None
    return Lumina2Adapter(_to(model, device, dtype), tok, decoder, target_size=target_size, codebook_size=codebook)
