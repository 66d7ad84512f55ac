"""Speculative Jacobi drafts: ``sjd`` (raster order) and ``zipar_sjd`` (the ZipAR rows, each with its own chain).

Speculative Jacobi decoding (Teng et al. 2024, arXiv 2410.01699) on the ZipAR rows: every row in flight carries a
chain of draft tokens after its newest final token (``schedule.JacobiSchedule`` plans them). One forward pass runs
the chains' heads and drafts at their own slots; a draft is visible only to the later elements of its own chain.
Walking each chain left to right, draft x with draft distribution q is accepted with probability min(1, p(x) / q(x)),
p being the distribution the model now gives for its position (guidance, temperature, top-k, top-p applied); at the
first rejection the token is drawn from norm(max(0, p - q)) (p where that is empty), and when every draft is
accepted the position after them is drawn from p. Each accepted token is so distributed exactly as sampling it from
p would be, given the tokens before it (the speculative-sampling argument, applied per position).

Drafts not verified in a pass are redrawn from that pass's distributions for their positions (SJD), independently
or coupled to their previous draft (``draft_coupling``: maximal coupling, or Gumbel noise fixed per position, after
MC-SJD); new positions start from a random image token (q uniform) or from the token above (q one-hot, "spatial").
``draft_visibility="rows"`` (zipar_sjd) lets a row's queries also see the drafts of the row above that eq. 1 gives
their targets, and verifies the chains from the top row down (``rows_verdict``). The K/V an accepted draft wrote is
final (it was computed from accepted tokens); a rejected draft's entry is never marked visible, and the next pass
re-feeds its slot. Per pass: one read-back (the accepted counts, which steer the next plan) and a few small index
tensors sent ahead through pinned memory. docs/design.md, "Jacobi drafts", says why each rule keeps exactness.

Torch is imported inside the methods that decode: importing a mode (``zipar --help``, ``zipar steps``) needs none.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Any

from ..layout import EOL
from ..schedule import JacobiPlan, JacobiSchedule
from . import Mode, Pass
from .raster import device_tensor


@dataclass
class JacobiPass(Pass):
    """The chains of a pass for the batch: B images, up to C chains of up to K drafts each."""

    out: Any = None  # (B, C, K+1) query whose output predicts target j
    target: Any = None  # (B, C, K+1) code-buffer entry of target j (padding: the trash)
    drafts: Any = None  # (B, C) number of drafts k of each chain (0 for padding)
    refresh: Any = None  # (B, C, K) last pass's query a draft is redrawn from, -1: new
    above: Any = None  # (B, C, K) code-buffer entry of the token above (spatial start), -1: none
    uniform: Any = None  # (B, C, 2K+1) which of the image's uniforms: K draft draws, K accept draws, the final draw
    # (maximal coupling: 3K+1, then K keep draws)
    previous: Any = None  # (B, C, K) the previous pass's draft of the position, as chain * K' + draft, -1: none
    up: Any = None  # (B, C) rows visibility: the chain of the row above whose drafts the chain saw, -1: none
    up_need: Any = None  # (B, C, K+1) drafts of ``up`` the predictor of target j saw
    seed_at: Any = None  # (B, 1) gumbel coupling, first pass: which uniform seeds the image's noise
    plans: list[JacobiPlan] | None = None


class _Rows:
    """One image's padded rows of every JacobiPass field (filled chain by chain)."""

    def __init__(self, Q: int, C: int, K: int, buffer, scratch: int, keep_draws: bool):
        trash = buffer.trash
        self.slots, self.source, self.chain = [scratch] * Q, [0] * Q, [-2] * Q
        self.need, self.query_target = [Q + 1] * Q, [trash] * Q
        self.cross, self.cross_slot, self.cross_need = [-1] * Q, [-1] * Q, [0] * Q
        self.out, self.target = [[0] * (K + 1) for _ in range(C)], [[trash] * (K + 1) for _ in range(C)]
        self.drafts, self.refresh = [0] * C, [[-1] * K for _ in range(C)]
        self.above, self.previous = [[-1] * K for _ in range(C)], [[-1] * K for _ in range(C)]
        self.up, self.up_need = [-1] * C, [[NEVER] * (K + 1) for _ in range(C)]  # padding: never valid
        self.keep_draws = keep_draws
        self.uniform = [[0] * ((3 if keep_draws else 2) * K + 1) for _ in range(C)]
        self.num_uniforms = self.queries = 0

    def add(self, plan: JacobiPlan, buffer, K: int, previous_K: int) -> _Rows:
        q = n = 0
        for c, ch in enumerate(plan.chains):
            base, k = q, ch.drafts
            for e in ch.elements:
                self.slots[q], self.need[q], self.chain[q] = e.slot, e.need, c if e.draft else -1
                self.source[q] = buffer.draft_index(e.source) if e.draft and e.source != EOL else buffer.index(e.source)
                if e.up_need:  # rows visibility: it sees the first up_need drafts of the row above's chain
                    self.cross[q], self.cross_slot[q], self.cross_need[q] = ch.up, e.up_slot, e.up_need
                q += 1
            for j, (t, pred) in enumerate(zip(ch.targets, ch.predictor)):
                self.out[c][j], self.target[c][j] = base + pred, buffer.index(t)
                self.query_target[base + pred] = buffer.index(t)
            self.drafts[c] = k
            self.up[c] = -1 if ch.up is None else ch.up
            self.up_need[c][: len(ch.up_need)] = ch.up_need
            for j in range(k):
                self.refresh[c][j] = -1 if ch.refresh[j] is None else ch.refresh[j]
                self.above[c][j] = -1 if ch.above[j] is None else buffer.index(ch.above[j])
                if ch.previous and ch.previous[j] is not None:
                    self.previous[c][j] = ch.previous[j][0] * previous_K + ch.previous[j][1]
            # this chain's uniforms: k draft draws, k accept draws, one for the token after the accepted drafts
            # (and, maximal coupling, k draws that decide whether a draft keeps its previous value)
            pad = [0] * (K - k)
            self.uniform[c] = [*range(n, n + k), *pad, *range(n + k, n + 2 * k), *pad, n + 2 * k]
            n += 2 * k + 1
            if self.keep_draws:
                self.uniform[c] += [*range(n, n + k), *pad]
                n += k
        for w in plan.writes:
            self.slots[q], self.source[q], self.chain[q], self.need[q] = w.slot, buffer.index(w.source), -1, 0
            q += 1
        self.num_uniforms, self.queries = n, q
        return self


