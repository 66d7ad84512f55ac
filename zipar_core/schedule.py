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
        return start_window(self.layout, self.window, self.paper_first_row, row)

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
        return nearest_decoded(self.decoded, row, col)

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


def nearest_decoded(decoded: list[int], row: int, col: int) -> tuple[int, int]:
    """The decoded token spatially nearest to (row, col), for a placeholder (ties: the lower row)."""
    best, best_d = (0, 0), None
    for q in range(row, -1, -1):
        n = decoded[q]
        if n == 0:
            continue
        c = min(col, n - 1)
        d = (row - q) ** 2 + (col - c) ** 2
        if best_d is None or d < best_d:
            best, best_d = (q, c), d
    return best


def start_window(layout: TokenLayout, window: int, paper_first_row: bool, row: int) -> int:
    """Tokens of row-1 that must be decoded before row's first token is sampled (eq. 1 at j = 0)."""
    return layout.cols if paper_first_row and row == 1 else min(window, layout.cols)


# -- Jacobi drafts on the ZipAR rows (modes "sjd" and "zipar_sjd") -------------------------------------

HEAD = "head"  # a chain's first element: its newest final token, or a row start (EOL / placeholder / x[r-1, W-1])
DRAFT_TOKEN = "draft"  # a draft token of the chain, fed at its own slot
EOL_ELEMENT = "eol"  # the end-of-row token inside a chain that runs on into the next row


@dataclass(frozen=True)
class Element:
    slot: int
    source: tuple[int, int] | str  # (row, col) of the token fed (final, or the draft at that position), or EOL
    kind: str  # HEAD, DRAFT_TOKEN or EOL_ELEMENT
    need: int  # its K/V stays (becomes visible to later passes) once this many of the chain's drafts are accepted


@dataclass
class Chain:
    """One row's Jacobi chain in one pass: the head and k drafts are fed; target j is predicted by the output of
    ``elements[predictor[j]]``; the drafts are the current guesses of targets 0..k-1, verified left to right,
    and target k is sampled when all k are accepted (so a pass makes 1..k+1 tokens of the chain final)."""

    elements: list[Element]
    targets: list[tuple[int, int]]
    predictor: list[int]
    refresh: list[int | None]  # per draft: the previous pass's query whose output it is redrawn from, or None (new)
    above: list[tuple[int, int] | None]  # per draft: the decoded token above it (spatial initialisation), or None
    start_row: int | None = None  # the row this chain starts (its head is that row's start feed)
    placeholder: bool = False  # ... from a placeholder at the slot of x[start_row - 1, W-1]

    @property
    def drafts(self) -> int:
        return len(self.targets) - 1


@dataclass
class JacobiPass:
    chains: list[Chain]
    writes: list[Feed]  # tokens fed only to write their K/V (x[r, W-1] over its placeholder)

    @property
    def num_queries(self) -> int:
        return sum(len(c.elements) for c in self.chains) + len(self.writes)


