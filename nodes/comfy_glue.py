"""Everything the nodes need from ComfyUI, behind guarded imports.

The pack must import and its tests must run without ComfyUI (diffusers users, CI): every ``comfy`` /
``folder_paths`` import happens inside a function, at call time, and each helper has a plain-PyTorch
fallback. Nothing here queries a device at import time.

- model folders: a ``zipar`` folder registered with ``folder_paths`` (``models/zipar`` plus any
  ``zipar:`` entries of extra_model_paths.yaml); without ComfyUI, the ``ZIPAR_MODELS_DIR`` environment
  variable (os.pathsep-separated folders).
- memory: the adapter's torch modules wrapped in ``comfy.model_patcher.ModelPatcher`` so that
  ``comfy.model_management`` loads them onto the compute device when a node needs them and offloads or
  evicts them when another model needs the memory. The patcher reports the weights' real (quantized) size, and
  each load asks for the memory decoding needs beside them, so ComfyUI frees other models first. A model whose
  memory plan does not fit the device even quantized runs through ComfyUI's own lowvram path (:func:`memory_mode`):
  its plain layers become ``comfy.ops`` layers, which ComfyUI may leave on the CPU and cast per call; what it
  cannot cast (bitsandbytes layers, embeddings, transformers' own norm classes, buffers) is placed on the device
  first (``ZipARModelPatcher``). Research notes: ComfyUI's ``ModelPatcher.load`` / ``load_models_gpu``.
- progress: ``comfy.utils.ProgressBar`` per forward pass, with a partially decoded preview every few
  passes, and ComfyUI's interrupt check after every pass.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..zipar_core.model_files import (
    CHECKPOINT_SUFFIXES,
    is_checkpoint,
    is_part_folder,
    is_vq_checkpoint,
    llamagen_parts,
)

FOLDER = "zipar"  # models/zipar
ENV_MODELS_DIR = "ZIPAR_MODELS_DIR"
_MAX_DEPTH = 3  # how deep model entries are looked for below a model folder


# ----------------------------------------------------------------------------------------------------
# Guarded imports


def _comfy(name: str):
    """``comfy.<name>`` or None outside ComfyUI."""
    try:
        import importlib

        return importlib.import_module(f"comfy.{name}")
    except Exception:  # noqa: BLE001 -- not installed, or a partial install: behave as plain PyTorch
        return None


def _folder_paths():
    try:
        import folder_paths

        return folder_paths
    except Exception:  # noqa: BLE001 -- outside ComfyUI
        return None


def in_comfyui() -> bool:
    return _comfy("model_management") is not None


# ----------------------------------------------------------------------------------------------------
# Model folders and entries


def register_model_folder() -> None:
    """Make ``models/zipar`` a ComfyUI model folder (idempotent; keeps paths added by extra_model_paths.yaml)."""
    fp = _folder_paths()
    if fp is None:
        return
    default = os.path.join(fp.models_dir, FOLDER)
    try:
        fp.add_model_folder_path(FOLDER, default, is_default=True)
    except TypeError:  # older ComfyUI without is_default
        fp.add_model_folder_path(FOLDER, default)
    exts = fp.folder_names_and_paths[FOLDER][1]
    if isinstance(exts, set):
        exts.update(CHECKPOINT_SUFFIXES)


def model_folders() -> list[str]:
    fp = _folder_paths()
    if fp is not None:
        register_model_folder()
        return fp.get_folder_paths(FOLDER)
    env = os.environ.get(ENV_MODELS_DIR, "")
    return [p for p in env.split(os.pathsep) if p]


def _is_model_dir(path: str) -> bool:
    """A folder that is one model: a folder with a config.json (transformers' layout or the original
    publisher's), or a LlamaGen folder with exactly one GPT checkpoint and its VQ tokenizer (and, for
    text-to-image, a FLAN-T5 subfolder)."""
    try:
        if os.path.isfile(os.path.join(path, "config.json")):
            return True
        gpt, vq, _ = llamagen_parts(path)
    except OSError:
        return False
    return len(gpt) == 1 and len(vq) == 1


def list_model_entries() -> list[str]:
    """Names the loader offers, relative to a ``zipar`` model folder with '/' separators (as ComfyUI names
    files in subfolders): model folders (transformers folders; LlamaGen folders with one GPT checkpoint,
    its VQ tokenizer and, for t2i, FLAN-T5), whose files are not listed one by one, and loose weight files
    (LlamaGen GPT checkpoints; the VQ tokenizer beside them is not listed). Subfolders are searched a few
    levels deep."""
    entries: set[str] = set()
    for base in model_folders():
        if os.path.isdir(base):
            _scan(base, "", 0, entries)
    return sorted(entries, key=str.lower)


def _scan(base: str, rel: str, depth: int, out: set) -> None:
    try:
        items = sorted(os.scandir(os.path.join(base, rel) if rel else base), key=lambda e: e.name)
    except OSError:
        return
    for item in items:
        if item.name.startswith("."):
            continue
        name = f"{rel}/{item.name}" if rel else item.name
        if item.is_dir():
            if is_part_folder(item.path):  # a part of a model (Emu3's vision tokenizer): loaded with its model
                continue
            if _is_model_dir(item.path):
                out.add(name)
            elif depth + 1 < _MAX_DEPTH:
                _scan(base, name, depth + 1, out)
        elif is_checkpoint(item.name) and not is_vq_checkpoint(item.name):  # a VQ is found beside its GPT
            out.add(name)


def resolve_model_path(name: str) -> str:
    """Entry name -> absolute path inside one of the model folders. Absolute paths, '..' and anything
    that would leave the model folder are refused (symlinked entries inside the folder are fine)."""
    folders = model_folders()
    where = ", ".join(folders) or f"(none: set {ENV_MODELS_DIR} or run inside ComfyUI)"
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"model {name!r} is not a name inside the ZipAR model folder; pick an entry from the "
                         f"list (files and folders placed in {where})")
    for base in folders:
        root = os.path.abspath(base)
        path = os.path.abspath(os.path.join(root, *parts))
        if os.path.commonpath([root, path]) != root:
            raise ValueError(f"model {name!r} points outside the ZipAR model folder {root}; pick an entry from the list")
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"model {name!r} was not found in the ZipAR model folder(s): {where}. Put the model "
                            f"file or folder there and press 'r' (refresh) in ComfyUI, or pick another entry")


# ----------------------------------------------------------------------------------------------------
# Devices and dtypes


def load_device():
    """Where models compute: ComfyUI's torch device, else CUDA when present, else CPU."""
    mm = _comfy("model_management")
    if mm is not None:
        return mm.get_torch_device()
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device():
    """Where idle weights live (CPU unless ComfyUI runs with --gpu-only / --highvram)."""
    mm = _comfy("model_management")
    if mm is not None:
        return mm.unet_offload_device()
    return load_device()


