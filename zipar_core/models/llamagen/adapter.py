"""LlamaGen behind the ZipAR model protocol (``zipar_core.models.base.ZipARModel``).

Sequence: ``cls_token_num`` condition slots (1 class token, or 120 T5 caption tokens, left-padded), then
the rows x cols grid in raster order, no end-of-row token. A query's rotary position is the (row, col)
of its slot, never the order it was decoded in (DESIGN rule 5).
"""
from __future__ import annotations

import warnings

import torch

from ...cache import SlotKVCache
from ...layout import TokenLayout
from ..base import Conditioning
from .gpt import LlamaGenTransformer
from .vq import VQModel


class LlamaGenAdapter:
    family = "llamagen"

    def __init__(self, gpt: LlamaGenTransformer, vq: VQModel | None = None, t5=None):
        self.gpt = gpt.eval()
        self.vq = vq.eval() if vq is not None else None
        self.t5 = t5  # optional T5CaptionEncoder, lets prepare() take prompts
        cfg = gpt.config
        self.config = cfg
        self.model_type = cfg.model_type
        self.codebook_size = cfg.vocab_size
        self.prefix = cfg.cls_token_num
        side = cfg.grid_side
        self.default_grid = (side, side) if side else None
        self.conditioning = "class" if cfg.model_type == "c2i" else "text"
        self.num_classes = cfg.num_classes if cfg.model_type == "c2i" else None
        self.downsample = vq.downsample if vq is not None else 16  # VQ-16: 16 px per token side
        self.default_size = (side * self.downsample, side * self.downsample) if side else None
        # Sampling defaults from the LlamaGen release: c2i cfg 2.0 (B/L) or 1.75 (XL and larger), the
        # settings of its FID tables; t2i cfg 7.5 with top-k 1000 (its sample_t2i script).
        if cfg.model_type == "c2i":
            self.DEFAULTS = {"guidance_scale": 2.0 if cfg.dim <= 1024 else 1.75, "temperature": 1.0}
        else:
            self.DEFAULTS = {"guidance_scale": 7.5, "top_k": 1000, "temperature": 1.0}

    @property
    def device(self) -> torch.device:
        return self.gpt.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.gpt.tok_embeddings.weight.dtype

    # -- conditioning -------------------------------------------------------------------------------
    def layout(self, rows: int | None = None, cols: int | None = None) -> TokenLayout:
        rows, cols = self._grid(rows, cols)
        return TokenLayout(rows, cols, prefix=self.prefix, eol=False)

    def grid_for(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """(rows, cols) for an image size in pixels (None: the trained size); multiples of 16 px."""
        f = self.downsample
        for name, v in (("height", height), ("width", width)):
            if v is not None and (v <= 0 or v % f):
                raise ValueError(f"{name} {v} is not a positive multiple of {f} px (one LlamaGen token is {f} px)")
        return self._grid(None if height is None else height // f, None if width is None else width // f)

    def _grid(self, rows: int | None, cols: int | None) -> tuple[int, int]:
        if rows is None or cols is None:
            if self.default_grid is None:
                raise ValueError("give the image size: this model's block size is not a square grid")
            rows, cols = rows or self.default_grid[0], cols or self.default_grid[1]
        cfg, f = self.config, self.downsample
        trained = (f"{self.default_grid[0]}x{self.default_grid[1]} tokens ({self.default_size[1]}x"
                   f"{self.default_size[0]} px)" if self.default_grid else f"{cfg.block_size} tokens")
        if rows * cols > cfg.block_size:
            # The rotary embedding would extrapolate to any grid, but sequences longer than the training
            # grid are untested territory for these checkpoints; refuse rather than return garbage.
            raise ValueError(f"grid {rows}x{cols} tokens ({cols * f}x{rows * f} px, {rows * cols} tokens) is larger "
                             f"than the {trained} grid this LlamaGen model was trained on; use at most "
                             f"{cfg.block_size} tokens")
        if self.default_grid and (rows > self.default_grid[0] or cols > self.default_grid[1]):
            warnings.warn(f"grid {rows}x{cols}: a side is longer than the trained {trained} grid; rotary "
                          f"positions beyond it were never seen in training", stacklevel=3)
        return rows, cols

    def prepare(self, *, prompts=None, class_labels=None, negative_prompts=None, height: int | None = None,
                width: int | None = None, guidance_scale: float = 1.0, captions=None, caption_mask=None,
                negative_captions=None, rows: int | None = None, cols: int | None = None) -> Conditioning:
        """Condition a batch. c2i: ``class_labels`` (B,) ints. t2i: ``prompts`` (needs the T5 encoder) or
        ``captions`` (B, T, caption_dim) T5 features with ``caption_mask`` (B, T) bool, left-padded (or a
        (captions, mask) tuple). Size: ``height``/``width`` px or ``rows``/``cols`` tokens (None: trained).
        With guidance_scale != 1 the rows are [cond; uncond]: the null class (c2i), or the learned empty
        caption, or ``negative_prompts`` / ``negative_captions`` when given (t2i)."""
        if rows is None and cols is None:
            rows, cols = self.grid_for(height, width)
        else:
            rows, cols = self._grid(rows, cols)
        guidance = guidance_scale != 1.0
        if self.model_type == "c2i":
            if captions is not None or prompts is not None or negative_prompts is not None:
                raise ValueError("this is a class-conditional LlamaGen model: give class_labels (0.."
                                 f"{self.config.num_classes - 1}), not prompts or captions")
            emb, valid, b = self._class_condition(class_labels, guidance)
        else:
            if class_labels is not None:
                raise ValueError("this is a text-to-image LlamaGen model: give prompts (or captions), not class labels")
            emb, valid, b = self._text_condition(prompts, captions, caption_mask, negative_prompts,
                                                 negative_captions, guidance)
        layout = TokenLayout(rows, cols, prefix=self.prefix, eol=False)
        f = self.downsample
        return Conditioning(layout=layout, batch_size=b, guidance=guidance, prefix_valid=valid,
                            payload=emb.to(self.dtype),
                            extras={"guidance_scale": guidance_scale, "height": rows * f, "width": cols * f})

    def _class_condition(self, class_labels, guidance: bool):
        if class_labels is None:
            raise ValueError("class-conditional LlamaGen needs class_labels")
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        n_cls = self.config.num_classes
        bad = labels[(labels < 0) | (labels >= n_cls)]
        if bad.numel():
            raise ValueError(f"class_labels {bad.tolist()} out of range: this model has classes 0..{n_cls - 1}")
        labels = labels.to(self.device)
        b = labels.shape[0]
        if guidance:
            labels = torch.cat([labels, torch.full_like(labels, n_cls)])  # null class = num_classes
        with torch.no_grad():
            emb = self.gpt.embed_labels(labels)  # (rows, 1, dim)
        return emb, torch.ones(emb.shape[0], 1, dtype=torch.bool, device=self.device), b

    def _captions(self, prompts, captions, caption_mask, what: str):
        """-> features (B, T, caption_dim) with padding zeroed, mask (B, T) bool, on the model device."""
        if prompts is not None:
            if self.t5 is None:
                raise ValueError(f"{what} need the FLAN-T5 encoder: load it (t5_path=) or pass T5 caption embeddings")
            captions, caption_mask = self.t5.encode([prompts] if isinstance(prompts, str) else list(prompts))
        if isinstance(captions, (tuple, list)):
            captions, caption_mask = captions
        t, cd = self.prefix, self.config.caption_dim
        if captions.dim() != 3 or captions.shape[1:] != (t, cd):
            raise ValueError(f"captions must be (batch, {t}, {cd}) T5 features, got {tuple(captions.shape)}")
        b = captions.shape[0]
        mask = torch.ones(b, t, dtype=torch.bool) if caption_mask is None else caption_mask.bool()
        if mask.shape != (b, t):
            raise ValueError(f"caption_mask must be ({b}, {t}), got {tuple(mask.shape)}")
        mask = mask.to(self.device)
        return captions.to(self.device) * mask[..., None], mask  # padded features zeroed, as LlamaGen does

    def _text_condition(self, prompts, captions, caption_mask, negative_prompts, negative_captions, guidance):
        if prompts is None and captions is None:
            raise ValueError("text-to-image LlamaGen needs prompts (or T5 captions + mask)")
        caps, mask = self._captions(prompts, captions, caption_mask, "prompts")
        b = caps.shape[0]
        if guidance:
            if negative_prompts is not None or negative_captions is not None:
                if isinstance(negative_prompts, str):
                    negative_prompts = [negative_prompts] * b
                ncaps, nmask = self._captions(negative_prompts, negative_captions, None, "negative prompts")
                if ncaps.shape[0] != b:
                    raise ValueError(f"negative prompts: got {ncaps.shape[0]} for {b} prompts")
            else:
                # LlamaGen's own unconditional row: the learned empty caption, full length, under the
                # prompt's own padding mask.
                ncaps = self.gpt.cls_embedding.uncond_embedding.to(caps.dtype).expand(b, -1, -1)
                nmask = mask
            caps, mask = torch.cat([caps, ncaps]), torch.cat([mask, nmask])
        with torch.no_grad():
            emb = self.gpt.embed_captions(caps)  # (rows, T, dim)
        return emb, mask, b

    # -- decoding -----------------------------------------------------------------------------------
    def new_cache(self, cond: Conditioning, num_slots: int) -> SlotKVCache:
        cfg = self.config
        return SlotKVCache(cfg.n_layer, cond.num_rows, cfg.kv_heads, num_slots, cfg.head_dim, self.dtype, self.device)

    def _positions(self, cond: Conditioning, slots: torch.Tensor):
        """slots (N, q) -> row, col (N, q) long and is_cond (N, q) bool."""
        p = slots - cond.layout.prefix
        is_cond = p < 0
        grid = p.clamp(min=0)
        cols = cond.layout.cols
        return grid // cols, grid % cols, is_cond

    def _run(self, cond, h, slots, visible, cache) -> torch.Tensor:
        row, col, is_cond = self._positions(cond, slots)
        cache.set_slots(slots, kv_len=visible.shape[-1])
        hidden = self.gpt.forward_embeddings(h, row, col, is_cond, visible, cache)
        return hidden

    @torch.no_grad()
    def prefill(self, cond: Conditioning, cache: SlotKVCache, visible: torch.Tensor) -> torch.Tensor:
        """Condition slots 0..P-1 under visible (rows, P, P) -> float32 logits (rows, codebook) of slot P-1."""
        emb = cond.payload  # (rows, P, dim)
        n, p = emb.shape[:2]
        slots = torch.arange(p, device=emb.device).expand(n, -1)
        hidden = self._run(cond, emb, slots, visible, cache)
        return self.gpt.logits(hidden[:, -1:])[:, 0]

    @torch.no_grad()
    def forward(self, cond: Conditioning, tokens: torch.Tensor, slots: torch.Tensor, visible: torch.Tensor,
                cache: SlotKVCache) -> torch.Tensor:
        """tokens (rows, q) VQ codes (LlamaGen has no EOL); slots (rows, q); visible (rows, q, kv)
        -> float32 logits (rows, q, codebook)."""
        # LlamaGen has no EOL token; a negative id can only be a padded query of a ragged pass (its slot
        # is never visible and its logits unused), so map it to code 0 instead of indexing out of range.
        h = self.gpt.embed_tokens(tokens.clamp(min=0))  # (rows, q, dim)
        return self.gpt.logits(self._run(cond, h, slots, visible, cache))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, H, W) -> images (B, 3, 16H, 16W) in [-1, 1]."""
        if self.vq is None:
            raise ValueError("no VQ tokenizer loaded: load_llamagen(..., vq_path=...) is needed to decode")
        dev = self.vq.post_quant_conv.weight.device
        return self.vq.decode_codes(codes.to(dev).long()).float().clamp_(-1, 1)