class JacobiSchedule:
    """Decoding state of one sample in the Jacobi modes (docs/design.md, "Jacobi drafts").

    Rows follow the ZipAR window rule (eq. 1; ``sjd`` is the window W, plain raster order): x[r, c] may be
    made final only once the row above has min(c + s, W) final tokens. Every row in flight carries one chain
    after its newest final token: up to ``draft_length`` draft tokens of the following positions, fed at
    their slots in the same pass, each seen only by the later elements of its own chain (other rows see
    only final tokens). A chain that reaches its row's end runs on into the next row when that row has not
    started and cannot start on its own (window W, or a row above still short of s tokens), through the
    end-of-row token where the model has one; so with window W the one chain is plain SJD in raster order.
    """

    def __init__(self, layout: TokenLayout, config: ZipARConfig):
        self.layout = layout
        self.window = config.window_for(layout.cols)
        self.paper_first_row = config.paper_first_row
        self.draft_length = config.draft_length
        rows = layout.rows
        self.decoded = [0] * rows  # x[r, :decoded[r]] are final
        self.started = [False] * rows
        self.placeholder = [False] * rows  # row r began from a placeholder at slot(r-1, W-1), not yet overwritten
        self.last_fed = [False] * rows  # x[r, W-1] itself was fed at its slot
        self.refresh: dict[tuple[int, int], int] = {}  # position -> last pass's query that predicted it

    def start_prefill(self) -> None:
        self.decoded[0], self.started[0] = 1, True

    def done(self) -> bool:
        return all(d == self.layout.cols for d in self.decoded)

    def state(self) -> tuple:
        """Everything plan() depends on: samples in equal states get equal plans (planned once)."""
        return (tuple(self.decoded), tuple(self.started), tuple(self.placeholder), tuple(self.last_fed),
                tuple(sorted(self.refresh.items())))

    def _startable(self, r: int) -> bool:
        return r > 0 and not self.started[r] and \
            self.decoded[r - 1] >= start_window(self.layout, self.window, self.paper_first_row, r)

    def _ready(self, r: int, c: int, chain_row: int) -> bool:
        """May x[r, c] be a target of the chain that began in ``chain_row``? Rows the chain ran into count the
        chain's own drafts above them (a target is accepted only after every earlier draft of its chain)."""
        if r == 0 or r > chain_row:
            return True
        if c == 0:
            return self.decoded[r - 1] >= start_window(self.layout, self.window, self.paper_first_row, r)
        return self.decoded[r - 1] >= min(c + self.window, self.layout.cols)

    def plan(self) -> JacobiPass:
        rows, W = self.layout.rows, self.layout.cols
        starting = {r for r in range(1, rows) if self._startable(r)}
        chains, r = [], 0
        while r < rows:
            n = self.decoded[r]
            if n == W or (n == 0 and r not in starting):
                r += 1
                continue
            chain, r = self._chain(r, n, starting)
            if chain.targets:
                chains.append(chain)
            r += 1
        # x[r, W-1] made final but never fed: write its K/V (over the placeholder of row r+1, or before the
        # end-of-row token that starts row r+1); without either, it is fed as row r+1's head instead
        writes = [Feed(self.layout.slot(r, W - 1), (r, W - 1)) for r in range(rows - 1)
                  if self.decoded[r] == W and not self.last_fed[r] and (self.layout.eol or self.placeholder[r + 1])]
        return JacobiPass(chains, writes)

    def _head(self, r: int, n: int) -> tuple[Element, bool]:
        """The first element of row r's chain: its newest final token, or its row start; and whether that is
        a placeholder."""
        lay, W = self.layout, self.layout.cols
        if n > 0:
            return Element(lay.slot(r, n - 1), (r, n - 1), HEAD, 0), False
        if lay.eol:
            return Element(lay.eol_slot(r - 1), EOL, HEAD, 0), False
        if self.decoded[r - 1] == W:  # the real last token of the row above
            return Element(lay.slot(r - 1, W - 1), (r - 1, W - 1), HEAD, 0), False
        return Element(lay.slot(r - 1, W - 1), nearest_decoded(self.decoded, r - 1, W - 1), HEAD, 0), True

    def _chain(self, r: int, n: int, starting: set[int]) -> tuple[Chain, int]:
        """Row r's chain; returns it and the last row it reaches."""
        lay, rows, W = self.layout, self.layout.rows, self.layout.cols
        head, placeholder = self._head(r, n)
        elements, targets, predictor, pred = [head], [], [], 0
        pos = (r, n)
        while self._ready(*pos, chain_row=r):
            targets.append(pos)
            predictor.append(pred)
            if len(targets) > self.draft_length:  # draft_length drafts, then the target after them
                break
            pr, pc = pos
            nxt = (pr, pc + 1) if pc + 1 < W else (pr + 1, 0)
            if nxt[0] != pr and (nxt[0] >= rows or self.started[nxt[0]] or nxt[0] in starting):
                break  # the next row has its own chain (or this is the image's end)
            if not self._ready(*nxt, chain_row=r):
                break
            elements.append(Element(lay.slot(pr, pc), pos, DRAFT_TOKEN, len(targets)))
            if nxt[0] != pr and lay.eol:
                elements.append(Element(lay.eol_slot(pr), EOL, EOL_ELEMENT, len(targets)))
            pred, pos = len(elements) - 1, nxt
        drafts = targets[:-1]
        above = [(tr - 1, tc) if tr > 0 and self.decoded[tr - 1] > tc else None for tr, tc in drafts]
        chain = Chain(elements, targets, predictor, [self.refresh.get(t) for t in drafts], above,
                      start_row=r if n == 0 else None, placeholder=placeholder)
        return chain, (targets[-1][0] if targets else r)

    def commit(self, plan: JacobiPass, accepted: list[int]) -> None:
        """Advance after the pass ran; ``accepted[i]``: how many drafts of chain i were accepted (the target
        after them was then sampled, so accepted[i] + 1 tokens became final)."""
        W, refresh, base = self.layout.cols, {}, 0
        for chain, a in zip(plan.chains, accepted):
            if chain.start_row is not None:
                self.started[chain.start_row] = True
                self.placeholder[chain.start_row] = chain.placeholder
                if not chain.placeholder and chain.elements[0].source != EOL:
                    self.last_fed[chain.start_row - 1] = True
            for j, (tr, tc) in enumerate(chain.targets[: a + 1]):
                self.decoded[tr], self.started[tr] = tc + 1, True
                if j < a and tc == W - 1:  # an accepted draft: the real token was fed at its slot
                    self.last_fed[tr] = True
            for j in range(a + 1, len(chain.targets)):
                refresh[chain.targets[j]] = base + chain.predictor[j]
            base += len(chain.elements)
        for w in plan.writes:
            self.last_fed[w.source[0]] = True
        self.refresh = refresh


