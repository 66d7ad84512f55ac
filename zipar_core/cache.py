"""Slot-addressed key/value cache and the visibility mask of a decoding step.

ZipAR writes tokens out of raster order (several rows at once) and overwrites a placeholder's entry
later, so the cache is addressed by slot rather than appended to. It is allocated once for the whole
image and written in place; nothing grows during decoding.
"""
from __future__ import annotations

import torch


class SlotKVCache:
    """Per-layer K/V buffers of shape (batch, kv_heads, num_slots, head_dim), written at chosen slots.

    Before each forward the sampler (through the adapter) calls :meth:`set_slots` with the slot of every
    query token; each attention layer then calls :meth:`write`, which stores the new keys/values at those
    slots and returns the buffers cut to ``kv_len`` slots, the span the step's mask covers.
    """

    def __init__(self, num_layers: int, batch: int, kv_heads: int, num_slots: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, v_head_dim: int | None = None):
        shape = (batch, kv_heads, num_slots, head_dim)
        v_shape = (batch, kv_heads, num_slots, v_head_dim or head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(v_shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_slots = num_slots
        self._index: torch.Tensor | None = None  # (batch, 1, q, 1) slots of the current step's queries
        self._kv_len = num_slots

    def set_slots(self, slots: torch.Tensor, kv_len: int | None = None) -> None:
        """slots: (batch, q) long; kv_len: how many leading slots the step's attention reads."""
        assert slots.dim() == 2 and slots.shape[0] == self.keys[0].shape[0], slots.shape
        self._index = slots[:, None, :, None]
        self._kv_len = self.num_slots if kv_len is None else kv_len

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (batch, kv_heads, q, head_dim) for the current queries -> full (batch, kv_heads, kv_len, d)."""
        assert self._index is not None, "set_slots() must be called before a forward"
        kb, vb = self.keys[layer], self.values[layer]
        kb.scatter_(2, self._index.expand(-1, k.shape[1], -1, k.shape[3]), k.to(kb.dtype))
        vb.scatter_(2, self._index.expand(-1, v.shape[1], -1, v.shape[3]), v.to(vb.dtype))
        return kb[:, :, : self._kv_len], vb[:, :, : self._kv_len]

    def fill_(self, value: float) -> "SlotKVCache":
        """Overwrite every entry (tests poison unwritten slots with this to prove they are never read)."""
        for t in (*self.keys, *self.values):
            t.fill_(value)
        return self


def visibility_mask(filled: torch.Tensor, slots: torch.Tensor, kv_len: int) -> torch.Tensor:
    """Which cache slots each query may attend to.

    filled: (batch, num_slots) bool, slots holding a decoded (or fixed EOL / placeholder) token, including
    the ones written in this step; slots: (batch, q) query slots. Returns (batch, q, kv_len) bool:
    a query sees filled slots at or before its own slot, and always itself (so a padded prompt slot,
    which is never filled, still has one key to attend to and produces no NaN).
    """
    j = torch.arange(kv_len, device=slots.device)
    own = slots[:, :, None]  # (batch, q, 1)
    return (filled[:, None, :kv_len] & (j <= own)) | (j == own)


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool visibility (batch, q, kv) -> additive float mask (batch, 1, q, kv) for eager attention."""
    # masked_fill with a Python scalar: no host->device copy per step (a CUDA graph could not capture one)
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]
