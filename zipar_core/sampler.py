"""The ZipAR decoding loop: the one place that knows the schedule, the cache slots and the mask.

``generate`` runs prefill, then one forward pass per step of the schedule (``schedule.py``), feeding
every token at its own slot under a visibility mask that shows only slots holding decoded tokens
(``cache.py``), and samples the predicted tokens (``sampling.py``). Fixed and ntp schedules do not depend
on the sampled values, so all their index tensors are built before the loop and the loop never waits
for the device; adaptive mode reads each pass's accept decisions back (one sync per verifying pass),
because the next pass depends on them.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .cache import visibility_mask
from .config import ZipARConfig
from .errors import SettingError
from .jacobi import JacobiVerifier, build_step, chain_visibility
from .protocol import EOL_TOKEN, Conditioning, ZipARModel
from .sampling import apply_guidance, guidance_scales, probabilities, sample_from, scale_at, speculative_step
from .schedule import (
    DRAFT,
    EOL,
    JACOBI_MODES,
    NONE,
    VERIFY,
    JacobiSchedule,
    Pass,
    Schedule,
    count_passes,
    passes_known_up_front,
)
from .step_runner import StaticStep


class DecodingCancelled(RuntimeError):
    """Raised when the ``cancel`` hook asks to stop. ``result`` holds what was decoded until then: the codes (-1
    where a token was not decoded yet) and the statistics (``stats.stopped`` True)."""

    def __init__(self, message: str, result: ZipARResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class DecodeStats:
    passes: int = 0  # forward passes of the batch, prefill included
    tokens: int = 0  # image tokens per image (rows * cols)
    batch_size: int = 1
    drafts_proposed: int = 0  # adaptive: row-start drafts verified; sjd / zipar_sjd: Jacobi draft tokens verified
    drafts_accepted: int = 0
    chain_steps: int = 0  # sjd / zipar_sjd: chains run (one per row in flight per pass, summed over images)
    seconds: float = 0.0  # wall time of generate()
    model_seconds: float | None = None  # time inside the model's forward calls (None: not measured)
    sample_passes: list[int] = field(default_factory=list)  # passes each image needed on its own
    expected_passes: int | None = None  # known up front in ntp/fixed mode (progress bars)
    stopped: bool = False  # cancelled before the grid was complete (the codes hold -1 where not decoded)

    @property
    def tokens_per_pass(self) -> float:
        return self.tokens / max(self.passes, 1)

    @property
    def acceptance_rate(self) -> float | None:
        return self.drafts_accepted / self.drafts_proposed if self.drafts_proposed else None

    @property
    def mean_accepted_length(self) -> float | None:
        """Jacobi modes: tokens a chain made final per pass (its accepted drafts + the token after them)."""
        return (self.drafts_accepted + self.chain_steps) / self.chain_steps if self.chain_steps else None

    def as_dict(self) -> dict:
        return {"passes": self.passes, "tokens": self.tokens, "batch_size": self.batch_size,
                "tokens_per_pass": self.tokens_per_pass, "drafts_proposed": self.drafts_proposed,
                "drafts_accepted": self.drafts_accepted, "mean_accepted_length": self.mean_accepted_length,
                "seconds": self.seconds, "model_seconds": self.model_seconds,
                "sample_passes": list(self.sample_passes), "stopped": self.stopped}


@dataclass
class ZipARResult:
    codes: torch.Tensor  # (B, H, W) long VQ codes
    stats: DecodeStats


# callback(step, codes, stats) -> None, or a (B, H, W) tensor that replaces the tokens sampled in that pass
StepCallback = Callable[[int, torch.Tensor, DecodeStats], "torch.Tensor | None"]


@dataclass
class _Step:
    """Index tensors of one pass, per sample (B or 1 rows): what is fed where and what it predicts."""

    slots: torch.Tensor  # (b, q) long; padding -> the scratch slot
    source: torch.Tensor  # (b, q) long index into the flat code buffer (EOL and padding point at specials)
    target: torch.Tensor  # (b, q) long index the sampled token is written to (unused -> trash entry)
    kv_len: int
    plans: list[Pass]


@torch.no_grad()
def generate(model: ZipARModel, cond: Conditioning, config: ZipARConfig, generator=None,
             callback: StepCallback | None = None, cancel: Callable[[], bool] | None = None,
             profile: bool = False, cache=None, compile: bool = False, cuda_graphs: bool = False) -> ZipARResult:
    """Decode ``cond.batch_size`` code grids with the ZipAR schedule of ``config``.

    generator: None, one ``torch.Generator`` shared by the batch, or one per image (then each image gets
    exactly the tokens it would get alone). callback(step, codes, stats) runs after every pass; codes is the
    live (B, H, W) buffer, -1 where undecoded: copy it to keep it. It may return a (B, H, W) tensor to replace
    the tokens that pass sampled (their final values, which the next pass feeds); changing any other token
    is refused, because the model has read it already (or, for an adaptive draft, still verifies it).
    cancel() -> True stops with :class:`DecodingCancelled` within one pass; the exception carries the partial
    result. profile: synchronise around model calls to time them.
    compile / cuda_graphs: run the decoding steps at static shapes (``step_runner.StaticStep``) through
    ``torch.compile`` and, on CUDA, CUDA graphs captured per number of query tokens.
    """
    t0 = time.perf_counter()
    layout, B, N = cond.layout, cond.batch_size, cond.num_rows
    if config.guidance != cond.guidance:
        raise SettingError("guidance_scale", "the conditioning was prepared with {name} "
                           f"{'!= 1' if cond.guidance else '1'} but the config has {config.guidance_scale}; "
                           "prepare it with the same {name}")
    config.window_for(layout.cols)  # validate the window against the grid before any model work
    dev, V, HW = model.device, model.codebook_size, layout.num_tokens
    scratch = layout.num_slots  # a slot no query ever sees: padded queries write there
    jacobi = config.mode in JACOBI_MODES
    # [grid | EOL sentinel | trash], and in the Jacobi modes [... | the draft of every grid position]
    codes = torch.full((B, 2 * HW + 2 if jacobi else HW + 2), -1, dtype=torch.long, device=dev)
    codes[:, HW] = EOL_TOKEN
    scales = guidance_scales(config, cond.guidance_schedule, HW, dev)  # per-token guidance scale (issue 23)
    sampler = _TokenSampler(config, B, V, generator, codes, scales)  # checks the generators before any allocation
    filled = torch.zeros((N, scratch + 1), dtype=torch.bool, device=dev)
    filled[:, : layout.prefix] = cond.prefix_valid.to(dev)
    cache = cache if cache is not None else model.new_cache(cond, scratch + 1)
    stats = DecodeStats(tokens=HW, batch_size=B, model_seconds=0.0 if profile or dev.type == "cpu" else None)
    if passes_known_up_front(config):
        stats.expected_passes = count_passes(layout, config)
    timer = _ModelTimer(stats, profile, dev)
    if compile or cuda_graphs:
        static = StaticStep(model, cond, cache, scratch + 1, compile=compile, cuda_graphs=cuda_graphs)
        step_forward = lambda tokens, slots, visible: static(tokens, slots, visible)  # noqa: E731
    else:
        step_forward = lambda tokens, slots, visible: model.forward(cond, tokens, slots, visible, cache)  # noqa: E731
    sched = [Schedule(layout, config) for _ in range(B)] if config.mode == "adaptive" else []
    if jacobi:
        sched = [JacobiSchedule(layout, config) for _ in range(B)]

    try:
        _decode(model, cond, config, codes, sampler, filled, cache, stats, timer, step_forward, sched, callback,
                cancel, scratch)
    except DecodingCancelled as stop:
        stats.stopped, stats.seconds = True, time.perf_counter() - t0
        stop.result = ZipARResult(codes[:, :HW].view(B, layout.rows, layout.cols).clone(), stats)
        raise
    stats.seconds = time.perf_counter() - t0
    return ZipARResult(codes[:, :HW].view(B, layout.rows, layout.cols).clone(), stats)


def _decode(model, cond, config, codes, sampler, filled, cache, stats, timer, step_forward, sched, callback, cancel,
            scratch) -> None:
    """Prefill, then every pass of the schedule."""
    layout, B, N, dev, HW = cond.layout, cond.batch_size, cond.num_rows, codes.device, cond.layout.num_tokens
    jacobi = config.mode in JACOBI_MODES
    prefix_slots = torch.arange(layout.prefix, device=dev).expand(N, -1)
    with timer:
        logits = model.prefill(cond, cache, visibility_mask(filled, prefix_slots, layout.prefix))
    first = torch.zeros((B, 1), dtype=torch.long, device=dev)  # x[0, 0] is code index 0
    sampler.choose(logits[:, None], first, [1] * B)
    stats.passes, stats.sample_passes = 1, [1] * B
    _notify(callback, cancel, 0, codes, layout, stats, lambda: first)

    if jacobi:
        verifier = JacobiVerifier(config, B, model.codebook_size, sampler.gens, codes, sampler.scales)
        _decode_jacobi(sched, verifier, step_forward, cond, filled, timer,
                       stats, lambda f: _notify(callback, cancel, stats.passes - 1, codes, layout, stats, f), scratch)
    for step in ([] if jacobi else _steps(sched, layout, config, scratch, dev)):
        plans = step.plans * (B // len(step.plans))  # fixed/ntp: one plan shared by every image
        slots = step.slots.repeat(N // step.slots.shape[0], 1)  # (rows, q): images x guidance branches
        filled.scatter_(1, slots, True)
        visible = visibility_mask(filled, slots, step.kv_len)
        tokens = codes.gather(1, step.source.expand(B, -1)).repeat(N // B, 1)
        with timer:
            logits = step_forward(tokens, slots, visible)
        drafts = {b: (i, f.use) for b, p in enumerate(plans) for i, f in enumerate(p.feeds)
                  if f.use in (DRAFT, VERIFY)} if sched else None
        accepted = sampler.choose(logits, step.target.expand(B, -1), [len(p.feeds) for p in plans], drafts)
        for b, s in enumerate(sched):
            s.commit(plans[b], accepted.get(b, False))
        _count(stats, plans, accepted)
        _notify(callback, cancel, stats.passes - 1, codes, layout, stats,
                lambda: _final_targets(step.target, B, drafts, HW + 1))


class _TokenSampler:
    """Turns a pass's logits into tokens: guidance, filters, per-sample seeded draws, adaptive verify."""

    def __init__(self, config: ZipARConfig, batch: int, vocab: int, generator, codes: torch.Tensor, scales=None):
        self.cfg, self.B, self.V, self.codes, self.device = config, batch, vocab, codes, codes.device
        self.scales = scales  # sampling.guidance_scales: the guidance scale of each target
        self.gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * batch
        if len(self.gens) != batch:
            raise ValueError(f"got {len(self.gens)} generators for a batch of {batch} images; "
                             "pass one per image or a single one")
        adaptive = config.mode == "adaptive"
        self.p_draft = torch.zeros((batch, vocab), device=self.device) if adaptive else None  # p_k of the pending draft
        self.draft = torch.zeros(batch, dtype=torch.long, device=self.device) if adaptive else None

    def choose(self, logits, target, counts, drafts: dict[int, tuple[int, str]] | None = None):
        """logits (rows, q, V) of one pass; target (B, q) flat code index each query's token goes to;
        counts: real feeds per sample; drafts: sample -> (query, DRAFT|VERIFY) for adaptive row starts.
        Writes the sampled tokens into the code buffer; returns {sample: accepted} for VERIFY feeds."""
        cfg, B = self.cfg, self.B
        if cfg.guidance:
            logits = apply_guidance(logits, B, scale_at(self.scales, target, logits.dtype))
        probs = probabilities(logits, cfg.temperature, cfg.top_k, cfg.top_p)  # (B, q, V)
        drafts = drafts or {}
        uniform, accept, resample = self._draw(probs.shape[1], counts, drafts)
        self.codes.scatter_(1, target, sample_from(probs, uniform))
        return self._verify(probs, target, drafts, accept, resample) if drafts else {}

    def _draw(self, q: int, counts: list[int], drafts):
        """Per sample, in a fixed order: one U[0, 1) per real feed, then, if it verifies a draft, the accept
        draw r and the residual's draw. The draws depend only on the sample's own schedule, so an image gets
        the same tokens alone and in a batch (given its own generator)."""
        if self.cfg.temperature == 0:
            return None, torch.full((self.B,), 0.5, device=self.device), None  # greedy: p is one-hot
        f64 = dict(dtype=torch.float64, device=self.device)  # float32 draws sit on a 6e-8 grid
        uniform, accept, resample = torch.zeros((self.B, q), **f64), torch.zeros(self.B, **f64), torch.zeros(self.B, **f64)
        for b, g in enumerate(self.gens):
            uniform[b, : counts[b]].uniform_(generator=g)
            if drafts.get(b, (0, None))[1] == VERIFY:
                accept[b : b + 1].uniform_(generator=g)
                resample[b : b + 1].uniform_(generator=g)
        return uniform, accept, resample

    def _verify(self, probs, target, drafts, accept, resample) -> dict[int, bool]:
        """Adaptive row starts (paper eq. 2-3): a DRAFT keeps its sample as x[r, 0] ~ p_k; a VERIFY checks
        the pending draft against p_{k+1} and accepts or resamples from the residual."""
        b_idx = _device_tensor(list(drafts), self.device)
        q_idx = _device_tensor([q for q, _ in drafts.values()], self.device)
        verifying = [use == VERIFY for _, use in drafts.values()]
        p_new, tgt = probs[b_idx, q_idx], target[b_idx, q_idx]  # (n, V), (n,)
        token = self.codes[b_idx, tgt]  # a DRAFT's freshly sampled token
        accepted: dict[int, bool] = {}
        if any(verifying):
            v = _device_tensor(verifying, self.device, torch.bool)
            checked, ok = speculative_step(self.draft[b_idx], self.p_draft[b_idx], p_new, accept[b_idx],
                                           None if resample is None else resample[b_idx])
            token = torch.where(v, checked, token)
            self.codes[b_idx, tgt] = token
            for b, flag, is_verify in zip(drafts, ok.tolist(), verifying):  # the sync adaptive mode needs
                if is_verify:
                    accepted[b] = flag
        self.draft[b_idx] = token
        self.p_draft[b_idx] = p_new
        return accepted


