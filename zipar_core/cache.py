"""Slot-addressed key/value cache, and which slots a pass's queries may see.

ZipAR writes tokens out of raster order (several rows at once) and overwrites a placeholder's entry later, so the
cache is addressed by slot rather than appended to. It is allocated once for the whole image and written in place;
nothing grows during decoding. A forward writes at the slots it is given with the keys and values (as gpt-fast's
``update(input_pos, k, v)``): ``cache.at(slots, kv_len)`` binds one forward's slots, and each attention layer
calls ``write(layer, k, v)`` on it. The cache itself holds no "current slots".
"""
from __future__ import annotations

import torch


class SlotKVCache:
    """Per-layer K/V buffers of shape (sequences, kv_heads, num_slots, head_dim), written at chosen slots."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, num_slots: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, v_head_dim: int | None = None):
        shape = (batch, kv_heads, num_slots, head_dim)
        v_shape = (batch, kv_heads, num_slots, v_head_dim or head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(v_shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.num_slots = num_slots

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (sequences, kv_heads, q, head_dim) of the queries at ``slots`` (sequences, q); return the
        buffers cut to the first ``kv_len`` slots, the span the pass's mask covers."""
        kb, vb = self.keys[layer], self.values[layer]
        index = slots[:, None, :, None]
        kb.scatter_(2, index.expand(-1, k.shape[1], -1, k.shape[3]), k.to(kb.dtype))
        vb.scatter_(2, index.expand(-1, v.shape[1], -1, v.shape[3]), v.to(vb.dtype))
        return kb[:, :, :kv_len], vb[:, :, :kv_len]

    def at(self, slots: torch.Tensor, kv_len: int | None = None) -> SlotWrites:
        """The cache as one forward writes it: its queries' ``slots`` (sequences, q), reading ``kv_len`` slots."""
        assert slots.dim() == 2 and slots.shape[0] == self.keys[0].shape[0], slots.shape
        return SlotWrites(self, slots, self.num_slots if kv_len is None else kv_len)

    def fill_(self, value: float) -> SlotKVCache:
        """Overwrite every entry (tests poison unwritten slots with this to prove they are never read)."""
        for t in (*self.keys, *self.values):
            t.fill_(value)
        return self


class SlotWrites:
    """One forward's view of a :class:`SlotKVCache`: ``write(layer, k, v)`` stores at this forward's slots."""

    def __init__(self, store: SlotKVCache, slots: torch.Tensor, kv_len: int):
        self.store, self.slots, self.kv_len = store, slots, kv_len

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.store.write(layer, self.slots, k, v, self.kv_len)


def visibility_mask(filled: torch.Tensor, slots: torch.Tensor, kv_len: int) -> torch.Tensor:
    """Which cache slots each query may attend to.

    filled: (sequences, num_slots) bool, slots holding a decoded (or fixed EOL / placeholder) token, including
    the ones written in this step; slots: (sequences, q) query slots. Returns (sequences, q, kv_len) bool:
    a query sees filled slots at or before its own slot, and always itself (so a padded prompt slot,
    which is never filled, still has one key to attend to and produces no NaN).
    """
    j = torch.arange(kv_len, device=slots.device)
    own = slots[:, :, None]  # (sequences, q, 1)
    return (filled[:, None, :kv_len] & (j <= own)) | (j == own)


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool visibility (sequences, q, kv) -> additive float mask (sequences, 1, q, kv) for eager attention."""
    # masked_fill with a Python scalar: no host->device copy per step (a CUDA graph could not capture one)
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]


class Visibility:
    """Which slots hold final tokens (``filled``: decoded tokens, fixed end-of-row tokens, row-start placeholders),
    and, in a pass with drafts, each draft's chain: a query sees the filled slots at or before its own and the
    slots of its own chain's elements fed in the same pass at or before its own, never another chain's drafts,
    nor a draft of an earlier pass (docs/design.md, "Correctness rules")."""

    def __init__(self, prefix_valid: torch.Tensor, num_slots: int, device: torch.device):
        sequences, prefix = prefix_valid.shape
        self.scratch = num_slots - 1  # the slot padded queries write to; never filled
        self.filled = torch.zeros((sequences, num_slots), dtype=torch.bool, device=device)
        self.filled[:, :prefix] = prefix_valid.to(device)
        self.prefix_len = prefix
        self.chain_slot = None  # (sequences, num_slots) long: the chain of this pass's draft at a slot, -1: none

    def prefix(self) -> torch.Tensor:
        """The prefill's mask: the prompt slots, left padding hidden."""
        P = self.prefix_len
        slots = torch.arange(P, device=self.filled.device).expand(self.filled.shape[0], -1)
        return visibility_mask(self.filled, slots, P)

    def before(self, slots: torch.Tensor, chain, need, kv_len: int, cross=None) -> torch.Tensor:
        """The pass's (sequences, q, kv_len) mask; marks its final tokens filled (drafts: ``chain`` >= 0, ``need``
        > 0, stay hidden from later passes until :meth:`after` keeps them). ``cross``: (chain, last slot, need),
        each (sequences, q), another chain whose drafts a query also sees, at or before that slot (rows
        visibility; chain -1: none)."""
        if chain is None:
            self.filled.scatter_(1, slots, True)
            return visibility_mask(self.filled, slots, kv_len)
        if self.chain_slot is None:
            self.chain_slot = torch.full_like(self.filled, -1, dtype=torch.long)
        self.filled.scatter_(1, torch.where(need == 0, slots, self.scratch), True)  # heads and writes are final
        self.chain_slot.scatter_(1, torch.where(chain >= 0, slots, self.scratch), chain)
        j = torch.arange(kv_len, device=slots.device)
        at = self.chain_slot[:, None, :kv_len]
        own_chain = (at == chain[:, :, None]) & (chain[:, :, None] >= 0)
        mask = visibility_mask(self.filled, slots, kv_len) | (own_chain & (j <= slots[:, :, None]))
        if cross is not None:
            other, last, _ = cross
            mask |= (at == other[:, :, None]) & (other[:, :, None] >= 0) & (j <= last[:, :, None])
        return mask

    def after(self, slots: torch.Tensor, chain, need, accepted: torch.Tensor, cross=None) -> None:
        """Keep the K/V of the drafts their chain accepted (``accepted``: (sequences, chains) accepted counts) and
        whose view held: the drafts of another chain they saw (``cross``) were accepted too."""
        in_chain = chain >= 0
        kept = in_chain & (accepted.gather(1, chain.clamp_min(0)) >= need)
        if cross is not None:
            other, _, other_need = cross
            kept &= (other < 0) | (accepted.gather(1, other.clamp_min(0)) >= other_need)
        self.filled.scatter_(1, torch.where(kept, slots, self.scratch), True)
        self.chain_slot.scatter_(1, torch.where(in_chain, slots, self.scratch), -1)
