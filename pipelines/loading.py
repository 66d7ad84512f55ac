"""How a :class:`ZipARPipeline` is made: from a saved pipeline folder (diffusers format), from a model as
its authors publish it (any family ``zipar_core.models.load_model`` detects), from LlamaGen's release
files, or around a loaded adapter. The family-specific parts are the adapters' ``components()`` /
``from_components()``; nothing here names a family.
"""
from __future__ import annotations

import inspect
import json
import os

import torch

from ..zipar_core.loading import LoadOptions
from ..zipar_core.model_files import is_hub_id
from ..zipar_core.models import keep_unquantized, registry
from .components import wrap
from .hub import check_hub_id, hub_errors

# the constructor arguments that are components; every other one is a ZipAR setting kept in the config
COMPONENTS = ("transformer", "vqvae", "text_encoder", "tokenizer")


class PipelineLoadingMixin:
    """Loading methods of :class:`ZipARPipeline`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """``"demo"`` (the embedded demo model), a ZipAR pipeline folder (``model_index.json``, written by
        ``save_pretrained``), or a model folder / hub id of Janus-Pro, Emu3-Gen or Lumina-mGPT (``config.json``; transformers' layout or the original
        publisher's, README "Model folders you can download"), or a folder of
        LlamaGen's release files (see :meth:`from_original`). LlamaGen's checkpoint files by name load with
        :meth:`from_llamagen_checkpoints`.

        kwargs: diffusers' loading options (``dtype``, ...) and ZipAR settings (``mode``, ``window``, ...);
        for an original folder also ``device``, ``attn_implementation`` and, for Lumina-mGPT, ``vqgan`` (the
        Chameleon ``vqgan.ckpt`` file or folder; Lumina-mGPT 2.0: ``movqgan_270M.ckpt`` or its folder) and
        ``target_size``. ``quantization`` (or ``quantization_config``): the transformer's linear layers in
        ``"nf4"``, ``"fp4"`` or ``"int8"`` through bitsandbytes, or transformers' ``BitsAndBytesConfig`` /
        diffusers' ``PipelineQuantizationConfig`` (its transformer entry); the image head, embeddings, norms and
        the VQ decoder stay in the compute dtype, and ``save_pretrained`` writes the pipeline quantized (it loads
        back as saved). Before any weight loads, the memory plan (``zipar_core.memory_plan``) is checked against
        the free memory of the device it loads onto: too large is a ValueError with the plan and what would fit."""
        path = registry.builtin_path(pretrained_model_name_or_path) or os.fspath(pretrained_model_name_or_path)
        if os.path.isfile(path):
            raise ValueError(f"{path} is a file. LlamaGen checkpoint files load with "
                             "ZipARPipeline.from_llamagen_checkpoints(gpt_path, vq_path, t5_path=None); "
                             "from_pretrained takes a folder or a hub id")
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "model_index.json")):
                check_pipeline_folder(path)
                return cls._from_pipeline_folder(path, **kwargs)
            return cls.from_original(path, **kwargs)  # transformers config.json, or LlamaGen checkpoint files
        if not is_hub_id(path):
            raise FileNotFoundError(f"no model at {path}: there is no such file or folder (a hub id would read "
                                    "owner/name)")
        with hub_errors(path):
            if _hub_has_model_index(path, kwargs):
                return cls._from_pipeline_folder(path, **kwargs)
            return cls.from_original(path, **kwargs)

    @classmethod
    def _from_pipeline_folder(cls, path: str, **kwargs):
        """A saved pipeline through diffusers, quantized when asked: transformers' models through diffusers' own
        ``PipelineQuantizationConfig`` (the family's unquantized modules kept), LlamaGen's GPT in place once loaded,
        on the CPU, before it moves anywhere."""
        from ..zipar_core.quantization import parse

        asked = {k: kwargs.pop(k) for k in ("quantization", "quantization_config") if k in kwargs}
        q = next((parse(v, k) for k, v in asked.items() if v is not None), None)
        options = LoadOptions(dtype=kwargs.get("dtype", kwargs.get("torch_dtype")), quantization=q)
        if os.path.isdir(path):
            _check_memory(path, options, "cpu", f"loading {os.path.basename(os.path.normpath(path))}")
        if q is None:
            return super().from_pretrained(path, **kwargs)
        from ..zipar_core.quantization import check_available

        check_available(device="cpu")
        family = _pipeline_family(path, kwargs)
        keep = keep_unquantized(family, q)
        dtype = options.torch_dtype(None)
        if family != "llamagen":
            from diffusers import PipelineQuantizationConfig

            config = PipelineQuantizationConfig(quant_mapping={"transformer": q.bnb_config(keep, dtype)})
            return super().from_pretrained(path, quantization_config=config, **kwargs)
        pipe = super().from_pretrained(path, **kwargs)
        from ..zipar_core.quantization import quantize_linears

        gpt = pipe.transformer.model
        quantize_linears(gpt, q, keep, "cpu", gpt.tok_embeddings.weight.dtype)
        pipe.transformer.register_to_config(quantization=q.record())
        return pipe

    @classmethod
    def from_original(cls, path_or_id: str, options: LoadOptions | None = None, **kwargs):
        """A model as its authors publish it: a folder or hub id of Janus-Pro, Emu3-Gen or Lumina-mGPT (in their
        publishers' layout or transformers'), or a folder holding LlamaGen's GPT and VQ checkpoints (and a
        FLAN-T5 folder for t2i); the family is detected by ``zipar_core.models.load_model``, which takes the
        :class:`~zipar.zipar_core.loading.LoadOptions` (``options``, or as keywords: ``dtype`` / ``torch_dtype``,
        ``device``, ``attn_implementation``, hub options) and the family's own parts (``vqgan``, ``target_size``,
        ``vision_tokenizer``, LlamaGen's ``image_size`` / ``n_head``). Keywords that are ZipAR settings (``mode``,
        ``window``, ...) go to the pipeline's config."""
        from ..zipar_core.models import load_model

        names = setting_names(cls)
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        options, parts = LoadOptions.split(options, **{k: v for k, v in kwargs.items() if v is not None})
        _check_memory(path_or_id, options, options.torch_device(), f"loading {os.path.basename(path_or_id)}", **parts)
        adapter = load_model(path_or_id, options, **parts)
        return cls.from_adapter(adapter, **settings)

    @classmethod
    def from_llamagen_checkpoints(cls, gpt_path, vq_path, t5_path=None, *, image_size: int | None = None,
                                  preset: str | None = None, n_head: int | None = None,
                                  torch_dtype: torch.dtype | None = None, dtype: torch.dtype | None = None,
                                  device=None, **settings):
        """LlamaGen's original release files: the GPT (``c2i_L_384.pt``, ``t2i_XL_stage2_512.pt``, or
        ``.safetensors``), the VQ-16 tokenizer (``vq_ds16_c2i.pt``), and for text-to-image the FLAN-T5-XL folder.
        ``image_size`` is read from the GPT file name unless given; ``preset`` / ``n_head`` name the architecture of
        a file whose shape matches no LlamaGen preset. ``dtype`` (alias ``torch_dtype``) is the GPT's dtype
        (default float32); the VQ decoder stays float32."""
        from ..zipar_core.models.llamagen import load_llamagen

        for what, p in (("GPT checkpoint", gpt_path), ("VQ checkpoint", vq_path)):
            if not os.path.isfile(os.fspath(p)):
                raise FileNotFoundError(f"LlamaGen {what} not found: {p}")
        if t5_path is not None and not os.path.isdir(os.fspath(t5_path)):
            raise FileNotFoundError(f"FLAN-T5 folder not found: {t5_path} (a transformers folder of "
                                    "google/flan-t5-xl, needed by text-to-image LlamaGen)")
        quantization = settings.pop("quantization", settings.pop("quantization_config", None))
        unknown = sorted(set(settings) - setting_names(cls))
        if unknown:
            raise TypeError(f"unexpected argument(s) {unknown}; ZipAR settings are {sorted(setting_names(cls))}")
        overrides = {"n_head": n_head} if n_head is not None else {}
        dtype = dtype if dtype is not None else torch_dtype
        options = LoadOptions(dtype=dtype or torch.float32, device=device or "cpu", quantization=quantization)
        _check_memory(os.fspath(gpt_path), options, options.device, f"loading {os.path.basename(gpt_path)}",
                      vq_path=vq_path, t5_path=t5_path, image_size=image_size, preset=preset, **overrides)
        adapter = load_llamagen(gpt_path, vq_path, t5_path, preset=preset, image_size=image_size,
                                dtype=options.dtype, device=options.device, quantization=options.quantization,
                                **overrides)
        return cls.from_adapter(adapter, **settings)

    @classmethod
    def from_adapter(cls, adapter, **settings):
        """A pipeline around the models of a ZipAR adapter (``zipar_core.models``), without copying weights."""
        modules, options = adapter.components()
        return cls(**{k: wrap(m) for k, m in modules.items() if m is not None}, model_options=options, **settings)

    def build_adapter(self):
        """The family's ZipAR adapter around this pipeline's components (cheap: no weights are copied)."""
        from .components import unwrap

        parts = {k: unwrap(getattr(self, k, None)) for k in COMPONENTS}
        return registry.adapter_class(self.config.family).from_components(
            **{k: v for k, v in parts.items() if v is not None}, **(self.config.get("model_options") or {}))


