"""What a pipeline call resolves to, before any model work, without diffusers.

``ZipARPipeline.__call__`` checks its request and resolves its settings with these functions, and the
command line runs the same ones on a configuration-only adapter (``device="meta"``) before the weights
load, so a bad class, window or size is refused in seconds rather than after minutes of loading. The
record (:func:`settings_record`) is what ``out.settings`` holds: every resolved decoding setting, so a
setting added to :class:`ZipARConfig` enters it (and a sample set's identity, and PNG metadata) unlisted.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..zipar_core.config import ZipARConfig, resolve
from ..zipar_core.errors import SettingError
from ..zipar_core.protocol import Request

OUTPUT_TYPES = ("pil", "np", "pt", "codes", "latent")
# the ZipARConfig settings a pipeline keeps in its config and a call may override
SETTINGS = ("mode", "window", "draft_length", "draft_init", "draft_coupling", "draft_visibility", "paper_first_row",
            "guidance_scale", "guidance_interval", "temperature", "top_k", "top_p")


def check_output(adapter, num_images_per_prompt: int = 1, output_type: str = "pil", decoder: bool = True) -> None:
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
        raise SettingError(adapter.decoder_setting or "output_type", missing + "; or ask for output_type='codes'")


def check_request(adapter, prompt=None, class_labels=None, negative_prompt=None, height=None, width=None,
                  num_images_per_prompt: int = 1, output_type: str = "pil") -> Request:
    """The request of a call, checked by the adapter (the one validator), each condition
    ``num_images_per_prompt`` times; then whether its output can be made (:func:`check_output`)."""
    check_output(adapter, num_images_per_prompt, output_type, decoder=False)
    request = adapter.check(prompt=prompt, class_labels=class_labels, negative_prompt=negative_prompt, height=height,
                            width=width).repeat(num_images_per_prompt)
    check_output(adapter, num_images_per_prompt, output_type)
    return request


def resolve_settings(adapter, cols: int, saved: Mapping | None = None, **call) -> ZipARConfig:
    """Per-call value, else the pipeline config's (``saved``), else the family's registry default
    (``zipar_core.config.resolve``, the one resolution every face uses)."""
    return resolve(adapter.defaults(), cols, {k: call.get(k) for k in SETTINGS}, dict(saved or {}))


def settings_record(adapter, config: ZipARConfig, rows: int, cols: int) -> dict:
    """``out.settings``: every resolved decoding setting, the family, the grid and the size in pixels. The
    window is the one the schedule uses (the grid width in ntp mode, whatever was asked for)."""
    return {**config.to_dict(), "window": config.window_for(cols), "family": adapter.family, "rows": rows,
            "cols": cols, "height": rows * adapter.pixels_per_token, "width": cols * adapter.pixels_per_token}


# README's table of ``ZipARPipeline.__call__``'s arguments (tests/test_readme.py keeps the README equal to it, and
# tests/test_pipeline.py checks that every argument of __call__ is in it).
def call_arguments() -> list[tuple[tuple[str, ...], str]]:
    from ..zipar_core.config import DRAFT_INITS
    from ..zipar_core.modes import MODES

    modes = "; ".join(f'`"{name}"`: {mode.help}' for name, mode in MODES.items())
    return [
        (("prompt", "class_labels"), "a string or list (text-to-image), or an int or list (class-conditional models); "
                                     "not both"),
        (("negative_prompt",), "the unconditional branch's prompt (Janus-Pro, Emu3-Gen, Lumina-mGPT, Lumina-mGPT 2.0, "
                                "LlamaGen t2i)"),
        (("height", "width"), "pixels; `None` is the trained size; a size the model cannot make is refused with the "
                              "sizes it can (the sizes column of the defaults table below)"),
        (("num_images_per_prompt",), "images per prompt or class"),
        (("guidance_scale", "temperature", "top_k", "top_p"), "sampling; `None` takes the pipeline's config, then the "
                                                             "family's own defaults (below)"),
        (("mode",), modes),
        (("window",), "ZipAR's window s: a token is decoded once the s tokens above-right of it exist (adaptive: the "
                      "minimum window); equal to the grid width it is raster decoding (`window_size`, the old name, "
                      "still works with a warning)"),
        (("draft_length",), "sjd / zipar_sjd: draft tokens each chain carries, verified together in one pass"),
        (("draft_init",), f"sjd / zipar_sjd: how a new draft starts: {' or '.join(f'`{x!r}`' for x in DRAFT_INITS)}"
                          " (spatial: the token above it)"),
        (("draft_coupling",), "sjd / zipar_sjd: how a draft left unverified is drawn again: `'none'` (independently, as "
                              "SJD), `'maximal'` (kept with probability min(1, q_new(x) / q_old(x)), else from the "
                              "residual) or `'gumbel'` (argmax of log q + the position's fixed Gumbel noise); the "
                              "sampling distribution is kept either way"),
        (("draft_visibility",), "zipar_sjd: which drafts a query sees: `'chain'` (its own chain's) or `'rows'` (also the "
                                "row above's, within the columns eq. 1 gives its target; a token is kept only if every "
                                "draft it saw was accepted)"),
        (("paper_first_row",), "decode row 0 completely first, as the authors' code does (reproduces the paper's step "
                               "counts)"),
        (("guidance_interval",), "guide only the image tokens whose raster index is below it (`None`: all)"),
        (("generator",), "one `torch.Generator`, or one per image (then each image gets the tokens it would get "
                         "alone)"),
        (("conditioning",), "a precomputed batch from `pipe.encode_prompt(...)` instead of `prompt` / `class_labels` "
                            "(like diffusers' `prompt_embeds`)"),
        (("output_type",), '`"pil"`, `"np"` (float [0, 1], N x H x W x 3), `"pt"` (float [0, 1], N x 3 x H x W), '
                           '`"codes"` (alias `"latent"`: the VQ code grids, not decoded)'),
        (("return_dict",), "`False` returns `(images, codes, stats, settings)`"),
        (("callback_on_step_end", "callback_on_step_end_tensor_inputs"),
         '`fn(pipe, step, step, {"codes": live code grid, -1 where undecoded})` after every forward pass; a returned '
         "`codes` tensor replaces the tokens sampled in that pass (the next pass feeds them); set "
         "`pipe._interrupt = True` to stop after the pass: the call returns what it decoded (`stats.stopped`, codes "
         "-1 and pixels mid grey where nothing was decoded yet)"),
        (("compile", "cuda_graphs"), "speed only, same images: run the decoding steps at static shapes through "
                                     "`torch.compile`, and on CUDA replay one captured CUDA graph per query count "
                                     "(ignored on CPU)"),
    ]


def call_arguments_table() -> str:
    rows = ["| argument | meaning |", "|---|---|"]
    rows += [f"| {', '.join(f'`{n}`' for n in names)} | {text} |" for names, text in call_arguments()]
    return "\n".join(rows)
