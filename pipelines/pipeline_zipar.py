"""ZipARPipeline: autoregressive image models decoded with ZipAR, in diffusers' conventions.

The pipeline holds the model's parts as registered diffusers components and its ZipAR settings in its
config; at call time it builds the family's adapter around those components (adapters hold no state) and
runs :func:`zipar.zipar_core.sampler.generate`. The sampler is the one place that knows ZipAR.

Components by family:

============  ==========================================  ============================  ======================
family        transformer                                 vqvae                         text_encoder/tokenizer
============  ==========================================  ============================  ======================
llamagen      ``LlamaGenGPTModel`` (c2i or t2i)            ``LlamaGenVQModel``           FLAN-T5 (t2i only)
janus         ``JanusForConditionalGeneration`` (with VQ)  --                            -- / tokenizer
emu3          ``Emu3ForConditionalGeneration`` (with VQ)   --                            -- / tokenizer
lumina        ``ChameleonForConditionalGeneration``        ``ChameleonVQGANModel``       -- / tokenizer
============  ==========================================  ============================  ======================
"""
from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import logging, replace_example_docstring

from ..zipar_core.config import MODES, ZipARConfig
from ..zipar_core.sampler import generate
from ..zipar_core.schedule import expected_passes

# diffusers resolves saved components by importing their classes from the module model_index.json names
from .components import ChameleonVQGANModel, LlamaGenGPTModel, LlamaGenVQModel
from .pipeline_output import ZipARPipelineOutput

logger = logging.get_logger(__name__)

FAMILIES = ("llamagen", "janus", "emu3", "lumina")
# transformers config.json model_type -> family (Lumina-mGPT ships as a Chameleon checkpoint)
HF_MODEL_TYPES = {"janus": "janus", "emu3": "emu3", "chameleon": "lumina"}
OUTPUT_TYPES = ("pil", "np", "pt", "codes", "latent")