JACOBI_MODES = ("sjd", "zipar_sjd")


def count_passes(layout: TokenLayout, config: ZipARConfig) -> int:
    """Forward passes (prefill included) of fixed or ntp mode, in closed form (eq. 1): row r starts s passes after
    row r-1, so an H x W grid takes (H-1)·s + W passes; with row 0 decoded first (the authors' code) row 1 waits
    for all of row 0: (H-2)·s + 2W. ntp is the window W. An end-of-row token is fed with the next row's first
    query and costs no pass. ``tests/test_schedule.py`` checks this against :func:`simulate_passes`."""
    if config.mode not in ("ntp", "fixed"):
        raise ValueError(f"{config.mode} pass counts depend on the sampled tokens; run the sampler")
    H, W = layout.rows, layout.cols
    s = config.window_for(W)
    if H == 1:
        return W
    return (H - 2) * s + 2 * W if config.paper_first_row else (H - 1) * s + W


def simulate_passes(layout: TokenLayout, config: ZipARConfig) -> int:
    """Forward passes of fixed or ntp mode by running the schedule pass by pass (the reference for
    :func:`count_passes`)."""
    s = Schedule(layout, config)
    s.start_prefill()
    passes = 1
    while not s.done():
        s.commit(s.plan())
        passes += 1
    return passes


def expected_passes(layout: TokenLayout, config: ZipARConfig) -> int:
    """The pass count a progress bar should expect: exact for ntp and fixed; for adaptive and the Jacobi modes
    the count when every draft is accepted (adaptive rows then trail by s_min + 1 tokens), a lower bound the
    run may exceed."""
    if config.mode in JACOBI_MODES:
        return count_jacobi_passes(layout, config)
    if config.mode != "adaptive":
        return count_passes(layout, config)
    window = min(config.window + 1, layout.cols)
    return count_passes(layout, ZipARConfig(mode="fixed", window=window, paper_first_row=config.paper_first_row))


def count_jacobi_passes(layout: TokenLayout, config: ZipARConfig, accept=None) -> int:
    """Passes (prefill included) of a Jacobi mode when ``accept(chain)`` drafts of every chain are accepted
    (default: all of them, the fewest passes possible)."""
    s = JacobiSchedule(layout, config)
    s.start_prefill()
    passes = 1
    while not s.done():
        plan = s.plan()
        s.commit(plan, [c.drafts if accept is None else accept(c) for c in plan.chains])
        passes += 1
    return passes


def passes_known_up_front(config: ZipARConfig) -> bool:
    """Whether :func:`expected_passes` is the exact pass count (the schedule does not depend on the sampled
    tokens: ntp and fixed); in every other mode it is a starting estimate that a run may exceed."""
    return config.mode in ("ntp", "fixed")
