"""The ZipAR schedules as pure state machines: which tokens are fed, and predicted, in each pass. No torch.

Two schedules, one per kind of decoding mode (``modes/``): :class:`RowSchedule` (ntp, fixed, adaptive: every row
in flight feeds its newest token and predicts the next) and :class:`JacobiSchedule` (sjd, zipar_sjd: every row in
flight carries a chain of draft tokens). Both have the same contract: ``plan()`` reads the state and changes
nothing; ``commit(plan, outcome)`` advances it after the pass ran. A mode turns each plan into index tensors.

Terms: x[r, c] is decoded when its value is final; it is fed when its token was run through the model at its own
slot (which writes its K/V there). Every decoded token but the image's last is fed exactly once. Row r >= 1 starts
from the slot before x[r, 0]: the end-of-row token (``EOL``) of row r-1 for models that have one, else x[r-1, W-1]
itself when decoded, or a placeholder at that slot (the decoded token nearest to it) which the real token
overwrites, without a pass of its own, once it is decoded (docs/design.md, "Row starts").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .layout import EOL, TokenLayout

# What a fed token's logits are used for (RowSchedule).
FINAL = "final"  # sample the target token; its value is final
DRAFT = "draft"  # adaptive: sample a tentative x[r, 0] with window k (paper eq. 2, p_k)
VERIFY = "verify"  # adaptive: accept the pending draft against window k+1, or resample from the residual
NONE = "none"  # no logits needed: the token is fed only to write its K/V at its slot

Position = tuple[int, int]  # (row, col) of a grid token


def start_window(layout: TokenLayout, window: int, paper_first_row: bool, row: int) -> int:
    """Tokens of row-1 that must be decoded before row's first token is sampled (eq. 1 at j = 0)."""
    return layout.cols if paper_first_row and row == 1 else min(window, layout.cols)


def nearest_decoded(decoded: list[int], row: int, col: int) -> Position:
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


# -- one token per row and pass (ntp, fixed, adaptive) ---------------------------------------------------------------

@dataclass(frozen=True)
class Feed:
    slot: int
    source: Position | int  # (row, col) of the decoded token fed, or EOL
    target: Position | None = None  # token predicted from this feed's logits
    use: str = NONE  # FINAL / DRAFT / VERIFY / NONE
    final: bool = True  # for VERIFY: the outcome is final (the row above is complete in view)


@dataclass
class RowPlan:
    feeds: list[Feed] = field(default_factory=list)

    @property
    def max_slot(self) -> int:
        return max(f.slot for f in self.feeds)


class RowSchedule:
    """Decoding state of one image: decoded and fed counts per row, and a pending adaptive draft. ``adaptive``:
    a row start is drafted from ``window`` tokens of the row above and verified with one more per pass."""

    def __init__(self, layout: TokenLayout, window: int, paper_first_row: bool = False, adaptive: bool = False):
        self.layout, self.window, self.paper_first_row, self.adaptive = layout, window, paper_first_row, adaptive
        self.decoded = [0] * layout.rows  # x[r, :decoded[r]] are final
        self.fed = [0] * layout.rows  # x[r, :fed[r]] were run at their own slots
        self.pending_row: int | None = None  # adaptive: row whose first token is a draft under verification

    def start_prefill(self) -> None:
        """The prefill pass predicts x[0, 0]; mark it decoded (the sampler samples it)."""
        self.decoded[0] = 1

    def done(self) -> bool:
        return all(d == self.layout.cols for d in self.decoded)

    def plan(self) -> RowPlan:
        """The feeds of the next pass (reads the state, changes nothing)."""
        W, rows = self.layout.cols, self.layout.rows
        feeds: list[Feed] = []
        for r in range(rows):
            n = self.decoded[r]
            if 0 < n < W:  # an active row: feed its last token, predict the next
                feeds.append(Feed(self.layout.slot(r, n - 1), (r, n - 1), (r, n), FINAL))
            elif n == 0 and r > 0 and self.decoded[r - 1] >= start_window(self.layout, self.window,
                                                                          self.paper_first_row, r):
                feeds.append(self._row_start(r))
        # a row start that feeds the real x[r-1, W-1] at its own slot is that token's only feed
        started_from_last = {f.source[0] for f in feeds if f.source != EOL and f.source[1] == W - 1
                             and self.layout.slot(*f.source) == f.slot}
        for r in range(rows - 1):  # decoded last tokens not yet fed: write their K/V (over a placeholder)
            if self.decoded[r] == W and self.fed[r] == W - 1 and r not in started_from_last:
                feeds.append(Feed(self.layout.slot(r, W - 1), (r, W - 1)))
        feeds.sort(key=lambda f: f.slot)
        return RowPlan(feeds)

    def _row_start(self, r: int) -> Feed:
        W = self.layout.cols
        k = self.decoded[r - 1]  # tokens of row r-1 the first token of row r will see
        use = VERIFY if self.pending_row == r else DRAFT if self.adaptive and k < W else FINAL
        final = k >= W
        if self.layout.eol:
            return Feed(self.layout.eol_slot(r - 1), EOL, (r, 0), use, final)
        if k == W:  # the real last token of the row above is known: feed it (its only feed)
            return Feed(self.layout.slot(r - 1, W - 1), (r - 1, W - 1), (r, 0), use, final)
        return Feed(self.layout.slot(r - 1, W - 1), nearest_decoded(self.decoded, r - 1, W - 1), (r, 0), use, final)

    def commit(self, plan: RowPlan, accepted: bool = False) -> None:
        """Advance after the pass ran. ``accepted``: the outcome of this pass's VERIFY feed, if any."""
        for f in plan.feeds:
            if f.source != EOL and self.layout.slot(*f.source) == f.slot:  # a token fed at its own slot
                r, c = f.source
                self.fed[r] = max(self.fed[r], c + 1)
            if f.use == NONE:
                continue
            r, c = f.target
            if f.use == FINAL:
                self.decoded[r] = c + 1
            elif f.use == DRAFT:
                self.pending_row = r
            elif f.use == VERIFY and (f.final or accepted):
                self.decoded[r] = 1
                self.pending_row = None


