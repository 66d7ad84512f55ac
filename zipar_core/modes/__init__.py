"""The decoding modes, one class each, and their registry: the one place that knows which modes exist.

A mode is a strategy the sampler's one loop drives (docs/design.md, "The engine"):

    mode = get(config.mode)(layout, config, buffer, codebook_size, device)
    while not mode.done():
        step = mode.plan()                        # a Pass: named index tensors of one forward
        u = uniforms.draw(step.draws)             # each image's uniforms, in its own order
        mode.draft(step, u)                       # Jacobi modes: write this pass's drafts into the buffer
        logits = model.forward(...)               # every query at its slot, under the pass's visibility
        accepted = mode.verify(probs, step, u)    # sample / accept, write the final tokens into the buffer
        mode.commit(step, accepted, stats)        # advance the schedule

What the faces read is said by the class itself, without torch (``zipar --help`` and ``zipar steps`` import none):
its ``help``, the settings it ``uses``, whether :meth:`Mode.count_passes` is exact (``exact_passes``) or the
fewest possible, and :meth:`Mode.widest_pass`, the most queries one pass can hold (the memory plan). A new mode
is one class (in ``raster.py``, ``jacobi.py`` or a module of its own) and one line in ``_CLASSES`` below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import SettingError
from ..layout import TokenLayout


@dataclass
class Pass:
    """One forward pass of the batch, as index tensors on the device; ``b`` is the batch, or 1 when every image
    shares the plan (ntp, fixed). A mode's own pass adds the fields its ``verify`` reads."""

    slots: Any  # (b, Q) long: the cache slot each query is fed at (padding: the scratch slot, never visible)
    source: Any  # (b, Q) long: the code-buffer entry of the token each query feeds
    query_target: Any  # (b, Q) long: the code-buffer entry its output predicts (trash: none), for guidance scales
    kv_len: int  # the slots the pass's attention reads: one past the largest slot fed
    draws: list[int]  # uniforms each image draws for this pass
    chain: Any = None  # (b, Q) long: the in-pass chain of a draft query (-1: a final token, -2: padding); None: no
    # drafts in this pass (every query is a final token, visible to the later ones)
    need: Any = None  # (b, Q) long: drafts of its chain that must be accepted for its K/V to stay
    cross: Any = None  # (b, Q) long: another chain whose drafts it also sees (rows visibility), -1: none; None: no
    # query sees another chain's drafts
    cross_slot: Any = None  # (b, Q) long: ... those of its slots at or before this one
    cross_need: Any = None  # (b, Q) long: ... drafts of that chain that must be accepted for its K/V to stay


class Mode:
    """The facts of a decoding mode (class attributes and classmethods: no torch) and its strategy (the rest)."""

    name: ClassVar[str]
    help: ClassVar[str]  # one sentence, for every face's help (README, --help, the ComfyUI tooltip)
    label: ClassVar[str]  # what tables and plots call it
    window_name: ClassVar[str | None] = "s"  # what its window is called in a row's name (None: it has none)
    baseline: ClassVar[bool] = False  # plain raster decoding, what every other mode's speed is measured against
    keeps: ClassVar[str | None] = None  # the mode whose sampling distribution it keeps exactly (its drafts are
    # verified against it): the schedule it is measured against
    uses: ClassVar[frozenset[str]] = frozenset()  # the settings it reads: window, draft_length, draft_init
    exact_passes: ClassVar[bool] = True  # count_passes is exact; else it is the fewest possible (drafts accepted)
    drafts: ClassVar[bool] = False  # its passes feed draft tokens (the code buffer keeps a draft per position)

    # -- facts --------------------------------------------------------------------------------------------------
    @classmethod
    def window(cls, layout: TokenLayout, config) -> int:
        """The eq.-1 window its rows keep (the grid width for raster order); an explicit window wider than the
        grid is refused with the fix."""
        if "window" not in cls.uses:
            return layout.cols
        if config.window > layout.cols:
            raise SettingError("window", f"{{name}} {config.window} is larger than the grid width ({layout.cols} "
                                         f"tokens); set {{name}} to 1..{layout.cols} ({layout.cols} decodes in plain "
                                         "raster order, like mode ntp)")
        return config.window

    @classmethod
    def count_passes(cls, layout: TokenLayout, config) -> int:
        """Forward passes of one grid, prefill included: exact, or the fewest possible (``exact_passes``)."""
        raise NotImplementedError

    @classmethod
    def widest_pass(cls, layout: TokenLayout, config) -> int:
        """The most query tokens one pass of an image can hold (prefill aside), an upper bound."""
        raise NotImplementedError

    # -- strategy -----------------------------------------------------------------------------------------------
    def __init__(self, layout: TokenLayout, config, buffer, codebook_size: int, device):
        self.layout, self.config, self.buffer, self.device = layout, config, buffer, device
        self.codebook_size = codebook_size  # the distributions range over the VQ codes 0 .. codebook_size-1

    def done(self) -> bool:
        raise NotImplementedError

    def plan(self) -> Pass:
        """The next pass (the mode's state is not changed: ``commit`` does that)."""
        raise NotImplementedError

    def draft(self, step: Pass, u) -> None:
        """Write the pass's draft tokens into the code buffer before it runs (modes with drafts)."""

    def verify(self, probs, step: Pass, u):
        """Sample, accept or reject from the pass's distributions ``probs`` (B, Q, V) and the uniforms ``u``;
        write the tokens made final into the code buffer. Returns what ``commit`` needs (on the device)."""
        raise NotImplementedError

    def commit(self, step: Pass, accepted, stats) -> None:
        """Advance after the pass (reading back what steers the next plan, where the mode needs it)."""
        raise NotImplementedError

    def final_targets(self, step: Pass, accepted):
        """(B, n) code-buffer entries this pass made final (what a step callback may still change)."""
        raise NotImplementedError


from .jacobi import Sjd, ZiparSjd  # noqa: E402  (the classes below need Mode)
from .raster import Adaptive, Fixed, Ntp  # noqa: E402

_CLASSES: tuple[type[Mode], ...] = (Ntp, Fixed, Adaptive, Sjd, ZiparSjd)
MODES: dict[str, type[Mode]] = {cls.name: cls for cls in _CLASSES}
NAMES: tuple[str, ...] = tuple(MODES)


def get(name: str) -> type[Mode]:
    if name not in MODES:
        raise SettingError("mode", f"{{name}} must be one of {', '.join(NAMES)}, got {name!r}")
    return MODES[name]


def count_passes(layout: TokenLayout, config) -> int:
    """The exact forward passes (prefill included) of a mode whose count does not depend on the sampled tokens
    (ntp, fixed); refused for the others, whose :func:`expected_passes` is the fewest possible."""
    mode = get(config.mode)
    if not mode.exact_passes:
        raise ValueError(f"{config.mode} pass counts depend on the sampled tokens; run the sampler")
    return mode.count_passes(layout, config)


def expected_passes(layout: TokenLayout, config) -> int:
    """The pass count a progress bar should expect: exact (``get(mode).exact_passes``), else the fewest possible
    (every draft accepted), which a run may exceed."""
    return get(config.mode).count_passes(layout, config)
