"""How a model is loaded, said once for every loader: :class:`LoadOptions` (dtype, device, attention
implementation, quantization, where the hub files come from). ``load_model``, each family's ``from_pretrained``, the
original publishers' converters, ``ZipARPipeline.from_pretrained``, the command line and the ComfyUI loader take one
object;
what only one family has (LlamaGen's ``vq_path``, Lumina-mGPT's ``vqgan``, ...) stays a keyword of that family's
``from_pretrained``, so a misspelt option is an error there, and nothing but hub options reaches the hub. No torch
import.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

# keyword spellings the faces accept for LoadOptions fields (diffusers and transformers say torch_dtype / dtype, and
# quantization_config for a BitsAndBytesConfig / PipelineQuantizationConfig)
ALIASES = {"torch_dtype": "dtype", "quantization_config": "quantization"}


@dataclass(frozen=True)
class HubOptions:
    """Where a hub id's files come from (huggingface_hub's own names)."""

    revision: str | None = None
    cache_dir: str | None = None
    token: str | bool | None = None
    local_files_only: bool = False  # the cache only: no network (the command line sets it when the hub is down)

    def download(self) -> dict:
        """Keywords of ``hf_hub_download`` / ``snapshot_download``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, False)}


@dataclass(frozen=True)
class LoadOptions:
    """dtype: the weights' dtype (``None``: the checkpoint's; LlamaGen files: float32); device: where the model
    runs (``None``: CUDA when available, else the CPU); attn_implementation: ``"sdpa"`` or ``"eager"`` (the 4-D
    visibility masks ZipAR needs; flash-attention ignores them and is refused); quantization: the transformer's
    linear layers in ``"nf4"``, ``"fp4"`` or ``"int8"`` through bitsandbytes (also a ``BitsAndBytesConfig`` or a
    ``PipelineQuantizationConfig``; parsed here into a :class:`~.quantization.Quantization`, None: full
    precision); hub: :class:`HubOptions`."""

    dtype: Any = None
    device: Any = None
    attn_implementation: str = "sdpa"
    quantization: Any = None
    hub: HubOptions = field(default_factory=HubOptions)

    def __post_init__(self):
        from .quantization import parse

        object.__setattr__(self, "quantization", parse(self.quantization))

    @classmethod
    def split(cls, options: LoadOptions | None = None, **keywords) -> tuple[LoadOptions, dict]:
        """``options`` with the LoadOptions / HubOptions fields among ``keywords`` applied (``torch_dtype`` is
        ``dtype``; a None keyword changes nothing); returns it and the other keywords (a family's own parts)."""
        options = options or cls()
        own = {f.name for f in fields(cls)} - {"hub"}
        hub = {f.name for f in fields(HubOptions)}
        mine, hubs, rest = {}, {}, {}
        for key, value in keywords.items():
            name = ALIASES.get(key, key)
            if name in own or name in hub:
                if name == "quantization":  # said in the words the caller used (quantization / quantization_config)
                    from .quantization import parse

                    value = parse(value, key)
                if value is not None:
                    (mine if name in own else hubs)[name] = value
            else:
                rest[key] = value
        if hubs:
            mine["hub"] = replace(options.hub, **hubs)
        return replace(options, **mine), rest

    def torch_device(self):
        import torch

        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self, default=None):
        """The dtype as a torch.dtype ("bfloat16" and torch.bfloat16 alike), or ``default`` when unset."""
        import torch

        if self.dtype is None or self.dtype == "auto":
            return default
        return getattr(torch, self.dtype) if isinstance(self.dtype, str) else self.dtype
