"""Reading weight files safely and explaining why they do not load.

Every family loads pickled ``.pt`` files and ``.safetensors`` files. Pickles are never unpickled with
arbitrary globals (``weights_only=True``): a downloaded checkpoint must not be able to run code. A broken
download (truncated, HTML error page, zero bytes) must say which file and what to do, not surface as a
zip-reader traceback.

Model folders in transformers' naming (one weight file, or shards listed by an index) are read here for every
layout: a missing shard, a shard without a tensor its index promises, a missing or misshapen tensor are
refused with the file, the tensor and the fix, before any model is built (``find_weight_files``,
``read_weight_files``, ``check_tensors``). A ``.safetensors`` beside a pickle of the same name is read instead
of it (``safetensors_twin``): the way out for a pickle that needs more than ``weights_only``.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .errors import SettingError

# Wrappers under which training scripts store the weights: DDP ("model"), DeepSpeed ("module"),
# Lightning-style ("state_dict"). FSDP exports of LlamaGen are raw state dicts.
STATE_DICT_WRAPPERS = ("model", "module", "state_dict")
# Prefixes that wrappers add to every key (DDP, torch.compile).
KEY_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A weight file that cannot be used: corrupt, of the wrong family, or with keys that do not match."""


class CheckpointSettingError(CheckpointError, SettingError):
    """A weight file that loads only with a setting it cannot tell itself (LlamaGen's ``n_head``, ...)."""


def _redownload_hint(path: str) -> str:
    return f"re-download it (or check the path {path!r} points at the finished file)"


def load_file(path: str | os.PathLike, mmap: bool = False) -> object:
    """Read a ``.pt``/``.pth``/``.bin``/``.ckpt`` pickle (weights only) or a ``.safetensors`` file on CPU.

    ``mmap``: map a pickle's tensors instead of reading them (their shapes and keys cost no I/O; the same
    weights-only unpickler runs), for looking at a checkpoint before loading it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): {_redownload_hint(path)}")
    if path.endswith(".safetensors"):
        return _load_safetensors(path, size)
    return _load_pickle(path, size, mmap)


def _load_safetensors(path: str, size: int) -> dict:
    from safetensors.torch import load_file as st_load

    try:
        return st_load(path, device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError for truncated headers/data
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is not a readable safetensors file; it looks truncated or "
            f"corrupt: {_redownload_hint(path)}. Reader said: {e}") from e


def _load_pickle(path: str, size: int, mmap: bool = False) -> object:
    not_a_checkpoint = _sniff(path)
    if not_a_checkpoint:
        raise CheckpointError(f"checkpoint {path} ({size} bytes) cannot be read: {not_a_checkpoint}; "
                              f"{_redownload_hint(path)}")
    # argparse.Namespace: training scripts save their args next to the weights; it holds plain values.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and _is_zip(path))
    except pickle.UnpicklingError as e:
        found = _refused_global(str(e))
        if found is not None:  # a real pickle with objects we refuse to construct
            raise CheckpointError(
                f"checkpoint {path} holds code ({found}), not only tensors: it was refused and not loaded, "
                f"because loading it would run that code. Use a checkpoint from a trusted source. "
                f"{convert_once_hint(path)}") from e
        raise _corrupt(path, size, e) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise _corrupt(path, size, e) from e


def safetensors_twin(path: str) -> str:
    """The ``.safetensors`` file that stands in for a pickle of the same name (``vqgan.ckpt`` ->
    ``vqgan.safetensors``); the folder loaders read it instead of the pickle when it exists."""
    return os.path.splitext(path)[0] + ".safetensors"


def convert_once_hint(path: str) -> str:
    """How to turn a pickle that needs more than ``weights_only=True`` into safetensors, once, where the file is
    trusted; the loaders then read the ``.safetensors`` beside it and never unpickle anything."""
    twin = safetensors_twin(path)
    return ("If you trust where it came from, convert it once to safetensors (the folder loaders read the "
            f".safetensors beside it instead): python -c \"import torch; from safetensors.torch import save_file; "
            f"sd = torch.load({path!r}, map_location='cpu', weights_only=False); sd = sd.get('state_dict', sd); "
            f"save_file({{k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}}, {twin!r})\".")


def _is_zip(path: str) -> bool:
    """torch.save's zip format (the only one torch.load can map)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _refused_global(text: str) -> str | None:
    """The Python object a weights-only unpickler refused to build ("posix.system"), or None when the error
    is not a refusal (then the file is broken). torch words it "Unsupported global: GLOBAL x" (2.4-2.5) or
    "unsupported GLOBAL x whose module ... is blocked" (2.6 and later)."""
    m = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, re.IGNORECASE)
    if m:
        return m.group(1)
    return "Python objects" if re.search(r"unsupported global", text, re.IGNORECASE) else None


