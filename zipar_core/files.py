"""Writing files so that nothing half-written is ever left behind, with the permissions the user's umask gives.

Used by every layer that writes a file a user keeps (the command line's images, sample sets and logs, the demo
model's training checkpoints, exports and evaluation); it lives here, below them all. Output folders are created
and proved writable before any work (:func:`writable_folder`). No torch import.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # the disk is full, or the user's quota is


def free_bytes(folder: str) -> int:
    return shutil.disk_usage(folder).free


def png_bound(height: int, width: int) -> int:
    """Bytes an RGB PNG of this size can take at most (an incompressible image: the raw rows, one filter byte
    each, deflate's stored-block overhead) plus its metadata chunks."""
    raw = height * (width * 3 + 1)
    return raw + raw // 1000 + 64 * 1024


def check_space(folder: str, need: int, what: str, flag: str) -> None:
    """Refuse, before the work, to write ``need`` bytes into a folder whose disk has less free space."""
    free = free_bytes(folder)
    if need > free:
        raise OutputError(f"{flag} {folder}: {what} needs up to {need / 2**20:.1f} MiB and the disk has "
                          f"{free / 2**20:.1f} MiB free; free some space or choose another {flag}")


def temp_prefix(path: str) -> str:
    """The name prefix of ``path``'s temporary file: hidden, with the host and pid of the writer (so a process
    that finds one left by a dead writer on its own host can remove it)."""
    return f".{os.path.basename(path)}.{socket.gethostname()}.{os.getpid()}."


def umask() -> int:
    """The process's umask (read by setting it and putting it back: Python has no getter before 3.13's os)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``; the temporary file never outlives a failure (a process
    killed with SIGKILL leaves one, named by :func:`temp_prefix`). The file gets the permissions a plain ``open``
    would give it (0666 less the umask), not mkstemp's owner-only 0600: a sample set is read by other accounts."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise OutputError(f"no space left on the device to write {path}: free some space (or write to another "
                              "folder) and run the command again") from None
        raise


class OutputError(ValueError):
    """An output path that cannot be written; rendered by the command line without a traceback."""


def writable_folder(folder: str, flag: str) -> str:
    """Create ``folder`` with its parents and check a file can be written in it; the folder's absolute path."""
    folder = os.path.abspath(folder or ".")
    probe = folder
    while not os.path.exists(probe):  # the nearest part that exists must be a folder
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise OutputError(f"{flag}: cannot create {folder}: {probe} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".zipar-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"{flag}: cannot write in {folder} ({e.strerror or e}); choose a folder you can write to") \
            from None
    return folder


def writable_file(path: str, flag: str, suffixes: tuple[str, ...] | None = None) -> str:
    """A file path whose folder exists (created) and is writable; the path must not be a folder."""
    if path.endswith(os.sep) or os.path.isdir(path):
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    if suffixes and not path.lower().endswith(suffixes):
        raise OutputError(f"{flag} {path}: the file must end in {' or '.join(suffixes)}")
    writable_folder(os.path.dirname(os.path.abspath(path)), flag)
    return path


def write_json(path: str, data) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    atomic_write(path, write)
