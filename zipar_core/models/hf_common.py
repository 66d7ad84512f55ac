"""What the transformers-backed families (Janus-Pro, Emu3-Gen, Lumina-mGPT) share.

- attention implementation: ZipAR hands the model a 4-D visibility mask; ``sdpa`` takes it as bool,
  ``eager`` needs it additive (a bool added to the scores is silently wrong), and flash-attention ignores
  4-D masks altogether, so it is refused.
- left-padded prompts: each row's positions start at 0 on its first real token (DESIGN: per-row prefix
  lengths), so a batched row computes what the same prompt computes alone.
- loading a local folder or a hub id, and telling the family from ``config.json``'s ``model_type``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

from ..cache import additive_mask
from ..layout import TokenLayout
from .base import EOL_TOKEN, Conditioning

SUPPORTED_ATTENTION = ("sdpa", "eager")
# config.json model_type -> ZipAR family (Lumina-mGPT ships as a Chameleon checkpoint)
FAMILIES = {"janus": "janus", "emu3": "emu3", "chameleon": "lumina"}


def check_attention(impl: str | None) -> str:
    """Validate an attention implementation for ZipAR decoding; returns it ('sdpa' when None)."""
    impl = impl or "sdpa"
    if "flash" in impl or "paged" in impl:
        raise ValueError(
            f"attn_implementation={impl!r} cannot run ZipAR: flash-attention ignores the 4-D visibility mask "
            "that keeps not-yet-decoded slots hidden, so decoding would read garbage. Use 'sdpa' (default) or "
            "'eager'.")
    if impl not in SUPPORTED_ATTENTION:
        raise ValueError(f"attn_implementation={impl!r} is not supported with ZipAR; use one of {SUPPORTED_ATTENTION}")
    return impl


def model_attention(model) -> str:
    """The implementation a loaded model actually runs, checked (a model can be built or switched later)."""
    return check_attention(getattr(model.config, "_attn_implementation", None))


def attention_mask_4d(visible: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """visible (rows, q, kv) bool -> the mask transformers passes through: (rows, 1, q, kv), bool for sdpa,
    additive float in the compute dtype for eager."""
    if impl == "eager":
        return additive_mask(visible, dtype)
    return visible[:, None]


def positions_for(slots: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """slots (rows, q), pad (rows,) left-padding per row -> position ids (rows, q): slot minus padding.
    Padding slots themselves get position 0 (they are never attended to by real tokens)."""
    return (slots - pad[:, None]).clamp_min(0)


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, length: int | None = None):
    """Token lists -> (ids (n, L) long, valid (n, L) bool, pad (n,) long), padded on the left."""
    L = max(len(s) for s in seqs) if length is None else length
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if len(s) == 0:
            raise ValueError("empty prompt: a row needs at least one token to predict from")
        ids[i, L - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        valid[i, L - len(s):] = True
    return ids, valid, L - valid.sum(1)


def as_prompt_list(prompt: str | Sequence[str], name: str = "prompt") -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    prompts = list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a string or a non-empty list of strings")
    return prompts


def broadcast_negative(negative: str | Sequence[str] | None, n: int) -> list[str] | None:
    if negative is None:
        return None
    neg = as_prompt_list(negative, "negative_prompt")
    if len(neg) == 1:
        return neg * n
    if len(neg) != n:
        raise ValueError(f"got {len(neg)} negative prompts for {n} prompts; give one or one per prompt")
    return neg


def build_conditioning(cond_ids: list[list[int]], uncond_ids: list[list[int]] | None, pad_id: int,
                       rows: int, cols: int, eol: bool, max_positions: int | None, extras: dict | None = None,
                       device: torch.device | str = "cpu", **payload) -> Conditioning:
    """Left-pad [cond; uncond] prompts to one prefix and wrap them in a Conditioning.

    payload carries ``ids`` (rows, prefix) and ``pad`` (rows,) plus whatever the family adds, on ``device``
    (moved once here, not on every pass). max_positions: the model's context; a prompt whose image would
    run past it is refused here.
    """
    seqs = cond_ids + (uncond_ids or [])
    ids, valid, pad = left_pad(seqs, pad_id)
    layout = TokenLayout(rows, cols, prefix=ids.shape[1], eol=eol)
    if max_positions:
        longest = max(len(s) for s in seqs)
        need = longest + rows * layout.row_stride
        if need > max_positions:
            raise ValueError(
                f"prompt of {longest} tokens plus a {rows}x{cols} image ({rows * layout.row_stride} slots) needs "
                f"{need} positions, more than the model's context of {max_positions}; shorten the prompt "
                "or choose a smaller image")
    return Conditioning(layout, len(cond_ids), uncond_ids is not None, valid.to(device),
                        payload=dict(ids=ids.to(device), pad=pad.to(device), **payload), extras=dict(extras or {}))


# -- loading ------------------------------------------------------------------------------------------

def read_model_type(path_or_id: str, **hub_kwargs) -> str:
    """``model_type`` of a local folder's config.json, or of a hub id's (through transformers)."""
    cfg_file = os.path.join(path_or_id, "config.json")
    if os.path.isdir(path_or_id):
        if not os.path.isfile(cfg_file):
            raise FileNotFoundError(f"{path_or_id} has no config.json: is it a transformers model folder?")
        with open(cfg_file, encoding="utf-8") as f:
            return json.load(f).get("model_type", "")
    from transformers import AutoConfig  # hub id: let transformers resolve and cache it

    return AutoConfig.from_pretrained(path_or_id, **hub_kwargs).model_type


def detect_family(path_or_id: str | None = None, model_type: str | None = None, **hub_kwargs) -> str:
    """'janus' | 'emu3' | 'lumina' from config.json; a clear error for anything else."""
    mt = model_type if model_type is not None else read_model_type(path_or_id, **hub_kwargs)
    if mt not in FAMILIES:
        where = f" in {path_or_id}" if path_or_id else ""
        raise ValueError(
            f"unsupported model type {mt!r}{where}: ZipAR's transformers adapters support "
            f"{', '.join(sorted(FAMILIES))} (Janus-Pro, Emu3-Gen, Lumina-mGPT/Chameleon); LlamaGen checkpoints "
            "load through the LlamaGen adapter")
    return FAMILIES[mt]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_hf(model_cls, path_or_id: str, torch_dtype=None, device=None, attn_implementation: str = "sdpa",
            **kwargs):
    """``model_cls.from_pretrained`` with a checked attention implementation, in eval mode (Emu3's
    attention dropout defaults to 0.1), moved to ``device``."""
    impl = check_attention(attn_implementation)
    model = model_cls.from_pretrained(path_or_id, dtype=torch_dtype or "auto", attn_implementation=impl, **kwargs)
    return model.to(resolve_device(device)).eval()


def load_tokenizer(path_or_id: str, tokenizer=None, **kwargs):
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, **kwargs)


def load_adapter(path_or_id: str, **kwargs):
    """Load any transformers-backed family; the adapter class is chosen from config.json."""
    family = detect_family(path_or_id)
    if family == "janus":
        from .janus import JanusAdapter as cls
    elif family == "emu3":
        from .emu3 import Emu3Adapter as cls
    else:
        from .lumina import LuminaAdapter as cls
    return cls.from_pretrained(path_or_id, **kwargs)


def encode(tokenizer, text: str, bos_id: int | None) -> list[int]:
    """Tokenize without the tokenizer's own special tokens, then put exactly one BOS in front: tokenizers
    disagree on whether they add it, the models do not."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ([bos_id] if bos_id is not None else []) + ids


