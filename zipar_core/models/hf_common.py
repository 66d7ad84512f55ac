"""What the transformers-backed families (Janus-Pro, Emu3-Gen, Lumina-mGPT) share.

- attention implementation: ZipAR hands the model a 4-D visibility mask; ``sdpa`` takes it as bool,
  ``eager`` needs it additive (a bool added to the scores is silently wrong), and flash-attention ignores
  4-D masks altogether, so it is refused.
- left-padded prompts: each row's positions start at 0 on its first real token (docs/design.md, "Prompts and padding": per-row prefix
  lengths), so a batched row computes what the same prompt computes alone.
- loading a local folder or a hub id in eval mode, with a checked attention implementation.

Which family a folder holds is the registry's business (``registry.detect``); nothing here imports an
adapter.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Sequence

import torch

from ..cache import additive_mask
from ..checkpoints import CheckpointError
from ..errors import SettingError
from ..layout import EOL, TokenLayout
from ..loading import HubOptions, LoadOptions
from ..protocol import AdapterBase, Conditioning, PromptIds, Request
from .registry import Registered

SUPPORTED_ATTENTION = ("sdpa", "eager")


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


def build_conditioning(cond_ids: list[list[int]], uncond_ids: list[list[int]] | None, pad_id: int,
                       rows: int, cols: int, eol: bool, max_positions: int | None, extras: dict | None = None,
                       device: torch.device | str = "cpu") -> Conditioning:
    """Left-pad [cond; uncond] prompts to one prefix and wrap them in a Conditioning.

    the payload is :class:`PromptIds` (ids (sequences, prefix), pad (sequences,)), on ``device``
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
            raise SettingError("prompt",
                f"{{name}} of {longest} tokens plus a {rows}x{cols} image ({rows * layout.row_stride} slots) needs "
                f"{need} positions, more than the model's context of {max_positions}; shorten the prompt "
                "or choose a smaller image")
    return Conditioning(layout, len(cond_ids), uncond_ids is not None, valid.to(device),
                        payload=PromptIds(ids.to(device), pad.to(device)), extras=dict(extras or {}))


# -- loading ------------------------------------------------------------------------------------------

def load_hf(model_cls, path_or_id: str, options: LoadOptions, what: str = "model", published: str = "",
            family: str | None = None, config=None, allow_missing: str | None = None):
    """``model_cls.from_pretrained`` of a folder in transformers' own layout (or a hub id) with a checked
    attention implementation, in eval mode (Emu3's attention dropout defaults to 0.1), moved to ``device``.

    transformers fills a tensor the checkpoint lacks with random values and only logs it; here a missing or
    misshapen tensor is an error naming the file, and a sharded folder with a shard missing is refused before
    anything is read. The model is built on CPU and moved to ``device`` only once it is complete.

    ``options.quantization``: transformers' bitsandbytes integration quantizes the linear layers outside the
    family's ``keep_unquantized`` as they load, straight onto the device (``family`` names it). A folder saved
    quantized loads as saved (its config.json says how); asking it for another quantization is refused.
    ``config``: the config to build with (else the folder's); ``allow_missing``: a prefix of tensors the folder
    may lack (a part the caller deletes after loading)."""
    from ..checkpoints import find_weight_files

    impl = check_attention(options.attn_implementation)
    local = os.path.isdir(path_or_id)
    weights = find_weight_files(path_or_id, what, published) if local else None
    quantized = _quantized_loading(model_cls, path_or_id, options, family, config)
    model, info = model_cls.from_pretrained(path_or_id, dtype=options.torch_dtype("auto"), attn_implementation=impl,
                                            ignore_mismatched_sizes=True, output_loading_info=True,
                                            **({"config": config} if config is not None else {}),
                                            **quantized, **options.hub.download())
    missing = sorted(k for k in info.get("missing_keys") or () if not (allow_missing and k.startswith(allow_missing)))
    mismatched = sorted(info.get("mismatched_keys") or ())
    if missing or mismatched:
        del model  # nothing half-loaded survives the error
        where = weights.where if weights is not None else (lambda k: f"the weight files of {path_or_id}")
        lines = [f"tensor {k!r} is missing from {where(k)}" for k in missing[:5]]
        lines += [f"tensor {k!r} in {where(k)} has shape {tuple(got)}, the model needs {tuple(need)}"
                  for k, got, need in mismatched[:5]]
        more = len(missing) + len(mismatched) - len(lines)
        raise CheckpointError(f"{what} in {path_or_id} does not load: " + "; ".join(lines)
                              + (f"; and {more} more" if more > 0 else "")
                              + f". Fix: {redownload_fix(published)}")
    return (model if quantized else model.to(options.torch_device())).eval()