def setting_names(cls) -> set[str]:
    """The ZipAR settings a pipeline keeps in its config (its __init__ arguments that are not components, nor the
    adapter's options)."""
    return set(inspect.signature(cls.__init__).parameters) - {"self", *COMPONENTS, "model_options", "target_size"}


def _hub_has_model_index(repo_id: str, kwargs: dict) -> bool:
    """Whether a hub repo is a diffusers-format ZipAR pipeline (else it is an original transformers model)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    check_hub_id(repo_id)  # no network and not cached: fail now rather than after a minute of retries
    try:
        hf_hub_download(repo_id, "model_index.json", revision=kwargs.get("revision"),
                        cache_dir=kwargs.get("cache_dir"), token=kwargs.get("token"),
                        local_files_only=bool(kwargs.get("local_files_only")))
        return True
    except LocalEntryNotFoundError:  # offline and not cached: maybe cached as an original model; let it try
        return False
    except EntryNotFoundError:
        return False


def check_pipeline_folder(path: str) -> None:
    """Refuse a saved pipeline whose model_index.json names a family or a component that is not there, before
    diffusers starts loading anything."""
    with open(os.path.join(path, "model_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    family = index.get("family")
    if family is not None:
        registry.get(family)  # unknown model family -> a clear error
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


OFFLOAD = 'load it with device="cpu" and call pipe.enable_model_cpu_offload()'


def _check_memory(model: str, options: LoadOptions, device, what: str, **parts) -> None:
    """The memory plan of one image with the family's defaults, from the model's configuration (no weights read),
    refused when it exceeds the free memory of ``device``: a ValueError with the plan and the settings that fit."""
    from ..zipar_core.models.plan_builders import check_model

    loader = {k: v for k, v in parts.items() if k in ("vq_path", "t5_path", "image_size", "preset", "n_head")
              and v is not None}
    check_model(model, what, device=device, dtype=options.torch_dtype(None), quantization=options.quantization,
                hub=options.hub, offload=OFFLOAD if torch.device(device).type == "cuda" else None,
                batch_setting="num_images_per_prompt", **loader)


def _pipeline_family(path: str, kwargs: dict) -> str:
    """The family a saved pipeline's model_index.json names (local or on the hub)."""
    if os.path.isdir(path):
        index_path = os.path.join(path, "model_index.json")
    else:
        from huggingface_hub import hf_hub_download

        index_path = hf_hub_download(path, "model_index.json", revision=kwargs.get("revision"),
                                     cache_dir=kwargs.get("cache_dir"), token=kwargs.get("token"),
                                     local_files_only=bool(kwargs.get("local_files_only")))
    with open(index_path, encoding="utf-8") as f:
        return json.load(f).get("family") or "llamagen"
