"""ZipARPipeline: autoregressive image models decoded with ZipAR, in diffusers' conventions.

The pipeline holds the model's parts as registered diffusers components and its ZipAR settings in its
config; at call time it builds the family's adapter around those components (adapters hold no state) and
runs :func:`zipar.zipar_core.sampler.generate`. The sampler is the one place that knows ZipAR; the
family registry (``zipar_core.models.registry``) is the one place that knows the families and their
defaults; loading lives in ``loading.py``.

Components by family:

============  ==========================================  ============================  ======================
family        transformer                                 vqvae                         text_encoder/tokenizer
============  ==========================================  ============================  ======================
llamagen      ``LlamaGenGPTModel`` (c2i or t2i)            ``LlamaGenVQModel``           FLAN-T5 (t2i only)
janus         ``JanusForConditionalGeneration`` (with VQ)  --                            -- / tokenizer
emu3          ``Emu3ForConditionalGeneration`` (with VQ)   --                            -- / tokenizer
lumina        ``ChameleonForConditionalGeneration``        ``ChameleonVQGANModel``       -- / tokenizer
lumina2       ``ChameleonForConditionalGeneration``        ``MoVQGANModel``              -- / tokenizer
============  ==========================================  ============================  ======================
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import logging, replace_example_docstring

from ..zipar_core.config import ZipARConfig
from ..zipar_core.errors import SettingError
from ..zipar_core.models import registry
from ..zipar_core.modes import expected_passes
from ..zipar_core.protocol import Conditioning, Request, decode_known
from ..zipar_core.sampler import DecodingCancelled, generate

# diffusers resolves saved components by importing their classes from the module model_index.json names
from .components import ChameleonVQGANModel, LlamaGenGPTModel, LlamaGenVQModel, MoVQGANModel, unwrap  # noqa: F401
from .loading import PipelineLoadingMixin
from .pipeline_output import ZipARPipelineOutput
from .settings import OUTPUT_TYPES, SETTINGS, check_output, check_request, resolve_settings, settings_record  # noqa: F401

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from zipar import ZipARPipeline

        >>> # a transformers folder or hub id of Janus-Pro, Emu3-Gen or Lumina-mGPT, or a saved ZipAR pipeline
        >>> pipe = ZipARPipeline.from_pretrained("deepseek-community/Janus-Pro-7B", dtype=torch.bfloat16).to("cuda")
        >>> out = pipe("a red fox in the snow", mode="fixed", window=8,
        ...            generator=torch.Generator("cuda").manual_seed(0))
        >>> out.images[0].save("fox.png"); out.stats.passes
        >>> # LlamaGen from its original checkpoint files
        >>> pipe = ZipARPipeline.from_llamagen_checkpoints("c2i_L_384.pt", "vq_ds16_c2i.pt").to("cuda")
        >>> pipe(class_labels=[207, 360], num_images_per_prompt=2, mode="adaptive", window=12).images
        ```
"""


