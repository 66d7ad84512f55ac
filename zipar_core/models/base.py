"""The contract between the ZipAR sampler and a model family.

The sampler knows ZipAR and nothing about any model; an adapter knows its model and nothing about
ZipAR. An adapter turns a condition into a :class:`Conditioning`, allocates a slot cache, runs the
model over arbitrary (slot, token) sets under a visibility mask, and decodes VQ codes to pixels.

Token convention across the boundary: the sampler speaks in VQ codes ``0 .. codebook_size-1`` and uses
``EOL_TOKEN`` (-1) for the model's end-of-row token; adapters map codes to their own vocabulary ids and
return logits over the codebook only (restricting sampling to image tokens, DESIGN rule 6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..layout import TokenLayout

EOL_TOKEN = -1


@dataclass
class Conditioning:
    """A batch of conditions, ready for prefill.

    Model rows are ``[cond_0 .. cond_{B-1}]`` or, with guidance, ``[cond_0 .. cond_{B-1}, uncond_0 ..
    uncond_{B-1}]``; every row of a sample shares its image tokens.
    """

    layout: TokenLayout
    batch_size: int  # B, images
    guidance: bool  # rows are [cond; uncond]
    prefix_valid: torch.Tensor  # (rows, prefix) bool: False for left padding, never attended
    payload: Any = None  # adapter-specific inputs (embeddings, ids, per-row position offsets)
    extras: dict = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return self.batch_size * (2 if self.guidance else 1)


@runtime_checkable
class ZipARModel(Protocol):
    """What the sampler needs from a model family (plus the uniform front door pipelines and nodes use)."""

    family: str  # "llamagen" | "janus" | "emu3" | "lumina"
    conditioning: str  # "class" (class labels) or "text" (prompts)
    num_classes: int | None  # class-conditional models only
    default_size: tuple[int, int]  # (height, width) in pixels the model was trained for
    downsample: int  # pixels per token side (16 for VQ-16, 8 for Emu3)
    codebook_size: int  # logits and codes range over 0 .. codebook_size-1
    device: torch.device
    dtype: torch.dtype

    def grid_for(self, height: int | None, width: int | None) -> tuple[int, int]:
        """(rows, cols) of the token grid for an image size (None: the default); ValueError naming the
        sizes the model supports when it cannot make that size."""

    def prepare(self, *, prompts=None, class_labels=None, negative_prompts=None, height: int | None = None,
                width: int | None = None, guidance_scale: float = 1.0) -> Conditioning:
        """Uniform keyword front door: a batch of prompts (text models) or class labels (class models),
        optional negative prompts (where the family supports them), image size in pixels. ValueErrors
        name the bad argument and the fix (class out of range, prompt too long, unsupported size)."""

    def new_cache(self, cond: Conditioning, num_slots: int) -> Any:
        """A slot cache (see ``zipar_core.cache.SlotKVCache``) for ``cond.num_rows`` rows."""

    def prefill(self, cond: Conditioning, cache: Any, visible: torch.Tensor) -> torch.Tensor:
        """Run the prefix (slots 0 .. prefix-1) under ``visible`` (rows, prefix, prefix) and return the
        float32 logits (rows, codebook_size) of the last prefix slot, which predicts the first token."""

    def forward(self, cond: Conditioning, tokens: torch.Tensor, slots: torch.Tensor, visible: torch.Tensor,
                cache: Any) -> torch.Tensor:
        """tokens, slots: (rows, q) long (codes or EOL_TOKEN); visible: (rows, q, kv_len) bool.
        Write each token's K/V at its slot and return float32 logits (rows, q, codebook_size)."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, H, W) long -> images (B, 3, H*f, W*f) float in [-1, 1]."""