# -- Jacobi chains on the ZipAR rows (sjd, zipar_sjd) ----------------------------------------------------------------

@dataclass(frozen=True)
class Element:
    slot: int
    source: Position | int  # (row, col) of the token fed (final, or the draft at that position), or EOL
    draft: bool  # the token fed is a draft of this pass (its K/V counts only once its chain accepts it); the head is
    # the chain's newest final token or its row start, never a draft
    need: int  # its K/V stays (becomes visible to later passes) once this many of the chain's drafts are accepted
    up_need: int = 0  # rows visibility: drafts of the row above's chain it sees (that many must be accepted too)
    up_slot: int = -1  # ... the slot of the last of them (-1: it sees none)


@dataclass
class Chain:
    """One row's Jacobi chain in one pass: the head and k drafts are fed; target j is predicted by the output of
    ``elements[predictor[j]]``; the drafts are the current guesses of targets 0..k-1, verified left to right,
    and target k is sampled when all k are accepted (so a pass makes 1..k+1 tokens of the chain final)."""

    elements: list[Element]
    targets: list[Position]
    predictor: list[int]
    refresh: list[int | None]  # per draft: the previous pass's query whose output it is redrawn from, or None (new)
    above: list[Position | None]  # per draft: the decoded token above it (spatial initialisation), or None
    start_row: int | None = None  # the row this chain starts (its head is that row's start feed)
    placeholder: bool = False  # ... from a placeholder at the slot of x[start_row - 1, W-1]
    previous: list[tuple[int, int] | None] = field(default_factory=list)  # per draft: (chain, draft) that fed the
    # previous pass's draft of its position, or None (coupled drafts start from it)
    up: int | None = None  # rows visibility: the chain of the row above whose drafts this chain's queries see
    up_need: list[int] = field(default_factory=list)  # per target: drafts of ``up`` its predictor saw

    @property
    def drafts(self) -> int:
        return len(self.targets) - 1


@dataclass
class JacobiPlan:
    chains: list[Chain]
    writes: list[Feed]  # tokens fed only to write their K/V (x[r, W-1] over its placeholder)

    @property
    def num_queries(self) -> int:
        return sum(len(c.elements) for c in self.chains) + len(self.writes)


