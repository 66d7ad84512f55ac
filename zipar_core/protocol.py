"""The contract between the ZipAR sampler and a model family (docs/design.md, "The adapter protocol").

The sampler knows ZipAR and nothing about any model; an adapter knows its model and nothing about
ZipAR. An adapter validates and encodes a request into a :class:`Conditioning`, allocates a slot cache,
runs the model over arbitrary (slot, token) sets under a visibility mask, and decodes VQ codes to pixels.

Token convention across the boundary: the sampler speaks in VQ codes ``0 .. codebook_size-1`` and uses
``EOL`` (-1, ``layout.EOL``) for the model's end-of-row token; adapters map codes to their own vocabulary ids and
return logits over the codebook only (restricting sampling to image tokens, docs/design.md rule 6).

:class:`AdapterBase` is the one validator of prompts, class labels, negative prompts and sizes
(:meth:`AdapterBase.check`); a family implements one hook to encode a checked :class:`Request`
(:meth:`encode`) and one to turn a pixel size into a token grid (:meth:`grid_for`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch

from .errors import SettingError
from .layout import TokenLayout


@dataclass
class PromptIds:
    """The payload of the transformers families: their prompts' token ids, left-padded into one prefix."""

    ids: torch.Tensor  # (sequences, prefix) long
    pad: torch.Tensor  # (sequences,) long: each sequence's left padding (its positions start after it)


@dataclass
class Conditioning:
    """A batch of conditions, ready for prefill.

    The model's batch holds ``[cond_0 .. cond_{B-1}]`` or, with guidance, ``[cond_0 .. cond_{B-1}, uncond_0 ..
    uncond_{B-1}]`` sequences; every sequence of an image shares its image tokens.
    """

    layout: TokenLayout
    batch_size: int  # B, images
    guidance: bool  # sequences are [cond; uncond]
    prefix_valid: torch.Tensor  # (sequences, prefix) bool: False for left padding, never attended
    # what the family's prefill reads: PromptIds (Janus-Pro, Emu3-Gen, Lumina-mGPT, Lumina-mGPT 2.0), or the
    # condition tokens' embeddings (sequences, prefix, dim) (LlamaGen); only its adapter looks inside
    payload: PromptIds | torch.Tensor | Any = None
    extras: dict = field(default_factory=dict)  # height / width in pixels of the image it makes
    # the family's guidance scale per image token: guidance_scale -> (rows * cols,) tensor by raster index, for a
    # model whose own sampler changes the scale along the image (Lumina-mGPT 2.0); None: guidance_scale everywhere.
    # Only the sampler applies it (sampling.guidance_scales).
    guidance_schedule: Callable[[float], torch.Tensor] | None = None

    @property
    def num_sequences(self) -> int:
        """Sequences in the model's batch: B, or 2B with guidance."""
        return self.batch_size * (2 if self.guidance else 1)


@dataclass(frozen=True)
class Request:
    """A checked batch of conditions and a token grid: what :meth:`AdapterBase.check` returns."""

    rows: int
    cols: int
    prompts: list[str] | None = None  # text models
    class_labels: list[int] | None = None  # class-conditional models
    negative_prompts: list[str] | None = None  # one per prompt, or None

    @property
    def batch_size(self) -> int:
        return len(self.prompts if self.prompts is not None else self.class_labels)

    def repeat(self, n: int) -> Request:
        """Each condition ``n`` times in a row (``num_images_per_prompt``)."""
        rep = lambda xs: None if xs is None else [x for x in xs for _ in range(n)]  # noqa: E731
        return replace(self, prompts=rep(self.prompts), class_labels=rep(self.class_labels),
                       negative_prompts=rep(self.negative_prompts))


