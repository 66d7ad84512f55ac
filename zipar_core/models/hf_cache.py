"""A transformers ``Cache`` whose layers write keys/values at slots chosen by the sampler.

transformers 5 removed ``cache_position``: every attention layer calls ``past_key_values.update(k, v,
layer_idx)`` and the stock caches append (DynamicCache) or write at a running counter (StaticCache).
ZipAR feeds tokens out of raster order and overwrites placeholder entries, so this cache ignores any
counter: before each forward the adapter calls :meth:`HFSlotCache.set_slots` with the slot of every
query, and each layer's ``update`` scatters the new K/V there (``SlotKVCache.write``) and returns the
buffers cut to the step's ``kv_len``. The model is always given explicit ``position_ids`` and a 4-D mask
of shape (rows, 1, q, kv_len), which ``create_causal_mask`` passes through unchanged, so nothing in
transformers ever needs to know how many tokens the cache "has seen".
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from ..cache import SlotKVCache


class _SlotLayer(CacheLayerMixin):
    """One decoder layer's view of the shared slot buffers."""

    is_sliding = False
    is_compileable = False  # keeps generate() from building its own 2-D->4-D masks around us

    def __init__(self, store: SlotKVCache, layer_idx: int):
        super().__init__()
        self.store, self.layer_idx = store, layer_idx
        self.is_initialized = True  # buffers are preallocated by SlotKVCache

    def lazy_initialization(self, key_states, value_states) -> None:  # nothing to allocate lazily
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states: (rows, kv_heads, q, head_dim) -> full (rows, kv_heads, kv_len, head_dim)
        return self.store.write(self.layer_idx, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.store._kv_len, 0

    def get_seq_length(self) -> int:
        # Only consulted by transformers when position_ids or a 4-D mask are missing; adapters always
        # pass both. Report the span the current step reads so a stray caller gets a sane number.
        return self.store._kv_len

    def get_max_length(self) -> int:
        return self.store.num_slots

    def reset(self) -> None:
        for t in (self.store.keys[self.layer_idx], self.store.values[self.layer_idx]):
            t.zero_()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a slot cache is addressed by slot; it cannot be cropped")


class HFSlotCache(SlotKVCache, Cache):
    """A :class:`SlotKVCache` (what the sampler sees) that is also a transformers ``Cache`` (what the
    model's attention layers see). Both views share the same preallocated buffers."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, num_slots: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, v_head_dim: int | None = None):
        SlotKVCache.__init__(self, num_layers, batch, kv_heads, num_slots, head_dim, dtype, device, v_head_dim)
        Cache.__init__(self, layers=[_SlotLayer(self, i) for i in range(num_layers)])

    @classmethod
    def for_config(cls, text_config, batch: int, num_slots: int, dtype: torch.dtype,
                   device: torch.device | str) -> HFSlotCache:
        """Size the buffers from a decoder config (Llama / Emu3 text / Chameleon)."""
        heads = text_config.num_attention_heads
        kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(text_config.num_hidden_layers, batch, kv_heads, num_slots, head_dim, dtype, device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        return self.write(layer_idx, key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    @property
    def is_compileable(self) -> bool:
        return False