# -- the shared adapter body -----------------------------------------------------------------------

class HFAdapter:
    """The ZipAR protocol over a transformers decoder. A family supplies ``backbone`` (the decoder that
    takes ``inputs_embeds``), ``text_config``, and three small hooks: how prompt ids and image tokens are
    embedded, and how hidden states become logits over the VQ codebook."""

    family: str = ""
    conditioning = "text"
    num_classes = None
    codebook_size: int
    backbone: torch.nn.Module
    text_config: object
    factor: int  # pixels per token side

    @property
    def downsample(self) -> int:
        return self.factor

    @property
    def default_size(self) -> tuple[int, int]:
        rows, cols = self.grid_for(None, None)
        return rows * self.factor, cols * self.factor

    def prepare(self, *, prompts=None, class_labels=None, negative_prompts=None, height: int | None = None,
                width: int | None = None, guidance_scale: float = 1.0, **options) -> Conditioning:
        """The uniform front door (``ZipARModel.prepare``); ``options`` are family extras (Emu3: ratio,
        image_area). Guidance rows are built when guidance_scale != 1; the family's recommended scale is in
        ``DEFAULTS``."""
        if class_labels is not None:
            raise ValueError(f"{self.family} is a text-to-image model: give prompts, not class_labels")
        if prompts is None:
            raise ValueError(f"{self.family} needs prompts (a string or a list of strings)")
        prompts = as_prompt_list(prompts)
        broadcast_negative(negative_prompts, len(prompts))  # a count mismatch is an error, guided or not
        return self._prepare(prompts, negative_prompts, height, width, guidance_scale, **options)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @property
    def attn_implementation(self) -> str:
        return model_attention(self.backbone)

    def _conditioning(self, cond_ids, uncond_ids, rows: int, cols: int, eol: bool) -> Conditioning:
        """Left-pad the [cond; uncond] prompts into a Conditioning for a rows x cols grid."""
        return build_conditioning(cond_ids, uncond_ids, self.pad_id, rows, cols, eol=eol,
                                  max_positions=self.text_config.max_position_embeddings,
                                  extras={"height": rows * self.factor, "width": cols * self.factor},
                                  device=self.device)

    def _image_ids(self, device: torch.device) -> torch.Tensor:
        """The model's own image-token mapping ``img2bpe`` (code -> vocabulary id), on ``device``."""
        if self.img2bpe.device != device:
            self.img2bpe = self.img2bpe.to(device)
        return self.img2bpe

    def _vocabulary_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes (and EOL_TOKEN) -> vocabulary ids, for families whose image tokens live in the text
        vocabulary (Emu3, Chameleon/Lumina)."""
        return torch.where(tokens == EOL_TOKEN, self.eol_id, self._image_ids(tokens.device)[tokens.clamp_min(0)])

    # hooks ------------------------------------------------------------------------------------------
    def _embed_prompt(self, ids: torch.Tensor) -> torch.Tensor:  # (rows, P) -> (rows, P, hidden)
        return self.backbone.get_input_embeddings()(ids)

    def _embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:  # (rows, q) codes / EOL -> (rows, q, hidden)
        raise NotImplementedError

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:  # (rows, q, hidden) -> (rows, q, codebook) f32
        raise NotImplementedError

    # protocol ---------------------------------------------------------------------------------------
    def new_cache(self, cond: Conditioning, num_slots: int):
        from .hf_cache import HFSlotCache

        return HFSlotCache.for_config(self.text_config, cond.num_rows, num_slots, self.dtype, self.device)

    def _run(self, embeds, slots, visible, cond: Conditioning, cache) -> torch.Tensor:
        """One decoder pass writing K/V at ``slots``; returns the final hidden states (rows, q, hidden)."""
        impl = self.attn_implementation
        pad = cond.payload["pad"].to(slots.device)  # a no-op when prepared on the model's device
        cache.set_slots(slots, visible.shape[-1])
        mask = attention_mask_4d(visible, impl, self.dtype)  # (rows, 1, q, kv_len): used as given
        out = self.backbone(inputs_embeds=embeds.to(self.dtype), attention_mask=mask,
                            position_ids=positions_for(slots, pad), past_key_values=cache, use_cache=True)
        return out.last_hidden_state

    @torch.no_grad()
    def prefill(self, cond: Conditioning, cache, visible: torch.Tensor) -> torch.Tensor:
        ids = cond.payload["ids"].to(self.device)  # (rows, prefix)
        slots = torch.arange(ids.shape[1], device=self.device).expand(ids.shape[0], -1)
        hidden = self._run(self._embed_prompt(ids), slots, visible.to(self.device), cond, cache)
        return self._logits(hidden[:, -1:])[:, 0]  # (rows, codebook)

    @torch.no_grad()
    def forward(self, cond: Conditioning, tokens, slots, visible, cache) -> torch.Tensor:
        hidden = self._run(self._embed_codes(tokens), slots, visible, cond, cache)
        return self._logits(hidden)  # (rows, q, codebook)


class VocabularyImageAdapter(HFAdapter):
    """Families whose image tokens live in the text vocabulary (Emu3, Chameleon/Lumina): codes are fed
    through the model's own code -> id mapping and logits are the lm_head's, cut to the image tokens
    (calling lm_head directly also skips Chameleon's forward, which masks every image logit)."""

    def _embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._embed_prompt(self._vocabulary_ids(tokens))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)[..., self._image_ids(hidden.device)].float()
