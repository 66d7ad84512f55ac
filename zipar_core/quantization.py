"""Quantized transformer weights through bitsandbytes (issue 22): the setting, what stays unquantized, the
quantizer, folders saved quantized, and what quantized weights take in memory.

- **The setting** (:func:`parse`): ``"nf4"``, ``"fp4"``, ``"int8"`` (``None`` / ``"none"``: full precision), or the
  ecosystem's own objects: transformers' (or diffusers') ``BitsAndBytesConfig`` and diffusers'
  ``PipelineQuantizationConfig``. Anything else is one :class:`~.errors.SettingError` naming the setting, so each
  face says it in its own words (``quantization``, ``--quantize``, the ComfyUI widget).
- **What stays in the compute dtype**: every family's adapter declares ``keep_unquantized``, module-name prefixes
  of its transformer (the image head the sampler reads, the image-token embedding path, the VQ model); only
  ``torch.nn.Linear`` layers are ever replaced, so embeddings and norms stay as they are too.
- **Quantizing**: transformers-backed families through transformers' own bitsandbytes integration
  (:meth:`Quantization.bnb_config`: ``from_pretrained(quantization_config=...)`` quantizes layer by layer as the
  tensors load, and ``save_pretrained`` writes a folder transformers reads back quantized); plain-torch models
  (LlamaGen's GPT) through :func:`quantize_linears`, which does the same by hand: each ``nn.Linear`` becomes a
  bitsandbytes layer that is quantized as it moves to the device, one layer at a time, so no full-precision copy
  of the model is ever on the device.
- **Size accounting** (:func:`linear_bytes`, :func:`resident_bytes`): the bytes bitsandbytes keeps for a
  quantized layer, from its shape (4-bit: two weights a byte, one absmax per 64 weights, itself 8-bit with double
  quantization; int8: one byte a weight and a float32 scale per output row), and what a built module holds.

Imports no torch at module level (``LoadOptions`` parses the setting).
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SettingError

METHODS = ("nf4", "fp4", "int8")
CHOICES = ("none", *METHODS)  # what the faces offer (the ComfyUI widget, --quantize)
BLOCKSIZE = 64  # bitsandbytes' 4-bit block: one absmax per 64 weights (Params4bit's default)
NESTED_BLOCKSIZE = 256  # double quantization: the absmax values quantized to 8 bits in blocks of 256
MIN_BITSANDBYTES = (0, 48)  # CPU kernels for NF4 / FP4 / int8, and int8 layers that move between devices
INSTALL = "pip install 'bitsandbytes>=0.48'"


@dataclass(frozen=True)
class Quantization:
    """How the transformer's linear layers are stored.

    method: ``nf4`` / ``fp4`` (4-bit, bitsandbytes ``Linear4bit``) or ``int8`` (LLM.int8(), ``Linear8bitLt``);
    double_quant: 4-bit only, quantize the block scales too (QLoRA's double quantization: 0.127 instead of 0.5
    bits of scale per weight); threshold: int8 only, the outlier threshold of LLM.int8() (transformers' default
    6.0; 0 = every column in int8); compute_dtype: what a 4-bit layer computes in (None: the model's dtype);
    skip: more module-name prefixes to keep unquantized (a ``BitsAndBytesConfig``'s ``llm_int8_skip_modules``)."""

    method: str
    double_quant: bool = True
    threshold: float = 6.0
    compute_dtype: str | None = None
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.method not in METHODS:
            raise SettingError("quantization", f"{{name}} must be one of {', '.join(CHOICES)}; got {self.method!r}")

    @property
    def bits(self) -> int:
        return 8 if self.method == "int8" else 4

    def __str__(self) -> str:
        return self.method

    def record(self) -> dict:
        """What a sample set's identity and a saved folder record (everything that changes the weights)."""
        return asdict(self) | {"skip": list(self.skip)}

    @classmethod
    def from_record(cls, record: dict) -> Quantization:
        return cls(**{**record, "skip": tuple(record.get("skip") or ())})

    def bnb_config(self, keep: tuple[str, ...], dtype=None):
        """transformers' ``BitsAndBytesConfig`` for this setting, with ``keep`` (the family's
        ``keep_unquantized``) and ``skip`` left in the compute dtype."""
        import torch
        from transformers import BitsAndBytesConfig

        compute = getattr(torch, self.compute_dtype) if self.compute_dtype else (dtype or torch.float32)
        skip = list(dict.fromkeys((*keep, *self.skip)))
        if self.method == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.threshold, llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.method, bnb_4bit_compute_dtype=compute,
                                  bnb_4bit_use_double_quant=self.double_quant, llm_int8_skip_modules=skip)


# -- the setting ------------------------------------------------------------------------------------

def parse(value: Any, name: str = "quantization") -> Quantization | None:
    """A quantization setting from what a face was given: None / "none" (full precision), "nf4" / "fp4" /
    "int8", a :class:`Quantization`, transformers' or diffusers' ``BitsAndBytesConfig``, or diffusers'
    ``PipelineQuantizationConfig`` (its ``transformer`` entry; ZipAR quantizes the transformer only)."""
    if value is None or isinstance(value, Quantization):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none"):
            return None
        if text not in METHODS:
            raise SettingError(name, f"{{name}} must be one of {', '.join(CHOICES)}; got {value!r}")
        return Quantization(text)
    if hasattr(value, "quant_mapping") or hasattr(value, "quant_backend"):
        return _from_pipeline_config(value, name)
    if hasattr(value, "load_in_4bit") or hasattr(value, "load_in_8bit"):
        return _from_bnb_config(value, name)
    raise SettingError(name, f"{{name}} must be one of {', '.join(CHOICES)}, a BitsAndBytesConfig or a "
                             f"PipelineQuantizationConfig; got a {type(value).__name__}")


def _from_bnb_config(cfg, name: str) -> Quantization:
    """transformers' / diffusers' ``BitsAndBytesConfig`` (the same fields)."""
    method = getattr(cfg, "quant_method", "bitsandbytes")
    method = str(getattr(method, "value", method))  # transformers' QuantizationMethod enum, or a string
    if "bitsandbytes" not in method.lower():
        raise SettingError(name, f"{{name}}: ZipAR quantizes through bitsandbytes; this config's method is {method!r}")
    if getattr(cfg, "llm_int8_has_fp16_weight", False):
        raise SettingError(name, "{name}: llm_int8_has_fp16_weight=True keeps 16-bit weights for training; leave it "
                                 "False to store int8 weights")
    skip = tuple(getattr(cfg, "llm_int8_skip_modules", None) or ())
    if getattr(cfg, "load_in_8bit", False):
        return Quantization("int8", threshold=float(getattr(cfg, "llm_int8_threshold", 6.0)), skip=skip)
    if getattr(cfg, "load_in_4bit", False):
        kind = getattr(cfg, "bnb_4bit_quant_type", "fp4")
        if kind not in ("nf4", "fp4"):
            raise SettingError(name, f"{{name}}: bnb_4bit_quant_type must be 'nf4' or 'fp4', got {kind!r}")
        dtype = getattr(cfg, "bnb_4bit_compute_dtype", None)  # transformers' config fills in float32
        return Quantization(kind, double_quant=bool(getattr(cfg, "bnb_4bit_use_double_quant", False)),
                            compute_dtype=None if dtype is None else str(dtype).replace("torch.", ""), skip=skip)
    raise SettingError(name, "{name}: the BitsAndBytesConfig asks for neither load_in_4bit nor load_in_8bit")


def _from_pipeline_config(cfg, name: str) -> Quantization:
    """diffusers' ``PipelineQuantizationConfig``: a ``quant_mapping`` entry for ``transformer``, or a bitsandbytes
    ``quant_backend`` with its ``quant_kwargs`` (``components_to_quantize`` may name the transformer only)."""
    mapping = getattr(cfg, "quant_mapping", None)
    if mapping:
        others = sorted(set(mapping) - {"transformer"})
        if others or "transformer" not in mapping:
            raise SettingError(name, f"{{name}}: ZipAR quantizes the transformer component only; the quant_mapping "
                                     f"names {', '.join(others) or 'no transformer'} (the VQ decoder and the text "
                                     "encoder stay in the compute dtype)")
        return _from_bnb_config(mapping["transformer"], name)
    backend = getattr(cfg, "quant_backend", None)
    bits = {"bitsandbytes_4bit": "load_in_4bit", "bitsandbytes_8bit": "load_in_8bit"}.get(backend)
    if bits is None:
        raise SettingError(name, f"{{name}}: ZipAR quantizes through bitsandbytes (quant_backend 'bitsandbytes_4bit' "
                                 f"or 'bitsandbytes_8bit'); got {backend!r}")
    components = getattr(cfg, "components_to_quantize", None) or ["transformer"]
    others = sorted(set(components) - {"transformer"})
    if others:
        raise SettingError(name, f"{{name}}: ZipAR quantizes the transformer component only; components_to_quantize "
                                 f"also names {', '.join(others)}")
    from types import SimpleNamespace

    return _from_bnb_config(SimpleNamespace(**{**(getattr(cfg, "quant_kwargs", None) or {}), bits: True}), name)


def check_available(name: str = "quantization", device=None) -> None:
    """Refuse, before any weights load, a quantization that cannot run here: bitsandbytes missing or too old, or
    a device it has no kernels for (it runs on CUDA and the CPU)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise SettingError(name, f"{{name}} needs bitsandbytes, which is not installed: {INSTALL}, or leave {{name}} "
                                 "unset for full precision")
    from importlib.metadata import version

    found = version("bitsandbytes")
    if tuple(int(p) for p in found.split(".")[:2] if p.isdigit()) < MIN_BITSANDBYTES:
        raise SettingError(name, f"{{name}} needs bitsandbytes 0.48 or newer (CPU and CUDA kernels), found {found}: "
                                 f"{INSTALL}")
    kind = getattr(device, "type", None) or (str(device).split(":")[0] if device is not None else None)
    if kind not in (None, "cpu", "cuda", "meta"):
        raise SettingError(name, f"{{name}} runs on CUDA and the CPU (bitsandbytes); the model is to run on {kind}: "
                                 "leave {name} unset, or load onto cuda or cpu")


# -- which modules -----------------------------------------------------------------------------------

def kept(name: str, prefixes) -> bool:
    """Whether module ``name`` lies under one of ``prefixes`` (a prefix up to a module boundary, as transformers
    matches ``llm_int8_skip_modules``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def quantizable(model, keep) -> list[tuple[str, Any]]:
    """(name, layer) of every ``torch.nn.Linear`` of ``model`` the quantizer replaces."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear and not kept(n, keep)]


# -- the quantizer for plain torch models ------------------------------------------------------------

def quantize_linears(model, quantization: Quantization, keep, device, dtype) -> int:
    """Replace every ``nn.Linear`` of ``model`` outside ``keep`` by its bitsandbytes layer, one at a time: the
    layer's weight (where the model is, in ``dtype``) is quantized as it moves to ``device``, then the original is
    dropped, so the device never holds more than one full-precision layer. Everything else is left where it is
    (the caller moves it). Returns how many layers were quantized; none is an error (the setting cannot apply)."""
    names = [n for n, _ in quantizable(model, keep)]  # names only: each original layer is freed once replaced
    if not names:
        raise SettingError("quantization", "{name} cannot apply: this model has no linear layer outside the ones "
                                           "kept in the compute dtype; leave {name} unset")
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, bnb_linear(getattr(owner, attr), quantization, dtype).to(device))
    model.zipar_quantization = quantization
    return len(names)


def bnb_linear(layer, quantization: Quantization, dtype):
    """The bitsandbytes layer holding ``layer``'s weight (not yet quantized: that happens on ``.to(device)``)."""
    import bitsandbytes as bnb
    import torch

    weight = layer.weight.detach().to(dtype)
    bias = layer.bias
    if quantization.method == "int8":
        new = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=bias is not None, has_fp16_weights=False,
                                  threshold=quantization.threshold, device="meta")
        new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        compute = getattr(torch, quantization.compute_dtype) if quantization.compute_dtype else dtype
        new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=bias is not None, compute_dtype=compute,
                                compress_statistics=quantization.double_quant, quant_type=quantization.method,
                                device="meta")
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=BLOCKSIZE,
                                       compress_statistics=quantization.double_quant, quant_type=quantization.method,
                                       module=new)
    if bias is not None:
        new.bias = torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
    return new


