"""The decoding loop: one loop for every mode (docs/design.md, "The engine").

``generate`` resolves the settings, runs the prefill (which predicts x[0, 0]), then asks the mode (``modes/``) for
each pass: the pass's index tensors (which token is fed at which slot, what its output predicts), the uniforms each
image draws, the forward over every query under the pass's visibility (``cache.Visibility``: only slots holding
final tokens, and in a pass with drafts the queries' own chains), the distributions (``sampling.distribution``:
guidance, temperature, top-k, top-p), and the mode's verdict, which writes the final tokens into the one code
buffer (``buffer.CodeBuffer``). The sampler knows ZipAR only through the modes; the modes know no model.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .buffer import CodeBuffer
from .cache import Visibility
from .config import Defaults, ZipARConfig, resolve
from .errors import SettingError
from .modes import get as get_mode
from .protocol import Conditioning, ZipARModel
from .sampling import Uniforms, distribution, guidance_scales, sample_from
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


@torch.no_grad()
def generate(model: ZipARModel, cond: Conditioning, config: ZipARConfig | None = None, generator=None,
             callback: StepCallback | None = None, cancel: Callable[[], bool] | None = None,
             profile: bool = False, cache=None, compile: bool = False, cuda_graphs: bool = False) -> ZipARResult:
    """Decode ``cond.batch_size`` code grids with the schedule of ``config`` (settings left unset: the model
    family's defaults, as in every face; an unset guidance_scale follows the conditioning: 1 when it was prepared
    without guidance).

    generator: None, one ``torch.Generator`` shared by the batch, or one per image (then each image gets
    exactly the tokens it would get alone). callback(step, codes, stats) runs after every pass; codes is the
    live (B, H, W) buffer, -1 where undecoded: copy it to keep it. It may return a (B, H, W) tensor to replace
    the tokens that pass sampled (their final values, which the next pass feeds); changing any other token
    is refused, because the model has read it already (or, for an adaptive draft, still verifies it).
    cancel() -> True stops with :class:`DecodingCancelled` within one pass; the exception carries the partial
    result. profile: synchronise around model calls to time them. compile / cuda_graphs: run the decoding steps
    at static shapes (``step_runner.StaticStep``) through ``torch.compile`` and, on CUDA, CUDA graphs captured per
    number of query tokens.
    """
    t0 = time.perf_counter()
    layout, B, dev = cond.layout, cond.batch_size, model.device
    config = settings(model, cond, config)
    mode_class = get_mode(config.mode)
    buffer = CodeBuffer(layout, B, dev, drafts=mode_class.drafts)
    uniforms = Uniforms(generator, B, config.temperature == 0, dev)  # checks the generators before any allocation
    scales = guidance_scales(config, cond.guidance_schedule, layout.num_tokens, dev)
    mode = mode_class(layout, config, buffer, model.codebook_size, dev)
    cache = cache if cache is not None else model.new_cache(cond, layout.num_slots + 1)
    seen = Visibility(cond.prefix_valid, layout.num_slots + 1, dev)
    stats = DecodeStats(tokens=layout.num_tokens, batch_size=B, sample_passes=[1] * B,
                        model_seconds=0.0 if profile or dev.type == "cpu" else None,
                        expected_passes=mode_class.count_passes(layout, config) if mode_class.exact_passes else None)
    if compile or cuda_graphs:
        forward = StaticStep(model, cond, cache, layout.num_slots + 1, compile=compile, cuda_graphs=cuda_graphs)
    else:
        forward = lambda tokens, slots, visible: model.forward(cond, tokens, slots, visible, cache)  # noqa: E731
    timer, repeat = _ModelTimer(stats, profile, dev), cond.num_sequences // B  # [cond; uncond] sequences per image
    try:
        with timer:  # prefill: the prompt, whose last slot predicts x[0, 0]
            logits = model.prefill(cond, cache, seen.prefix())[:, None]
        first = torch.zeros((1, 1), dtype=torch.long, device=dev)  # x[0, 0] is entry 0 of the code buffer
        u = uniforms.draw([1] * B)
        buffer.write(first, sample_from(distribution(logits, config, scales, first, B), None if u is None else u))
        stats.passes = 1
        _notify(callback, cancel, buffer, stats, lambda: first.expand(B, -1))
        while not mode.done():
            step = mode.plan()
            u = uniforms.draw(step.draws)
            mode.draft(step, u)
            slots = step.slots.repeat(cond.num_sequences // step.slots.shape[0], 1)  # every sequence of an image
            chain, need, cross = (None,) * 3 if step.chain is None else (
                x if x is None else x.repeat(repeat, 1) for x in (step.chain, step.need, step.cross))
            if cross is not None:
                cross = (cross, step.cross_slot.repeat(repeat, 1), step.cross_need.repeat(repeat, 1))
            visible = seen.before(slots, chain, need, step.kv_len, cross)
            with timer:
                logits = forward(buffer.tokens(step.source).repeat(repeat, 1), slots, visible)
            accepted = mode.verify(distribution(logits, config, scales, step.query_target, B), step, u)
            if chain is not None:
                seen.after(slots, chain, need, accepted.repeat(repeat, 1), cross)
            mode.commit(step, accepted, stats)
            stats.passes += 1
            _notify(callback, cancel, buffer, stats, lambda: mode.final_targets(step, accepted))
    except DecodingCancelled as stop:
        stats.stopped, stats.seconds = True, time.perf_counter() - t0
        stop.result = ZipARResult(buffer.grid().clone(), stats)
        raise
    stats.seconds = time.perf_counter() - t0
    return ZipARResult(buffer.grid().clone(), stats)


def settings(model, cond: Conditioning, config: ZipARConfig | None) -> ZipARConfig:
    """``config`` completed with the model family's defaults (:func:`config.resolve`); an unset guidance_scale
    follows the conditioning (1 without unconditional rows), and a set one must agree with it."""
    chosen = (config or ZipARConfig()).chosen()
    if "guidance_scale" not in chosen and not cond.guidance:
        chosen["guidance_scale"] = 1.0
    defaults = model.defaults() if hasattr(model, "defaults") else Defaults()
    config = resolve(defaults, cond.layout.cols, chosen, warn=False)
    if config.guidance != cond.guidance:
        raise SettingError("guidance_scale", "the conditioning was prepared with {name} "
                           f"{'!= 1' if cond.guidance else '1'} but the config has {config.guidance_scale}; "
                           "prepare it with the same {name}")
    return config


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


def _notify(callback, cancel, buffer: CodeBuffer, stats: DecodeStats, final) -> None:
    """Cancel point, then the step callback (step = passes so far - 1); ``final()``: the pass's final targets, asked
    for only when the callback returns codes."""
    if cancel is not None and cancel():
        raise DecodingCancelled(f"decoding cancelled after {stats.passes} forward passes")
    if callback is None:
        return
    live = buffer.grid()
    returned = callback(stats.passes - 1, live, stats)
    if returned is not None and returned.data_ptr() != live.data_ptr():
        _replace_codes(live, returned, final(), buffer.codes.shape[1])


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