FIELDS = ("slots", "source", "chain", "need", "query_target", "out", "target", "drafts", "refresh", "above", "uniform")
COUPLED = ("previous",)  # maximal coupling
NEVER = 1 << 20  # more drafts than any chain has
ROWS = ("cross", "cross_slot", "cross_need", "up", "up_need")  # rows visibility


def jacobi_pass(plans: list[JacobiPlan], buffer, scratch: int, to_device, maximal: bool = False, rows: bool = False,
                previous_K: int = 1) -> JacobiPass:
    """Per-image plans -> padded index tensors. Images in the same state share one plan object (planned once);
    its rows are built once. ``maximal``: the fields of maximal coupling (``previous_K``: the last pass's K, by which
    they index its drafts); ``rows``: those of rows visibility."""
    Q = max(max(p.num_queries for p in plans), 1)
    C = max(max((len(p.chains) for p in plans), default=0), 1)
    K = max(max((c.drafts for p in plans for c in p.chains), default=0), 1)
    built: dict[int, _Rows] = {}
    for plan in plans:
        if id(plan) not in built:
            built[id(plan)] = _Rows(Q, C, K, buffer, scratch, maximal).add(plan, buffer, K, previous_K)
    rows = [built[id(p)] for p in plans]
    names = FIELDS + (COUPLED if maximal else ()) + (ROWS if rows else ())
    fields = {name: to_device([getattr(r, name) for r in rows]) for name in names}
    kv_len = max(max(r.slots[: r.queries], default=0) for r in rows) + 1
    return JacobiPass(kv_len=kv_len, draws=[r.num_uniforms for r in rows], plans=plans, **fields)


