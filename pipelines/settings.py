"""What a pipeline call resolves to, before any model work, without diffusers.

``ZipARPipeline.__call__`` checks its request and resolves its settings with these functions, and the
command line runs the same ones on a configuration-only adapter (``device="meta"``) before the weights
load, so a bad class, window or size is refused in seconds rather than after minutes of loading. The
record (:func:`settings_record`) is what ``out.settings`` holds: every resolved decoding setting, so a
setting added to :class:`ZipARConfig` enters it (and a sample set's identity, and PNG metadata) unlisted.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..zipar_core.config import ZipARConfig
from ..zipar_core.errors import SettingError
from ..zipar_core.models import registry
from ..zipar_core.protocol import Request

OUTPUT_TYPES = ("pil", "np", "pt", "codes", "latent")
# the ZipARConfig settings a pipeline keeps in its config and a call may override
SETTINGS = ("mode", "window", "draft_length", "draft_init", "paper_first_row", "guidance_scale", "guidance_interval",
            "temperature", "top_k", "top_p")


def check_output(adapter, num_images_per_prompt: int = 1, output_type: str = "pil", family: str | None = None,
                 decoder: bool = True) -> None:
    """How many images per condition, and whether the output asked for can be made (``decoder``: whether
    the model has what decodes codes to pixels)."""
    if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
            or num_images_per_prompt < 1:
        raise SettingError("num_images_per_prompt",
                           f"{{name}} must be a whole number >= 1, got {num_images_per_prompt!r}")
    if output_type not in OUTPUT_TYPES:
        raise SettingError("output_type", f"{{name}} must be one of {OUTPUT_TYPES}, got {output_type!r}")
    missing = adapter.missing_decoder() if decoder and output_type not in ("codes", "latent") else None
    if missing:
        raise SettingError("vqgan" if (family or adapter.family) in ("lumina", "lumina2") else "vq_path",
                           missing + "; or ask for output_type='codes'")


def check_request(adapter, prompt=None, class_labels=None, negative_prompt=None, height=None, width=None,
                  num_images_per_prompt: int = 1, output_type: str = "pil", family: str | None = None) -> Request:
    """The request of a call, checked by the adapter (the one validator), each condition
    ``num_images_per_prompt`` times; then whether its output can be made (:func:`check_output`)."""
    check_output(adapter, num_images_per_prompt, output_type, family, decoder=False)
    request = adapter.check(prompt=prompt, class_labels=class_labels, negative_prompt=negative_prompt, height=height,
                            width=width).repeat(num_images_per_prompt)
    check_output(adapter, num_images_per_prompt, output_type, family)
    return request


def resolve_settings(adapter, cols: int, saved: Mapping | None = None, **call) -> ZipARConfig:
    """Per-call value, else the pipeline config's (``saved``), else the family's registry default."""
    saved = saved or {}
    chosen = {k: call.get(k) if call.get(k) is not None else saved.get(k) for k in SETTINGS}
    config = ZipARConfig(**registry.resolve(adapter, cols, **chosen))
    config.window_for(cols)  # an explicit window wider than the grid is an error, with the fix in it
    return config


def settings_record(adapter, config: ZipARConfig, rows: int, cols: int) -> dict:
    """``out.settings``: every resolved decoding setting, the family, the grid and the size in pixels. The
    window is the one the schedule uses (the grid width in ntp mode, whatever was asked for)."""
    return {**config.to_dict(), "window": config.window_for(cols), "family": adapter.family, "rows": rows,
            "cols": cols, "height": rows * adapter.downsample, "width": cols * adapter.downsample}
