"""ZipARConfig (the decoding schedule and the sampling settings, checked once up front), Defaults, and
:func:`resolve`: the one function every face resolves a call's settings with. No torch import.

A setting left unset (None) is the model family's default (``zipar_core.models.registry``, through the model's
``defaults()``): ``generate(model, cond, ZipARConfig())``, ``pipe(...)``, ``zipar generate`` and the ComfyUI
sampler decode the same model the same way.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from .errors import SettingError, SettingWarning

DRAFT_INITS = ("random", "spatial")
# how a draft that was not verified is drawn again in the next pass: "none", independently (SJD); "maximal", kept
# with probability min(1, q_new(x) / q_old(x)), else drawn from norm(max(0, q_new - q_old)); "gumbel", the argmax of
# log q + g with one Gumbel noise vector per position, the same in every pass (MC-SJD, arXiv 2510.24211)
DRAFT_COUPLINGS = ("none", "maximal", "gumbel")
# which drafts a query sees: "chain", its own chain's (the rows in flight see each other's final tokens only);
# "rows", also the drafts of the row above within the columns eq. 1 gives its target, the pass verified row by row
# from the top (a token is kept only if every draft it saw was accepted)
DRAFT_VISIBILITIES = ("chain", "rows")


@dataclass(frozen=True)
class Defaults:
    """Decoding settings when the user gives none (ZipARConfig field names): the base every family's registry entry
    starts from, and what a model without a family (a test's toy model) decodes with."""

    mode: str = "fixed"
    window: int = 16  # paper eq. 1; never wider than the grid (clipped to it)
    guidance_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    draft_length: int = 8  # sjd / zipar_sjd: draft tokens per chain
    draft_init: str = "spatial"  # sjd / zipar_sjd: new drafts start from the token above ("random": as SJD)
    draft_coupling: str = "maximal"  # sjd / zipar_sjd: how an unverified draft is redrawn (DRAFT_COUPLINGS)
    draft_visibility: str = "rows"  # zipar_sjd: which drafts a query sees (DRAFT_VISIBILITIES)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ZipARConfig:
    """How to decode one image grid. A field left None is the model family's default (:func:`resolve`).

    Window convention (one definition, paper eq. 1): token x[i, j] may be decoded once x[i-1, j .. j+window-1]
    are decoded (clipped at the row end), so row i trails row i-1 by ``window`` tokens. ``window == cols`` is plain
    raster decoding. The authors' Lumina code counts the leading EOL slot in its window ("ZipAR-s" there is
    ``window = s - 1`` here).
    """

    mode: str | None = None  # a decoding mode of zipar_core.modes (ntp, fixed, adaptive, sjd, zipar_sjd)
    window: int | None = None  # fixed / zipar_sjd: the window s; adaptive: the minimum window s_min
    draft_length: int | None = None  # sjd / zipar_sjd: draft tokens each chain carries (verified in one pass)
    draft_init: str | None = None  # new drafts: "spatial" (the token above; measured better) or "random" (as SJD)
    draft_coupling: str | None = None  # redrawn drafts: "none" (independent, as SJD), "maximal", "gumbel"
    draft_visibility: str | None = None  # zipar_sjd: "chain" (own chain's drafts) or "rows" (and the row above's)
    paper_first_row: bool = False  # decode row 0 completely before row 1 starts (the authors' code; paper tables)
    guidance_scale: float | None = None  # classifier-free guidance; 1.0 runs no unconditional branch
    guidance_interval: int | None = None  # guide only image tokens whose raster index is below this
    temperature: float | None = None  # 0 = greedy (argmax)
    top_k: int | None = None  # 0 = off
    top_p: float | None = None  # 1.0 = off

    def __post_init__(self):
        """Every setting given is checked here, once, for every face (errors name the setting; see errors.py)."""
        from .modes import get

        if self.mode is not None:
            get(self.mode)
        _whole("window", self.window, 1, "tokens of the row above")
        _whole("draft_length", self.draft_length, 1, "draft tokens per chain")
        for name, allowed in (("draft_init", DRAFT_INITS), ("draft_coupling", DRAFT_COUPLINGS),
                              ("draft_visibility", DRAFT_VISIBILITIES)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise SettingError(name, f"{{name}} must be one of {', '.join(allowed)}, got {value!r}")
        _real("guidance_scale", self.guidance_scale, "1.0 = no guidance")
        _real("temperature", self.temperature, "0 = greedy")
        if self.temperature is not None and self.temperature < 0:
            raise SettingError("temperature", f"{{name}} must be >= 0 (0 = greedy), got {self.temperature}")
        _whole("top_k", self.top_k, 0, "0 = off")
        _real("top_p", self.top_p, "1.0 = off")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise SettingError("top_p", f"{{name}} must be in (0, 1] (1.0 = off), got {self.top_p}")
        _whole("guidance_interval", self.guidance_interval, 0, "None = every token")

    @property
    def guidance(self) -> bool:
        return self.guidance_scale is not None and self.guidance_scale != 1.0

    def uses(self, setting: str) -> bool:
        """Whether this mode reads ``setting`` (``window`` and the draft settings; the others always)."""
        from .modes import get

        return setting not in MODE_SETTINGS or setting in get(self.mode or Defaults.mode).uses

    def window_for(self, cols: int) -> int:
        """The eq.-1 window the mode keeps on a grid of ``cols`` columns (``cols`` for raster order); raises when an
        explicit window cannot fit."""
        from .layout import TokenLayout
        from .modes import get

        return get(self.mode or Defaults.mode).window(TokenLayout(1, cols, prefix=1), self)

    def chosen(self) -> dict:
        """The settings given (not None)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}

    def to_dict(self) -> dict:
        return asdict(self)


SETTINGS = tuple(f.name for f in fields(ZipARConfig))
MODE_SETTINGS = ("window", "draft_length", "draft_init", "draft_coupling", "draft_visibility")  # read by some modes
_WARNED: set[tuple] = set()  # (setting, value, mode) already said: once per process, however many checks run


def resolve(defaults: Defaults | Mapping | None, cols: int, *choices: Mapping, warn: bool = True) -> ZipARConfig:
    """The settings of a call, complete: each from the first of ``choices`` that sets it (not None; e.g. the call's
    arguments, then a pipeline's saved config), else from the family's ``defaults``. A default window is clipped to
    the grid width ``cols``; an explicit one wider than the grid is an error, with the fix. A setting given that the
    mode ignores (``window`` in mode ntp) is said once, as a warning (``warn``: the faces, which resolve what a user
    gave; ``generate`` completes a config a face may have resolved already, and says nothing). Every face resolves
    with this function."""
    base = defaults.as_dict() if isinstance(defaults, Defaults) else dict(defaults or Defaults().as_dict())
    given = {}
    for name in SETTINGS:
        value = next((c[name] for c in choices if c.get(name) is not None), None)
        if value is not None:
            given[name] = value
    values = {**{k: v for k, v in base.items() if k in SETTINGS}, **given}
    if "window" not in given:
        values["window"] = min(values["window"], cols)
    config = ZipARConfig(**values)
    config.window_for(cols)
    for name in MODE_SETTINGS:
        said = (name, given.get(name), config.mode)
        if warn and name in given and not config.uses(name) and said not in _WARNED:
            _WARNED.add(said)
            import warnings

            warnings.warn(SettingWarning(name, f"{{name}} {given[name]} has no effect in mode {config.mode}"),
                          stacklevel=3)
    return config


def check_windows(cols: int, **lists) -> None:
    """Windows given as lists (``windows=[4, 8]``, ``adaptive=[...]``, ``zipar_sjd=[...]``: the benchmarks, ``zipar
    steps / demo / bench``): each at most the grid width ``cols``; one too wide is refused by its list's name, never
    dropped."""
    for name, values in lists.items():
        wide = [s for s in values or () if s > cols]
        if wide:
            raise SettingError(name, f"{{name}} {' '.join(map(str, wide))}: wider than the grid ({cols} tokens); "
                                     f"give windows 1..{cols}")


def _whole(name: str, value, low: int, meaning: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingError(name, f"{{name}} must be a whole number >= {low} ({meaning}), got {value!r}")


def _real(name: str, value, meaning: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(name, f"{{name}} must be a finite number ({meaning}), got {value!r}")