class Sjd(Mode):
    name = "sjd"
    help = ("speculative Jacobi decoding in raster order: `draft_length` guessed tokens checked per pass, the "
            "sampling distribution kept")
    label = "SJD (Jacobi drafts, raster order)"
    uses = frozenset({"draft_length", "draft_init", "draft_coupling"})
    window_name = None
    keeps = "ntp"
    exact_passes = False
    drafts = True

    @classmethod
    def schedule(cls, layout, config) -> JacobiSchedule:
        return JacobiSchedule(layout, cls.window(layout, config), config.draft_length, config.paper_first_row,
                              see_rows=cls.sees_rows(config))

    @classmethod
    def count_passes(cls, layout, config, accept=None) -> int:
        """Passes (prefill included) when ``accept(chain)`` drafts of every chain are accepted (default: all of
        them, the fewest passes possible)."""
        s = cls.schedule(layout, config)
        s.start_prefill()
        passes = 1
        while not s.done():
            plan = s.plan()
            s.commit(plan, [c.drafts if accept is None else accept(c) for c in plan.chains])
            passes += 1
        return passes

    @classmethod
    def widest_pass(cls, layout, config) -> int:
        """An upper bound. Row r's chain can target x[r, c] only while the row above has c + s final tokens, so a
        row in flight trails the one above by s or more, and below the first row in flight the chains' targets
        number at most W - 1 - (R-1)(s-1) over R rows (each row's targets end s columns before the row above
        reaches; with rows visibility, whose targets may reach into the drafts of the row above, L + 1 per row); the
        first row's chain has at most L + 1. Each target is predicted by one query; a chain that crosses a row end
        also feeds that row's end-of-row token; each row that completes may add one write."""
        W, L, s = layout.cols, config.draft_length, cls.window(layout, config)
        crossings = ceil((L + 1) / W) if layout.eol else 0
        rows_in_flight = 1 if s == W else min(layout.rows, ceil(W / s) + 1)
        best = 0
        for r in range(1, rows_in_flight + 1):
            # rows visibility: a row's targets may reach past the row above's final tokens (to its drafts)
            below = (r - 1) * (L + 1) if cls.sees_rows(config) else \
                min((r - 1) * (L + 1), max(W - 1 - (r - 1) * (s - 1), 0))
            best = max(best, (L + 1) + below + r * crossings + (r if layout.eol or s < W else 0))
        return best

    def __init__(self, layout, config, buffer, codebook_size, device):
        super().__init__(layout, config, buffer, codebook_size, device)
        self.schedules = [self.schedule(layout, config) for _ in range(buffer.codes.shape[0])]
        for schedule in self.schedules:
            schedule.start_prefill()
        self.coupling, self.see_rows = config.draft_coupling, self.sees_rows(config)
        self.prev_probs = None  # (B, Q, V) the previous pass's distributions (draft refresh)
        self.draft_probs = None  # (B, C, K, V) the distributions this pass's drafts were drawn from
        self.seed = None  # gumbel coupling: (B, 1) each image's noise seed, drawn on its first Jacobi pass
        self.finals = None  # rows visibility: (B, C) targets made final per chain (verify -> commit)
        self._finals: list[list[int]] = []  # the last pass's, read back (final_targets)

    @classmethod
    def sees_rows(cls, config) -> bool:
        return "draft_visibility" in cls.uses and config.draft_visibility == "rows"

    def done(self) -> bool:
        return all(s.done() for s in self.schedules)

    def plan(self) -> JacobiPass:
        shared: dict[tuple, JacobiPlan] = {}  # images in the same state share one plan (large batches)
        plans = [shared[k] if (k := s.state()) in shared else shared.setdefault(k, s.plan()) for s in self.schedules]
        assert any(p.chains or p.writes for p in plans), "the Jacobi schedule made no progress"
        previous_K = 1 if self.draft_probs is None else self.draft_probs.shape[2]
        step = jacobi_pass(plans, self.buffer, self.layout.num_slots, lambda x: device_tensor(x, self.device),
                           maximal=self.coupling == "maximal", rows=self.see_rows, previous_K=previous_K)
        if self.coupling == "gumbel" and self.seed is None:  # one more draw per image, after the pass's own
            step.seed_at = device_tensor([[n] for n in step.draws], self.device)
            step.draws = [n + 1 for n in step.draws]
        return step

    def _uniforms(self, step: JacobiPass, u):
        """(B, C, 2K+1 or 3K+1): the image's uniforms each chain uses (0.5 throughout when greedy: p is one-hot)."""
        import torch

        B = step.uniform.shape[0]
        if u is None:
            return torch.full(step.uniform.shape, 0.5, dtype=torch.float64, device=step.uniform.device)
        u = torch.cat([u, torch.full((B, 1), 0.5, dtype=u.dtype, device=u.device)], 1)  # room for empty draws
        return u.gather(1, step.uniform.flatten(1)).view(step.uniform.shape)

    def draft(self, step: JacobiPass, u) -> None:
        """Write every draft of the pass into the buffer's draft region, and keep the q it was drawn from.

        q is the previous pass's distribution for the position (a new position: uniform, or one-hot on the token
        above). ``draft_coupling``: "none" draws the draft afresh; "maximal" keeps the position's previous draft
        x' (drawn from q') with probability min(1, q(x') / q'(x')), else draws from norm(max(0, q - q')); "gumbel"
        takes argmax(log q + g), g the position's own Gumbel noise, the same in every pass. Each gives a draft
        distributed as q given everything the verification conditions on (docs/design.md, "Coupled drafts")."""
        import torch

        from ..sampling import one_hot, residual, sample_from

        uu = self._uniforms(step, u)
        B, C, K = step.refresh.shape
        V = self.codebook_size
        q = torch.full((B, C, K, V), 1.0 / V, device=self.device)  # a new random draft: uniform over the codes
        if self.prev_probs is not None:
            prev = self.prev_probs.gather(1, step.refresh.clamp_min(0).flatten(1)[..., None].expand(-1, -1, V))
            q = torch.where((step.refresh >= 0)[..., None], prev.view(B, C, K, V), q)
        if self.config.draft_init == "spatial":
            above = self.buffer.codes.gather(1, step.above.clamp_min(0).flatten(1)).view(B, C, K)
            q = torch.where(((step.refresh < 0) & (step.above >= 0))[..., None], one_hot(above.clamp(0, V - 1), V), q)
        where = (step.target[..., :K] + self.buffer.draft_base).flatten(1)
        if self.coupling == "gumbel":
            if self.seed is None:
                self.seed = (torch.zeros((B, 1), dtype=torch.long, device=self.device) if u is None
                             else (u.gather(1, step.seed_at) * 2.0 ** 32).long())
            drafts = (q.log() + gumbel_noise(self.seed, step.target[..., :K], V)).argmax(-1)
        else:
            drafts = sample_from(q, uu[..., :K])  # (B, C, K)
        if self.coupling == "maximal" and self.draft_probs is not None:
            has = step.previous >= 0  # the position was a draft last pass, drawn from q_old
            q_old = self.draft_probs.flatten(1, 2).gather(1, step.previous.clamp_min(0).flatten(1)[..., None]
                                                        .expand(-1, -1, V)).view(B, C, K, V)
            old = self.buffer.codes.gather(1, where.clamp_max(self.buffer.codes.shape[1] - 1)).view(B, C, K)
            old = old.clamp(0, V - 1)
            at = old[..., None]
            keep = has & _keep_previous(uu[..., 2 * K + 1:], q_old.gather(-1, at).squeeze(-1), q.gather(-1, at).squeeze(-1))
            redrawn = sample_from(residual(q, q_old), uu[..., :K])
            drafts = torch.where(keep, old, torch.where(has, redrawn, drafts))
        self.draft_probs = q
        valid = torch.arange(K, device=self.device) < step.drafts[..., None]
        self.buffer.write(torch.where(valid, where.view(B, C, K), self.buffer.trash).flatten(1), drafts.flatten(1))

    def verify(self, probs, step: JacobiPass, u):
        """Accept drafts left to right, sample the token after the accepted ones, write the final tokens.
        Returns the accepted counts a (B, C) (on the device).

        Rows visibility: the chains are verified from the top row down; target j of a chain that saw drafts of
        the row above (``up_need[j]`` of them) can be final only if that many were accepted there, so a chain's
        accepted count is min(its own, ``valid``: the targets whose view held), and the token after its accepted
        drafts is sampled only when it is within ``valid`` (else that position stays a draft)."""
        import torch

        from .. import sampling

        u = self._uniforms(step, u)
        codes = self.buffer.codes
        B, C, K1 = step.out.shape
        K, V = K1 - 1, probs.shape[-1]
        p = probs.gather(1, step.out.flatten(1)[..., None].expand(-1, -1, V)).view(B, C, K1, V)
        drafts = codes.gather(1, (step.target[..., :K] + self.buffer.draft_base).clamp_max(codes.shape[1] - 1)
                              .flatten(1)).view(B, C, K)
        drafts = drafts.clamp(0, V - 1)  # padding entries hold junk; they are masked below
        p_d = p[:, :, :K].gather(-1, drafts[..., None]).squeeze(-1)
        q_d = self.draft_probs.gather(-1, drafts[..., None]).squeeze(-1)
        valid = torch.arange(K, device=p.device) < step.drafts[..., None]
        ok = (u[..., K: 2 * K] * q_d < p_d) & valid  # r < p/q without dividing by a zero q
        a = ok.long().cumprod(-1).sum(-1)  # (B, C) drafts accepted before the first rejection
        p_a = p.gather(2, a[..., None, None].expand(-1, -1, 1, V)).squeeze(2)
        q_a = self.draft_probs.gather(2, a.clamp_max(K - 1)[..., None, None].expand(-1, -1, 1, V)).squeeze(2)
        dist = torch.where((a < step.drafts)[..., None], sampling.residual(p_a, q_a), p_a)  # all accepted: from p
        token = sampling.sample_from(dist, None if self.config.temperature == 0 else u[..., 2 * K])
        values = torch.cat([drafts, torch.zeros_like(drafts[..., :1])], -1).scatter_(-1, a[..., None], token[..., None])
        if self.see_rows:
            a, finals = rows_verdict(a, step.up, step.up_need)
            self.finals = finals
        else:
            finals = a + 1
        final = torch.arange(K1, device=p.device) < finals[..., None]
        self.buffer.write(torch.where(final, step.target, self.buffer.trash).flatten(1), values.flatten(1))
        self.prev_probs = probs
        return a

    def commit(self, step: JacobiPass, accepted, stats) -> None:
        import torch

        if self.see_rows:  # the one read-back: it steers the next plan
            counts, finals = torch.stack([accepted, self.finals]).tolist()
        else:
            counts = accepted.tolist()
            finals = [[a + 1 for a in row] for row in counts]
        for b, (schedule, plan) in enumerate(zip(self.schedules, step.plans)):
            mine, made = counts[b][: len(plan.chains)], finals[b][: len(plan.chains)]
            schedule.commit(plan, mine, made)
            stats.sample_passes[b] += bool(plan.chains or plan.writes)
            stats.drafts_proposed += sum(c.drafts for c in plan.chains)
            stats.drafts_accepted += sum(mine)
            stats.chain_steps += len(plan.chains)
        self._finals = finals

    def final_targets(self, step: JacobiPass, accepted):
        """(B, n) code-buffer entries this pass made final."""
        trash = self.buffer.trash
        rows = [[self.buffer.index(t) for ch, f in zip(p.chains, made) for t in ch.targets[:f]]
                for p, made in zip(step.plans, self._finals)]
        width = max(max(len(r) for r in rows), 1)
        return device_tensor([r + [trash] * (width - len(r)) for r in rows], self.device)


