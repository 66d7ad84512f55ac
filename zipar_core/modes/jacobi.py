"""Speculative Jacobi drafts: ``sjd`` (raster order) and ``zipar_sjd`` (the ZipAR rows, each with its own chain).

Speculative Jacobi decoding (Teng et al. 2024, arXiv 2410.01699) on the ZipAR rows: every row in flight carries a
chain of draft tokens after its newest final token (``schedule.JacobiSchedule`` plans them). One forward pass runs
the chains' heads and drafts at their own slots; a draft is visible only to the later elements of its own chain.
Walking each chain left to right, draft x with draft distribution q is accepted with probability min(1, p(x) / q(x)),
p being the distribution the model now gives for its position (guidance, temperature, top-k, top-p applied); at the
first rejection the token is drawn from norm(max(0, p - q)) (p where that is empty), and when every draft is
accepted the position after them is drawn from p. Each accepted token is so distributed exactly as sampling it from
p would be, given the tokens before it (the speculative-sampling argument, applied per position).

Drafts not verified in a pass are redrawn from that pass's distributions for their positions (SJD); new positions
start from a random image token (q uniform) or from the token above (q one-hot, "spatial"). The K/V an accepted
draft wrote is final (it was computed from accepted tokens); a rejected draft's entry is never marked visible, and
the next pass re-feeds its slot. Per pass: one read-back (the accepted counts, which steer the next plan) and a few
small index tensors sent ahead through pinned memory.

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
    plans: list[JacobiPlan] | None = None


class _Rows:
    """One image's padded rows of every JacobiPass field (filled chain by chain)."""

    def __init__(self, Q: int, C: int, K: int, buffer, scratch: int):
        trash = buffer.trash
        self.slots, self.source, self.chain = [scratch] * Q, [0] * Q, [-2] * Q
        self.need, self.query_target = [Q + 1] * Q, [trash] * Q
        self.out, self.target = [[0] * (K + 1) for _ in range(C)], [[trash] * (K + 1) for _ in range(C)]
        self.drafts, self.refresh = [0] * C, [[-1] * K for _ in range(C)]
        self.above, self.uniform = [[-1] * K for _ in range(C)], [[0] * (2 * K + 1) for _ in range(C)]
        self.num_uniforms = self.queries = 0

    def add(self, plan: JacobiPlan, buffer, K: int) -> _Rows:
        q = n = 0
        for c, ch in enumerate(plan.chains):
            base, k = q, ch.drafts
            for e in ch.elements:
                self.slots[q], self.need[q], self.chain[q] = e.slot, e.need, c if e.draft else -1
                self.source[q] = buffer.draft_index(e.source) if e.draft and e.source != EOL else buffer.index(e.source)
                q += 1
            for j, (t, pred) in enumerate(zip(ch.targets, ch.predictor)):
                self.out[c][j], self.target[c][j] = base + pred, buffer.index(t)
                self.query_target[base + pred] = buffer.index(t)
            self.drafts[c] = k
            for j in range(k):
                self.refresh[c][j] = -1 if ch.refresh[j] is None else ch.refresh[j]
                self.above[c][j] = -1 if ch.above[j] is None else buffer.index(ch.above[j])
            # this chain's uniforms: k draft draws, k accept draws, one for the token after the accepted drafts
            self.uniform[c] = [*range(n, n + k), *[0] * (K - k), *range(n + k, n + 2 * k), *[0] * (K - k), n + 2 * k]
            n += 2 * k + 1
        for w in plan.writes:
            self.slots[q], self.source[q], self.chain[q], self.need[q] = w.slot, buffer.index(w.source), -1, 0
            q += 1
        self.num_uniforms, self.queries = n, q
        return self


FIELDS = ("slots", "source", "chain", "need", "query_target", "out", "target", "drafts", "refresh", "above", "uniform")


def jacobi_pass(plans: list[JacobiPlan], buffer, scratch: int, to_device) -> JacobiPass:
    """Per-image plans -> padded index tensors. Images in the same state share one plan object (planned once);
    its rows are built once."""
    Q = max(max(p.num_queries for p in plans), 1)
    C = max(max((len(p.chains) for p in plans), default=0), 1)
    K = max(max((c.drafts for p in plans for c in p.chains), default=0), 1)
    built: dict[int, _Rows] = {}
    for plan in plans:
        if id(plan) not in built:
            built[id(plan)] = _Rows(Q, C, K, buffer, scratch).add(plan, buffer, K)
    rows = [built[id(p)] for p in plans]
    fields = {name: to_device([getattr(r, name) for r in rows]) for name in FIELDS}
    kv_len = max(max(r.slots[: r.queries], default=0) for r in rows) + 1
    return JacobiPass(kv_len=kv_len, draws=[r.num_uniforms for r in rows], plans=plans, **fields)