def load_prequantized(model, state_dict: dict, quantization: Quantization, keep, device, dtype) -> None:
    """Fill ``model`` (built on the meta device) from a state dict saved by a model :func:`quantize_linears` made
    (``state_dict()`` of bitsandbytes layers: packed weights and their quantization statistics), without
    quantizing anything again. Every tensor must be there: a missing one is a KeyError naming it."""
    import bitsandbytes as bnb
    import torch

    sd = dict(state_dict)
    for name, layer in quantizable(model, keep):
        prefix = f"{name}."
        new = bnb_linear(torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                         device="meta"), quantization, dtype)
        weight = sd.pop(prefix + "weight")
        if quantization.method == "int8":
            new.weight = bnb.nn.Int8Params(weight.to(device), requires_grad=False, has_fp16_weights=False)
            new.weight.CB, new.weight.SCB = new.weight.data, sd.pop(prefix + "SCB").to(device)
            sd.pop(prefix + "weight_format", None)
        else:
            head = prefix + "weight."
            stats = {k[len(head):]: sd.pop(k) for k in [k for k in sd if k.startswith(head)]}
            new.weight = bnb.nn.Params4bit.from_prequantized(weight, stats, device=device, module=new)
        if layer.bias is not None:
            new.bias = torch.nn.Parameter(sd.pop(prefix + "bias").to(device, dtype), requires_grad=False)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, strict=False,
                          assign=True)
    unfilled = [k for k, v in model.state_dict().items() if v.device.type == "meta"]
    if unfilled:
        raise KeyError(f"tensor {unfilled[0]!r} is missing from the quantized checkpoint")