def _sniff(path: str) -> str | None:
    """Why the first bytes show this is no checkpoint at all (HTML page, LFS pointer), or None."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        return "it is an HTML page (a failed download or a login/redirect page), not a checkpoint"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (fetch the real file with git lfs pull)"
    return None


def _reader_said(e: BaseException) -> str:
    """The informative part of a reader error, without torch's advice to retry with weights_only=False
    (wrong for a corrupt file, and unsafe)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip()
        return "unpickler: " + (rest.splitlines()[0] if rest else "unreadable data")
    first = text.splitlines()[0] if text else type(e).__name__
    return first.split(". ")[0]


def _corrupt(path: str, size: int, e: BaseException) -> CheckpointError:
    why = "it looks truncated or corrupt"
    return CheckpointError(f"checkpoint {path} ({size} bytes) cannot be read: {why}; {_redownload_hint(path)}. "
                           f"Reader said: {_reader_said(e)}")


def unwrap_state_dict(obj: object, path: str = "<memory>") -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint: under a known wrapper key, or the object itself."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    for key in STATE_DICT_WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"checkpoint {path} holds no tensors (top-level keys: {_preview(obj.keys())})")
    return strip_prefixes(sd)


def strip_prefixes(sd: dict[str, torch.Tensor], prefixes: Iterable[str] = KEY_PREFIXES) -> dict[str, torch.Tensor]:
    """Drop a prefix that every key carries (``module.`` from DDP, ``_orig_mod.`` from torch.compile)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """load_file + unwrap_state_dict."""
    return unwrap_state_dict(load_file(path, mmap), os.fspath(path))


def _preview(keys: Iterable[str], limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
    return f"[{shown}{more}]"


def format_key_mismatch(missing: Iterable[str], unexpected: Iterable[str], limit: int = 5) -> str:
    """One readable line per side: the first few keys and how many there are."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) {_preview(missing, limit)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {_preview(unexpected, limit)}")
    return "; ".join(parts) if parts else "keys match"


def format_shape_mismatch(model_sd: Mapping[str, torch.Tensor], file_sd: Mapping[str, torch.Tensor],
                          limit: int = 5) -> str | None:
    """The keys present on both sides whose shapes differ, or None."""
    bad = [(k, tuple(file_sd[k].shape), tuple(v.shape)) for k, v in model_sd.items()
           if k in file_sd and tuple(file_sd[k].shape) != tuple(v.shape)]
    if not bad:
        return None
    shown = ", ".join(f"{k}: file {f} vs model {m}" for k, f, m in bad[:limit])
    more = f", ... ({len(bad)} in all)" if len(bad) > limit else ""
    return f"{len(bad)} shape mismatch(es): {shown}{more}"


# ----------------------------------------------------------------------------------------------------
# Folders of weight files in transformers' naming (one file, or shards listed by an index)

# (index, single file) pairs in order of preference: safetensors first, pickles only when that is all there is
WEIGHT_LAYOUTS = (("model.safetensors.index.json", "model.safetensors"),
                  ("pytorch_model.bin.index.json", "pytorch_model.bin"))


class MissingShardError(CheckpointError):
    """A sharded checkpoint whose index names a shard that is not in the folder."""


@dataclass
class WeightFiles:
    """The weight files of a model folder: ``files`` in load order; for a sharded checkpoint ``index`` (its
    path) and ``weight_map`` (tensor name -> shard file name, as the index lists it)."""

    folder: str
    files: list[str]
    index: str | None = None
    weight_map: dict[str, str] = field(default_factory=dict)

    def names(self) -> str:
        shown = [os.path.basename(f) for f in self.files]
        return ", ".join(shown[:3]) + (f", ... ({len(shown)} files)" if len(shown) > 3 else "")

    def where(self, key: str) -> str:
        """Which file should hold tensor ``key`` (the index's answer for a sharded checkpoint)."""
        if key in self.weight_map:
            return os.path.join(self.folder, self.weight_map[key])
        parts = key.split(".")
        for i in range(1, len(parts) - 1):  # a model name the loader renamed (text_model.model.x -> model.text_model.x)
            tail = "." + ".".join(parts[i:])
            found = {f for k, f in self.weight_map.items() if k.endswith(tail)}
            if len(found) == 1:
                return os.path.join(self.folder, found.pop())
        return self.files[0] if len(self.files) == 1 else f"{self.folder} ({self.names()})"