class Sjd(Mode):
    name = "sjd"
    help = ("speculative Jacobi decoding in raster order: `draft_length` guessed tokens checked per pass, the "
            "sampling distribution kept")
    label = "SJD (Jacobi drafts, raster order)"
    uses = frozenset({"draft_length", "draft_init"})
    window_name = None
    keeps = "ntp"
    exact_passes = False
    drafts = True

    @classmethod
    def schedule(cls, layout, config) -> JacobiSchedule:
        return JacobiSchedule(layout, cls.window(layout, config), config.draft_length, config.paper_first_row)

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
        reaches); the first row's chain has at most L + 1. Each target is predicted by one query; a chain that
        crosses a row end also feeds that row's end-of-row token; each row that completes may add one write."""
        W, L, s = layout.cols, config.draft_length, cls.window(layout, config)
        crossings = ceil((L + 1) / W) if layout.eol else 0
        rows_in_flight = 1 if s == W else min(layout.rows, ceil(W / s) + 1)
        best = 0
        for r in range(1, rows_in_flight + 1):
            below = min((r - 1) * (L + 1), max(W - 1 - (r - 1) * (s - 1), 0))
            best = max(best, (L + 1) + below + r * crossings + (r if layout.eol or s < W else 0))
        return best

    def __init__(self, layout, config, buffer, codebook_size, device):
        super().__init__(layout, config, buffer, codebook_size, device)
        self.schedules = [self.schedule(layout, config) for _ in range(buffer.codes.shape[0])]
        for schedule in self.schedules:
            schedule.start_prefill()
        self.prev_probs = None  # (B, Q, V) the previous pass's distributions (draft refresh)
        self.draft_probs = None  # (B, C, K, V) the distributions this pass's drafts were drawn from

    def done(self) -> bool:
        return all(s.done() for s in self.schedules)

    def plan(self) -> JacobiPass:
        shared: dict[tuple, JacobiPlan] = {}  # images in the same state share one plan (large batches)
        plans = [shared[k] if (k := s.state()) in shared else shared.setdefault(k, s.plan()) for s in self.schedules]
        assert any(p.chains or p.writes for p in plans), "the Jacobi schedule made no progress"
        return jacobi_pass(plans, self.buffer, self.layout.num_slots, lambda x: device_tensor(x, self.device))

    def _uniforms(self, step: JacobiPass, u):
        """(B, C, 2K+1): the image's uniforms each chain uses (0.5 throughout when greedy: p is one-hot)."""
        import torch

        B = step.uniform.shape[0]
        if u is None:
            return torch.full(step.uniform.shape, 0.5, dtype=torch.float64, device=step.uniform.device)
        u = torch.cat([u, torch.full((B, 1), 0.5, dtype=u.dtype, device=u.device)], 1)  # room for empty draws
        return u.gather(1, step.uniform.flatten(1)).view(step.uniform.shape)

    def draft(self, step: JacobiPass, u) -> None:
        """Write every draft of the pass into the buffer's draft region, and keep the q it was drawn from."""
        import torch

        from ..sampling import one_hot, sample_from

        u = self._uniforms(step, u)
        B, C, K = step.refresh.shape
        V = self.codebook_size
        q = torch.full((B, C, K, V), 1.0 / V, device=self.device)  # a new random draft: uniform over the codes
        if self.prev_probs is not None:
            prev = self.prev_probs.gather(1, step.refresh.clamp_min(0).flatten(1)[..., None].expand(-1, -1, V))
            q = torch.where((step.refresh >= 0)[..., None], prev.view(B, C, K, V), q)
        if self.config.draft_init == "spatial":
            above = self.buffer.codes.gather(1, step.above.clamp_min(0).flatten(1)).view(B, C, K)
            q = torch.where(((step.refresh < 0) & (step.above >= 0))[..., None], one_hot(above.clamp(0, V - 1), V), q)
        self.draft_probs = q
        drafts = sample_from(q, u[..., :K])  # (B, C, K)
        valid = torch.arange(K, device=self.device) < step.drafts[..., None]
        where = torch.where(valid, step.target[..., :K] + self.buffer.draft_base, self.buffer.trash)
        self.buffer.write(where.flatten(1), drafts.flatten(1))

    def verify(self, probs, step: JacobiPass, u):
        """Accept drafts left to right, sample the token after the accepted ones, write the final tokens.
        Returns the accepted counts a (B, C) (on the device)."""
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
        final = torch.arange(K1, device=p.device) <= a[..., None]
        self.buffer.write(torch.where(final, step.target, self.buffer.trash).flatten(1), values.flatten(1))
        self.prev_probs = probs
        return a

    def commit(self, step: JacobiPass, accepted, stats) -> None:
        counts = accepted.tolist()  # the one read-back: it steers the next plan
        for b, (schedule, plan) in enumerate(zip(self.schedules, step.plans)):
            mine = counts[b][: len(plan.chains)]
            schedule.commit(plan, mine)
            stats.sample_passes[b] += bool(plan.chains or plan.writes)
            stats.drafts_proposed += sum(c.drafts for c in plan.chains)
            stats.drafts_accepted += sum(mine)
            stats.chain_steps += len(plan.chains)

    def final_targets(self, step: JacobiPass, accepted):
        """(B, C) code-buffer entry of each chain's newest final token (the one the next pass feeds first)."""
        trash, counts = self.buffer.trash, accepted.tolist()
        rows = [[self.buffer.index(ch.targets[a]) for ch, a in zip(p.chains, acc)] for p, acc in zip(step.plans, counts)]
        width = max(max(len(r) for r in rows), 1)
        return device_tensor([r + [trash] * (width - len(r)) for r in rows], self.device)


class ZiparSjd(Sjd):
    name = "zipar_sjd"
    help = "ZipAR's rows (as fixed), each row carrying its own `draft_length` Jacobi drafts"
    label = "ZipAR rows with Jacobi drafts"
    uses = frozenset({"window", "draft_length", "draft_init"})
    window_name = "s"
    keeps = "fixed"
