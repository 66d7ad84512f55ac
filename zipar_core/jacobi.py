"""The Jacobi modes on the device: draw the drafts, run every chain in one pass, verify them left to right.

Speculative Jacobi decoding (Teng et al. 2024, arXiv 2410.01699) on the ZipAR rows: every row in flight
carries a chain of draft tokens after its newest final token (``schedule.JacobiSchedule`` plans them).
One forward pass runs the chains' heads and drafts at their own slots; a draft is visible only to the
later elements of its own chain. Walking each chain left to right, draft x with draft distribution q is
accepted with probability min(1, p(x) / q(x)), p being the distribution the model now gives for its
position (guidance, temperature, top-k, top-p applied); at the first rejection the token is drawn from
norm(max(0, p - q)) (p where that is empty), and when every draft is accepted the position after them is
drawn from p. Each accepted token is so distributed exactly as sampling it from p would be, given the
tokens before it (the speculative-sampling argument, applied per position).

Drafts not verified in a pass are redrawn from that pass's distributions for their positions (SJD); new
positions start from a random image token (q uniform) or from the token above (q one-hot, "spatial").
The K/V an accepted draft wrote is final (it was computed from accepted tokens); a rejected draft's entry
is never marked visible, and the next pass re-feeds its slot. Per pass: one read-back (the accepted counts,
which steer the next plan) and a few small index tensors sent ahead through pinned memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import visibility_mask
from .sampling import apply_guidance, one_hot, probabilities, residual, sample_from, scale_at
from .schedule import DRAFT_TOKEN, EOL, HEAD, JacobiPass


@dataclass
class JacobiStep:
    """Index tensors of one pass for the batch (B images, up to C chains of up to K drafts each)."""

    slots: torch.Tensor  # (B, Q) query slots (padding -> scratch)
    source: torch.Tensor  # (B, Q) index into [codes | drafts] of the token fed
    chain: torch.Tensor  # (B, Q) chain of a draft / in-chain EOL query, -1 for final tokens, -2 padding
    need: torch.Tensor  # (B, Q) accepted drafts of its chain after which its K/V stays
    query_target: torch.Tensor  # (B, Q) code index its output predicts (trash: none), for the guidance scales
    out: torch.Tensor  # (B, C, K+1) query whose output predicts target j
    target: torch.Tensor  # (B, C, K+1) code index of target j (padding -> trash)
    drafts: torch.Tensor  # (B, C) number of drafts k of each chain (0 for padding)
    refresh: torch.Tensor  # (B, C, K) last pass's query a draft is redrawn from, -1: new
    above: torch.Tensor  # (B, C, K) code index of the token above (spatial start), -1: none
    draws: torch.Tensor  # (B, C, 2K+1) index into the image's uniforms (draft draws, accept draws, final draw)
    num_draws: list[int]  # uniforms each image draws this pass
    kv_len: int
    plans: list[JacobiPass]


def build_step(plans: list[JacobiPass], layout, scratch: int, to_device) -> JacobiStep:
    """Per-image plans -> padded index tensors; ``to_device`` copies a nested list to the device. Images in
    the same state share one plan object (the sampler plans each state once); its rows are built once."""
    Q = max(max(p.num_queries for p in plans), 1)
    C = max(max((len(p.chains) for p in plans), default=0), 1)
    K = max(max((c.drafts for p in plans for c in p.chains), default=0), 1)
    built: dict[int, tuple] = {}
    for plan in plans:
        if id(plan) not in built:
            built[id(plan)] = _plan_rows(plan, layout, scratch, Q, C, K)
    rows = [built[id(p)] for p in plans]
    columns = list(zip(*rows))  # per field: one entry per image
    tensors = [to_device(list(x)) for x in columns[:11]]
    kv_len = max(max(r[12] for r in rows), 1)
    return JacobiStep(*tensors, num_draws=list(columns[11]), kv_len=kv_len, plans=plans)


def _plan_rows(plan: JacobiPass, layout, scratch: int, Q: int, C: int, K: int) -> tuple:
    """One image's padded rows of every JacobiStep field, its draw count and its kv length."""
    W, HW = layout.cols, layout.num_tokens
    trash, draft_base = HW + 1, HW + 2  # code buffer: [grid | EOL | trash | drafts of the grid]
    slots, source, chain, need, qtarget = [scratch] * Q, [0] * Q, [-2] * Q, [Q + 1] * Q, [trash] * Q
    out, target = [[0] * (K + 1) for _ in range(C)], [[trash] * (K + 1) for _ in range(C)]
    drafts, refresh = [0] * C, [[-1] * K for _ in range(C)]
    above, draws = [[-1] * K for _ in range(C)], [[0] * (2 * K + 1) for _ in range(C)]
    flat = lambda pos: pos[0] * W + pos[1]  # noqa: E731
    q = n = 0
    for c, ch in enumerate(plan.chains):
        base, k = q, ch.drafts
        for e in ch.elements:
            slots[q], need[q], chain[q] = e.slot, e.need, -1 if e.kind == HEAD else c
            source[q] = HW if e.source == EOL else flat(e.source) + (draft_base if e.kind == DRAFT_TOKEN else 0)
            q += 1
        for j, (t, pred) in enumerate(zip(ch.targets, ch.predictor)):
            out[c][j], target[c][j], qtarget[base + pred] = base + pred, flat(t), flat(t)
        drafts[c] = k
        for j in range(k):
            refresh[c][j] = -1 if ch.refresh[j] is None else ch.refresh[j]
            above[c][j] = -1 if ch.above[j] is None else flat(ch.above[j])
        # this chain's uniforms: k draft draws, k accept draws, one for the token after the accepted drafts
        draws[c] = [*range(n, n + k), *[0] * (K - k), *range(n + k, n + 2 * k), *[0] * (K - k), n + 2 * k]
        n += 2 * k + 1
    for w in plan.writes:
        slots[q], source[q], chain[q], need[q] = w.slot, flat(w.source), -1, 0
        q += 1
    kv_len = max(slots[:q], default=0) + 1
    return slots, source, chain, need, qtarget, out, target, drafts, refresh, above, draws, n, kv_len


