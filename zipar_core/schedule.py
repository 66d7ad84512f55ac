"""The ZipAR schedule as a pure state machine: which tokens are fed, and predicted, in each pass.

No torch here: the sampler turns each :class:`Pass` into index tensors. One ``Schedule`` follows one
sample; in fixed and ntp mode every sample follows the same schedule, in adaptive mode each sample has
its own because drafts are accepted per sample.

Terms: x[r, c] is decoded when its value is final; it is fed when its token was run through the model at
its own slot (which writes its K/V there). Every decoded token but the image's last is fed exactly once.
Row r >= 1 starts from the slot before x[r, 0]: the EOL of row r-1 for EOL models, else x[r-1, W-1]
itself when decoded, or a placeholder at that slot (the decoded token nearest to it) which the real
token overwrites, without a pass of its own, once it is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import ZipARConfig
from .layout import TokenLayout

# What a fed token's logits are used for.
FINAL = "final"  # sample the target token; its value is final
DRAFT = "draft"  # adaptive: sample a tentative x[r, 0] from window k (paper eq. 2 p_k)
VERIFY = "verify"  # adaptive: accept the pending draft against window k+1, or resample from the residual
NONE = "none"  # no logits needed: the token is fed only to write its K/V at its slot

EOL = "eol"  # source of an EOL feed


@dataclass(frozen=True)
class Feed:
    slot: int
    source: tuple[int, int] | str  # (row, col) of the decoded token fed, or EOL
    target: tuple[int, int] | None = None  # token predicted from this feed's logits
    use: str = NONE  # FINAL / DRAFT / VERIFY / NONE
    final: bool = True  # for VERIFY: the outcome is final (the row above is complete in view)


@dataclass
class Pass:
    feeds: list[Feed] = field(default_factory=list)

    @property
    def max_slot(self) -> int:
        return max(f.slot for f in self.feeds)


class Schedule:
    """Decoding state of one sample: decoded and fed counts per row, and a pending adaptive draft."""

    def __init__(self, layout: TokenLayout, config: ZipARConfig):
        self.layout = layout
        self.mode = config.mode
        self.window = config.window_for(layout.cols)
        self.paper_first_row = config.paper_first_row
        self.decoded = [0] * layout.rows  # x[r, :decoded[r]] are final
        self.fed = [0] * layout.rows  # x[r, :fed[r]] were run at their own slots
        self.pending_row: int | None = None  # adaptive: row whose first token is a draft under verification

    # -- readiness -------------------------------------------------------------------------------
    def _start_window(self, row: int) -> int:
        """Tokens of row-1 that must be decoded before row's first token is sampled (eq. 1 at j = 0)."""
        if self.paper_first_row and row == 1:
            return self.layout.cols
        return min(self.window, self.layout.cols)

    def done(self) -> bool:
        return self.decoded[-1] == self.layout.cols and all(d == self.layout.cols for d in self.decoded)

    def start_prefill(self) -> None:
        """The prefill pass predicts x[0, 0]; mark it decoded (the sampler samples it)."""
        self.decoded[0] = 1

    # -- one pass --------------------------------------------------------------------------------
    def plan(self) -> Pass:
        W, rows = self.layout.cols, self.layout.rows
        feeds: list[Feed] = []
        for r in range(rows):
            n = self.decoded[r]
            if 0 < n < W:  # an active row: feed its last token, predict the next
                feeds.append(Feed(self.layout.slot(r, n - 1), (r, n - 1), (r, n), FINAL))
                self.fed[r] = n
            elif n == 0 and r > 0 and self.decoded[r - 1] >= self._start_window(r):
                feeds.append(self._row_start(r))
        for r in range(rows - 1):  # decoded last tokens not yet fed: write their K/V (over a placeholder)
            if self.decoded[r] == W and self.fed[r] == W - 1:
                feeds.append(Feed(self.layout.slot(r, W - 1), (r, W - 1)))
                self.fed[r] = W
        feeds.sort(key=lambda f: f.slot)
        return Pass(feeds)

    def _row_start(self, r: int) -> Feed:
        W = self.layout.cols
        k = self.decoded[r - 1]  # tokens of row r-1 the first token of row r will see
        if self.mode != "adaptive" or k >= W:
            use = VERIFY if self.pending_row == r else FINAL
        else:
            use = VERIFY if self.pending_row == r else DRAFT
        final = k >= W
        if self.layout.eol:
            return Feed(self.layout.eol_slot(r - 1), EOL, (r, 0), use, final)
        if k == W:  # the real last token of the row above is known: feed it (its only feed)
            self.fed[r - 1] = W
            return Feed(self.layout.slot(r - 1, W - 1), (r - 1, W - 1), (r, 0), use, final)
        return Feed(self.layout.slot(r - 1, W - 1), self._nearest_decoded(r - 1, W - 1), (r, 0), use, final)

    def _nearest_decoded(self, row: int, col: int) -> tuple[int, int]:
        """The decoded token spatially nearest to (row, col), for a placeholder (ties: the lower row)."""
        best, best_d = (0, 0), None
        for q in range(row, -1, -1):
            n = self.decoded[q]
            if n == 0:
                continue
            c = min(col, n - 1)
            d = (row - q) ** 2 + (col - c) ** 2
            if best_d is None or d < best_d:
                best, best_d = (q, c), d
        return best

    def commit(self, plan: Pass, accepted: bool = False) -> None:
        """Advance after the pass ran. ``accepted``: the outcome of this pass's VERIFY feed, if any."""
        for f in plan.feeds:
            if f.use == NONE:
                continue
            r, c = f.target
            if f.use == FINAL:
                self.decoded[r] = c + 1
            elif f.use == DRAFT:
                self.pending_row = r
            elif f.use == VERIFY:
                if f.final or accepted:
                    self.decoded[r] = 1
                    self.pending_row = None


def count_passes(layout: TokenLayout, config: ZipARConfig) -> int:
    """Forward passes (prefill included) of fixed or ntp mode, by running the schedule."""
    if config.mode == "adaptive":
        raise ValueError("adaptive pass counts depend on the sampled tokens; run the sampler")
    s = Schedule(layout, config)
    s.start_prefill()
    passes = 1
    while not s.done():
        s.commit(s.plan())
        passes += 1
    return passes


def expected_passes(layout: TokenLayout, config: ZipARConfig) -> int:
    """The pass count a progress bar should expect: exact for ntp and fixed; for adaptive the count when
    every draft is accepted (each row then trails by s_min + 1 tokens), a lower bound the run may exceed."""
    if config.mode != "adaptive":
        return count_passes(layout, config)
    window = min(config.window + 1, layout.cols)
    return count_passes(layout, ZipARConfig(mode="fixed", window=window, paper_first_row=config.paper_first_row))


def passes_known_up_front(config: ZipARConfig) -> bool:
    """Whether :func:`expected_passes` is the exact pass count (the schedule does not depend on the sampled
    tokens: ntp and fixed); in every other mode it is a starting estimate that a run may exceed."""
    return config.mode in ("ntp", "fixed")