def _keep_previous(u, q_old_x, q_x):
    """Maximal coupling: keep the previous draft x' with probability min(1, q(x') / q'(x'))."""
    return u * q_old_x < q_x


def rows_verdict(own, up, up_need):
    """Rows visibility, top row down: chain c's accepted drafts and final targets given its own verdict ``own``
    (B, C) and the accepted drafts of its chain above (``up`` (B, C), -1: none; ``up_need`` (B, C, K+1): the
    drafts of ``up`` target j's predictor saw). Chains are in row order, so ``up`` is an earlier chain."""
    import torch

    accepted = own.clone()
    finals = own + 1
    for c in range(own.shape[1]):
        above = accepted.gather(1, up[:, c: c + 1].clamp_min(0)).squeeze(1)
        above = torch.where(up[:, c] >= 0, above, torch.full_like(above, NEVER))  # no row above: every target
        valid = (up_need[:, c] <= above[:, None]).sum(-1)  # targets whose view held (a prefix: up_need grows, and
        # padding is NEVER)
        accepted[:, c] = torch.minimum(own[:, c], valid)
        finals[:, c] = torch.where(own[:, c] < valid, own[:, c] + 1, valid)
    return accepted, finals


def gumbel_noise(seed, target, V: int):
    """(B, C, K, V) Gumbel(0, 1) noise of each draft's position: a function of the image's seed, the position's
    code-buffer entry and the code only (the same in every pass), from an integer hash (murmur3's 32-bit
    finaliser, on int64 without overflow), so it costs no generator state."""
    import torch

    key = target[..., None] * V + torch.arange(V, device=target.device)
    h = _fmix32((_fmix32(key) + seed[:, :, None, None]) & 0xFFFFFFFF)
    u = (h.double() + 0.5) / 2.0 ** 32
    return (-(-u.log()).log()).float()


def _fmix32(h):
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _mul32(x, c: int):
    """(x * c) mod 2**32 for 0 <= x < 2**32, in int64 without overflow."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & 0xFFFFFFFF


class ZiparSjd(Sjd):
    name = "zipar_sjd"
    help = "ZipAR's rows (as fixed), each row carrying its own `draft_length` Jacobi drafts"
    label = "ZipAR rows with Jacobi drafts"
    uses = frozenset({"window", "draft_length", "draft_init", "draft_coupling", "draft_visibility"})
    window_name = "s"
    keeps = "fixed"