# -- size accounting ----------------------------------------------------------------------------------

def linear_bytes(out_features: int, in_features: int, bias: bool, quantization: Quantization | None,
                 dtype_bytes: int) -> int:
    """Bytes a linear layer keeps in memory, weights and their quantization statistics (bitsandbytes 0.48+):

    - none: (out x in + out) x the compute dtype;
    - nf4 / fp4: ceil(n / 2) packed bytes, ceil(n / 64) block absmax values (float32; with double quantization
      uint8, plus one float32 absmax per 256 of them, a 256-entry float32 code and a float32 offset) and the
      16-entry float32 quantization map;
    - int8: n bytes and one float32 scale per output row (``SCB``).
    The bias stays in the compute dtype."""
    n = out_features * in_features
    extra = out_features * dtype_bytes if bias else 0
    if quantization is None:
        return n * dtype_bytes + extra
    if quantization.method == "int8":
        return n + 4 * out_features + extra
    blocks = math.ceil(n / BLOCKSIZE)
    if quantization.double_quant:
        scales = blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 4 * 256 + 4
    else:
        scales = 4 * blocks
    return math.ceil(n / 2) + scales + 4 * 16 + extra


def resident_bytes(module) -> int:
    """Bytes of every parameter and buffer of a built module, bitsandbytes statistics included (a 4-bit layer's
    ``quant_state`` tensors, an int8 layer's ``SCB``), each storage counted once."""
    import torch

    seen: set[int] = set()
    total = 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()

    for m in module.modules():
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            add(t)
            state = getattr(t, "quant_state", None)  # a 4-bit layer's statistics (and their own, nested)
            for part in (state, getattr(state, "state2", None)):
                for v in vars(part).values() if part is not None else ():
                    add(v)
            add(getattr(t, "SCB", None))  # an int8 layer's row scales, on the weight until its first forward
        state = getattr(m, "state", None)  # ... and on the layer's MatmulLtState after it
        add(getattr(state, "SCB", None))
    return total


