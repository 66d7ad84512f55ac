"""ZipARConfig: the decoding schedule and the sampling settings, validated once up front."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .errors import SettingError

MODES = ("ntp", "fixed", "adaptive", "sjd", "zipar_sjd")
MODE_HELP = {  # one sentence per mode, for every face's help (README, --help, the ComfyUI tooltip)
    "ntp": "plain raster order, one token per pass (the baseline)",
    "fixed": "ZipAR: a row starts once the row above has `window` tokens (paper eq. 1)",
    "adaptive": "ZipAR with speculative row starts: from `window` tokens on, checked against more context (eq. 2-3)",
    "sjd": "speculative Jacobi decoding in raster order: `draft_length` guessed tokens checked per pass, the "
           "sampling distribution kept",
    "zipar_sjd": "ZipAR's rows (as fixed), each row carrying its own `draft_length` Jacobi drafts",
}
DRAFT_INITS = ("random", "spatial")


@dataclass
class ZipARConfig:
    """How to decode one image grid.

    Window convention (one definition, paper eq. 1): token x[i, j] may be decoded once
    x[i-1, j .. j+window-1] are decoded (clipped at the row end), so row i trails row i-1 by ``window``
    tokens. ``window == cols`` is plain raster decoding. The authors' Lumina code counts the leading EOL
    slot in its window ("ZipAR-s" there is ``window = s - 1`` here).
    """

    # "ntp": raster order, one image token per pass; "fixed": eq. 1; "adaptive": eq. 2-3; "sjd": speculative
    # Jacobi decoding in raster order; "zipar_sjd": the fixed-window rows, each carrying its own Jacobi drafts
    mode: str = "fixed"
    window: int = 8  # fixed / zipar_sjd: the window s; adaptive: the minimum window s_min; ignored by ntp, sjd
    draft_length: int = 8  # sjd / zipar_sjd: draft tokens each chain carries (verified together in one pass)
    draft_init: str = "spatial"  # new drafts: "spatial" (the token above; measured better) or "random" (as SJD)
    paper_first_row: bool = False  # decode row 0 completely before row 1 starts (the authors' code; paper tables)
    guidance_scale: float = 1.0  # classifier-free guidance; 1.0 runs no unconditional branch
    guidance_interval: int | None = None  # guide only image tokens whose raster index is below this
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off

    def __post_init__(self):
        """Every setting is checked here, once, for every face (errors name the setting; see errors.py)."""
        if self.mode not in MODES:
            raise SettingError("mode", f"{{name}} must be one of {', '.join(MODES)}, got {self.mode!r}")
        _whole("window", self.window, 1, "tokens of the row above")
        _whole("draft_length", self.draft_length, 1, "draft tokens per chain")
        if self.draft_init not in DRAFT_INITS:
            raise SettingError("draft_init", f"{{name}} must be one of {', '.join(DRAFT_INITS)}, got {self.draft_init!r}")
        _real("guidance_scale", self.guidance_scale, "1.0 = no guidance")
        _real("temperature", self.temperature, "0 = greedy")
        if self.temperature < 0:
            raise SettingError("temperature", f"{{name}} must be >= 0 (0 = greedy), got {self.temperature}")
        _whole("top_k", self.top_k, 0, "0 = off")
        _real("top_p", self.top_p, "1.0 = off")
        if not 0.0 < self.top_p <= 1.0:
            raise SettingError("top_p", f"{{name}} must be in (0, 1] (1.0 = off), got {self.top_p}")
        if self.guidance_interval is not None:
            _whole("guidance_interval", self.guidance_interval, 0, "None = every token")

    @property
    def guidance(self) -> bool:
        return self.guidance_scale != 1.0

    def uses(self, setting: str) -> bool:
        """Whether this mode reads ``setting`` (``window``: not ntp and sjd, which decode whole rows in raster
        order; ``draft_length`` / ``draft_init``: the Jacobi modes only)."""
        if setting == "window":
            return self.mode not in ("ntp", "sjd")
        if setting in ("draft_length", "draft_init"):
            return self.mode in ("sjd", "zipar_sjd")
        return True

    def window_for(self, cols: int) -> int:
        """The eq.-1 window on a grid of ``cols`` columns; raises when it cannot fit."""
        if self.mode in ("ntp", "sjd"):
            return cols
        if self.window > cols:
            raise SettingError("window", f"{{name}} {self.window} is larger than the grid width ({cols} tokens); "
                                         f"set {{name}} to 1..{cols} ({cols} decodes in plain raster order, like "
                                         "mode ntp)")
        return self.window

    def to_dict(self) -> dict:
        return asdict(self)


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
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingError(name, f"{{name}} must be a whole number >= {low} ({meaning}), got {value!r}")


def _real(name: str, value, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(name, f"{{name}} must be a finite number ({meaning}), got {value!r}")