class ZipARPipeline(PipelineLoadingMixin, DiffusionPipeline):
    r"""
    Pipeline for autoregressive (VQ-token) image generation with ZipAR parallel decoding.

    ZipAR decodes several rows of the token grid in the same forward pass: a token is predicted once the
    `window` tokens above-right of it exist (paper eq. 1); `mode="adaptive"` chooses each row's start by
    speculative acceptance (eq. 2-3), and `mode="ntp"` is plain raster decoding.

    Args:
        transformer: the autoregressive model ([`LlamaGenGPTModel`], or transformers' `JanusForConditionalGeneration`,
            `Emu3ForConditionalGeneration`, `ChameleonForConditionalGeneration` for Lumina-mGPT).
        vqvae: the VQ decoder where it is not part of the transformer ([`LlamaGenVQModel`], [`ChameleonVQGANModel`],
            [`MoVQGANModel`] for Lumina-mGPT 2.0).
        text_encoder: FLAN-T5 encoder for text-to-image LlamaGen.
        tokenizer: the text tokenizer (T5's for LlamaGen t2i, the model's own for the others).
        family: a registry family ("llamagen", "janus", "emu3", "lumina", "lumina2"); None reads it off the transformer.
        mode, window, draft_length, draft_init, draft_coupling, draft_visibility, paper_first_row, guidance_scale,
            guidance_interval, temperature, top_k, top_p: default ZipAR settings of this pipeline (None: the family's registry defaults); every call can
            override them.
        model_options: what the family's adapter needs besides its components (its ``components()`` options, e.g.
            Lumina-mGPT's training size ``target_size``); kept in the config, so a saved pipeline has them.
    """

    model_cpu_offload_seq = "text_encoder->transformer->vqvae"
    _optional_components: ClassVar[list[str]] = ["vqvae", "text_encoder", "tokenizer"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["codes"]

    def __init__(self, transformer, vqvae=None, text_encoder=None, tokenizer=None, family: str | None = None,
                 mode: str | None = None, window: int | None = None, draft_length: int | None = None,
                 draft_init: str | None = None, draft_coupling: str | None = None,
                 draft_visibility: str | None = None, paper_first_row: bool = False,
                 guidance_scale: float | None = None, guidance_interval: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 model_options: dict | None = None, target_size: int | None = None):
        super().__init__()
        found = registry.family_of_module(unwrap(transformer)).name
        if family is not None and family != found:
            raise SettingError("family", f"{{name}}={family!r} but the transformer component is a {found} model")
        if target_size is not None:  # pipelines saved before model_options kept Lumina-mGPT's size on its own
            model_options = {**(model_options or {}), "target_size": target_size}
        self.register_modules(transformer=transformer, vqvae=vqvae, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(family=found, mode=mode, window=window, draft_length=draft_length,
                                draft_init=draft_init, draft_coupling=draft_coupling,
                                draft_visibility=draft_visibility, paper_first_row=paper_first_row,
                                guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                temperature=temperature, top_k=top_k, top_p=top_p,
                                model_options=dict(model_options or {}))
        self.image_processor = VaeImageProcessor(do_normalize=True)
        self._interrupt = False

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def enable_sequential_cpu_offload(self, *args, **kwargs):
        raise NotImplementedError("sequential CPU offload moves weights per leaf module inside forward, but ZipAR's "
                                  "adapters read embeddings and codebooks directly; use enable_model_cpu_offload()")

    # ------------------------------------------------------------------------------------------------
    # Pieces of __call__

    def check_inputs(self, adapter, prompt, class_labels, negative_prompt, height, width, num_images_per_prompt,
                     output_type, generator, callback_on_step_end_tensor_inputs, conditioning) -> Request | None:
        """Every argument checked before any model work; returns the checked request (None when a precomputed
        ``conditioning`` is given). Prompts, labels, negatives and sizes are checked by the adapter
        (``settings.check_request``, which the command line also runs before the weights load)."""
        bad = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if bad:
            raise SettingError("callback_on_step_end_tensor_inputs",
                               f"{{name}} {bad} are not among {self._callback_tensor_inputs}")
        if conditioning is not None:
            if prompt is not None or class_labels is not None or negative_prompt is not None:
                raise SettingError("conditioning", "give either {name} or prompt / class_labels / negative_prompt")
            check_output(adapter, num_images_per_prompt, output_type)
            request, total = None, conditioning.batch_size
        else:
            request = check_request(adapter, prompt, class_labels, negative_prompt, height, width,
                                    num_images_per_prompt, output_type)
            total = request.batch_size
        if isinstance(generator, (list, tuple)) and len(generator) != total:
            raise SettingError("generator", f"got {len(generator)} generators for {total} images; pass one per image "
                                            "or a single one")
        device = torch.device(self._execution_device)
        for g in generator if isinstance(generator, (list, tuple)) else [generator]:
            if g is not None and torch.device(g.device).type != device.type:
                raise SettingError("generator", f"the generator is on {g.device} but the model runs on {device}: "
                                                f"make it with torch.Generator('{device.type}')")
        return request

    def resolve_settings(self, adapter, cols: int, **call) -> ZipARConfig:
        """Per-call value, else the pipeline config's, else the family's registry default."""
        return resolve_settings(adapter, cols, {k: self.config.get(k) for k in SETTINGS}, **call)

    def check_call(self, prompt=None, class_labels=None, negative_prompt=None, height: int | None = None,
                   width: int | None = None, num_images_per_prompt: int = 1, output_type: str = "pil",
                   **settings) -> dict:
        """What a call with these arguments would decode, checked as ``__call__`` checks it, without model
        work: the settings record ``out.settings`` will hold (every resolved decoding setting, family, grid,
        size). ``settings``: ``mode``, ``window``, ... as ``__call__`` takes them."""
        adapter = self.build_adapter()
        request = check_request(adapter, prompt, class_labels, negative_prompt, height, width, num_images_per_prompt,
                                output_type)
        config = self.resolve_settings(adapter, request.cols, **settings)
        return settings_record(adapter, config, request.rows, request.cols)

    def decode_codes(self, codes: torch.Tensor, output_type: str = "pil", adapter=None):
        """VQ code grids (batch, rows, cols) -> images in ``output_type`` ("pil", "np", "pt"): what ``__call__``
        does last. Codes of -1 (tokens an interrupted call did not decode) become mid-grey pixels. Convolution kernels may round a pixel differently in another batch (by 1/255 at most here),
        so code that needs an image independent of its batch decodes it alone."""
        adapter = adapter or self.build_adapter()
        self._onload("vqvae" if self.vqvae is not None else "transformer")
        return self.image_processor.postprocess(decode_known(adapter, codes), output_type=output_type)

    def encode_prompt(self, prompt=None, class_labels=None, negative_prompt=None, num_images_per_prompt: int = 1,
                      height: int | None = None, width: int | None = None, guidance_scale: float | None = None):
        """The conditioning of a batch (what ``__call__(conditioning=...)`` takes): prompts or class labels,
        each ``num_images_per_prompt`` times, with guidance rows when the resolved guidance scale is not 1."""
        adapter = self.build_adapter()
        request = adapter.check(prompt=prompt, class_labels=class_labels, negative_prompt=negative_prompt,
                                height=height, width=width).repeat(num_images_per_prompt)
        scale = self.resolve_settings(adapter, request.cols, guidance_scale=guidance_scale).guidance_scale
        return self._encode(adapter, request, scale)

    def _encode(self, adapter, request: Request, guidance_scale: float) -> Conditioning:
        # prepare() embeds on the transformer's device; a text encoder's own offload hook fires on its forward,
        # and onloading the transformer again afterwards sends the text encoder back to the CPU for decoding.
        self._onload("transformer")
        cond = adapter.encode(request, guidance_scale)
        if self.text_encoder is not None:
            self._onload("transformer")
        return cond

    def _onload(self, name: str) -> None:
        """Model CPU offload hooks fire on ``forward``; the adapters call inner modules, so move a component to
        the execution device explicitly (this also offloads the previous component of the offload sequence)."""
        module = getattr(self, name, None)
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and type(hook).__name__ == "CpuOffload":
            hook.pre_forward(module)

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
        window: int | None = None,
        draft_length: int | None = None,
        draft_init: str | None = None,
        draft_coupling: str | None = None,
        draft_visibility: str | None = None,
        paper_first_row: bool | None = None,
        guidance_interval: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        conditioning: Conditioning | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, int, dict], dict] | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["codes"],  # noqa: B006  (diffusers' signature)
        compile: bool = False,
        cuda_graphs: bool = False,
        **kwargs,
    ):
        r"""
        Generate images.

        Args:
            prompt (`str` or `list[str]`): the prompt(s), for text-to-image models.
            class_labels (`int` or `list[int]`): class ids, for class-conditional models (LlamaGen c2i, the demo).
            negative_prompt (`str` or `list[str]`, *optional*): the unconditional branch's prompt, where the family
                has one (Janus-Pro, Emu3-Gen, Lumina-mGPT, LlamaGen t2i).
            height (`int`, *optional*), width (`int`, *optional*): image size in pixels, where the family can change
                it; None is the model's trained size. Unsupported sizes raise an error that names the ones it can make.
            num_images_per_prompt (`int`, defaults to 1): images per prompt or class label.
            guidance_scale (`float`, *optional*): classifier-free guidance; 1.0 runs no unconditional branch.
            temperature, top_k, top_p: sampling filters (temperature 0 is greedy; top_k 0 / top_p 1.0 are off).
            mode (`str`, *optional*): "ntp" (raster order, one token per pass), "fixed" (ZipAR with a fixed window),
                "adaptive" (ZipAR with speculative row starts; `window` is then the minimum window), "sjd"
                (speculative Jacobi decoding in raster order) or "zipar_sjd" (fixed-window rows, each carrying its own
                Jacobi drafts).
            window (`int`, *optional*): ZipAR's window s (paper eq. 1): a token is decoded once the `s` tokens
                above-right of it exist. Equal to the grid width it is plain raster decoding. (`window_size` is the
                deprecated old name.)
            draft_length (`int`, *optional*): sjd / zipar_sjd: draft tokens each chain carries, verified in one pass.
            draft_init (`str`, *optional*): sjd / zipar_sjd: new drafts start "random" (as SJD) or "spatial" (the
                token above).
            draft_coupling (`str`, *optional*): sjd / zipar_sjd: a draft left unverified is drawn again "none"
                (independently, as SJD), "maximal" (kept whenever the distributions allow) or "gumbel" (the same noise
                per position); every choice keeps the sampling distribution.
            draft_visibility (`str`, *optional*): zipar_sjd: a query sees its own chain's drafts ("chain") or also
                the row above's within eq. 1 ("rows"), the pass then verified row by row from the top.
            paper_first_row (`bool`, *optional*): decode row 0 completely first, as the authors' code does (the
                paper's step counts).
            guidance_interval (`int`, *optional*): guide only the first this many image tokens.
            generator (`torch.Generator` or a list, one per image): makes sampling deterministic; with one per image
                each image gets the tokens it would get alone.
            conditioning (`Conditioning`, *optional*): a precomputed batch from [`~ZipARPipeline.encode_prompt`]
                (like diffusers' `prompt_embeds`), instead of `prompt` / `class_labels`.
            output_type (`str`, defaults to "pil"): "pil", "np" (float [0, 1], NHWC), "pt" (float [0, 1], NCHW), or
                "codes" (alias "latent") for the raw VQ code grids, without decoding.
            return_dict (`bool`, defaults to True): return a [`ZipARPipelineOutput`] instead of a tuple
                `(images, codes, stats, settings)`.
            callback_on_step_end (`Callable`, *optional*): called after every forward pass as
                `callback_on_step_end(pipe, step, step, callback_kwargs)`; `callback_kwargs["codes"]` is the live
                `(batch, rows, cols)` code buffer, -1 where not decoded yet (copy it to keep it). A `codes` tensor
                in the returned dict replaces the buffer; it may change only the tokens sampled in that pass (the
                model has read the others already). Set `pipe._interrupt = True` inside it to stop after the pass
                that is running: the call returns what was decoded, as diffusers pipelines do (`stats.stopped` is
                True, `codes` hold -1 and the images mid grey where no token was decoded yet).
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed to the callback (only "codes").
            compile (`bool`, defaults to False): run the decoding steps at static shapes through `torch.compile`.
            cuda_graphs (`bool`, defaults to False): on CUDA, capture one CUDA graph per number of rows in flight
                and replay it, removing kernel-launch overhead (small models, batch 1). Ignored on CPU.

        Examples:

        Returns:
            [`ZipARPipelineOutput`] with `images`, `codes`, `stats` (forward passes, tokens per pass, acceptance) and
            `settings`, or the tuple `(images, codes, stats, settings)`.
        """
        if "window_size" in kwargs:
            warnings.warn("`window_size` is deprecated and will be removed in zipar 0.3: use `window`, the name it "
                          "has everywhere in ZipAR", FutureWarning, stacklevel=2)
            window = kwargs.pop("window_size") if window is None else window
        if kwargs:
            raise TypeError(f"unexpected argument(s) {sorted(kwargs)}")
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check inputs and resolve the settings (call > pipeline config > family default), before any model work
        adapter = self.build_adapter()
        request = self.check_inputs(adapter, prompt, class_labels, negative_prompt, height, width,
                                    num_images_per_prompt, output_type, generator, callback_on_step_end_tensor_inputs,
                                    conditioning)
        cols = request.cols if request is not None else conditioning.layout.cols
        config = self.resolve_settings(adapter, cols, mode=mode, window=window, draft_length=draft_length,
                                       draft_init=draft_init, draft_coupling=draft_coupling,
                                       draft_visibility=draft_visibility, paper_first_row=paper_first_row,
                                       guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                       temperature=temperature, top_k=top_k, top_p=top_p)
        self._interrupt = False

        # 2. Encode the conditions: each prompt / class num_images_per_prompt times, in order
        cond = conditioning if conditioning is not None else self._encode(adapter, request, config.guidance_scale)
        generator = list(generator) if isinstance(generator, tuple) else generator

        # 3. Decode the token grids, one progress step per forward pass
        # adaptive pass counts depend on the samples: the total starts at the all-drafts-accepted count
        with self.progress_bar(total=expected_passes(cond.layout, config)) as bar:
            def on_pass(step: int, codes: torch.Tensor, stats):
                if step + 1 > bar.total:  # a rejected draft cost a pass: grow the bar instead of overflowing
                    bar.total = step + 1
                bar.update(1)
                if callback_on_step_end is not None:
                    kwargs = {k: codes for k in callback_on_step_end_tensor_inputs}
                    outputs = callback_on_step_end(self, step, step, kwargs) or {}
                    return outputs.get("codes")
                return None

            try:
                result = generate(adapter, cond, config, generator=generator, callback=on_pass,
                                  cancel=lambda: self._interrupt, compile=compile, cuda_graphs=cuda_graphs)
            except DecodingCancelled as stop:  # `pipe._interrupt = True`: return what was decoded, as diffusers does
                result = stop.result
                logger.info(f"interrupted after {result.stats.passes} forward passes: returning the partial images")

        # 4. Decode the codes to pixels (tokens not decoded yet, when interrupted, mid grey)
        images = result.codes if output_type in ("codes", "latent") else \
            self.decode_codes(result.codes, output_type, adapter=adapter)
        self.maybe_free_model_hooks()

        settings = settings_record(adapter, config, cond.layout.rows, cond.layout.cols)
        if not return_dict:
            return images, result.codes, result.stats, settings
        return ZipARPipelineOutput(images=images, codes=result.codes, stats=result.stats, settings=settings)