def redownload_fix(published: str = "") -> str:
    return ("the download is incomplete or damaged, or config.json belongs to other weights: download the model "
            f"folder again{' (' + published + ')' if published else ''}")


def load_converted(model_cls, config, sd: dict[str, torch.Tensor], describe, options: LoadOptions, *, what: str,
                   fix: str, family: str | None = None):
    """A transformers model from a state dict already converted to its names (an original publisher's layout,
    converted in memory). Every tensor is checked against the model first, on the meta device: a missing
    tensor or a wrong shape is refused (``describe(name) -> (file, name in the file)`` says it in the file's
    words) before any weights are built, so a failed load leaves nothing behind. ``torch_dtype`` None keeps
    the checkpoint's dtype. ``options.quantization``: quantized after the conversion, layer by layer as
    transformers loads the converted tensors (``family``'s ``keep_unquantized`` stay in the compute dtype)."""
    from ..checkpoints import check_tensors

    impl = check_attention(options.attn_implementation)
    with torch.device("meta"):
        reference = model_cls(config)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):  # a tied head is the embedding, not a tensor of its own
        for tied in getattr(reference, "_tied_weights_keys", None) or ():
            expected.pop(tied, None)
    del reference
    check_tensors(expected, {k: tuple(v.shape) for k, v in sd.items()}, describe, fix, what)
    dtype = options.torch_dtype(checkpoint_dtype(sd))
    quantized = _quantization_config(options, family, dtype)
    model = model_cls.from_pretrained(None, config=config, state_dict={k: sd[k] for k in expected}, dtype=dtype,
                                      attn_implementation=impl, **quantized)
    return (model if quantized else model.to(options.torch_device())).eval()


def _quantization_config(options: LoadOptions, family: str | None, dtype) -> dict:
    """``from_pretrained`` keywords that quantize the model as it loads (none without a quantization): the
    family's ``BitsAndBytesConfig`` and the device to quantize onto, one layer at a time."""
    q = options.quantization
    if q is None:
        return {}
    from ..quantization import check_available
    from . import keep_unquantized

    if family is None:
        raise ValueError("quantizing a transformers model needs its family (which modules stay unquantized)")
    device = options.torch_device()
    check_available(device=device)
    return {"quantization_config": q.bnb_config(keep_unquantized(family, q), dtype), "device_map": {"": device}}


def _quantized_loading(model_cls, path_or_id: str, options: LoadOptions, family: str | None, config=None) -> dict:
    """What ``load_hf`` adds to ``from_pretrained`` for quantization: nothing for a full-precision load, the
    device for a folder saved quantized (transformers reads its quantization_config; a different one asked for is
    refused), else :func:`_quantization_config` in the compute dtype (the checkpoint's when "auto")."""
    config = config if config is not None else model_cls.config_class.from_pretrained(path_or_id,
                                                                                      **options.hub.download())
    saved = getattr(config, "quantization_config", None)
    q = options.quantization
    if saved is not None:
        from ..quantization import check_available, quantization_of

        check_available(device=options.torch_device())
        found = quantization_of(config)
        if q is not None and q.method != found.method:
            from ..errors import SettingError

            raise SettingError("quantization", f"{{name}}={q.method!r} cannot apply: {path_or_id} is saved quantized "
                                               f"as {found.method}; leave {{name}} unset (it loads as saved) or give "
                                               f"{found.method}")
        return {"device_map": {"": options.torch_device()}}
    dtype = options.torch_dtype(None) or getattr(config, "dtype", None) or torch.float32
    return _quantization_config(options, family, getattr(torch, dtype) if isinstance(dtype, str) else dtype)