class _ModelTimer:
    def __init__(self, stats: DecodeStats, profile: bool, device: torch.device):
        self.stats, self.sync = stats, profile and device.type == "cuda"

    def __enter__(self):
        if self.stats.model_seconds is not None:
            if self.sync:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

    def __exit__(self, *exc):
        if self.stats.model_seconds is not None and exc[0] is None:
            if self.sync:
                torch.cuda.synchronize()
            self.stats.model_seconds += time.perf_counter() - self.t


def _build_step(plans: list[Pass], layout, scratch: int, device) -> _Step:
    """Per-sample plans -> padded index tensors (padding feeds x[0,0] at the scratch slot)."""
    W, HW = layout.cols, layout.num_tokens
    q = max(len(p.feeds) for p in plans)
    slots = [[scratch] * q for _ in plans]
    source = [[0] * q for _ in plans]
    target = [[HW + 1] * q for _ in plans]
    for b, p in enumerate(plans):
        for i, f in enumerate(p.feeds):
            slots[b][i] = f.slot
            source[b][i] = HW if f.source == EOL else f.source[0] * W + f.source[1]
            if f.target is not None and f.use != NONE:
                target[b][i] = f.target[0] * W + f.target[1]
    kv_len = max(p.max_slot for p in plans if p.feeds) + 1
    return _Step(*(_device_tensor(x, device) for x in (slots, source, target)), kv_len, plans)


