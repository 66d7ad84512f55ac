"""Janus-Pro (1B / 7B) behind the ZipAR protocol, through transformers' ``JanusForConditionalGeneration``.

Sequence: ``<bos> <|User|>: {prompt}\\n\\n<|Assistant|>:<begin_of_image>`` then the 24 x 24 grid in raster
order, no end-of-row token (rows start from a placeholder, docs/design.md "Row starts"). Image tokens do not go
through the text embedding: the next input is ``generation_aligner(generation_embeddings(code))`` and the
logits come from ``generation_head`` over the 16384 VQ codes, as in ``JanusForConditionalGeneration.generate``.
Guidance rows are that method's unconditional prompt: every token except BOS and BOI replaced by pad.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch

from ..errors import SettingError
from ..loading import LoadOptions
from ..protocol import Request
from .hf_common import HFAdapter, encode, load_hf, load_tokenizer, model_attention

# DeepSeek's "deepseek" sft format with an empty system prompt (``role: message\n\n`` then ``role:``), the roles as
# DeepSeek's README and generation_inference.py give them: "<|User|>" / "<|Assistant|>" for Janus-Pro, "User" /
# "Assistant" for Janus-1.3B. Keyed by the registry variant; the processor appends BOI.
PROMPT_TEMPLATES = {"": "<|User|>: {prompt}\n\n<|Assistant|>:", "janus-1.3b": "User: {prompt}\n\nAssistant:"}
PROMPT_TEMPLATE = PROMPT_TEMPLATES[""]
BOI_TOKEN = "<begin_of_image>"
VARIANT_KEY = "zipar_variant"  # the variant, kept in the model's config (it travels with save_pretrained)


def variant_of_name(path_or_id: str) -> str:
    """The registry variant a folder or hub id names: "janus-1.3b" for DeepSeek's Janus-1.3B (its config is
    that of Janus-Pro-1B but for the weights, so the published name is what tells them apart), else ""."""
    name = os.path.basename(os.path.normpath(str(path_or_id))).lower()
    return "janus-1.3b" if re.search(r"janus-1[._]3b", name) else ""


class JanusAdapter(HFAdapter):
    family = "janus"
    eol = False
    # what quantization leaves in the compute dtype (zipar_core.quantization): the image head the sampler reads,
    # the image tokens' input path (embedding + aligner) and the VQ model; the text head and the understanding
    # tower are never read while generating images, so they are quantized with the language model
    keep_unquantized = ("model.generation_head", "model.generation_embeddings", "model.generation_aligner",
                        "model.vqmodel")

    def __init__(self, model, tokenizer=None, variant: str | None = None):
        model_attention(model)  # refuse flash-attention before any work
        self.model = model.eval()
        self.tokenizer = tokenizer
        if variant is not None:
            if variant not in PROMPT_TEMPLATES:
                raise SettingError("variant", f"{{name}} must be one of {sorted(PROMPT_TEMPLATES)}, got {variant!r}")
            setattr(model.config, VARIANT_KEY, variant)  # kept by save_pretrained and pipeline folders
        self.variant = getattr(model.config, VARIANT_KEY, None) or ""
        self.prompt_template = PROMPT_TEMPLATES[self.variant]
        inner = model.model
        self.backbone = inner.language_model
        self.text_config = model.config.text_config
        self.vq = inner.vqmodel
        self.codebook_size = self.vq.config.num_embeddings
        self.rows, self.cols = self.vq.quantize.quant_state_dims  # the VQ decoder's fixed grid (24 x 24)
        self.pixels_per_token = 2 ** (len(self.vq.config.channel_multiplier) - 1)  # 16 px per token
        gen = model.generation_config
        tok = tokenizer
        self.bos_id = _first(gen.bos_token_id, getattr(tok, "bos_token_id", None), self.text_config.bos_token_id)
        self.pad_id = _first(gen.pad_token_id, getattr(tok, "pad_token_id", None), self.text_config.pad_token_id)
        boi = (getattr(gen, "generation_kwargs", None) or {}).get("boi_token_id")
        if boi is None and tok is not None:
            boi = tok.convert_tokens_to_ids(getattr(tok, "boi_token", None) or BOI_TOKEN)
        if None in (self.bos_id, self.pad_id, boi):
            raise ValueError("Janus needs bos/pad/<begin_of_image> token ids: the generation config "
                             "(generation_kwargs.boi_token_id) or the tokenizer must provide them")
        self.boi_id = boi

    @classmethod
    def from_pretrained(cls, path_or_id: str, options: LoadOptions | None = None, *, tokenizer=None,
                        variant: str | None = None) -> JanusAdapter:
        """A folder or hub id in transformers' layout (deepseek-community/Janus-Pro-7B) or DeepSeek's own
        (deepseek-ai/Janus-Pro-7B, converted in memory: ``janus_original``). variant: "janus-1.3b" (Janus-1.3B's
        chat roles) or "" (Janus-Pro); None: what the model's config records, else what its name says."""
        from . import janus_original
        from .hub import read_config, snapshot

        options = options or LoadOptions()
        config = read_config(path_or_id, options.hub)
        if variant is None and not config.get(VARIANT_KEY):
            variant = variant_of_name(path_or_id)
        if janus_original.is_original(config):
            folder = path_or_id if os.path.isdir(path_or_id) else snapshot(path_or_id, options.hub)
            model, tok = janus_original.load(folder, config, options, tokenizer)
            return cls(model, tok, variant)
        from transformers import JanusForConditionalGeneration

        model = load_hf(JanusForConditionalGeneration, path_or_id, options, what="Janus-Pro",
                        published="huggingface.co/deepseek-community/Janus-Pro-7B", family=cls.family)
        return cls(model, load_tokenizer(path_or_id, tokenizer, options.hub), variant)

    def components(self) -> tuple[dict, dict]:
        """(modules, options) for a pipeline; ``from_components`` builds the adapter back from them."""
        return {"transformer": self.model, "tokenizer": self.tokenizer}, {}

    @classmethod
    def from_components(cls, transformer, tokenizer=None, **_) -> JanusAdapter:
        return cls(transformer, tokenizer)

    # -- conditioning --------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str) -> list[int]:
        return encode(self.tokenizer, self.prompt_template.format(prompt=prompt), self.bos_id) + [self.boi_id]

    def unconditional_ids(self, ids: Sequence[int]) -> list[int]:
        """transformers' Janus unconditional prompt: all but BOS and BOI replaced by pad."""
        return [t if t in (self.bos_id, self.boi_id) else self.pad_id for t in ids]

    def token_rows(self, request: Request, guided: bool):
        cond = [self.prompt_ids(p) for p in request.prompts]
        if not guided:
            return cond, None
        if request.negative_prompts is not None:
            return cond, [self.prompt_ids(n) for n in request.negative_prompts]
        return cond, [self.unconditional_ids(ids) for ids in cond]

    def grid_for(self, height: int | None = None, width: int | None = None, **size_options) -> tuple[int, int]:
        self._no_size_options(size_options)
        size = (self.rows * self.pixels_per_token, self.cols * self.pixels_per_token)
        if (height or size[0], width or size[1]) != size:
            raise SettingError("height" if (height or size[0]) != size[0] else "width",
                               f"Janus-Pro makes {size[1]}x{size[0]} images only (its VQ decoder has a fixed "
                               f"{self.rows}x{self.cols} token grid); got {width or size[1]}x{height or size[0]}: "
                               "leave {other:height} and {other:width} unset")
        return self.rows, self.cols

    # -- model hooks ---------------------------------------------------------------------------------
    def _embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        # No EOL in this layout: every fed token is a VQ code (real or placeholder).
        return self.model.prepare_embeddings_for_image_generation(tokens)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.model.generation_head(hidden).float()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, 24, 24) -> (B, 3, 384, 384) in [-1, 1] (JanusVQVAE.decode, channels first)."""
        B, H, W = codes.shape
        if (H, W) != (self.rows, self.cols):
            raise ValueError(f"Janus decodes {self.rows}x{self.cols} code grids, got {H}x{W}")
        pixels = self.vq.decode(codes.reshape(B, -1).to(self.vq.device))
        return pixels.float().clamp(-1, 1)


def _first(*values):
    return next((v for v in values if v is not None), None)