@runtime_checkable
class ZipARModel(Protocol):
    """What the sampler needs from a model family, and the uniform front door the pipeline, the command line and
    the ComfyUI nodes use. :class:`AdapterBase` implements the checks; a family's adapter the rest."""

    # -- what it is ------------------------------------------------------------------------------------------
    family: str  # a registry name ("llamagen", "janus", "emu3", "lumina", "lumina2")
    variant: str  # the registry variant whose defaults apply ("" = the family's: LlamaGen "t2i", "demo", ...)
    conditioning: str  # "class" (class labels) or "text" (prompts)
    num_classes: int | None  # class-conditional models only
    takes_negative_prompt: bool  # whether the unconditional branch can take a prompt
    decoder_setting: str | None  # the setting that supplies its VQ decoder when it has none ("vq_path", "vqgan")
    default_size: tuple[int, int]  # (height, width) in pixels the model was trained for
    pixels_per_token: int  # pixels per token side (16 for VQ-16, 8 for Emu3 and MoVQGAN)
    codebook_size: int  # logits and codes range over 0 .. codebook_size-1
    device: torch.device
    dtype: torch.dtype

    def defaults(self):
        """The decoding defaults of its family and variant (``config.Defaults``, from the registry)."""

    # -- requests ---------------------------------------------------------------------------------------------
    def grid_for(self, height: int | None = None, width: int | None = None, **size_options) -> tuple[int, int]:
        """(rows, cols) of the token grid for an image size (None: the default), or the family's size options
        (LlamaGen ``rows``/``cols``, Emu3 ``ratio``/``image_area``); SettingError naming the sizes the model
        supports when it cannot make that size."""

    def check(self, *, prompt=None, class_labels=None, negative_prompt=None, height=None, width=None,
              **size_options) -> Request:
        """Validate a request without model work (see :class:`AdapterBase`)."""

    def encode(self, request: Request, guidance_scale: float = 1.0) -> Conditioning:
        """Embed a checked request; [cond; uncond] sequences when guidance_scale != 1."""

    def prepare(self, *, guidance_scale: float = 1.0, **request) -> Conditioning:
        """``encode(check(**request), guidance_scale)``: the keyword front door (``prompt``,
        ``class_labels``, ``negative_prompt``, ``height``, ``width``, family size options)."""

    def missing_text_encoder(self) -> str | None:
        """Why prompts cannot be encoded (no tokenizer, no T5), or None."""

    def missing_decoder(self) -> str | None:
        """Why codes cannot be decoded to pixels, or None; mentions ``decoder_setting`` as ``{name}``."""

    # -- the model work the sampler drives ---------------------------------------------------------------------
    def new_cache(self, cond: Conditioning, num_slots: int) -> Any:
        """A slot cache (``zipar_core.cache.SlotKVCache``) for ``cond.num_sequences`` sequences."""

    def prefill(self, cond: Conditioning, cache: Any, visible: torch.Tensor) -> torch.Tensor:
        """Run the prefix (slots 0 .. prefix-1) under ``visible`` (sequences, prefix, prefix) and return the
        float32 logits (sequences, codebook_size) of the last prefix slot, which predicts the first token."""

    def forward(self, cond: Conditioning, tokens: torch.Tensor, slots: torch.Tensor, visible: torch.Tensor,
                cache: Any) -> torch.Tensor:
        """tokens, slots: (sequences, q) long (codes or EOL); visible: (sequences, q, kv_len) bool. Write each
        token's K/V at its slot (``cache.at(slots, kv_len)``) and return float32 logits (sequences, q,
        codebook_size)."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, H, W) long -> images (B, 3, H*f, W*f) float in [-1, 1]."""

    # -- how faces build and keep it ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id: str, options=None, **parts):
        """Load a folder, file or hub id of the family (``options``: ``loading.LoadOptions``)."""

    def components(self) -> tuple[dict, dict]:
        """(modules, options) for a pipeline: its registered components and the options ``from_components``
        needs besides them (e.g. Lumina-mGPT's ``target_size``)."""

    @classmethod
    def from_components(cls, **modules_and_options):
        """The adapter around a pipeline's components (no weights are copied)."""

    def save_pretrained(self, folder: str, **names) -> list[str]:
        """Write the model in the layout every face loads without converting (``zipar convert``)."""


def decode_known(model: ZipARModel, codes: torch.Tensor) -> torch.Tensor:
    """Pixels of a partly decoded grid: codes (B, H, W), -1 where not decoded yet -> (B, 3, H*f, W*f) in [-1, 1],
    the undecoded tokens' pixels mid grey (0). For previews and for a run stopped before its end."""
    known = codes >= 0
    images = model.decode(codes.clamp(min=0)).float()
    f = model.pixels_per_token
    mask = known[:, None].float().repeat_interleave(f, 2).repeat_interleave(f, 3)
    return images * mask[..., : images.shape[-2], : images.shape[-1]].to(images.device)


