"""Output files of the command line: checked before the work, written atomically, never left half-done.

- ``writable_folder`` (``zipar_core.files``, shared with the demo model's scripts) creates a folder (and its
  parents) and proves it writable by writing a probe file, before any model loads; a parent that is a file, or
  a read-only folder, is one clear error.
- ``atomic_write`` (``zipar_core.files``) writes a temporary file beside the target and renames it over the
  target; on any failure (full disk, Ctrl-C, an exception) the temporary file is removed.
- PNG is the image format (the settings travel in its text chunks, :func:`png_meta_of` reads them back);
  another suffix is refused by name.
"""
from __future__ import annotations

import json
import os
import re
import socket

from ..zipar_core.files import OutputError, atomic_write, writable_folder

IMAGE_SUFFIXES = (".png",)


class ImagePaths:
    """The file of image ``i`` of ``n`` (computed, not listed: ``-n`` may be large)."""

    def __init__(self, stem: str, ext: str, n: int):
        self.stem, self.ext, self.n = stem, ext, n

    def __getitem__(self, i: int) -> str:
        """NAME.png for one image; NAME-0.png .. NAME-9.png, NAME-00.png .. NAME-99.png, ...: zero-padded to the
        width of the last index, so the files sort in order."""
        return self.stem + self.ext if self.n == 1 else f"{self.stem}-{i:0{len(str(self.n - 1))}d}{self.ext}"


def image_paths(output: str, n: int, flag: str = "-o/--output") -> ImagePaths:
    """The PNG files of ``n`` images for ``-o``: FILE.png (NAME-0.png, NAME-1.png, ... for several); a folder
    (an existing one, or one written with a trailing slash) gets zipar.png / zipar-0.png ... inside it; a name
    without a suffix gets .png. Other suffixes are refused: PNG carries the settings in its metadata."""
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        output = os.path.join(output, "zipar.png")
    stem, ext = os.path.splitext(output)
    if not ext:
        ext = ".png"
    if ext.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"{flag} {output}: zipar writes PNG files (the settings that reproduce an image travel in "
                          "their metadata); name the file .png")
    writable_folder(os.path.dirname(os.path.abspath(output)), flag)
    return ImagePaths(stem, ext, n)


def remove_dead_temps(folder: str) -> int:
    """Remove the temporary files that processes of this host killed mid-write left in ``folder``."""
    from .claims import process_alive

    host, removed = socket.gethostname(), 0
    for name in os.listdir(folder):
        m = re.fullmatch(r"\.(.+)\.(.+)\.(\d+)\.\w+\.tmp", name)
        if m and m.group(2) == host and not process_alive(int(m.group(3)), None):
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except OSError:
                pass
    return removed


def save_png(image, path: str, meta: dict) -> None:
    """A PNG with the ``zipar`` text chunk (JSON) and, for text models, the prompt as its own chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("zipar", json.dumps(meta, sort_keys=True))
    prompt = meta.get("condition", {}).get("prompt")
    if prompt:
        info.add_itxt("prompt", prompt)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def png_meta_of(path: str) -> dict:
    """The ``zipar`` metadata of a PNG written by zipar generate / sample."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get("zipar")
    except (OSError, UnidentifiedImageError) as e:
        raise OutputError(f"--from-png {path}: cannot read it as an image ({e})") from None
    if text is None:
        raise OutputError(f"--from-png {path}: no zipar metadata in it (was it written by zipar generate/sample?)")
    meta = json.loads(text)
    if "condition" not in meta or "settings" not in meta:
        raise OutputError(f"--from-png {path}: its metadata is from an older zipar and cannot reproduce the image "
                          "(no condition / settings records)")
    return meta
