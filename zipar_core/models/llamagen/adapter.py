"""LlamaGen behind the ZipAR model protocol (``zipar_core.protocol``).

Sequence: ``cls_token_num`` condition slots (1 class token, or 120 T5 caption tokens, left-padded), then
the rows x cols grid in raster order, no end-of-row token. A query's rotary position is the (row, col)
of its slot, never the order it was decoded in (docs/design.md, rule 5).
"""
from __future__ import annotations

import os
import warnings

import torch

from ...cache import SlotKVCache
from ...errors import SettingError
from ...layout import TokenLayout
from ...loading import LoadOptions
from ...protocol import AdapterBase, Conditioning, Request
from ..registry import Registered
from .gpt import KEEP_UNQUANTIZED, LlamaGenTransformer
from .loading import find_llamagen_files, find_vq_beside, load_llamagen_gpt, load_llamagen_vq
from .vq import VQModel

_WARNED: set[tuple[int, int, int]] = set()  # grids already warned about (a side beyond the trained one)


class LlamaGenAdapter(Registered, AdapterBase):
    family = "llamagen"
    decoder_setting = "vq_path"
    keep_unquantized = KEEP_UNQUANTIZED  # the image head and the condition embedder (gpt.py)

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
        self.pixels_per_token = vq.pixels_per_token if vq is not None else 16  # VQ-16: 16 px per token side
        self.default_size = (side * self.pixels_per_token, side * self.pixels_per_token) if side else None

    @property
    def variant(self) -> str:
        """The registry variant whose defaults apply: "t2i", "c2i-xl" (XL and larger: cfg 1.75), "" (c2i
        B/L), or what the checkpoint names itself (the demo model: "demo")."""
        if self.config.variant:
            return self.config.variant
        if self.model_type == "t2i":
            return "t2i"
        return "c2i-xl" if self.config.dim > 1024 else ""

    @property
    def device(self) -> torch.device:
        return self.gpt.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.gpt.tok_embeddings.weight.dtype

    @classmethod
    def from_pretrained(cls, path: str, options: LoadOptions | None = None, *, vq_path: str | None = None,
                        t5_path: str | None = None, image_size: int | None = None, n_head: int | None = None,
                        preset: str | None = None) -> LlamaGenAdapter:
        """A GPT checkpoint file (its VQ given or found beside it) or a folder of LlamaGen release files
        (``load_model`` comes here for LlamaGen); ``options.dtype`` is the GPT's (default float32). image_size,
        n_head, preset: for a file whose name and shape do not say its training size or architecture."""
        options = options or LoadOptions()
        if os.path.isdir(path):
            gpt, vq, t5 = find_llamagen_files(path)
            path, vq_path, t5_path = gpt, vq_path or vq, t5_path or t5
        if vq_path is None:
            vq_path = find_vq_beside(path)  # the one VQ tokenizer beside the GPT file, by content
        if vq_path is None:
            raise SettingError("vq_path", f"no VQ tokenizer for {path}: give it with {{name}} or put one VQ "
                                          "checkpoint (e.g. vq_ds16_c2i.pt) beside it")
        return load_llamagen(path, vq_path, t5_path, dtype=options.torch_dtype(torch.float32),
                             device=options.torch_device(), image_size=image_size, preset=preset,
                             quantization=options.quantization, **({"n_head": n_head} if n_head is not None else {}))

    def save_pretrained(self, folder: str, gpt_name: str = "gpt", vq_name: str = "vq_ds16") -> list[str]:
        """The GPT and the VQ as ``.safetensors`` (no pickle to read back), the GPT's ``n_head``, trained
        image size and pixels per token in its metadata, and for text-to-image the FLAN-T5 encoder as a
        transformers folder ``flan-t5``: a LlamaGen folder every face loads. Returns the files written."""
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        cfg = self.config
        from ...quantization import saved_metadata

        meta = {"n_head": str(cfg.n_head), "pixels_per_token": str(self.pixels_per_token), **saved_metadata(self.gpt)}
        if self.default_size:
            meta["image_size"] = str(self.default_size[0])
        if cfg.variant:
            meta["variant"] = cfg.variant
        save_file({k: v.detach().contiguous().cpu() for k, v in self.gpt.state_dict().items()},
                  os.path.join(folder, f"{gpt_name}.safetensors"), metadata=meta)
        if self.vq is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.vq.state_dict().items()},
                      os.path.join(folder, f"{vq_name}.safetensors"))
        if self.t5 is not None:
            self.t5.model.save_pretrained(os.path.join(folder, "flan-t5"))
            self.t5.tokenizer.save_pretrained(os.path.join(folder, "flan-t5"))
        return sorted(os.listdir(folder))

    # -- pipeline components ------------------------------------------------------------------------
    def components(self) -> tuple[dict, dict]:
        """(modules, options) for a pipeline; ``from_components`` builds the adapter back from them."""
        t5 = self.t5
        return {"transformer": self.gpt, "vqvae": self.vq, "text_encoder": t5.model if t5 else None,
                "tokenizer": t5.tokenizer if t5 else None}, {}

    @classmethod
    def from_components(cls, transformer, vqvae=None, text_encoder=None, tokenizer=None, **_) -> LlamaGenAdapter:
        t5 = None
        if text_encoder is not None:
            from .t5 import T5CaptionEncoder

            t5 = T5CaptionEncoder.from_modules(text_encoder, tokenizer, transformer.config.cls_token_num)
        return cls(transformer, vqvae, t5=t5)

    # -- conditioning -------------------------------------------------------------------------------
    def layout(self, rows: int | None = None, cols: int | None = None) -> TokenLayout:
        return TokenLayout(*self.grid_for(rows=rows, cols=cols), prefix=self.prefix, eol=False)

    def grid_for(self, height: int | None = None, width: int | None = None, rows: int | None = None,
                 cols: int | None = None) -> tuple[int, int]:
        """(rows, cols) for an image size in pixels (multiples of the token size), or a grid in tokens
        (``rows``/``cols``); None: the trained size."""
        f = self.pixels_per_token
        for name, v in (("height", height), ("width", width)):
            if v is not None and (v <= 0 or v % f):
                raise SettingError(name, f"{{name}} {v} is not a positive multiple of {f} px (one LlamaGen token is "
                                         f"{f} px)")
        rows = rows if rows is not None else None if height is None else height // f
        cols = cols if cols is not None else None if width is None else width // f
        if rows is None or cols is None:
            if self.default_grid is None:
                raise SettingError("height", "give the image size ({other:height} and {other:width}): this model's "
                                             "block size is not a square grid")
            rows, cols = rows or self.default_grid[0], cols or self.default_grid[1]
        cfg = self.config
        trained = (f"{self.default_grid[0]}x{self.default_grid[1]} tokens ({self.default_size[1]}x"
                   f"{self.default_size[0]} px)" if self.default_grid else f"{cfg.block_size} tokens")
        if rows * cols > cfg.block_size:
            # The rotary embedding would extrapolate to any grid, but sequences longer than the training
            # grid are untested territory for these checkpoints; refuse rather than return garbage.
            raise SettingError("height" if rows > (self.default_grid or (rows,))[0] else "width",
                               f"grid {rows}x{cols} tokens ({cols * f}x{rows * f} px, {rows * cols} tokens) is larger "
                               f"than the {trained} grid this LlamaGen model was trained on; use at most "
                               f"{cfg.block_size} tokens (change {{other:height}} / {{other:width}})")
        if self.default_grid and (rows > self.default_grid[0] or cols > self.default_grid[1]) \
                and (cfg.block_size, rows, cols) not in _WARNED:
            _WARNED.add((cfg.block_size, rows, cols))  # once per process, however many checks see the grid
            warnings.warn(f"grid {rows}x{cols}: a side is longer than the trained {trained} grid; rotary "
                          f"positions beyond it were never seen in training", stacklevel=3)
        return rows, cols

    def missing_decoder(self) -> str | None:
        if self.vq is None:
            return "no VQ tokenizer loaded: give the VQ checkpoint (vq_ds16_c2i.pt) with {name} to decode images"
        return None

    def missing_text_encoder(self) -> str | None:
        if self.t5 is None:
            return ("text-to-image LlamaGen needs the FLAN-T5 encoder to read prompts: give the google/flan-t5-xl "
                    "folder with {other:t5_path}, or T5 caption features to encode_captions()")
        return None

    def encode(self, request: Request, guidance_scale: float = 1.0) -> Conditioning:
        """c2i: the class embeddings (uncond: the null class); t2i: T5 features of the prompts (uncond:
        the learned empty caption, or the negative prompts)."""
        if self.model_type == "c2i":
            emb, valid, b = self._class_condition(request.class_labels, guidance_scale != 1.0)
            return self._conditioning(emb, valid, b, request.rows, request.cols, guidance_scale)
        captions = self.t5.encode(request.prompts)
        guided = guidance_scale != 1.0
        negatives = self.t5.encode(request.negative_prompts) if guided and request.negative_prompts else None
        return self.encode_captions(captions, negative_captions=negatives, rows=request.rows, cols=request.cols,
                                    guidance_scale=guidance_scale)

    def encode_captions(self, captions, caption_mask=None, negative_captions=None, rows: int | None = None,
                        cols: int | None = None, height: int | None = None, width: int | None = None,
                        guidance_scale: float = 1.0) -> Conditioning:
        """Text-to-image from precomputed T5 features: ``captions`` (B, T, caption_dim), left-padded, with
        ``caption_mask`` (B, T) bool (or a (captions, mask) tuple); ``negative_captions`` likewise for the
        unconditional rows (default: LlamaGen's learned empty caption). Size as in ``grid_for``."""
        if self.model_type != "t2i":
            raise SettingError("class_labels", "this is a class-conditional LlamaGen model: give {name}, not captions")
        rows, cols = self.grid_for(height, width, rows=rows, cols=cols)
        guidance = guidance_scale != 1.0
        caps, mask = self._captions(captions, caption_mask)
        b = caps.shape[0]
        if guidance:
            if negative_captions is not None:
                ncaps, nmask = self._captions(negative_captions, None)
                if ncaps.shape[0] != b:
                    raise SettingError("negative_prompt", f"got {ncaps.shape[0]} negative prompts for {b} prompts")
            else:
                # LlamaGen's own unconditional row: the learned empty caption, full length, under the
                # prompt's own padding mask.
                ncaps = self.gpt.cls_embedding.uncond_embedding.to(caps.dtype).expand(b, -1, -1)
                nmask = mask
            caps, mask = torch.cat([caps, ncaps]), torch.cat([mask, nmask])
        with torch.no_grad():
            emb = self.gpt.embed_captions(caps)  # (rows, T, dim)
        return self._conditioning(emb, mask, b, rows, cols, guidance_scale)

    def _conditioning(self, emb, valid, b: int, rows: int, cols: int, guidance_scale: float) -> Conditioning:
        layout = TokenLayout(rows, cols, prefix=self.prefix, eol=False)
        f = self.pixels_per_token
        return Conditioning(layout=layout, batch_size=b, guidance=guidance_scale != 1.0, prefix_valid=valid,
                            payload=emb.to(self.dtype),
                            extras={"guidance_scale": guidance_scale, "height": rows * f, "width": cols * f})

    def _class_condition(self, labels: list[int], guidance: bool):
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        b = labels.shape[0]
        if guidance:
            labels = torch.cat([labels, torch.full_like(labels, self.config.num_classes)])  # null class = num_classes
        with torch.no_grad():
            emb = self.gpt.embed_labels(labels)  # (rows, 1, dim)
        return emb, torch.ones(emb.shape[0], 1, dtype=torch.bool, device=self.device), b

    def _captions(self, captions, caption_mask):
        """-> features (B, T, caption_dim) with padding zeroed, mask (B, T) bool, on the model device."""
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

    # -- decoding -----------------------------------------------------------------------------------
    def new_cache(self, cond: Conditioning, num_slots: int) -> SlotKVCache:
        cfg = self.config
        return SlotKVCache(cfg.n_layer, cond.num_sequences, cfg.kv_heads, num_slots, cfg.head_dim, self.dtype, self.device)

    def _positions(self, cond: Conditioning, slots: torch.Tensor):
        """slots (N, q) -> row, col (N, q) long and is_cond (N, q) bool."""
        p = slots - cond.layout.prefix
        is_cond = p < 0
        grid = p.clamp(min=0)
        cols = cond.layout.cols
        return grid // cols, grid % cols, is_cond

    def _run(self, cond, h, slots, visible, cache) -> torch.Tensor:
        row, col, is_cond = self._positions(cond, slots)
        return self.gpt.forward_embeddings(h, row, col, is_cond, visible, cache.at(slots, visible.shape[-1]))

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
        missing = self.missing_decoder()
        if missing:
            raise SettingError("vq_path", missing)
        dev = self.vq.post_quant_conv.weight.device
        return self.vq.decode_codes(codes.to(dev).long()).float().clamp_(-1, 1)


