"""Reading weight files safely and explaining why they do not load.

Every family loads pickled ``.pt`` files and ``.safetensors`` files. Pickles are never unpickled with
arbitrary globals (``weights_only=True``): a downloaded checkpoint must not be able to run code. A broken
download (truncated, HTML error page, zero bytes) must say which file and what to do, not surface as a
zip-reader traceback.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Iterable, Mapping

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
                f"because loading it would run that code. Use a checkpoint from a trusted source, or convert this "
                f"one to safetensors in a trusted environment") from e
        raise _corrupt(path, size, e) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise _corrupt(path, size, e) from e


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