class JacobiSchedule:
    """Decoding state of one image in the Jacobi modes (docs/design.md, "Jacobi drafts").

    Rows follow the ZipAR window rule (eq. 1; ``sjd`` is the window W, plain raster order): x[r, c] may be made
    final only once the row above has min(c + s, W) final tokens. Every row in flight carries one chain after its
    newest final token: up to ``draft_length`` draft tokens of the following positions, fed at their slots in the
    same pass, each seen only by the later elements of its own chain (other rows see only final tokens). A chain
    that reaches its row's end runs on into the next row when that row has not started and cannot start on its own
    (window W, or a row above still short of s tokens), through the end-of-row token where the model has one; so
    with window W the one chain is plain SJD in raster order.
    """

    def __init__(self, layout: TokenLayout, window: int, draft_length: int, paper_first_row: bool = False,
                 see_rows: bool = False):
        self.layout, self.window, self.draft_length = layout, window, draft_length
        self.paper_first_row, self.see_rows = paper_first_row, see_rows
        rows = layout.rows
        self.decoded = [0] * rows  # x[r, :decoded[r]] are final
        self.started = [False] * rows
        self.placeholder = [False] * rows  # row r began from a placeholder at slot(r-1, W-1), not yet overwritten
        self.last_fed = [False] * rows  # x[r, W-1] itself was fed at its slot
        self.refresh: dict[Position, int] = {}  # position -> last pass's query that predicted it
        self.drafted: dict[Position, tuple[int, int]] = {}  # position -> (chain, draft) it was fed as last pass

    def start_prefill(self) -> None:
        self.decoded[0], self.started[0] = 1, True

    def done(self) -> bool:
        return all(d == self.layout.cols for d in self.decoded)

    def state(self) -> tuple:
        """Everything plan() depends on: images in equal states get equal plans (planned once)."""
        return (tuple(self.decoded), tuple(self.started), tuple(self.placeholder), tuple(self.last_fed),
                tuple(sorted(self.refresh.items())), tuple(sorted(self.drafted.items())))

    def _row_ready(self, r: int) -> int:
        return start_window(self.layout, self.window, self.paper_first_row, r)

    def _startable(self, r: int) -> bool:
        return r > 0 and not self.started[r] and self.decoded[r - 1] >= self._row_ready(r)

    def _up_need(self, r: int, c: int) -> int:
        """Tokens of row r-1 beyond its final ones that x[r, c] must see (eq. 1): drafts of that row's chain."""
        return max(0, min(c + self.window, self.layout.cols) - self.decoded[r - 1])

    def _ready(self, r: int, c: int, chain_row: int, above: int = 0) -> bool:
        """May x[r, c] be a target of the chain that began in ``chain_row``, ``above`` drafts of row r-1 being fed
        in the same pass (rows visibility)? Rows the chain ran into count the chain's own drafts above them (a
        target is accepted only after every earlier draft of its chain)."""
        if r == 0 or r > chain_row:
            return True
        if c == 0:
            return self.decoded[r - 1] >= self._row_ready(r)
        return self._up_need(r, c) <= above

    def plan(self) -> JacobiPlan:
        """The chains and writes of the next pass (reads the state, changes nothing)."""
        rows, W = self.layout.rows, self.layout.cols
        starting = {r for r in range(1, rows) if self._startable(r)}
        chains, r = [], 0
        in_row: dict[int, int] = {}  # row -> the chain whose drafts in that row its row below may see
        while r < rows:
            n = self.decoded[r]
            if n == W or (n == 0 and r not in starting):
                r += 1
                continue
            chain, r = self._chain(r, n, starting, len(chains), in_row.get(r - 1), chains)
            if chain.targets:
                in_row[chain.targets[0][0]] = len(chains)
                chains.append(chain)
            r += 1
        # x[r, W-1] made final but never fed: write its K/V (over the placeholder of row r+1, or before the
        # end-of-row token that starts row r+1); without either, it is fed as row r+1's head instead
        writes = [Feed(self.layout.slot(r, W - 1), (r, W - 1)) for r in range(rows - 1)
                  if self.decoded[r] == W and not self.last_fed[r] and (self.layout.eol or self.placeholder[r + 1])]
        return JacobiPlan(chains, writes)

    def _head(self, r: int, n: int) -> tuple[Element, bool]:
        """The first element of row r's chain: its newest final token, or its row start; and whether that is
        a placeholder."""
        lay, W = self.layout, self.layout.cols
        if n > 0:
            return Element(lay.slot(r, n - 1), (r, n - 1), False, 0), False
        if lay.eol:
            return Element(lay.eol_slot(r - 1), EOL, False, 0), False
        if self.decoded[r - 1] == W:  # the real last token of the row above
            return Element(lay.slot(r - 1, W - 1), (r - 1, W - 1), False, 0), False
        return Element(lay.slot(r - 1, W - 1), nearest_decoded(self.decoded, r - 1, W - 1), False, 0), True

    def _chain(self, r: int, n: int, starting: set[int], index: int, up: int | None,
               chains: list[Chain]) -> tuple[Chain, int]:
        """Row r's chain (chain ``index`` of the pass; ``up``: the index of the chain with drafts in row r-1);
        returns it and the last row it reaches. Its first target needs final tokens above it (so every chain
        makes at least one token final); with rows visibility the later ones may also need drafts of row r-1
        (the first ``up_need`` of chain ``up``), which then must be accepted in the same pass for them to be."""
        lay, rows, W = self.layout, self.layout.rows, self.layout.cols
        head, placeholder = self._head(r, n)
        above_drafts = 0
        if self.see_rows and up is not None:
            above_drafts = sum(1 for t in chains[up].targets[:-1] if t[0] == r - 1)
        elements, targets, predictor, up_need, pred = [head], [], [], [], 0
        pos = (r, n)
        while self._ready(*pos, chain_row=r, above=above_drafts if targets else 0):
            targets.append(pos)
            predictor.append(pred)
            up_need.append(self._up_need(*pos) if pos[0] == r and r > 0 and pos[1] > 0 else 0)
            if len(targets) > self.draft_length:  # draft_length drafts, then the target after them
                break
            pr, pc = pos
            nxt = (pr, pc + 1) if pc + 1 < W else (pr + 1, 0)
            if nxt[0] != pr and (nxt[0] >= rows or self.started[nxt[0]] or nxt[0] in starting):
                break  # the next row has its own chain (or this is the image's end)
            if not self._ready(*nxt, chain_row=r, above=above_drafts):
                break
            # the query fed at this draft predicts nxt: it sees the drafts of row r-1 that nxt needs
            k = self._up_need(*nxt) if nxt[0] == r and r > 0 else 0
            slot_up = lay.slot(r - 1, self.decoded[r - 1] + k - 1) if k else -1
            elements.append(Element(lay.slot(pr, pc), pos, True, len(targets), k, slot_up))
            if nxt[0] != pr and lay.eol:  # the end-of-row token, fed in the chain after the row's last draft
                elements.append(Element(lay.eol_slot(pr), EOL, True, len(targets)))
            pred, pos = len(elements) - 1, nxt
        drafts = targets[:-1]
        above = [(tr - 1, tc) if tr > 0 and self.decoded[tr - 1] > tc else None for tr, tc in drafts]
        chain = Chain(elements, targets, predictor, [self.refresh.get(t) for t in drafts], above,
                      start_row=r if n == 0 else None, placeholder=placeholder,
                      previous=[self.drafted.get(t) for t in drafts], up=up if any(up_need) else None,
                      up_need=up_need)
        return chain, (targets[-1][0] if targets else r)

    def commit(self, plan: JacobiPlan, accepted: list[int], finals: list[int] | None = None) -> None:
        """Advance after the pass ran; ``accepted[i]``: how many drafts of chain i were accepted and final;
        ``finals[i]``: how many of its targets became final (default accepted[i] + 1: the target after the
        accepted drafts was sampled; with rows visibility it may be accepted[i], when that target's predictor saw a
        draft of the row above that was rejected). The other targets are drafts again, redrawn next pass."""
        W, refresh, drafted, base = self.layout.cols, {}, {}, 0
        finals = [a + 1 for a in accepted] if finals is None else finals
        for i, (chain, a, f) in enumerate(zip(plan.chains, accepted, finals)):
            if chain.start_row is not None:
                self.started[chain.start_row] = True
                self.placeholder[chain.start_row] = chain.placeholder
                if not chain.placeholder and chain.elements[0].source != EOL:
                    self.last_fed[chain.start_row - 1] = True
            for j, (tr, tc) in enumerate(chain.targets[:f]):
                self.decoded[tr], self.started[tr] = tc + 1, True
                if j < a and tc == W - 1:  # an accepted draft: the real token was fed at its slot (and its query,
                    # predicting x[tr + 1, 0] in its own chain, saw no other chain's draft: its K/V stays)
                    self.last_fed[tr] = True
            for j in range(f, len(chain.targets)):
                refresh[chain.targets[j]] = base + chain.predictor[j]
                if j < chain.drafts:
                    drafted[chain.targets[j]] = (i, j)
            base += len(chain.elements)
        for w in plan.writes:
            self.last_fed[w.source[0]] = True
        self.refresh, self.drafted = refresh, drafted