class AdapterBase:
    """The uniform front door every family shares: ``check`` validates, ``encode`` (the family's hook)
    builds the conditioning, ``prepare`` is both. Subclasses set ``family``, ``conditioning``,
    ``num_classes``, ``takes_negative_prompt`` and ``decoder_setting``, and implement ``grid_for`` and
    ``encode``."""

    family: str = ""
    variant: str = ""
    conditioning: str = "text"
    num_classes: int | None = None
    takes_negative_prompt: bool = True
    decoder_setting: str | None = None

    def check(self, *, prompt=None, class_labels=None, negative_prompt=None, height: int | None = None,
              width: int | None = None, **size_options) -> Request:
        """The one validator of a request: prompts (text models) or class labels (class models), negative
        prompts (one, or one per prompt), and the image size (``height``/``width`` in pixels, or the
        family's size options, e.g. LlamaGen ``rows``/``cols``, Emu3 ``ratio``/``image_area``). Raises
        :class:`SettingError` naming the argument and the fix; does no model work."""
        if prompt is not None and class_labels is not None:
            raise SettingError("prompt", "give either {other:prompt} (text-to-image) or {other:class_labels} "
                                          "(class-conditional), not both")
        for name, side in (("height", height), ("width", width)):
            if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side <= 0):
                raise SettingError(name, f"{{name}} must be a positive number of pixels, got {side!r}")
        if self.conditioning == "class":
            labels = self._check_labels(prompt, class_labels, negative_prompt)
            rows, cols = self.grid_for(height, width, **size_options)
            return Request(rows, cols, class_labels=labels)
        prompts = self._check_prompts(prompt, class_labels)
        negatives = self._check_negatives(negative_prompt, len(prompts))
        rows, cols = self.grid_for(height, width, **size_options)
        return Request(rows, cols, prompts=prompts, negative_prompts=negatives)

    def prepare(self, *, guidance_scale: float = 1.0, **request) -> Conditioning:
        """Check and encode a request: ``encode(check(**request), guidance_scale)``."""
        return self.encode(self.check(**request), guidance_scale)

    # -- the family's hooks ------------------------------------------------------------------------
    def missing_text_encoder(self) -> str | None:
        """Why prompts cannot be encoded (no tokenizer, no T5), or None."""
        return None

    def missing_decoder(self) -> str | None:
        """Why codes cannot be decoded to pixels (no VQ decoder loaded), or None; may mention the setting
        that would supply it as ``{name}``."""
        return None

    def grid_for(self, height: int | None = None, width: int | None = None, **size_options) -> tuple[int, int]:
        raise NotImplementedError

    def _no_size_options(self, size_options: dict) -> None:
        """A family whose size is its pixels only refuses other size options by name."""
        if size_options:
            name = sorted(size_options)[0]
            raise SettingError(name, f"{self.family} takes its size as {{other:height}} and {{other:width}}; leave "
                                     "{name} unset")

    def encode(self, request: Request, guidance_scale: float = 1.0) -> Conditioning:
        """Embed a checked request; guidance rows ([cond; uncond]) when guidance_scale != 1."""
        raise NotImplementedError

    # -- parts of check ----------------------------------------------------------------------------
    def _check_labels(self, prompts, class_labels, negative_prompts) -> list[int]:
        top = f"0..{self.num_classes - 1}" if self.num_classes else "0 and up"
        if prompts is not None:
            raise SettingError("prompt", f"this {self.family} model is class-conditional: pass {{other:class_labels}} "
                                         f"({top}), not {{name}}")
        if negative_prompts is not None:
            raise SettingError("negative_prompt", "{name} needs a text-to-image model; this one is class-conditional")
        if class_labels is None:
            raise SettingError("class_labels", f"this model is class-conditional: pass {{name}} (an int or a list of "
                                               f"ints, {top})")
        labels = as_label_list(class_labels)
        bad = [c for c in labels if self.num_classes is not None and not 0 <= c < self.num_classes]
        if bad:
            raise SettingError("class_labels", f"class label(s) {bad} out of range: this model has classes {top}")
        return labels

    def _check_prompts(self, prompts, class_labels) -> list[str]:
        if class_labels is not None:
            raise SettingError("class_labels", f"this {self.family} model is text-to-image: pass {{other:prompt}}, "
                                               "not {name}")
        if prompts is None:
            raise SettingError("prompt", "this model is text-to-image: pass {name} (a string or a list of strings)")
        prompts = as_prompt_list(prompts, "prompt")
        missing = self.missing_text_encoder()
        if missing:
            raise SettingError("prompt", missing)
        return prompts

    def _check_negatives(self, negative_prompts, n: int) -> list[str] | None:
        if negative_prompts is None:
            return None
        negs = as_prompt_list(negative_prompts, "negative_prompt")
        if not self.takes_negative_prompt:
            raise SettingError("negative_prompt", f"{self.family} has no negative prompt (its unconditional "
                                                  "branch is fixed); leave {name} unset")
        if len(negs) == 1:
            return negs * n
        if len(negs) != n:
            raise SettingError("negative_prompt", f"got {len(negs)} negative prompts for {n} prompts: give one, or "
                                                  "one per prompt")
        return negs


def as_prompt_list(prompt: str | Sequence[str], name: str = "prompt") -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    prompts = list(prompt) if isinstance(prompt, Sequence) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise SettingError(name, f"{{name}} must be a string or a non-empty list of strings, got {prompt!r}")
    return prompts


def as_label_list(class_labels) -> list[int]:
    if isinstance(class_labels, torch.Tensor):
        class_labels = class_labels.reshape(-1).tolist()
    labels = [class_labels] if isinstance(class_labels, int) else list(class_labels) \
        if isinstance(class_labels, Sequence) else None
    if not labels or not all(isinstance(c, int) and not isinstance(c, bool) for c in labels):
        raise SettingError("class_labels", f"{{name}} must be an int or a non-empty list of ints, got {class_labels!r}")
    return labels