def pick_dtype(choice: str, device=None):
    """'auto' | 'bf16' | 'fp16' | 'fp32' -> torch dtype. auto: bf16 where the device computes it well,
    else fp16 where ComfyUI says fp16 is good, else fp32 (always on CPU)."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if choice in table:
        return table[choice]
    if choice != "auto":
        raise ValueError(f"dtype must be one of auto, bf16, fp16, fp32; got {choice!r}")
    device = device if device is not None else load_device()
    if torch.device(device).type == "cpu":
        return torch.float32
    mm = _comfy("model_management")
    if mm is not None:
        if mm.should_use_bf16(device):
            return torch.bfloat16
        if mm.should_use_fp16(device):
            return torch.float16
        return torch.float32
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# ----------------------------------------------------------------------------------------------------
# Memory management: the adapter's modules behind a ModelPatcher


def adapter_modules(adapter) -> dict[str, Any]:
    """The torch modules an adapter computes with, found on its attributes (one level into helper
    objects such as LlamaGen's T5 encoder), with modules that sit inside another one dropped."""
    from torch import nn

    found: dict[str, nn.Module] = {}
    for attr, value in vars(adapter).items():
        if isinstance(value, nn.Module):
            found[attr] = value
        elif value is not None and hasattr(value, "__dict__") and not isinstance(value, type):
            for sub, v in vars(value).items():
                if isinstance(v, nn.Module):
                    found[f"{attr}_{sub}"] = v
    inside = {id(m) for mod in found.values() for m in list(mod.modules())[1:]}
    return {k: m for k, m in found.items() if id(m) not in inside}


def _container_class():
    import torch
    from torch import nn

    class ZipARModules(nn.Module):
        """One nn.Module holding the adapter's modules, so ModelPatcher can measure, move and evict them.
        Moving it moves the adapter's own modules (no copies): the adapter follows automatically."""

        def __init__(self, modules: dict):
            super().__init__()
            self.parts = nn.ModuleDict(modules)

        def get_dtype(self):  # ModelPatcher.model_dtype()
            for p in self.parameters():
                if p.is_floating_point():
                    return p.dtype
            return torch.float32

    return ZipARModules


@dataclass
class ZipARModelHandle:
    """What flows along a ZIPAR_MODEL link: the adapter, its ModelPatcher (inside ComfyUI) and a label.
    lowvram: the model goes through ComfyUI's partial loading (it does not fit the device whole); ``pinned``: the
    bytes it must hold on the device anyway."""

    adapter: Any
    name: str
    patcher: Any = None
    info: dict = field(default_factory=dict)
    lowvram: bool = False
    pinned: int = 0

    @property
    def family(self) -> str:
        return getattr(self.adapter, "family", "?")

    def load(self, memory_required: int = 0):
        """Put the weights on the compute device through ComfyUI's model management, which first frees (evicts or
        offloads other models) the weights' size plus ``memory_required`` (what decoding needs beside them), and
        return the adapter. A lowvram handle lets ComfyUI leave part of its castable layers on the CPU."""
        mm = _comfy("model_management")
        if self.patcher is not None and mm is not None:
            if self.lowvram:
                mm.load_models_gpu([self.patcher], memory_required=memory_required,
                                   minimum_memory_required=self.pinned + memory_required)
            else:  # plain and bitsandbytes layers cannot run partly offloaded: all of it, or an OOM said by ComfyUI
                mm.load_models_gpu([self.patcher], memory_required=memory_required, force_full_load=True)
            self.info["offloaded"] = offloaded(self.patcher.model)
        return self.adapter

    def offload_note(self) -> str:
        """A line for the stats when the last load left weights on the CPU ("" otherwise)."""
        left, total = self.info.get("offloaded", (0, 0))
        if not left:
            return ""
        return (f"ran offloaded (ComfyUI's lowvram): {left / 2**30:.2f} of {total / 2**30:.2f} GiB of weights stayed "
                "on the CPU, cast to the device layer by layer")


def offloaded(module) -> tuple[int, int]:
    """(bytes ComfyUI left on the CPU, all the weights' bytes): the layers its lowvram path marks
    ``comfy_cast_weights = True`` when it leaves them on the offload device."""
    from ..zipar_core.quantization import resident_bytes

    left = sum(resident_bytes(m) for m in _leaves(module) if getattr(m, "comfy_cast_weights", False) is True)
    return left, resident_bytes(module)


def _leaves(module):
    return [m for m in module.modules() if next(m.children(), None) is None]


def memory_mode(plan, obtainable: int | None) -> str:
    """"full" when the memory plan fits what ComfyUI can free on the device, "lowvram" when only what cannot be
    offloaded does (ComfyUI then leaves castable layers on the CPU), "refuse" otherwise."""
    if obtainable is None or plan.total <= obtainable:
        return "full"
    return "lowvram" if plan.least_on_device <= obtainable else "refuse"


def obtainable_memory(device) -> int | None:
    """What ComfyUI can make available on ``device`` for one model: its total memory less ComfyUI's inference
    reserve (ComfyUI evicts other models before it loads ours, as our patcher reports its size); outside ComfyUI
    the device's free memory."""
    from ..zipar_core.memory_plan import free_bytes

    mm = _comfy("model_management")
    if mm is None or not hasattr(mm, "get_total_memory"):
        return free_bytes(device)
    reserve = mm.minimum_inference_memory() if hasattr(mm, "minimum_inference_memory") else 0
    return int(mm.get_total_memory(device)) - int(reserve)


def make_offloadable(container) -> int:
    """Turn the plain torch layers of ``container`` into ``comfy.ops`` layers (ComfyUI's castable twins: the same
    class underneath, so no weight is copied), which ComfyUI's lowvram path may leave on the CPU and cast per call;
    returns the bytes of what stays uncastable (bitsandbytes layers, embeddings, other norm classes, buffers)."""
    from torch import nn

    from ..zipar_core.quantization import resident_bytes

    ops = _comfy("ops").disable_weight_init
    twins = {nn.Linear: ops.Linear, nn.Conv2d: ops.Conv2d, nn.GroupNorm: ops.GroupNorm, nn.LayerNorm: ops.LayerNorm}
    if hasattr(ops, "Conv3d"):
        twins[nn.Conv3d] = ops.Conv3d
    for m in container.modules():
        if type(m) in twins:
            m.__class__ = twins[type(m)]
    return sum(resident_bytes(m) for m in _leaves(container) if not hasattr(m, "comfy_cast_weights"))


def place_uncastable(container, device) -> int:
    """Move every module ComfyUI cannot cast (no ``comfy_cast_weights``) to ``device``: its weights must be there
    whatever ComfyUI offloads. Returns their bytes."""
    from ..zipar_core.quantization import resident_bytes

    moved = 0
    for m in container.modules():
        if hasattr(m, "comfy_cast_weights") or not [*m.parameters(recurse=False), *m.buffers(recurse=False)]:
            continue
        if next(m.children(), None) is None:
            m.to(device)  # a leaf: its own .to (bitsandbytes layers move their statistics too)
        else:
            m._apply(lambda t: t.to(device), recurse=False)
        moved += resident_bytes(m) if next(m.children(), None) is None else 0
    return moved


def _patcher_class(mp):
    """ComfyUI's ModelPatcher, with what it cannot cast placed on the device before its own (partial) load, and
    that placed size taken off the budget it loads castable layers with."""

    class ZipARModelPatcher(mp.ModelPatcher):
        def load(self, device_to=None, lowvram_model_memory=0, *args, **kwargs):
            placed = place_uncastable(self.model, device_to)
            if lowvram_model_memory:
                lowvram_model_memory = max(lowvram_model_memory - placed, 1)
            return super().load(device_to, lowvram_model_memory, *args, **kwargs)

    return ZipARModelPatcher


def wrap_model(adapter, name: str, info: dict | None = None, lowvram: bool = False) -> ZipARModelHandle:
    """Wrap a loaded adapter for ComfyUI; outside ComfyUI the handle just carries the adapter. The patcher is told
    the weights' real size (quantized layers at their packed size). lowvram: ComfyUI's partial loading
    (:func:`make_offloadable`)."""
    from ..zipar_core.quantization import resident_bytes

    handle = ZipARModelHandle(adapter=adapter, name=name, info=dict(info or {}))
    mp = _comfy("model_patcher")
    if mp is None:
        return handle
    modules = adapter_modules(adapter)
    if not modules:
        return handle
    container = _container_class()(modules)
    size = resident_bytes(container)
    cls = mp.ModelPatcher
    if lowvram and _comfy("ops") is not None:
        handle.lowvram, handle.pinned, cls = True, make_offloadable(container), _patcher_class(mp)
    handle.patcher = cls(container, load_device=load_device(), offload_device=offload_device(), size=size)
    return handle


def soft_empty_cache() -> None:
    mm = _comfy("model_management")
    if mm is not None:
        mm.soft_empty_cache()


# ----------------------------------------------------------------------------------------------------
# Progress, previews, cancel


def interrupt_check() -> None:
    """ComfyUI's Cancel button: raises comfy's InterruptProcessingException when it was pressed."""
    mm = _comfy("model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def is_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is ComfyUI's Cancel (comfy's InterruptProcessingException): nodes let it through
    unwrapped, so that ComfyUI reports an interrupted run and not a failed one."""
    mm = _comfy("model_management")
    kind = getattr(mm, "InterruptProcessingException", None) if mm is not None else None
    return kind is not None and isinstance(error, kind)


def previews_enabled() -> bool:
    """Follow ComfyUI's --preview-method: 'none' means no preview images (as for KSampler)."""
    cli = _comfy("cli_args")
    if cli is None:
        return False
    method = getattr(getattr(cli, "args", None), "preview_method", None)
    return getattr(method, "value", method) not in ("none", None)


def preview_size() -> int:
    cli = _comfy("cli_args")
    return int(getattr(getattr(cli, "args", None), "preview_size", 512) or 512) if cli else 512


class PassProgress:
    """The sampler's per-pass callback: progress bar, live preview every few passes, cancel point.

    total: the passes expected up front (``zipar_core.schedule.expected_passes``).
    exact: the total is the exact count (ntp, fixed: the mode's ``exact_passes``); it then never changes, so
        every progress message carries the same total and the last one reads total/total. Otherwise
        (adaptive, Jacobi drafts, any mode whose count depends on the sampled tokens) the total is a
        starting estimate that grows honestly: once the passes reach it and the image is not finished it
        becomes passes + 1 (at least one more pass is coming), and ``finish`` closes at passes/passes.
    preview: fn(codes (B, H, W) with -1 where undecoded) -> PIL image, or None for no previews.
    """

    def __init__(self, total: int, preview=None, previews: int = 16, exact: bool = True):
        self.total = max(int(total), 1)
        self.exact = exact
        self.preview = preview
        self.every = max(1, math.ceil(self.total / max(previews, 1)))
        utils = _comfy("utils")
        self.bar = utils.ProgressBar(self.total) if utils is not None else None
        self.passes = 0
        self.shown = (0, self.total)  # the last (value, total) sent to the bar

    def __call__(self, step: int, codes, stats) -> None:
        interrupt_check()  # Cancel stops here, after the pass that was running
        self.passes = stats.passes
        if not self.exact and self.passes >= self.total and not bool((codes >= 0).all()):
            self.total = self.passes + 1  # estimate reached, image unfinished: one more pass at least
        if self.bar is None:
            return
        image = None
        if self.preview is not None and (self.passes % self.every == 0 or self.passes == 1):
            image = ("JPEG", self.preview(codes), preview_size())
        self._show(self.passes, self.total, image)  # also checks for Cancel

    def finish(self) -> None:
        """After the last pass: the bar ends at passes/passes (for an exact total, the total itself)."""
        self.total = self.passes
        if self.bar is not None and self.shown != (self.passes, self.total):
            self._show(self.passes, self.total, None)

    def _show(self, value: int, total: int, image) -> None:
        self.shown = (value, total)
        self.bar.update_absolute(value, total, image)