# ZipAR window (paper eq. 1) per family when none is given; clipped to the grid width. LlamaGen's paper tables
# use 16/12/8 on 24x24 grids; Emu3's "91% fewer steps" on 90x90 is a window of about 7. The sampling defaults
# (guidance, top-k, temperature) come from each adapter's ``DEFAULTS``: the models' own papers and scripts.
DEFAULT_WINDOWS = {"llamagen": 16, "janus": 16, "emu3": 8, "lumina": 16}
SAMPLING_DEFAULTS = {"guidance_scale": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from zipar import ZipARPipeline

        >>> # a transformers folder or hub id of Janus-Pro, Emu3-Gen or Lumina-mGPT, or a saved ZipAR pipeline
        >>> pipe = ZipARPipeline.from_pretrained("deepseek-community/Janus-Pro-7B", dtype=torch.bfloat16).to("cuda")
        >>> out = pipe("a red fox in the snow", mode="fixed", window_size=8,
        ...            generator=torch.Generator("cuda").manual_seed(0))
        >>> out.images[0].save("fox.png"); out.stats.passes
        >>> # LlamaGen from its original checkpoint files
        >>> pipe = ZipARPipeline.from_llamagen_checkpoints("c2i_L_384.pt", "vq_ds16_c2i.pt").to("cuda")
        >>> pipe(class_labels=[207, 360], num_images_per_prompt=2, mode="adaptive", window_size=12).images
        ```
"""


def family_of(transformer) -> str:
    """The ZipAR family of a transformer component; ValueError for anything else."""
    if isinstance(transformer, LlamaGenGPTModel):
        return "llamagen"
    model_type = getattr(getattr(transformer, "config", None), "model_type", None)
    if model_type in HF_MODEL_TYPES:
        return HF_MODEL_TYPES[model_type]
    raise ValueError(f"unknown model family: the transformer component is a {type(transformer).__name__} "
                     f"(model_type {model_type!r}); ZipARPipeline supports LlamaGen (LlamaGenGPTModel), Janus-Pro, "
                     f"Emu3-Gen and Lumina-mGPT (transformers model types {', '.join(HF_MODEL_TYPES)})")


class ZipARPipeline(DiffusionPipeline):
    r"""
    Pipeline for autoregressive (VQ-token) image generation with ZipAR parallel decoding.

    ZipAR decodes several rows of the token grid in the same forward pass: a token is predicted once the
    `window_size` tokens above-right of it exist (paper eq. 1); `mode="adaptive"` chooses each row's start by
    speculative acceptance (eq. 2-3), and `mode="ntp"` is plain raster decoding.

    Args:
        transformer: the autoregressive model ([`LlamaGenGPTModel`], or transformers' `JanusForConditionalGeneration`,
            `Emu3ForConditionalGeneration`, `ChameleonForConditionalGeneration` for Lumina-mGPT).
        vqvae: the VQ decoder where it is not part of the transformer ([`LlamaGenVQModel`], [`ChameleonVQGANModel`]).
        text_encoder: FLAN-T5 encoder for text-to-image LlamaGen.
        tokenizer: the text tokenizer (T5's for LlamaGen t2i, the model's own for the others).
        family: "llamagen", "janus", "emu3" or "lumina"; None reads it off the transformer.
        mode, window, paper_first_row, guidance_scale, guidance_interval, temperature, top_k, top_p: default ZipAR
            settings of this pipeline (None: the family's defaults); every call can override them.
        target_size: Lumina-mGPT's training size (512 / 768 / 1024), which fixes the sizes it can make.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    _optional_components: ClassVar[list[str]] = ["vqvae", "text_encoder", "tokenizer"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["codes"]

    def __init__(self, transformer, vqvae=None, text_encoder=None, tokenizer=None, family: str | None = None,
                 mode: str = "fixed", window: int | None = None, paper_first_row: bool = False,
                 guidance_scale: float | None = None, guidance_interval: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 target_size: int | None = None):
        super().__init__()
        found = family_of(transformer)
        if family is not None and family != found:
            raise ValueError(f"family={family!r} but the transformer component is a {found} model")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.register_modules(transformer=transformer, vqvae=vqvae, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(family=found, mode=mode, window=window, paper_first_row=paper_first_row,
                                guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                temperature=temperature, top_k=top_k, top_p=top_p, target_size=target_size)
        self.image_processor = VaeImageProcessor(do_normalize=True)
        self._interrupt = False

    # ------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> ZipARPipeline:
        """A ZipAR pipeline folder (``model_index.json``, written by ``save_pretrained``), or an original
        transformers folder / hub id of Janus-Pro, Emu3-Gen or Lumina-mGPT (``config.json``), or a folder of
        LlamaGen's release files (see :meth:`from_original`). LlamaGen's checkpoint files by name load with
        :meth:`from_llamagen_checkpoints`.

        kwargs: diffusers' loading options (``dtype``, ...) and ZipAR settings (``mode``, ``window``, ...);
        for an original folder also ``device``, ``attn_implementation`` and, for Lumina-mGPT, ``vqgan`` (the
        Chameleon ``vqgan.ckpt`` file or folder) and ``target_size``."""
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isfile(path):
            raise ValueError(f"{path} is a file. LlamaGen checkpoint files load with "
                             "ZipARPipeline.from_llamagen_checkpoints(gpt_path, vq_path, t5_path=None); "
                             "from_pretrained takes a folder or a hub id")
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "model_index.json")):
                check_pipeline_folder(path)
                return super().from_pretrained(path, **kwargs)
            return cls.from_original(path, **kwargs)  # transformers config.json, or LlamaGen checkpoint files
        if _hub_has_model_index(path, kwargs):
            return super().from_pretrained(path, **kwargs)
        return cls.from_original(path, **kwargs)

    @classmethod
    def from_original(cls, path_or_id: str, *, torch_dtype=None, dtype=None, device=None,
                      attn_implementation: str | None = None, vqgan=None, target_size: int | None = None,
                      **settings) -> ZipARPipeline:
        """A model as its authors publish it: a transformers folder or hub id of Janus-Pro, Emu3-Gen or
        Lumina-mGPT, or a folder holding LlamaGen's GPT and VQ checkpoints (and a FLAN-T5 folder for t2i); the
        family is detected by ``zipar_core.models.load_model``. ``dtype`` (or diffusers' older name
        ``torch_dtype``) is the weights' dtype; None keeps the checkpoint's."""
        from ..zipar_core.models import load_model

        names = _setting_names()
        loader = {k: settings.pop(k) for k in list(settings) if k not in names}  # e.g. LlamaGen image_size, n_head
        extra = {k: v for k, v in (("attn_implementation", attn_implementation), ("vqgan", vqgan),
                                   ("target_size", target_size)) if v is not None}
        adapter = load_model(path_or_id, torch_dtype=dtype if dtype is not None else torch_dtype, device=device,
                             **extra, **loader)
        return cls.from_adapter(adapter, **settings)

    @classmethod
    def from_llamagen_checkpoints(cls, gpt_path, vq_path, t5_path=None, *, image_size: int | None = None,
                                  preset: str | None = None, n_head: int | None = None,
                                  torch_dtype: torch.dtype | None = None, dtype: torch.dtype | None = None,
                                  device=None, **settings) -> ZipARPipeline:
        """LlamaGen's original release files: the GPT (``c2i_L_384.pt``, ``t2i_XL_stage2_512.pt``, or
        ``.safetensors``), the VQ-16 tokenizer (``vq_ds16_c2i.pt``), and for text-to-image the FLAN-T5-XL folder.
        ``image_size`` is read from the GPT file name unless given; ``preset`` / ``n_head`` name the architecture of
        a file whose shape matches no LlamaGen preset. ``dtype`` (alias ``torch_dtype``) is the GPT's dtype
        (default float32); the VQ decoder stays float32."""
        torch_dtype = dtype if dtype is not None else torch_dtype
        from ..zipar_core.models.llamagen import load_llamagen

        for what, p in (("GPT checkpoint", gpt_path), ("VQ checkpoint", vq_path)):
            if not os.path.isfile(os.fspath(p)):
                raise FileNotFoundError(f"LlamaGen {what} not found: {p}")
        if t5_path is not None and not os.path.isdir(os.fspath(t5_path)):
            raise FileNotFoundError(f"FLAN-T5 folder not found: {t5_path} (a transformers folder of "
                                    "google/flan-t5-xl, needed by text-to-image LlamaGen)")
        _check_settings(settings)
        overrides = {"n_head": n_head} if n_head is not None else {}
        adapter = load_llamagen(gpt_path, vq_path, t5_path, preset=preset, image_size=image_size,
                                dtype=torch_dtype or torch.float32, device=device or "cpu", **overrides)
        return cls.from_adapter(adapter, **settings)

    @classmethod
    def from_adapter(cls, adapter, **settings) -> ZipARPipeline:
        """A pipeline around the models of a ZipAR adapter (``zipar_core.models``), without copying weights."""
        family = adapter.family
        if family == "llamagen":
            t5 = getattr(adapter, "t5", None)
            return cls(LlamaGenGPTModel.from_transformer(adapter.gpt),
                       LlamaGenVQModel.from_vq(adapter.vq) if adapter.vq is not None else None,
                       text_encoder=t5.model if t5 is not None else None,
                       tokenizer=t5.tokenizer if t5 is not None else None, **settings)
        if family == "lumina":
            vq = ChameleonVQGANModel.from_decoder(adapter.vqgan) if adapter.vqgan is not None else None
            return cls(adapter.model, vq, tokenizer=adapter.tokenizer,
                       **{"target_size": adapter.target_size, **settings})
        if family in ("janus", "emu3"):
            return cls(adapter.model, tokenizer=adapter.tokenizer, **settings)
        raise ValueError(f"unknown model family {family!r}; supported: {', '.join(FAMILIES)}")

    def enable_sequential_cpu_offload(self, *args, **kwargs):
        raise NotImplementedError("sequential CPU offload moves weights per leaf module inside forward, but ZipAR's "
                                  "adapters read embeddings and codebooks directly; use enable_model_cpu_offload()")

    # ------------------------------------------------------------------------------------------------
    # Pieces of __call__

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def family_defaults(self, adapter=None) -> dict:
        """Sampling defaults of this pipeline's model family (the models' own papers) and the default window."""
        adapter = adapter if adapter is not None else self.build_adapter()
        return {**SAMPLING_DEFAULTS, "mode": "fixed", "window": DEFAULT_WINDOWS[self.family],
                **getattr(adapter, "DEFAULTS", {})}

    def resolve_settings(self, adapter=None, **call) -> dict:
        """Per-call value, else the pipeline config's, else the family default."""
        defaults = self.family_defaults(adapter)
        out = {}
        for key in ("mode", "window", "paper_first_row", "guidance_scale", "guidance_interval", "temperature",
                    "top_k", "top_p"):
            value = call.get(key)
            if value is None:
                value = self.config.get(key)
            if value is None:
                value = defaults.get(key)
            out[key] = value
        return out

    def build_adapter(self):
        """The family's ZipAR adapter around this pipeline's components (cheap: no weights are copied)."""
        family = self.family
        if family == "llamagen":
            from ..zipar_core.models.llamagen import LlamaGenAdapter

            t5 = None
            if self.text_encoder is not None:
                t5 = _t5_encoder(self.text_encoder, self.tokenizer, self.transformer.config.cls_token_num)
            return LlamaGenAdapter(self.transformer.model, self.vqvae.model if self.vqvae is not None else None, t5=t5)
        if family == "janus":
            from ..zipar_core.models.janus import JanusAdapter

            return JanusAdapter(self.transformer, self.tokenizer)
        if family == "emu3":
            from ..zipar_core.models.emu3 import Emu3Adapter

            return Emu3Adapter(self.transformer, self.tokenizer)
        from ..zipar_core.models.lumina import LuminaAdapter

        return LuminaAdapter(self.transformer, self.tokenizer, self.vqvae.model if self.vqvae is not None else None,
                             target_size=self.config.target_size)

    def check_inputs(self, adapter, prompt, class_labels, negative_prompt, height, width, num_images_per_prompt,
                     output_type, generator, callback_on_step_end_tensor_inputs) -> tuple[list, int, int, int]:
        """Every argument checked before any model work. Returns (conditions, rows, cols, number of images)."""
        if prompt is not None and class_labels is not None:
            raise ValueError("give either `prompt` (text-to-image) or `class_labels` (class-conditional), not both")
        kind = _conditioning(adapter)
        if kind == "class":
            if prompt is not None:
                raise ValueError(f"this {self.family} model is class-conditional: pass `class_labels`, not `prompt`")
            if negative_prompt is not None:
                raise ValueError("`negative_prompt` needs a text-to-image model; this one is class-conditional")
            if class_labels is None:
                raise ValueError("this model is class-conditional: pass `class_labels` (an int or a list of ints)")
            labels = [class_labels] if isinstance(class_labels, int) else list(torch.as_tensor(class_labels).reshape(-1).tolist())
            if not labels or not all(isinstance(c, int) and not isinstance(c, bool) for c in labels):
                raise ValueError(f"`class_labels` must be an int or a non-empty list of ints, got {class_labels!r}")
            n = _num_classes(adapter)
            bad = [c for c in labels if not 0 <= c < n]
            if bad:
                raise ValueError(f"class label(s) {bad} out of range: this model has classes 0..{n - 1}")
            conditions = labels
        else:
            if class_labels is not None:
                raise ValueError(f"this {self.family} model is text-to-image: pass `prompt`, not `class_labels`")
            if prompt is None:
                raise ValueError("this model is text-to-image: pass `prompt` (a string or a list of strings)")
            conditions = [prompt] if isinstance(prompt, str) else list(prompt)
            if not conditions or not all(isinstance(p, str) for p in conditions):
                raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {type(prompt).__name__}")
            if negative_prompt is not None:
                negs = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
                if len(negs) not in (1, len(conditions)):
                    raise ValueError(f"got {len(negs)} negative prompts for {len(conditions)} prompts: give one, or "
                                     "one per prompt")
                if self.family == "llamagen":
                    raise ValueError("text-to-image LlamaGen has no negative prompt (its unconditional branch is a "
                                     "learned empty caption); leave `negative_prompt` unset")
            if self.family == "llamagen" and self.text_encoder is None:
                raise ValueError("this text-to-image LlamaGen pipeline has no FLAN-T5 text encoder; load it with "
                                 "from_llamagen_checkpoints(..., t5_path=<flan-t5-xl folder>)")
            if self.tokenizer is None:
                raise ValueError("this pipeline has no tokenizer; text prompts need one")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a whole number >= 1, got {num_images_per_prompt!r}")
        for name, side in (("height", height), ("width", width)):
            if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side <= 0):
                raise ValueError(f"`{name}` must be a positive number of pixels, got {side!r}")
        rows, cols = _grid_for(adapter, height, width)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"`callback_on_step_end_tensor_inputs` {bad} are not among {self._callback_tensor_inputs}")
        total = len(conditions) * num_images_per_prompt
        gens = generator if isinstance(generator, (list, tuple)) else [generator]
        if isinstance(generator, (list, tuple)) and len(generator) != total:
            raise ValueError(f"got {len(generator)} generators for {total} images ({len(conditions)} conditions x "
                             f"{num_images_per_prompt} per prompt); pass one per image or a single one")
        device = self._execution_device
        for g in gens:
            if g is not None and torch.device(g.device).type != torch.device(device).type:
                raise ValueError(f"the generator is on {g.device} but the model runs on {device}: make it with "
                                 f"torch.Generator('{torch.device(device).type}')")
        return conditions, rows, cols, total

    def _onload(self, name: str) -> None:
        """Model CPU offload hooks fire on ``forward``; the adapters call inner modules, so move a component to
        the execution device explicitly (this also offloads the previous component of the offload sequence)."""
        module = getattr(self, name, None)
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and type(hook).__name__ == "CpuOffload":
            hook.pre_forward(module)

    def postprocess(self, pixels: torch.Tensor, output_type: str):
        """(B, 3, H, W) in [-1, 1] -> the requested output type ([0, 1] for np/pt, PIL images for pil)."""
        return self.image_processor.postprocess(pixels.float(), output_type=output_type)

    # ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        mode: str | None = None,
        window_size: int | None = None,
        paper_first_row: bool | None = None,
        guidance_interval: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["codes"],  # noqa: B006  (diffusers' signature)
        compile: bool = False,
        cuda_graphs: bool = False,
    ):
        r"""
        Generate images.

        Args:
            prompt (`str` or `list[str]`): the prompt(s), for text-to-image models.
            class_labels (`int` or `list[int]`): ImageNet class ids, for class-conditional LlamaGen.
            negative_prompt (`str` or `list[str]`, *optional*): the unconditional branch's prompt, where the family
                has one (Janus-Pro, Emu3-Gen, Lumina-mGPT).
            height (`int`, *optional*), width (`int`, *optional*): image size in pixels, where the family can change
                it; None is the model's trained size. Unsupported sizes raise a `ValueError` that names the ones it
                can make.
            num_images_per_prompt (`int`, defaults to 1): images per prompt or class label.
            guidance_scale (`float`, *optional*): classifier-free guidance; 1.0 runs no unconditional branch.
            temperature, top_k, top_p: sampling filters (temperature 0 is greedy; top_k 0 / top_p 1.0 are off).
            mode (`str`, *optional*): "ntp" (raster order, one token per pass), "fixed" (ZipAR with a fixed window) or
                "adaptive" (ZipAR with speculative row starts; `window_size` is then the minimum window).
            window_size (`int`, *optional*): ZipAR's window s (paper eq. 1): a token is decoded once the `s` tokens
                above-right of it exist. Equal to the grid width it is plain raster decoding.
            paper_first_row (`bool`, *optional*): decode row 0 completely first, as the authors' code does (the
                paper's step counts).
            guidance_interval (`int`, *optional*): guide only the first this many image tokens.
            generator (`torch.Generator` or a list, one per image): makes sampling deterministic; with one per image
                each image gets the tokens it would get alone.
            output_type (`str`, defaults to "pil"): "pil", "np" (float [0, 1], NHWC), "pt" (float [0, 1], NCHW), or
                "codes" (alias "latent") for the raw VQ code grids, without decoding.
            return_dict (`bool`, defaults to True): return a [`ZipARPipelineOutput`] instead of a tuple
                `(images, codes, stats, settings)`.
            callback_on_step_end (`Callable`, *optional*): called after every forward pass as
                `callback_on_step_end(pipe, step, step, callback_kwargs)`; `callback_kwargs["codes"]` is the live
                `(batch, rows, cols)` code buffer, -1 where not decoded yet (copy it to keep it). Set
                `pipe._interrupt = True` inside it to stop (raises `DecodingCancelled`).
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed to the callback (only "codes").
            compile (`bool`, defaults to False): run the decoding steps at static shapes through `torch.compile`
                (the first call compiles; worth it for many images with one model).
            cuda_graphs (`bool`, defaults to False): on CUDA, capture one CUDA graph per number of rows in flight
                and replay it, removing kernel-launch overhead (small models, batch 1). Ignored on CPU.

        Examples:

        Returns:
            [`ZipARPipelineOutput`] with `images`, `codes`, `stats` (forward passes, tokens per pass, acceptance) and
            `settings`, or the tuple `(images, codes, stats, settings)`.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Settings and inputs, all checked before any model work
        adapter = self.build_adapter()
        settings = self.resolve_settings(adapter, mode=mode, window=window_size, paper_first_row=paper_first_row,
                                         guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                         temperature=temperature, top_k=top_k, top_p=top_p)
        conditions, rows, cols, _total = self.check_inputs(
            adapter, prompt, class_labels, negative_prompt, height, width, num_images_per_prompt, output_type,
            generator, callback_on_step_end_tensor_inputs)
        if window_size is None and settings["mode"] != "ntp":
            settings["window"] = min(settings["window"], cols)  # a default window never exceeds the grid
        config = ZipARConfig(**settings)
        config.window_for(cols)  # an explicit window wider than the grid is an error, with the fix in it
        self._interrupt = False

        # 2. Condition rows: each prompt / class num_images_per_prompt times, in order
        repeat = lambda xs: [x for x in xs for _ in range(num_images_per_prompt)]
        negatives = None
        if negative_prompt is not None:
            negs = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
            negatives = repeat(negs * len(conditions) if len(negs) == 1 else negs)
        # prepare() embeds on the transformer's device; a text encoder's own offload hook fires on its forward,
        # and onloading the transformer again afterwards sends the text encoder back to the CPU for decoding.
        self._onload("transformer")
        cond = _prepare(adapter, repeat(conditions), _conditioning(adapter), negatives, height, width,
                        config.guidance_scale)
        if self.text_encoder is not None:
            self._onload("transformer")
        if isinstance(generator, tuple):
            generator = list(generator)

        # 3. Decode the token grids, one progress step per forward pass
        # adaptive pass counts depend on the samples: the total starts at the all-drafts-accepted count
        with self.progress_bar(total=expected_passes(cond.layout, config)) as bar:
            def on_pass(step: int, codes: torch.Tensor, stats) -> None:
                if step + 1 > bar.total:  # a rejected draft cost a pass: grow the bar instead of overflowing
                    bar.total = step + 1
                bar.update(1)
                if callback_on_step_end is not None:
                    kwargs = {k: codes for k in callback_on_step_end_tensor_inputs}
                    callback_on_step_end(self, step, step, kwargs)

            result = generate(adapter, cond, config, generator=generator, callback=on_pass,
                              cancel=lambda: self._interrupt, compile=compile, cuda_graphs=cuda_graphs)

        # 4. Pixels
        if output_type in ("codes", "latent"):
            images = result.codes
        else:
            self._onload("vqvae" if self.vqvae is not None else "transformer")
            images = self.postprocess(adapter.decode(result.codes), output_type)
        self.maybe_free_model_hooks()

        record = {**config.to_dict(), "family": self.family, "height": cond.extras.get("height", rows * _factor(adapter)),
                  "width": cond.extras.get("width", cols * _factor(adapter)), "rows": rows, "cols": cols}
        if not return_dict:
            return images, result.codes, result.stats, record
        return ZipARPipelineOutput(images=images, codes=result.codes, stats=result.stats, settings=record)


# ----------------------------------------------------------------------------------------------------
# Helpers


def _t5_encoder(model, tokenizer, max_length: int):
    """LlamaGen's FLAN-T5 caption encoder around the pipeline's loaded encoder and tokenizer (its own
    constructor reads a folder)."""
    from ..zipar_core.models.llamagen.t5 import T5CaptionEncoder

    enc = T5CaptionEncoder.__new__(T5CaptionEncoder)
    enc.model, enc.tokenizer, enc.max_length, enc.clean = model.eval(), tokenizer, max_length, True
    return enc


def _setting_names() -> set[str]:
    """The ZipAR settings a pipeline keeps in its config (its __init__ arguments that are not components)."""
    return set(inspect.signature(ZipARPipeline.__init__).parameters) - {"self", "transformer", "vqvae",
                                                                        "text_encoder", "tokenizer"}


def _check_settings(settings: dict) -> None:
    unknown = sorted(set(settings) - _setting_names())
    if unknown:
        raise TypeError(f"unexpected argument(s) {unknown}; ZipAR settings are {sorted(_setting_names())}")


def _hub_has_model_index(repo_id: str, kwargs: dict) -> bool:
    """Whether a hub repo is a diffusers-format ZipAR pipeline (else it is an original transformers model)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(repo_id, "model_index.json", revision=kwargs.get("revision"),
                        cache_dir=kwargs.get("cache_dir"), token=kwargs.get("token"))
        return True
    except EntryNotFoundError:
        return False


def check_pipeline_folder(path: str) -> None:
    """Refuse a saved pipeline whose model_index.json names a family or a component that is not there, before
    diffusers starts loading anything."""
    with open(os.path.join(path, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    family = index.get("family")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"{path}/model_index.json names unknown model family {family!r}; ZipARPipeline supports "
                         f"{', '.join(FAMILIES)}")
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"component {name!r} ({entry[1]}) is listed in model_index.json but its folder "
                                    f"{folder} is missing")
        files = os.listdir(folder)
        if name == "tokenizer":
            if not any(f.startswith("tokenizer") or f.endswith((".model", "vocab.json")) for f in files):
                raise FileNotFoundError(f"component 'tokenizer' has no tokenizer files in {folder}")
            continue
        if "config.json" not in files:
            raise FileNotFoundError(f"component {name!r} ({entry[1]}) has no config.json in {folder}")
        if not any(f.endswith((".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")) for f in files):
            raise FileNotFoundError(f"component {name!r} ({entry[1]}) has no weight file (*.safetensors / *.bin) in "
                                    f"{folder}")


# -- the adapters' uniform front door (zipar_core.models.base.ZipARModel)

def _conditioning(adapter) -> str:
    return adapter.conditioning


def _num_classes(adapter) -> int:
    return adapter.num_classes


def _factor(adapter) -> int:
    return adapter.downsample


def _grid_for(adapter, height, width) -> tuple[int, int]:
    """(rows, cols) for a pixel size; the adapter's ValueError names what the model can make."""
    return adapter.grid_for(height, width)


def _prepare(adapter, conditions, kind, negatives, height, width, guidance_scale):
    key = "class_labels" if kind == "class" else "prompts"
    return adapter.prepare(**{key: conditions}, negative_prompts=negatives, height=height, width=width,
                           guidance_scale=guidance_scale)
