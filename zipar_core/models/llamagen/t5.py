"""FLAN-T5 caption features for text-to-image LlamaGen.

LlamaGen t2i was trained on FLAN-T5-XL encoder states (2048-d) of captions padded/truncated to 120 tokens,
then *left*-padded (valid tokens moved to the end, so the last condition slot, which predicts the first
image token, holds real text) with padded features zeroed. This module reproduces that from a local
transformers folder (config.json, spiece.model / tokenizer files, weights); nothing is downloaded.
"""
from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Sequence

import torch


def left_pad(embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T, D) + mask (B, T) -> left-padded features (padding zeroed) and bool mask.

    Rolling each row by its padding count moves the valid prefix to the end; the mask is then the
    flipped original (valid entries are a prefix for a right-padded tokenizer output).
    """
    mask = mask.bool()
    t = mask.shape[1]
    pad = t - mask.sum(1)  # (B,)
    idx = (torch.arange(t, device=mask.device)[None, :] - pad[:, None]) % t  # source index per target slot
    out = torch.gather(embeddings, 1, idx[..., None].expand(-1, -1, embeddings.shape[-1]))
    new_mask = torch.gather(mask, 1, idx)
    return out * new_mask[..., None].to(out.dtype), new_mask


def clean_caption(text: str) -> str:
    """Light version of LlamaGen's caption cleaning: unquote, unescape HTML, lower-case, squeeze spaces.

    (The original also strips URLs, CJK and a long list of web-scrape artefacts with ftfy/bs4; ordinary
    prompts are unaffected by those rules.)
    """
    text = urllib.parse.unquote_plus(str(text))
    text = html.unescape(html.unescape(text)).strip().lower()
    return re.sub(r"\s+", " ", text).strip()


class T5CaptionEncoder:
    def __init__(self, path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 max_length: int = 120, clean: bool = True):
        from transformers import AutoTokenizer, T5EncoderModel

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(path, local_files_only=True, dtype=dtype).to(device).eval()
        self.max_length = max_length
        self.clean = clean

    @classmethod
    def from_modules(cls, model, tokenizer, max_length: int = 120, clean: bool = True) -> T5CaptionEncoder:
        """Around an already loaded encoder and tokenizer (a pipeline's components)."""
        enc = cls.__new__(cls)
        enc.model, enc.tokenizer, enc.max_length, enc.clean = model.eval(), tokenizer, max_length, clean
        return enc

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (features (B, max_length, d_model), mask (B, max_length) bool), left-padded."""
        texts = [clean_caption(p) if self.clean else p.lower().strip() for p in prompts]
        tok = self.tokenizer(texts, max_length=self.max_length, padding="max_length", truncation=True,
                             return_attention_mask=True, add_special_tokens=True, return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        feats = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, d_model)
        return left_pad(feats, mask)