def _device_tensor(data, device, dtype=torch.long) -> torch.Tensor:
    """Python data -> a tensor on ``device``. On CUDA the copy goes from pinned memory without blocking,
    so the host does not wait for the passes still queued on the GPU (PyTorch's pinned-memory cache keeps
    the staging buffer alive until the copy has run)."""
    t = torch.tensor(data, dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _steps(sched: list[Schedule], layout, config: ZipARConfig, scratch: int, device):
    """The passes after prefill: built ahead for ntp/fixed, one at a time from each image's schedule
    (advanced by the caller after the pass) in adaptive mode."""
    if not sched:
        schedule = Schedule(layout, config)
        schedule.start_prefill()
        yield from _precomputed_steps(schedule, layout, scratch, device)
        return
    for s in sched:
        s.start_prefill()
    while not all(s.done() for s in sched):
        yield _build_step([s.plan() for s in sched], layout, scratch, device)


def _precomputed_steps(schedule: Schedule, layout, scratch: int, device):
    """All steps of a value-independent (ntp/fixed) schedule, built before decoding starts."""
    steps = []
    while not schedule.done():
        plan = schedule.plan()
        steps.append(_build_step([plan], layout, scratch, "cpu"))
        schedule.commit(plan)
    # one host->device copy for the whole schedule; per-pass slices are views
    for field_name in ("slots", "source", "target"):
        flat = torch.cat([getattr(s, field_name).flatten() for s in steps]).to(device)
        offset = 0
        for s in steps:
            n = getattr(s, field_name).numel()
            setattr(s, field_name, flat[offset: offset + n].view(1, -1))
            offset += n
    return steps


def _count(stats: DecodeStats, plans: list[Pass], accepted: dict[int, bool]) -> None:
    stats.passes += 1
    for b, plan in enumerate(plans):
        stats.sample_passes[b] += bool(plan.feeds)
        if any(f.use == VERIFY for f in plan.feeds):
            stats.drafts_proposed += 1
            stats.drafts_accepted += int(accepted.get(b, False))


def _decode_jacobi(sched, verifier, step_forward, cond, filled, timer, stats, notify, scratch: int) -> None:
    """The passes of the Jacobi modes (``jacobi.py``): plan every image's chains, draw the drafts, run them
    in one forward, verify, keep the K/V of what was accepted; one read-back per pass."""
    layout, codes, B = cond.layout, verifier.codes, cond.batch_size
    rep, dev = cond.num_rows // B, codes.device
    chain_slot = torch.full_like(filled, -1, dtype=torch.long)  # (rows, slots): chain of this pass's drafts
    for s in sched:
        s.start_prefill()
    while not all(s.done() for s in sched):
        shared: dict[tuple, object] = {}  # samples in the same state share one plan (large batches)
        plans = [shared[k] if (k := s.state()) in shared else shared.setdefault(k, s.plan()) for s in sched]
        assert any(p.chains or p.writes for p in plans), "the Jacobi schedule made no progress"
        step = build_step(plans, layout, scratch, lambda x: _device_tensor(x, dev))
        slots, chain, need = (t.repeat(rep, 1) for t in (step.slots, step.chain, step.need))
        u = verifier.uniforms(step)
        verifier.draw_drafts(step, u)
        filled.scatter_(1, torch.where(need == 0, slots, scratch), True)  # heads and writes are final tokens
        in_chain = chain >= 0
        chain_slot.scatter_(1, torch.where(in_chain, slots, scratch), chain)
        visible = chain_visibility(filled, chain_slot, slots, chain, step.kv_len)
        tokens = codes.gather(1, step.source).repeat(rep, 1)
        with timer:
            logits = step_forward(tokens, slots, visible)
        a = verifier.verify(verifier.probabilities(logits, step), step, u)
        kept = in_chain & (a.repeat(rep, 1).gather(1, chain.clamp_min(0)) >= need)  # accepted drafts' K/V
        filled.scatter_(1, torch.where(kept, slots, scratch), True)
        chain_slot.scatter_(1, torch.where(in_chain, slots, scratch), -1)
        accepted = a.tolist()  # the one read-back: it steers the next plan
        for b, (s, plan) in enumerate(zip(sched, plans)):
            counts = accepted[b][: len(plan.chains)]
            s.commit(plan, counts)
            stats.sample_passes[b] += bool(plan.chains or plan.writes)
            stats.drafts_proposed += sum(c.drafts for c in plan.chains)
            stats.drafts_accepted += sum(counts)
            stats.chain_steps += len(plan.chains)
        stats.passes += 1
        notify(lambda: _jacobi_final_targets(plans, accepted, layout, dev))


def _jacobi_final_targets(plans, accepted, layout, device) -> torch.Tensor:
    """(B, C) code index of each chain's newest final token (the one the next pass feeds first)."""
    W, trash = layout.cols, layout.num_tokens + 1
    rows = [[ch.targets[a][0] * W + ch.targets[a][1] for ch, a in zip(p.chains, acc)] for p, acc in zip(plans, accepted)]
    width = max(max(len(r) for r in rows), 1)
    return _device_tensor([r + [trash] * (width - len(r)) for r in rows], device)


def _final_targets(target: torch.Tensor, batch: int, drafts: dict | None, trash: int) -> torch.Tensor:
    """(B, q) flat code indices whose token this pass made final (adaptive drafts and verifications, which
    the sampler still holds elsewhere, point at the trash entry instead)."""
    target = target.expand(batch, -1)
    if not drafts:
        return target
    target = target.clone()
    for b, (q, _) in drafts.items():
        target[b, q] = trash
    return target


def _notify(callback, cancel, step: int, codes: torch.Tensor, layout, stats: DecodeStats, final) -> None:
    """Cancel point, then the step callback; ``final()``: the pass's final targets, asked for only when the
    callback returns codes."""
    if cancel is not None and cancel():
        raise DecodingCancelled(f"decoding cancelled after {stats.passes} forward passes")
    if callback is None:
        return
    live = codes[:, : layout.num_tokens].view(-1, layout.rows, layout.cols)
    returned = callback(step, live, stats)
    if returned is not None and returned.data_ptr() != live.data_ptr():
        _replace_codes(live, returned, final(), codes.shape[1])


def _replace_codes(live: torch.Tensor, new: torch.Tensor, final: torch.Tensor, width: int) -> None:
    """Write a callback's codes into the live buffer; only this pass's final tokens may change (one host sync,
    paid only by callbacks that return codes)."""
    if new.shape != live.shape:
        raise SettingError("callback_on_step_end", f"{{name}} returned codes of shape {tuple(new.shape)}; the grid "
                                                   f"is {tuple(live.shape)}")
    new = new.to(live.device, live.dtype)
    allowed = torch.zeros((live.shape[0], width), dtype=torch.bool, device=live.device)
    allowed.scatter_(1, final, True)
    changed = (new != live) & ~allowed[:, : live[0].numel()].view_as(live)
    if changed.any():
        b, r, c = (int(x) for x in changed.nonzero()[0])
        raise SettingError("callback_on_step_end", f"{{name}} changed image {b}'s token at row {r}, column {c}, "
                                                   "which the model has already read; only the tokens sampled in "
                                                   "the pass that just ran can be changed")
    live.copy_(new)
