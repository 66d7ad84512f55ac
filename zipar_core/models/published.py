"""The configurations of the models people download, for planning memory without their weights (issue 22:
``zipar memory Janus-Pro-7B``). No download: the numbers are written here, each with where it comes from.

Every entry is the transformers configuration ZipAR builds the model with (for LlamaGen, its own
``LlamaGenConfig`` fields), the image size it makes by default, and the parts that load beside it. The hub
configs themselves could not be read here (no access to the hub); what each number rests on is in ``sources``,
and what could not be checked against a published file is in ``unverified``.

No torch import at module level (the registry and ``zipar memory --help`` read the names).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# DeepSeek-LLM, the language model of Janus-Pro (Llama architecture): the 1.3B and 7B base sizes
_DEEPSEEK_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
                "num_key_value_heads": 16, "vocab_size": 102400, "max_position_embeddings": 16384,
                "rms_norm_eps": 1e-6, "bos_token_id": 100000, "eos_token_id": 100001, "pad_token_id": 100002}
_DEEPSEEK_7B = {**_DEEPSEEK_1B, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 30,
                "num_attention_heads": 32, "num_key_value_heads": 32}
# Chameleon-7B (Lumina-mGPT's base): transformers' ChameleonConfig defaults, which are Meta's 7B
_CHAMELEON_7B = {"vocab_size": 65536, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-5, "swin_norm": False}


def _janus(text: dict) -> dict:
    """A Janus-Pro config: SigLIP-L/16 at 384 px for understanding, VQ-16 (LlamaGen's) for generation; the
    aligners and the generation head as wide as the language model (DeepSeek's gen_aligner / gen_head
    ``n_embed``, ``image_token_embed``)."""
    width = text["hidden_size"]
    return {"text_config": {"model_type": "llama", **text},
            "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4.0,
                              "image_size": 384, "patch_size": 16, "projection_dim": width, "depth": 2},
            "vq_config": {"embed_dim": 8, "num_embeddings": 16384, "base_channels": 128,
                          "channel_multiplier": [1, 1, 2, 2, 4], "num_res_blocks": 2, "latent_channels": 256,
                          "projection_dim": width, "num_hidden_layers": 2, "image_token_embed_dim": width},
            "image_token_id": 100581, "tie_word_embeddings": False}


@dataclass(frozen=True)
class PublishedModel:
    """A published model as ZipAR builds it: ``config`` is a transformers config (``family``'s model class) or, for
    LlamaGen, ``LlamaGenConfig`` fields; ``size``: (height, width) in px it makes by default; ``text_tokens``:
    prompt tokens the plan assumes (the chat template and a prompt; LlamaGen's condition slots are fixed)."""

    name: str
    family: str
    hub_ids: tuple[str, ...]
    config: dict
    size: tuple[int, int]
    sources: str
    unverified: str = ""
    target_size: int | None = None  # Lumina-mGPT's training size
    parts: dict = field(default_factory=dict)  # sizes of what loads beside the transformer (decoders, text encoder)
    text_tokens: int = 96

    def matches(self, name: str) -> bool:
        wanted = name.strip().rstrip("/").lower()
        return wanted in (self.name.lower(), *(h.lower() for h in self.hub_ids))


JANUS_SOURCES = ("deepseek-ai/Janus code (janus/models: MultiModalityConfig, VQ-16, SigLIP-L "
                 "'siglip_large_patch16_384': width 1024, 24 layers, 16 heads, mlp ratio 4); DeepSeek-LLM sizes; the 1B's language model "
                 "(hidden 2048, 24 layers, 16 heads, vocabulary 102400) and gen_head 2048 as its config.json is quoted "
                 "in public projects; the 7B's gen_head / gen_aligner n_embed 4096 likewise")
LUMINA_SOURCES = ("Alpha-VLLM/Lumina-mGPT code: its ChameleonConfig defaults (vocabulary 65536, hidden 4096, MLP "
                  "11008, 32 layers, 32 heads) are Chameleon-7B's, which Lumina-mGPT-7B fine-tunes; Chameleon's VQGAN "
                  "(vqgan.yaml: 8192 codes, ch 128, ch_mult 1,1,2,2,4)")

MODELS: tuple[PublishedModel, ...] = (
    PublishedModel("Janus-Pro-1B", "janus", ("deepseek-ai/Janus-Pro-1B", "deepseek-community/Janus-Pro-1B"),
                   _janus(_DEEPSEEK_1B), (384, 384), JANUS_SOURCES,
                   unverified="intermediate_size 5632 and max_position_embeddings 16384 (DeepSeek-LLM 1.3B's, as "
                              "transformers' DeepSeek-VL 1.3B conversion writes them)"),
    PublishedModel("Janus-Pro-7B", "janus", ("deepseek-ai/Janus-Pro-7B", "deepseek-community/Janus-Pro-7B"),
                   _janus(_DEEPSEEK_7B), (384, 384), JANUS_SOURCES,
                   unverified="the language model's sizes (DeepSeek-LLM 7B's: 30 layers, MLP 11008) were not read from "
                              "the released config.json"),
    PublishedModel("Emu3-Gen", "emu3", ("BAAI/Emu3-Gen", "BAAI/Emu3-Gen-hf"),
                   {"text_config": {"vocab_size": 184622, "hidden_size": 4096, "intermediate_size": 14336,
                                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                    "max_position_embeddings": 9216, "rms_norm_eps": 1e-5,
                                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
                    "vq_config": {"codebook_size": 32768, "embed_dim": 4, "latent_channels": 4, "base_channels": 256,
                                  "channel_multiplier": [1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [3],
                                  "temporal_downsample_factor": 4, "hidden_size": 1024, "num_attention_heads": 1},
                    "vocabulary_map": {}},
                   (720, 720), "baaivision/Emu3 code: Emu3Config defaults (vocabulary 184622, hidden 4096, MLP 14336, "
                   "32 layers, 32 heads, 8 key/value heads, context 9216, image area 720x720) and Emu3VisionVQConfig "
                   "defaults (32768 codes, ch 256, ch_mult 1,2,2,4, temporal factor 4); the same sizes are quoted from "
                   "BAAI/Emu3-Gen's config.json in public projects",
                   unverified="max_position_embeddings 9216 (a copy quoted publicly reads 5120 with image area "
                              "512x512)"),
    *(PublishedModel(f"Lumina-mGPT-7B-{size}", "lumina", (f"Alpha-VLLM/Lumina-mGPT-7B-{size}",),
                     {**_CHAMELEON_7B, "max_position_embeddings": 10240, "vocabulary_map": {}},
                     (size, size), LUMINA_SOURCES, target_size=size,
                     parts={"vqgan": {}},
                     unverified="max_position_embeddings 10240 (it bounds the prompt, not the plan)")
      for size in (512, 768, 1024)),
    PublishedModel("Lumina-mGPT-2.0", "lumina2", ("Alpha-VLLM/Lumina-mGPT-2.0",),
                   {**_CHAMELEON_7B, "vocab_size": 171385, "max_position_embeddings": 10240, "vocabulary_map": {}},
                   (768, 768), "Alpha-VLLM/Lumina-mGPT-2.0 code: a 7B Chameleon (its finetune_solver's '7B'), image "
                   "tokens 155000..171383 (inference_solver), so a vocabulary of 171,385; MoVQGAN 270M (ai-forever's "
                   "MODELS table: ch 256, ch_mult 1,2,2,4, 16384 codes)", target_size=768, parts={"movqgan": {}},
                   unverified="the transformer's sizes: its config_new.json is not in the repository; Chameleon-7B's "
                              "are assumed (hidden 4096, MLP 11008, 32 layers, 32 heads, no grouped keys)"),
    *(PublishedModel(f"LlamaGen-c2i-{preset}-384", "llamagen", (f"FoundationVision/LlamaGen:c2i_{preset}_384.pt",),
                     {"preset": f"GPT-{preset}", "model_type": "c2i", "block_size": 576}, (384, 384),
                     "LlamaGen's GPT_models table (layers / heads / width) and VQ-16 (vq_ds16_c2i.pt)",
                     parts={"vq": {}}, text_tokens=1)
      for preset in ("B", "L", "XL", "XXL", "3B")),
    PublishedModel("LlamaGen-t2i-XL-512", "llamagen", ("FoundationVision/LlamaGen:t2i_XL_stage2_512.pt",),
                   {"preset": "GPT-XL", "model_type": "t2i", "block_size": 1024}, (512, 512),
                   "LlamaGen's GPT_models table, 120 FLAN-T5-XL caption tokens of width 2048; google/flan-t5-xl's "
                   "encoder (d_model 2048, d_ff 5120, 24 layers, 32 heads, vocabulary 32128)",
                   parts={"vq": {}, "t5": {"d_model": 2048, "d_ff": 5120, "num_layers": 24, "num_heads": 32, "d_kv": 64,
                                           "vocab_size": 32128, "feed_forward_proj": "gated-gelu"}},
                   text_tokens=120),
)


def find(name: str) -> PublishedModel | None:
    """The published model a name or hub id stands for (case-insensitive), or None."""
    return next((m for m in MODELS if m.matches(name)), None)


def names() -> list[str]:
    return [m.name for m in MODELS]