def is_quantized(module) -> bool:
    """Whether a built module holds bitsandbytes layers."""
    return any(type(m).__module__.startswith("bitsandbytes") for m in module.modules())


def quantization_of(module) -> Quantization | None:
    """The setting a built (or loaded pre-quantized) module was quantized with: what :func:`quantize_linears`
    recorded on it, or a transformers model's (or config's) ``quantization_config``."""
    recorded = getattr(module, "zipar_quantization", None)
    if recorded is not None:
        return recorded
    config = getattr(module, "quantization_config", None) or \
        getattr(getattr(module, "config", None), "quantization_config", None)
    if config is None:
        return None
    if isinstance(config, dict) and "method" in config:  # ZipAR's own record (a LlamaGen component's config)
        return Quantization.from_record(config)
    if isinstance(config, dict):
        from types import SimpleNamespace

        config = SimpleNamespace(**config)
    return _from_bnb_config(config, "quantization")


# -- a plain torch model saved quantized (LlamaGen's safetensors) ----------------------------------------

METADATA_KEY = "zipar_quantization"  # safetensors metadata: the setting and each quantized weight's real shape
_STATISTICS = re.compile(r"\.weight\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\..+)$"
                         r"|\.(SCB|weight_format)$")


def saved_metadata(model) -> dict[str, str]:
    """safetensors metadata for a model :func:`quantize_linears` made: the setting and the logical (out, in) shape
    of every quantized weight (the file holds them packed), so a loader can read the configuration off the file
    as it does for a full-precision one. {} for a full-precision model."""
    q = quantization_of(model)
    if q is None:
        return {}
    shapes = {f"{n}.weight": [m.out_features, m.in_features] for n, m in model.named_modules()
              if type(m).__module__.startswith("bitsandbytes")}
    return {METADATA_KEY: json.dumps({"setting": q.record(), "shapes": shapes})}


def read_saved(metadata: dict) -> tuple[Quantization | None, dict[str, tuple]]:
    """(setting, {weight name: logical shape}) from a file's safetensors metadata; (None, {}) if not quantized."""
    text = (metadata or {}).get(METADATA_KEY)
    if not text:
        return None, {}
    data = json.loads(text)
    return Quantization.from_record(data["setting"]), {k: tuple(v) for k, v in data["shapes"].items()}


def logical_shapes(state_dict: dict, shapes: dict) -> dict:
    """A quantized state dict as the full-precision one would look on the meta device (statistics dropped, packed
    weights at their real shapes): what the loaders infer a configuration from."""
    import torch

    out = {}
    for key, value in state_dict.items():
        if _STATISTICS.search(key):
            continue
        shape = shapes.get(key)
        out[key] = value if shape is None else torch.empty(shape, device="meta")
    return out
