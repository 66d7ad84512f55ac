"""A tiny generic AR image model for sampler tests: class-conditional, optional EOL layout.

It is deliberately not LlamaGen: 1-D learned positions by slot, so tests cover EOL layouts and models
whose positions are raster slots. ``full_forward`` is the uncached reference: one causal pass over a
whole token sequence, the computation every cached pass must reproduce.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from zipar.zipar_core.cache import SlotKVCache
from zipar.zipar_core.layout import TokenLayout
from zipar.zipar_core.models.base import EOL_TOKEN, Conditioning


class ToyAR(nn.Module):
    def __init__(self, codebook=32, classes=5, dim=32, heads=4, layers=2, max_slots=128, seed=0,
                 dtype=torch.float32):
        super().__init__()
        torch.manual_seed(seed)
        self.codebook_size, self.classes, self.heads = codebook, classes, heads
        self.embed = nn.Embedding(codebook + 1, dim)  # last row: the EOL token
        self.cls = nn.Embedding(classes + 1, dim)  # last row: the null class
        self.pos = nn.Embedding(max_slots, dim)
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.head = nn.Linear(dim, codebook)
        for p in self.parameters():  # larger weights: sharper, more position-dependent distributions
            p.data.mul_(3.0)
        self.to(dtype).eval()
        self.device, self.dtype = torch.device("cpu"), dtype

    def prepare(self, labels, rows, cols, eol=False, guidance=False) -> Conditioning:
        labels = torch.as_tensor(labels)
        rows_labels = torch.cat([labels, torch.full_like(labels, self.classes)]) if guidance else labels
        layout = TokenLayout(rows, cols, prefix=1, eol=eol)
        valid = torch.ones((len(rows_labels), 1), dtype=torch.bool)
        return Conditioning(layout, len(labels), guidance, valid, payload=rows_labels)

    def new_cache(self, cond, num_slots):
        d = self.embed.weight.shape[1]
        return SlotKVCache(len(self.qkv), cond.num_rows, self.heads, num_slots, d // self.heads,
                           self.dtype, self.device)

    def _embed_tokens(self, tokens):
        return self.embed(torch.where(tokens == EOL_TOKEN, self.codebook_size, tokens))

    def _layers(self, h, visible, kv):
        """kv(layer, k, v) -> full k, v; visible (N, q, kv) bool."""
        N, q, d = h.shape
        for i, (qkv, out) in enumerate(zip(self.qkv, self.out)):
            x = F.layer_norm(h, (d,))
            a, k, v = qkv(x).view(N, q, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            k, v = kv(i, k, v)
            y = F.scaled_dot_product_attention(a, k, v, attn_mask=visible[:, None])
            h = h + out(y.transpose(1, 2).reshape(N, q, d))
        return self.head(F.layer_norm(h, (d,))).float()

    @torch.no_grad()
    def prefill(self, cond, cache, visible):
        h = self.cls(cond.payload)[:, None] + self.pos.weight[0]
        cache.set_slots(torch.zeros((cond.num_rows, 1), dtype=torch.long), visible.shape[-1])
        return self._layers(h, visible, cache.write)[:, -1]

    @torch.no_grad()
    def forward(self, cond, tokens, slots, visible, cache):
        cache.set_slots(slots, visible.shape[-1])
        return self._layers(self._embed_tokens(tokens) + self.pos(slots), visible, cache.write)

    @torch.no_grad()
    def full_forward(self, cond, tokens, slots):
        """Uncached reference: tokens/slots (N, n) image tokens in slot order after the class token;
        plain causal attention over [class, tokens]. Returns logits (N, 1 + n, V)."""
        h = torch.cat([self.cls(cond.payload)[:, None] + self.pos.weight[0],
                       self._embed_tokens(tokens) + self.pos(slots)], 1)
        n = h.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril().expand(h.shape[0], n, n)
        return self._layers(h, causal, lambda i, k, v: (k, v))

    def decode(self, codes):
        return (codes.float() / self.codebook_size * 2 - 1)[:, None].expand(-1, 3, -1, -1)


class Recorder:
    """Wraps a model and keeps every forward's tokens, slots and logits."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.codebook_size, self.device, self.dtype = model.codebook_size, model.device, model.dtype

    def __getattr__(self, name):
        return getattr(self.model, name)

    def forward(self, cond, tokens, slots, visible, cache):
        logits = self.model.forward(cond, tokens, slots, visible, cache)
        self.calls.append((tokens.clone(), slots.clone(), logits.clone()))
        return logits