def load_llamagen(gpt_path, vq_path, t5_path=None, *, preset: str | None = None,
                  model_type: str | None = None, image_size: int | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  vq_dtype: torch.dtype = torch.float32, t5_dtype: torch.dtype | None = None,
                  **gpt_overrides):
    """GPT + VQ (+ FLAN-T5 folder for t2i) -> LlamaGenAdapter. The VQ decoder stays float32 by default.
    ``gpt_overrides`` go to the GPT loader (e.g. ``n_head`` for a file that matches no preset, or
    ``pixels_per_token`` for a tokenizer other than VQ-16 when the file's metadata does not say)."""
    gpt = load_llamagen_gpt(gpt_path, preset=preset, model_type=model_type, image_size=image_size,
                            dtype=dtype, device=device, **gpt_overrides)
    vq = load_llamagen_vq(vq_path, dtype=vq_dtype, device=device) if vq_path is not None else None
    t5 = None
    if t5_path is not None and torch.device(device).type == "meta":
        # the configuration only (device="meta"): prompts are checked against an encoder that exists, never encoded
        if not os.path.isfile(os.path.join(os.fspath(t5_path), "config.json")):
            raise FileNotFoundError(f"FLAN-T5 folder not found: {t5_path} (no config.json; a transformers folder of "
                                    "google/flan-t5-xl, needed by text-to-image LlamaGen)")
        t5 = _UnloadedT5(os.fspath(t5_path))
    elif t5_path is not None:
        from .t5 import T5CaptionEncoder

        t5 = T5CaptionEncoder(t5_path, device=device, dtype=t5_dtype or dtype,
                              max_length=gpt.config.cls_token_num)
    return LlamaGenAdapter(gpt, vq, t5=t5)


class _UnloadedT5:
    """Where a configuration-only adapter's FLAN-T5 encoder would be: the folder, no weights."""

    model = tokenizer = None

    def __init__(self, path: str):
        self.path = path

    def encode(self, prompts):
        raise RuntimeError("this LlamaGen adapter was built on the meta device (configuration only): load it to encode")
