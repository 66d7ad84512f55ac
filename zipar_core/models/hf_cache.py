"""A transformers ``Cache`` whose layers write keys/values at the slots of one forward.

transformers 5 removed ``cache_position``: every attention layer calls ``past_key_values.update(k, v,
layer_idx)`` and the stock caches append (DynamicCache) or write at a running counter (StaticCache). ZipAR feeds
tokens out of raster order and overwrites placeholder entries, so the adapter hands each forward
``cache.at(slots, kv_len)``: a transformers ``Cache`` bound to that forward's slots, whose every layer's ``update``
scatters the new K/V there (``SlotKVCache.write``) and returns the buffers cut to ``kv_len``. The model is always
given explicit ``position_ids`` and a 4-D mask of shape (sequences, 1, q, kv_len), which ``create_causal_mask``
passes through unchanged, so nothing in transformers ever needs to know how many tokens the cache "has seen".
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..cache import SlotKVCache


class _SlotLayer(CacheLayerMixin):
    """One decoder layer's view of the shared slot buffers, for one forward."""

    is_sliding = False
    is_compileable = False  # keeps generate() from building its own 2-D->4-D masks around us

    def __init__(self, store: SlotKVCache, layer_idx: int, slots: torch.Tensor, kv_len: int):
        super().__init__()
        self.store, self.layer_idx, self.slots, self.kv_len = store, layer_idx, slots, kv_len
        self.is_initialized = True  # buffers are preallocated by SlotKVCache

    def lazy_initialization(self, key_states, value_states) -> None:  # nothing to allocate lazily
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states: (sequences, kv_heads, q, head_dim) -> full (sequences, kv_heads, kv_len, head_dim)
        return self.store.write(self.layer_idx, self.slots, key_states, value_states, self.kv_len)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.kv_len, 0

    def get_seq_length(self) -> int:
        # Only consulted by transformers when position_ids or a 4-D mask are missing; adapters always
        # pass both. Report the span this forward reads so a stray caller gets a sane number.
        return self.kv_len

    def get_max_length(self) -> int:
        return self.store.num_slots

    def reset(self) -> None:
        for t in (self.store.keys[self.layer_idx], self.store.values[self.layer_idx]):
            t.zero_()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a slot cache is addressed by slot; it cannot be cropped")


class _BoundCache(Cache):
    """The cache as one forward of a transformers decoder sees it (``HFSlotCache.at``)."""

    def __init__(self, store: SlotKVCache, slots: torch.Tensor, kv_len: int):
        super().__init__(layers=[_SlotLayer(store, i, slots, kv_len) for i in range(len(store.keys))])
        self.kv_len = kv_len

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.layers[layer_idx].update(key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.kv_len

    @property
    def is_compileable(self) -> bool:
        return False


class HFSlotCache(SlotKVCache):
    """A :class:`SlotKVCache` (what the sampler allocates) whose ``at(slots, kv_len)`` is a transformers ``Cache``
    (what the model's attention layers write through). Every bound view shares the same preallocated buffers."""

    @classmethod
    def for_config(cls, text_config, batch: int, num_slots: int, dtype: torch.dtype,
                   device: torch.device | str) -> HFSlotCache:
        """Size the buffers from a decoder config (Llama / Emu3 text / Chameleon)."""
        heads = text_config.num_attention_heads
        kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(text_config.num_hidden_layers, batch, kv_heads, num_slots, head_dim, dtype, device)

    def at(self, slots: torch.Tensor, kv_len: int | None = None) -> _BoundCache:
        assert slots.dim() == 2 and slots.shape[0] == self.keys[0].shape[0], slots.shape
        return _BoundCache(self, slots, self.num_slots if kv_len is None else kv_len)