def find_weight_files(folder: str, what: str = "model", published: str = "") -> WeightFiles:
    """The weight files of a transformers-style folder: ``model.safetensors(.index.json)`` first, then
    ``pytorch_model.bin(.index.json)``; a ``.bin`` with a ``.safetensors`` of the same name beside it is read as
    the safetensors. An index whose shards are not all there is refused here, naming the missing ones, before
    anything is read. ``what`` / ``published`` name the model and where it is downloaded, for messages."""
    again = f"download the whole model folder again{' (for example ' + published + ')' if published else ''}"
    for index_name, single in WEIGHT_LAYOUTS:
        index = os.path.join(folder, index_name)
        if os.path.isfile(index):
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = dict(json.load(f)["weight_map"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index} is not a readable shard index ({e}): {again}") from e
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))
                       and not os.path.isfile(safetensors_twin(os.path.join(folder, s)))]
            if missing:
                raise MissingShardError(
                    f"{what} in {folder} is incomplete: {index_name} lists {len(shards)} shard files and "
                    f"{len(missing)} of them are missing ({', '.join(missing)}; they hold {sum(v in missing for v in weight_map.values())} "
                    f"tensors such as {next(k for k, v in weight_map.items() if v in missing)!r}). Fix: {again} "
                    "(all shards plus the index), or finish the interrupted download")
            files = [_prefer_safetensors(os.path.join(folder, s)) for s in shards]
            return WeightFiles(folder, files, index, weight_map)
        path = os.path.join(folder, single)
        if os.path.isfile(path) or os.path.isfile(safetensors_twin(path)):
            return WeightFiles(folder, [_prefer_safetensors(path)])
    present = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin", ".json")))
    raise CheckpointError(f"{what} in {folder} has no weight files: expected model.safetensors, "
                          "model.safetensors.index.json with its shards, pytorch_model.bin or "
                          f"pytorch_model.bin.index.json with its shards; found {present or 'none'}. Fix: {again}")


def _prefer_safetensors(path: str) -> str:
    twin = safetensors_twin(path)
    return twin if not path.endswith(".safetensors") and os.path.isfile(twin) else path


def read_weight_files(weights: WeightFiles) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a folder's weight files on CPU (pickles with ``weights_only=True``) -> (state dict,
    {tensor name: file it came from}). A shard that lacks a tensor its index assigns to it is refused, naming
    the shard and the tensor."""
    sd: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for path in weights.files:
        part = unwrap_state_dict(load_file(path), path)
        sd.update(part)
        origin.update(dict.fromkeys(part, path))
    listed = [k for k in weights.weight_map if k not in sd]
    if listed:
        k = listed[0]
        raise CheckpointError(
            f"{weights.where(k)} lacks tensor {k!r}, which {os.path.basename(weights.index)} says it holds "
            f"({len(listed)} listed tensor(s) missing): the shard is truncated or from another download. Fix: "
            "download that shard again")
    return sd, origin


def tensor_shapes(weights: WeightFiles) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor without reading the data (safetensors headers); pickled shards are read
    (weights only)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in weights.files:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            try:
                with safe_open(path, framework="pt") as f:
                    shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
            except Exception as e:  # noqa: BLE001 -- safetensors' own error type
                raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: "
                                      f"{_redownload_hint(path)}. Reader said: {e}") from e
        else:
            shapes.update({k: tuple(v.shape) for k, v in unwrap_state_dict(load_file(path), path).items()})
    return shapes


def check_tensors(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                  describe, fix: str, what: str) -> None:
    """Refuse a checkpoint that lacks a tensor the model needs or holds one of the wrong shape, before any
    model is built: one message naming the file, the tensor (as the file spells it) and the fix.
    ``describe(name) -> (file, name in the file)``; ``expected``/``found`` map the model's names to shapes."""
    missing = [k for k in expected if k not in found]
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not missing and not wrong:
        return
    lines = []
    for k in missing[:5]:
        file, name = describe(k)
        lines.append(f"tensor {name!r} is missing from {file}")
    for k in wrong[:5]:
        file, name = describe(k)
        lines.append(f"tensor {name!r} in {file} has shape {tuple(found[k])}, the model needs {tuple(expected[k])}")
    more = len(missing) + len(wrong) - len(lines)
    raise CheckpointError(f"{what} does not load: " + "; ".join(lines) + (f"; and {more} more" if more > 0 else "")
                          + f". Fix: {fix}")