def checkpoint_dtype(sd: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype most of a checkpoint's floating tensors have (what ``dtype="auto"`` keeps)."""
    counts: dict[torch.dtype, int] = {}
    for v in sd.values():
        if v.is_floating_point():
            counts[v.dtype] = counts.get(v.dtype, 0) + v.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def load_tokenizer(path_or_id: str, tokenizer=None, hub: HubOptions | None = None):
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, **(hub or HubOptions()).download())


def encode(tokenizer, text: str, bos_id: int | None) -> list[int]:
    """Tokenize without the tokenizer's own special tokens, then put exactly one BOS in front: tokenizers
    disagree on whether they add it, the models do not."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ([bos_id] if bos_id is not None else []) + ids


# -- the shared adapter body -----------------------------------------------------------------------

class HFAdapter(Registered, AdapterBase):
    """The ZipAR protocol over a transformers decoder. A family supplies the attributes below and its hooks:
    ``grid_for`` (pixel size -> token grid), ``token_rows`` (a checked request -> prompt ids), how image tokens are
    embedded (``_embed_codes``) and how hidden states become logits over the VQ codebook (``_logits``)."""

    conditioning = "text"
    model: torch.nn.Module  # the transformers model (a pipeline's ``transformer`` component)
    backbone: torch.nn.Module  # its decoder, which takes ``inputs_embeds``
    text_config: object  # the decoder's config (layers, heads, context)
    tokenizer = None
    codebook_size: int  # VQ codes: logits and codes range over 0 .. codebook_size-1
    pixels_per_token: int  # pixels per token side
    eol: bool = False  # an end-of-row token after every row
    eol_id: int | None = None  # its vocabulary id (families whose image tokens live in the text vocabulary)
    img2bpe: torch.Tensor | None = None  # (codebook,) code -> vocabulary id, idem (kept on the model: attach_image_ids)
    bos_id: int | None = None
    pad_id: int | None = None  # left padding of batched prompts (never attended)

    @property
    def default_size(self) -> tuple[int, int]:
        rows, cols = self.grid_for(None, None)
        return rows * self.pixels_per_token, cols * self.pixels_per_token

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @property
    def attn_implementation(self) -> str:
        return model_attention(self.backbone)

    def save_pretrained(self, folder: str) -> list[str]:
        """Write the model in transformers' own layout (safetensors, config, generation config) with its
        tokenizer: the folder ``zipar convert`` writes, which every face and transformers itself load without
        converting anything. Returns the files written."""
        os.makedirs(folder, exist_ok=True)
        self.model.save_pretrained(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        return sorted(os.listdir(folder))

    # -- conditioning --------------------------------------------------------------------------------
    def missing_text_encoder(self) -> str | None:
        if self.tokenizer is None:
            return (f"this {self.family} model has no tokenizer: load it from a folder that has one (or pass "
                    "tokenizer=), or give token ids to conditioning_from_ids()")
        return None

    def encode(self, request: Request, guidance_scale: float = 1.0) -> Conditioning:
        cond_ids, uncond_ids = self.token_rows(request, guidance_scale != 1.0)
        return self.conditioning_from_ids(cond_ids, uncond_ids, request.rows, request.cols)

    def conditioning_from_ids(self, cond_ids: list[list[int]], uncond_ids: list[list[int]] | None, rows: int,
                              cols: int) -> Conditioning:
        """Token-level entry: prompts already tokenized, and their unconditional rows (None: no guidance),
        left-padded into one prefix for a rows x cols grid."""
        return build_conditioning(cond_ids, uncond_ids, self.pad_id, rows, cols, eol=self.eol,
                                  max_positions=self.text_config.max_position_embeddings,
                                  extras={"height": rows * self.pixels_per_token, "width": cols * self.pixels_per_token},
                                  device=self.device)

    def token_rows(self, request: Request, guided: bool) -> tuple[list[list[int]], list[list[int]] | None]:
        """The family's hook: (conditional prompt ids, unconditional ids or None) of a checked request."""
        raise NotImplementedError

    def _image_ids(self, device: torch.device) -> torch.Tensor:
        """The model's own image-token mapping (code -> vocabulary id), a buffer of the model (see
        :func:`attach_image_ids`): it moves with the model, so it is on the model's device without a copy."""
        return self.model.zipar_image_ids

    def _vocabulary_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes (and EOL) -> vocabulary ids, for families whose image tokens live in the text vocabulary (Emu3,
        Chameleon/Lumina)."""
        return torch.where(tokens == EOL, self.eol_id, self._image_ids(tokens.device)[tokens.clamp_min(0)])

    # -- model hooks ---------------------------------------------------------------------------------
    def _embed_prompt(self, ids: torch.Tensor) -> torch.Tensor:  # (rows, P) -> (rows, P, hidden)
        return self.backbone.get_input_embeddings()(ids)

    def _embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:  # (rows, q) codes / EOL -> (rows, q, hidden)
        raise NotImplementedError

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:  # (rows, q, hidden) -> (rows, q, codebook) f32
        raise NotImplementedError

    # -- protocol ---------------------------------------------------------------------------------------
    def new_cache(self, cond: Conditioning, num_slots: int):
        from .hf_cache import HFSlotCache

        return HFSlotCache.for_config(self.text_config, cond.num_sequences, num_slots, self.dtype, self.device)

    def _run(self, embeds, slots, visible, cond: Conditioning, cache) -> torch.Tensor:
        """One decoder pass writing K/V at ``slots``; returns the final hidden states (sequences, q, hidden)."""
        impl = self.attn_implementation
        pad = cond.payload.pad.to(slots.device)  # a no-op when prepared on the model's device
        mask = attention_mask_4d(visible, impl, self.dtype)  # (sequences, 1, q, kv_len): used as given
        out = self.backbone(inputs_embeds=embeds.to(self.dtype), attention_mask=mask,
                            position_ids=positions_for(slots, pad), use_cache=True,
                            **{cache_argument(self.backbone): cache.at(slots, visible.shape[-1])})
        return out.last_hidden_state

    @torch.no_grad()
    def prefill(self, cond: Conditioning, cache, visible: torch.Tensor) -> torch.Tensor:
        ids = cond.payload.ids.to(self.device)  # (rows, prefix)
        slots = torch.arange(ids.shape[1], device=self.device).expand(ids.shape[0], -1)
        hidden = self._run(self._embed_prompt(ids), slots, visible.to(self.device), cond, cache)
        return self._logits(hidden[:, -1:])[:, 0]  # (rows, codebook)

    @torch.no_grad()
    def forward(self, cond: Conditioning, tokens, slots, visible, cache) -> torch.Tensor:
        hidden = self._run(self._embed_codes(tokens), slots, visible, cond, cache)
        return self._logits(hidden)  # (rows, q, codebook)


def attach_image_ids(model: torch.nn.Module, img2bpe: torch.Tensor) -> torch.Tensor:
    """Keep a family's code -> vocabulary-id table as a buffer of the model (not saved with it), so it moves with
    the model (``.to``, offload hooks) and a pass never copies it to the device."""
    model.register_buffer("zipar_image_ids", img2bpe.long().to(next(model.parameters()).device), persistent=False)
    return model.zipar_image_ids


def cache_argument(module: torch.nn.Module) -> str:
    """The keyword a transformers decoder takes its cache under: ``cache`` (transformers >= 5.2x, where
    ``past_key_values`` is deprecated, to be removed in 5.40) or ``past_key_values`` (older releases)."""
    name = _CACHE_ARGUMENT.get(type(module))
    if name is None:
        params = inspect.signature(module.forward).parameters
        name = _CACHE_ARGUMENT[type(module)] = "cache" if "cache" in params else "past_key_values"
    return name


_CACHE_ARGUMENT: dict[type, str] = {}


class VocabularyImageAdapter(HFAdapter):
    """Families whose image tokens live in the text vocabulary (Emu3, Chameleon/Lumina): codes are fed
    through the model's own code -> id mapping and logits are the lm_head's, cut to the image tokens
    (calling lm_head directly also skips Chameleon's forward, which masks every image logit)."""

    def _embed_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._embed_prompt(self._vocabulary_ids(tokens))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)[..., self._image_ids(hidden.device)].float()
