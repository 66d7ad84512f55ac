"""One token per row in flight and pass: ``ntp`` (raster order), ``fixed`` (paper eq. 1) and ``adaptive`` (eq. 2-3).

Fixed and ntp schedules do not depend on the sampled values: every pass is planned and sent to the device before
decoding starts (one host-to-device copy), and no pass waits for the device. Adaptive mode drafts each row's first
token and verifies it per image, so it plans pass by pass and reads each verifying pass's decisions back (the one
host sync it needs: the decision steers the next plan).

Torch is imported inside the methods that decode: importing a mode (``zipar --help``, ``zipar steps``) needs none.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import ceil
from typing import Any

from ..schedule import DRAFT, NONE, VERIFY, RowPlan, RowSchedule
from . import Mode, Pass


@dataclass
class RowPass(Pass):
    target: Any = None  # (b, Q) long: the code-buffer entry each query's sampled token goes to (trash: none)
    plans: list[RowPlan] | None = None  # adaptive: each image's plan (its drafts and verifications)


def device_tensor(data, device, dtype=None):
    """Python data -> a tensor on ``device``. On CUDA the copy goes from pinned memory without blocking, so the
    host does not wait for the passes still queued on the GPU (PyTorch's pinned-memory cache keeps the staging
    buffer alive until the copy has run)."""
    import torch

    t = torch.tensor(data, dtype=dtype or torch.long)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def row_pass(plans: list[RowPlan], buffer, scratch: int, to_device) -> RowPass:
    """Per-image plans -> padded index tensors (a padded query feeds x[0, 0] at the scratch slot, into the trash)."""
    q = max(len(p.feeds) for p in plans)
    slots, source, target = ([[fill] * q for _ in plans] for fill in (scratch, 0, buffer.trash))
    for b, p in enumerate(plans):
        for i, f in enumerate(p.feeds):
            slots[b][i], source[b][i] = f.slot, buffer.index(f.source)
            if f.use != NONE:
                target[b][i] = buffer.index(f.target)
    kv_len = max(p.max_slot for p in plans if p.feeds) + 1
    slots, source, target = (to_device(x) for x in (slots, source, target))
    return RowPass(slots, source, target, kv_len, [len(p.feeds) for p in plans], target=target)


class Fixed(Mode):
    name = "fixed"
    help = "ZipAR: a row starts once the row above has `window` tokens (paper eq. 1)"
    label = "fixed window"
    uses = frozenset({"window"})

    @classmethod
    def count_passes(cls, layout, config) -> int:
        """Closed form of eq. 1: row r starts s passes after row r-1, so an H x W grid takes (H-1)·s + W passes;
        with row 0 decoded first (the authors' code) row 1 waits for all of row 0: (H-2)·s + 2W. An end-of-row
        token is fed with the next row's first query and costs no pass (tests check this against the schedule)."""
        H, W, s = layout.rows, layout.cols, cls.window(layout, config)
        if H == 1:
            return W
        return (H - 2) * s + 2 * W if config.paper_first_row else (H - 1) * s + W

    @classmethod
    def widest_pass(cls, layout, config) -> int:
        """Rows in flight, plus the row start and the overwrite of a placeholder, at the busiest pass: the schedule
        run on enough rows to reach its steady state (ceil(W / s) + 2 rows: no more are ever in flight)."""
        s = cls.window(layout, config)
        short = replace(layout, rows=min(layout.rows, ceil(layout.cols / s) + 2))
        schedule = RowSchedule(short, s, config.paper_first_row)
        schedule.start_prefill()
        widest = 1
        while not schedule.done():
            plan = schedule.plan()
            widest = max(widest, len(plan.feeds))
            schedule.commit(plan)
        return widest

    def __init__(self, layout, config, buffer, codebook_size, device):
        super().__init__(layout, config, buffer, codebook_size, device)
        self.passes = self._every_pass()
        self.next = 0

    def _every_pass(self) -> list[RowPass]:
        """Every pass after prefill, planned before decoding starts: built on the CPU, sent in one copy (the
        passes' tensors are views of it)."""
        import torch

        schedule = RowSchedule(self.layout, self.window(self.layout, self.config), self.config.paper_first_row)
        schedule.start_prefill()
        passes, batch = [], self.buffer.codes.shape[0]
        while not schedule.done():
            plan = schedule.plan()
            step = row_pass([plan], self.buffer, self.layout.num_slots, torch.tensor)
            step.draws = step.draws * batch  # one plan; every image draws its own uniforms
            passes.append(step)
            schedule.commit(plan)
        for name in ("slots", "source", "target"):
            flat = torch.cat([getattr(p, name).flatten() for p in passes]).to(self.device) if passes else None
            offset = 0
            for p in passes:
                n = getattr(p, name).numel()
                setattr(p, name, flat[offset: offset + n].view(1, -1))
                offset += n
        for p in passes:
            p.query_target = p.target
        return passes

    def done(self) -> bool:
        return self.next == len(self.passes)

    def plan(self) -> RowPass:
        return self.passes[self.next]

    def verify(self, probs, step: RowPass, u):
        from ..sampling import sample_from

        self.buffer.write(step.target, sample_from(probs, None if u is None else u[:, : probs.shape[1]]))
        return None

    def commit(self, step: RowPass, accepted, stats) -> None:
        self.next += 1
        stats.sample_passes = [n + 1 for n in stats.sample_passes]

    def final_targets(self, step: RowPass, accepted):
        return step.target.expand(self.buffer.codes.shape[0], -1)


class Ntp(Fixed):
    name = "ntp"
    help = "plain raster order, one token per pass (the baseline)"
    label = "NTP (raster order)"
    uses = frozenset()
    window_name = None
    baseline = True


class Adaptive(Fixed):
    name = "adaptive"
    help = "ZipAR with speculative row starts: from `window` tokens on, checked against more context (eq. 2-3)"
    label = "adaptive minimum window"
    window_name = "s_min"
    exact_passes = False

    @classmethod
    def count_passes(cls, layout, config) -> int:
        """The fewest passes: every row start accepted at its first verification, so rows trail by s_min + 1 (the
        progress bar's starting total; a run that rejects drafts takes more)."""
        s = cls.window(layout, config)
        return Fixed.count_passes(layout, replace(config, window=min(s + 1, layout.cols)))

    @classmethod
    def widest_pass(cls, layout, config) -> int:
        """Fixed mode's at the minimum window (rows then trail least), plus the verification of a draft."""
        return Fixed.widest_pass(layout, config) + 1

    def __init__(self, layout, config, buffer, codebook_size, device):
        Mode.__init__(self, layout, config, buffer, codebook_size, device)
        s = self.window(layout, config)
        self.schedules = [RowSchedule(layout, s, config.paper_first_row, adaptive=True)
                          for _ in range(buffer.codes.shape[0])]
        for schedule in self.schedules:
            schedule.start_prefill()
        self.draft_token = self.draft_probs = None  # (B,), (B, V): each image's pending row-start draft, its p_k

    def done(self) -> bool:
        return all(s.done() for s in self.schedules)

    def plan(self) -> RowPass:
        plans = [s.plan() for s in self.schedules]
        step = row_pass(plans, self.buffer, self.layout.num_slots, lambda x: device_tensor(x, self.device))
        # after its feeds' uniforms, an image that verifies a draft draws the accept test's and the residual's
        step.draws = [n + 2 * any(f.use == VERIFY for f in p.feeds) for n, p in zip(step.draws, plans)]
        step.plans = plans
        return step

    def verify(self, probs, step: RowPass, u) -> dict[int, bool]:
        """Sample every query; then a DRAFT keeps its sample as x[r, 0] ~ p_k, and a VERIFY accepts the pending
        draft with probability min(1, p_{k+1}(x) / p_k(x)) or replaces it from norm(max(0, p_{k+1} - p_k))
        (paper eq. 2-3; sampling.speculative_step). Returns {image: accepted} of the verifications."""
        import torch

        from ..sampling import speculative_step

        super().verify(probs, step, u)
        checks = [(b, i, f.use) for b, p in enumerate(step.plans) for i, f in enumerate(p.feeds)
                  if f.use in (DRAFT, VERIFY)]
        if not checks:
            return {}
        if self.draft_probs is None:
            self.draft_probs = torch.zeros((len(self.schedules), probs.shape[-1]), device=probs.device)
            self.draft_token = torch.zeros(len(self.schedules), dtype=torch.long, device=probs.device)
        b_idx = device_tensor([b for b, _, _ in checks], self.device)
        q_idx = device_tensor([i for _, i, _ in checks], self.device)
        p_new, where = probs[b_idx, q_idx], step.target.expand(len(self.schedules), -1)[b_idx, q_idx]
        token = self.buffer.codes[b_idx, where]  # a DRAFT's fresh sample
        accepted = {}
        verifying = [use == VERIFY for _, _, use in checks]
        if any(verifying):
            n = [max(step.draws[b] - 2, 0) for b, _, _ in checks]  # a verifying image's feeds' uniforms come first
            accept = 0.5 if u is None else u[b_idx, device_tensor(n, self.device)]  # greedy: p is one-hot
            resample = None if u is None else u[b_idx, device_tensor(n, self.device) + 1]
            checked, ok = speculative_step(self.draft_token[b_idx], self.draft_probs[b_idx], p_new,
                                           torch.as_tensor(accept, device=p_new.device).expand(len(checks)), resample)
            token = torch.where(device_tensor(verifying, self.device, torch.bool), checked, token)
            self.buffer.codes[b_idx, where] = token
            accepted = {b: flag for (b, _, _), flag, v in zip(checks, ok.tolist(), verifying) if v}  # the sync
        self.draft_token[b_idx] = token
        self.draft_probs[b_idx] = p_new
        return accepted

    def commit(self, step: RowPass, accepted: dict[int, bool], stats) -> None:
        for b, (schedule, plan) in enumerate(zip(self.schedules, step.plans)):
            schedule.commit(plan, accepted.get(b, False))
            stats.sample_passes[b] += bool(plan.feeds)
            if any(f.use == VERIFY for f in plan.feeds):
                stats.drafts_proposed += 1
                stats.drafts_accepted += int(accepted.get(b, False))

    def final_targets(self, step: RowPass, accepted):
        """This pass's targets, but a row start drafted or verified (the mode still holds it) points at the trash."""
        target = step.target.expand(len(self.schedules), -1).clone()
        for b, p in enumerate(step.plans):
            for i, f in enumerate(p.feeds):
                if f.use in (DRAFT, VERIFY):
                    target[b, i] = self.buffer.trash
        return target


