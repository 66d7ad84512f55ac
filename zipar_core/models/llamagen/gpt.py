"""The LlamaGen GPT (class- and text-conditional), written for slot-addressed decoding.

Architecture and state-dict names follow the official LlamaGen release so its checkpoints load as they
are: Llama-style pre-norm blocks (fused bias-free ``wqkv``, SwiGLU, RMSNorm computed in float32), an
untied ``output`` head, and a 2-D rotary embedding over the token grid. Unlike the official module this one
keeps no KV cache and no per-grid tables of its own: positions arrive as (row, col) per query and keys and
values go to a caller-owned :class:`~zipar_core.cache.SlotKVCache`, so tokens can be fed in any order and
non-square grids work.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import LLAMAGEN_PRESETS as PRESETS  # name -> (n_layer, n_head, dim)

T2I_TOKENS = 120  # FLAN-T5 caption length the t2i models were trained with
# what quantization leaves in the compute dtype (zipar_core.quantization): the image head the sampler reads and the
# condition embedder (class table, caption projection); LlamaGenAdapter.keep_unquantized
KEEP_UNQUANTIZED = ("output", "cls_embedding")


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


@dataclass
class LlamaGenConfig:
    dim: int = 1024
    n_layer: int = 24
    n_head: int = 16
    n_kv_head: int | None = None  # None: same as n_head
    vocab_size: int = 16384
    num_classes: int = 1000
    class_dropout_prob: float = 0.1  # > 0 adds the null-class row used for guidance
    caption_dim: int = 2048
    cls_token_num: int = 1  # condition slots: 1 (c2i) or 120 (t2i)
    model_type: str = "c2i"  # 'c2i' | 't2i'
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    ffn_hidden: int | None = None  # explicit SwiGLU width (checkpoint inference); None: computed
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    block_size: int = 256  # image tokens of the trained grid (16x16, 24x24, 32x32)
    variant: str = ""  # registry variant naming its decoding defaults ("demo"); "" = read off the config

    def __post_init__(self):
        if self.model_type not in ("c2i", "t2i"):
            raise ValueError(f"model_type must be 'c2i' or 't2i', got {self.model_type!r}")
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} is not divisible by n_head {self.n_head}")
        if self.head_dim % 4:
            # 2-D RoPE splits each head into row and column halves of rotation pairs.
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 4 for the 2-D rotary embedding")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden_dim(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    @property
    def grid_side(self) -> int:
        """Side of the (square) trained grid, 0 when block_size is not a square."""
        side = round(self.block_size ** 0.5)
        return side if side * side == self.block_size else 0

    @classmethod
    def from_preset(cls, name: str, model_type: str = "c2i", image_tokens: int = 256, **overrides) -> LlamaGenConfig:
        """``from_preset("GPT-L", "c2i", 576)``; ``name`` may omit the ``GPT-`` prefix."""
        key = name if name.startswith("GPT-") else f"GPT-{name}"
        if key not in PRESETS:
            raise ValueError(f"unknown LlamaGen preset {name!r}; known: {', '.join(PRESETS)}")
        n_layer, n_head, dim = PRESETS[key]
        cfg = {"dim": dim, "n_layer": n_layer, "n_head": n_head, "model_type": model_type, "block_size": image_tokens,
                   "cls_token_num": 1 if model_type == "c2i" else T2I_TOKENS}
        cfg.update(overrides)
        return cls(**cfg)

    def replace(self, **changes) -> LlamaGenConfig:
        return replace(self, **changes)


# ----------------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 and cast back before the weight, as the checkpoints were trained.
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


class FeedForward(nn.Module):
    def __init__(self, cfg: LlamaGenConfig):
        super().__init__()
        hidden = cfg.hidden_dim
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope_angles(row: torch.Tensor, col: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """row, col (N, q) -> rotation angles (N, q, head_dim/2) in float32.

    Pairs [0, hd/4) turn by row * freq_i, pairs [hd/4, hd/2) by col * freq_i, with
    freq_i = base ** (-2i / (hd/2)): LlamaGen's precompute_freqs_cis_2d, evaluated per token instead of
    read from a square table, so any grid shape works.
    """
    half = head_dim // 2
    exponent = torch.arange(0, half, 2, device=row.device)[: half // 2].float() / half
    freqs = 1.0 / (base ** exponent)  # (hd/4,)
    return torch.cat([row.float()[..., None] * freqs, col.float()[..., None] * freqs], dim=-1)


def rope_cos_sin(row: torch.Tensor, col: torch.Tensor, is_cond: torch.Tensor, head_dim: int,
                 base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (N, q, head_dim/2) float32; zero for condition slots.

    Condition tokens get cos = sin = 0, which zeroes their queries and keys: that is how LlamaGen was
    trained (its table has zero rows for the condition), so it must be kept.
    """
    ang = rope_angles(row, col, head_dim, base)
    keep = (~is_cond)[..., None].float()  # (N, q, 1)
    return torch.cos(ang) * keep, torch.sin(ang) * keep


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, q, heads, hd); cos/sin (N, q, hd/2). Interleaved pairs (x[2i], x[2i+1]), computed in float32."""
    xf = x.float().unflatten(-1, (-1, 2))  # (N, q, h, hd/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[:, :, None], sin[:, :, None]  # (N, q, 1, hd/2)
    out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaGenConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.dim = cfg.dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, visible: torch.Tensor,
                cache=None) -> torch.Tensor:
        """x (N, q, dim); visible (N, q, kv) bool. Without a cache, kv == q (self-attention over x)."""
        n, q, _ = x.shape
        kv_size = self.n_kv_head * self.head_dim
        xq, xk, xv = self.wqkv(x).split([self.dim, kv_size, kv_size], dim=-1)
        xq = apply_rope(xq.view(n, q, self.n_head, self.head_dim), cos, sin)
        xk = apply_rope(xk.view(n, q, self.n_kv_head, self.head_dim), cos, sin)
        xv = xv.view(n, q, self.n_kv_head, self.head_dim)
        xq, xk, xv = (t.transpose(1, 2) for t in (xq, xk, xv))  # (N, heads, q, hd)
        if cache is not None:
            keys, values = cache.write(self.layer_idx, xk, xv)  # (N, kv_heads, kv, hd)
        else:
            keys, values = xk, xv
        if self.n_kv_head != self.n_head:
            rep = self.n_head // self.n_kv_head
            keys, values = keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(xq, keys, values, attn_mask=visible[:, None])  # (N, h, q, hd)
        return self.wo(out.transpose(1, 2).reshape(n, q, self.dim))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LlamaGenConfig, layer_idx: int):
        super().__init__()
        self.attention = Attention(cfg, layer_idx)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x, cos, sin, visible, cache=None):
        h = x + self.attention(self.attention_norm(x), cos, sin, visible, cache)
        return h + self.feed_forward(self.ffn_norm(h))


# ----------------------------------------------------------------------------------------------------
# Condition embedders (names match the checkpoints: cls_embedding.embedding_table / cap_proj / uncond_embedding)


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        # One extra row, index num_classes, is the null class that guidance uses.
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)
        self.num_classes = num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels).unsqueeze(1)  # (N,) -> (N, 1, dim)


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, out_features, bias=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CaptionEmbedder(nn.Module):
    def __init__(self, caption_dim: int, dim: int, token_num: int):
        super().__init__()
        self.cap_proj = MLP(caption_dim, dim, dim)
        # A learned "empty caption" stored as a buffer in the official checkpoints.
        self.register_buffer("uncond_embedding", torch.randn(token_num, caption_dim) / caption_dim ** 0.5)

    def forward(self, captions: torch.Tensor) -> torch.Tensor:
        return self.cap_proj(captions)  # (N, T, caption_dim) -> (N, T, dim)


# ----------------------------------------------------------------------------------------------------


class LlamaGenTransformer(nn.Module):
    """LlamaGen GPT. Inputs are embeddings plus per-query (row, col, is_cond); no internal state."""

    def __init__(self, cfg: LlamaGenConfig):
        super().__init__()
        self.config = cfg
        if cfg.model_type == "c2i":
            self.cls_embedding = LabelEmbedder(cfg.num_classes, cfg.dim, cfg.class_dropout_prob)
        else:
            self.cls_embedding = CaptionEmbedder(cfg.caption_dim, cfg.dim, cfg.cls_token_num)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    # -- embeddings ---------------------------------------------------------------------------------
    def embed_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """class labels (N,) long (num_classes = null class) -> (N, 1, dim)."""
        if self.config.model_type != "c2i":
            raise ValueError("this is a text-to-image LlamaGen model: give captions, not class labels")
        return self.cls_embedding(labels)

    def embed_captions(self, captions: torch.Tensor) -> torch.Tensor:
        """T5 caption features (N, T, caption_dim) -> (N, T, dim); T = cls_token_num."""
        if self.config.model_type != "t2i":
            raise ValueError("this is a class-conditional LlamaGen model: give class labels, not captions")
        return self.cls_embedding(captions.to(self.tok_embeddings.weight.dtype))

    def embed_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (N, q) long -> (N, q, dim)."""
        return self.tok_embeddings(codes)

    # -- transformer --------------------------------------------------------------------------------
    def forward_embeddings(self, h: torch.Tensor, row: torch.Tensor, col: torch.Tensor, is_cond: torch.Tensor,
                           visible: torch.Tensor, cache=None) -> torch.Tensor:
        """h (N, q, dim); row, col (N, q) long grid position (ignored where is_cond); is_cond (N, q) bool;
        visible (N, q, kv) bool. With ``cache`` (slots already set) K/V go to the cache and attention reads
        its first kv slots; without, kv == q. Returns the final hidden states (N, q, dim), before ``norm``."""
        cfg = self.config
        cos, sin = rope_cos_sin(row, col, is_cond, cfg.head_dim, cfg.rope_base)
        for layer in self.layers:
            h = layer(h, cos, sin, visible, cache)
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """hidden (N, q, dim) -> float32 logits (N, q, vocab)."""
        return self.output(self.norm(h)).float()

    def forward(self, cond_emb: torch.Tensor, codes: torch.Tensor, cols: int,
                prefix_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Uncached full pass over [condition, image tokens in raster order] (training / checking).

        cond_emb (N, P, dim); codes (N, T) long, T <= rows*cols of a grid ``cols`` wide; prefix_valid
        (N, P) bool (False = caption padding: no query attends to it but itself). Returns float32 logits
        (N, P+T, vocab); position P-1+t predicts token t.
        """
        n, p = cond_emb.shape[:2]
        t = codes.shape[1]
        h = torch.cat([cond_emb.to(self.tok_embeddings.weight.dtype), self.embed_tokens(codes)], dim=1)
        idx = torch.arange(p + t, device=h.device)
        img = (idx - p).clamp(min=0)
        row, col = (img // cols).expand(n, -1), (img % cols).expand(n, -1)
        is_cond = (idx < p).expand(n, -1)
        visible = (idx[None, :] <= idx[:, None]).expand(n, -1, -1)  # causal (N, L, L)
        if prefix_valid is not None:
            key_ok = torch.cat([prefix_valid.bool(), torch.ones(n, t, dtype=torch.bool, device=h.device)], 1)
            visible = (visible & key_ok[:, None, :]) | torch.eye(p + t, dtype=torch.bool, device=h.device)
        return self.logits(self.forward_embeddings(h, row, col, is_cond, visible))