class JacobiVerifier:
    """Draws the drafts of a pass and verifies them after it: the sampling side of the Jacobi modes."""

    def __init__(self, config, batch: int, vocab: int, generators, codes: torch.Tensor, scales=None):
        self.cfg, self.B, self.V, self.codes, self.gens = config, batch, vocab, codes, generators
        self.scales = scales  # sampling.guidance_scales: the guidance scale of each target
        self.trash = (codes.shape[1] - 2) // 2 + 1  # codes: [grid | EOL | trash | drafts]
        self.prev_probs = None  # (B, Q, V) the previous pass's distributions (draft refresh)
        self.q = None  # (B, C, K, V) the distributions the pass's drafts were drawn from

    def uniforms(self, step: JacobiStep) -> torch.Tensor:
        """(B, C, 2K+1) U[0, 1): each image draws its own count, in its own order (batch-invariant)."""
        n = max(max(step.num_draws), 1)
        u = torch.full((self.B, n + 1), 0.5, dtype=torch.float64, device=self.codes.device)
        if self.cfg.temperature == 0:  # greedy needs no randomness (p is one-hot; 0.5 picks a fixed draft)
            pass
        elif all(g is self.gens[0] for g in self.gens):  # one generator for the batch: one draw for all
            u[:, :n].uniform_(generator=self.gens[0])
        else:
            for b, g in enumerate(self.gens):
                u[b, : step.num_draws[b]].uniform_(generator=g)
        return u.gather(1, step.draws.flatten(1)).view(step.draws.shape)

    def draw_drafts(self, step: JacobiStep, u: torch.Tensor) -> None:
        """Write every draft of the pass into the draft half of the code buffer, and keep its q."""
        B, C, K = step.refresh.shape
        V, dev = self.V, self.codes.device
        q = torch.full((B, C, K, V), 1.0 / V, device=dev)  # a new random draft: uniform over the image tokens
        if self.prev_probs is not None:
            prev = self.prev_probs.gather(1, step.refresh.clamp_min(0).flatten(1)[..., None].expand(-1, -1, V))
            q = torch.where((step.refresh >= 0)[..., None], prev.view(B, C, K, V), q)
        if self.cfg.draft_init == "spatial":
            above = self.codes.gather(1, step.above.clamp_min(0).flatten(1)).view(B, C, K)
            q = torch.where(((step.refresh < 0) & (step.above >= 0))[..., None], one_hot(above.clamp(0, V - 1), V), q)
        self.q = q
        drafts = sample_from(q, u[..., :K])  # (B, C, K)
        valid = torch.arange(K, device=dev) < step.drafts[..., None]
        where = torch.where(valid, step.target[..., :K] + self.trash + 1, self.trash)
        self.codes.scatter_(1, where.flatten(1), drafts.flatten(1))

    residual = staticmethod(residual)  # a test swaps it for a wrong rule, to show the distribution test fails

    def probabilities(self, logits: torch.Tensor, step: JacobiStep) -> torch.Tensor:
        cfg = self.cfg
        if cfg.guidance:
            logits = apply_guidance(logits, self.B, scale_at(self.scales, step.query_target, logits.dtype))
        return probabilities(logits, cfg.temperature, cfg.top_k, cfg.top_p)  # (B, Q, V)

    def verify(self, probs: torch.Tensor, step: JacobiStep, u: torch.Tensor) -> torch.Tensor:
        """Accept drafts left to right, sample the token after the accepted ones, write the final tokens.
        Returns the accepted counts a (B, C) (on the device)."""
        B, C, K1 = step.out.shape
        K, V = K1 - 1, self.V
        p = probs.gather(1, step.out.flatten(1)[..., None].expand(-1, -1, V)).view(B, C, K1, V)
        drafts = self.codes.gather(1, (step.target[..., :K] + self.trash + 1).clamp_max(self.codes.shape[1] - 1)
                                   .flatten(1)).view(B, C, K)
        drafts = drafts.clamp(0, V - 1)  # padding entries hold junk; they are masked below
        p_d = p[:, :, :K].gather(-1, drafts[..., None]).squeeze(-1)
        q_d = self.q.gather(-1, drafts[..., None]).squeeze(-1)
        valid = torch.arange(K, device=p.device) < step.drafts[..., None]
        ok = (u[..., K: 2 * K] * q_d < p_d) & valid  # r < p/q without dividing by a zero q
        a = ok.long().cumprod(-1).sum(-1)  # (B, C) drafts accepted before the first rejection
        p_a = p.gather(2, a[..., None, None].expand(-1, -1, 1, V)).squeeze(2)
        q_a = self.q.gather(2, a.clamp_max(K - 1)[..., None, None].expand(-1, -1, 1, V)).squeeze(2)
        dist = torch.where((a < step.drafts)[..., None], self.residual(p_a, q_a), p_a)  # all accepted: from p
        token = sample_from(dist, None if self.cfg.temperature == 0 else u[..., 2 * K])
        values = torch.cat([drafts, torch.zeros_like(drafts[..., :1])], -1).scatter_(-1, a[..., None], token[..., None])
        final = torch.arange(K1, device=p.device) <= a[..., None]
        self.codes.scatter_(1, torch.where(final, step.target, self.trash).flatten(1), values.flatten(1))
        self.prev_probs = probs
        return a


def chain_visibility(filled: torch.Tensor, chain_slot: torch.Tensor, slots: torch.Tensor, chain: torch.Tensor,
                     kv_len: int) -> torch.Tensor:
    """(rows, q, kv_len) bool: a query sees final slots at or before its own, and the slots of its own
    chain's drafts fed this pass at or before its own (never another chain's drafts)."""
    j = torch.arange(kv_len, device=slots.device)
    own_chain = (chain_slot[:, None, :kv_len] == chain[:, :, None]) & (chain[:, :, None] >= 0)
    return visibility_mask(filled, slots, kv_len) | (own_chain & (j <= slots[:, :, None]))

