"""Guidance, logit filters, seeded sampling and the speculative accept/resample step (paper eq. 2-3).

All functions take flattened or batched logits and never edit their inputs in place. Filters follow
transformers' semantics (temperature, then top-k, then top-p, at least one token kept) so that tests can
compare them with ``TopKLogitsWarper`` / ``TopPLogitsWarper``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def apply_guidance(logits: torch.Tensor, batch: int, scale: torch.Tensor | float) -> torch.Tensor:
    """[cond; uncond] rows (2B, ...) -> uncond + scale * (cond - uncond), (B, ...).

    ``scale`` may be a tensor broadcastable to the result, e.g. (B, q, 1) to guide only some tokens;
    scale 1 gives the conditional logits.
    """
    cond, uncond = logits[:batch], logits[batch:]
    assert cond.shape == uncond.shape, "guidance needs as many unconditional rows as conditional ones"
    return uncond + (cond - uncond) * scale


def guidance_scales(config, schedule: Callable[[float], torch.Tensor] | None, num_tokens: int, device):
    """The guidance scale of every image token, indexed like the sampler's targets (raster index in the grid,
    then the EOL sentinel and the trash entry): ``config.guidance_scale``, or the model family's schedule of it
    (``Conditioning.guidance_schedule``: Lumina-mGPT 2.0 lowers its scale along the image), and 1 from
    ``config.guidance_interval`` on. None without guidance; a plain float when every token has the same scale
    (then guidance multiplies by that number, as it always has). Built once per decode, before the passes."""
    if not config.guidance:
        return None
    if schedule is None and config.guidance_interval is None:
        return config.guidance_scale
    table = torch.full((num_tokens + 2,), float(config.guidance_scale))
    if schedule is not None:
        table[:num_tokens] = schedule(config.guidance_scale)
    if config.guidance_interval is not None:
        table[config.guidance_interval:] = 1.0
    return table.to(device)


def scale_at(scales: torch.Tensor | float, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | float:
    """The scales of a pass's queries from :func:`guidance_scales`' table, (..., 1) for the logits' last dim;
    the float itself when it is one number."""
    return scales[target][..., None].to(dtype) if isinstance(scales, torch.Tensor) else scales


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the k largest logits of the last dim (ties at the k-th value kept), others -inf."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: drop the low tail whose total probability is at most 1 - top_p (keep >= 1 token)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - top_p)
    remove_sorted[..., -1:].fill_(False)  # min_tokens_to_keep = 1 (fill_: no scalar tensor made per call)
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def probabilities(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution actually sampled from (float32). Temperature 0 gives the one-hot argmax, so that
    greedy decoding and the adaptive accept test share one code path."""
    logits = logits.float()
    if temperature == 0:
        return one_hot(logits.argmax(-1), logits.shape[-1])
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return logits.softmax(dim=-1)


def sample_from(probs: torch.Tensor, uniform: torch.Tensor | None) -> torch.Tensor:
    """Categorical sample by inverse CDF: the first token whose cumulative probability exceeds u * total.

    One U[0, 1) draw per token (not one per vocabulary entry, as the Gumbel/exponential trick needs: that
    dominated the sampler's CPU time), no host sync (cumsum and searchsorted run on the device), and
    zero-probability tokens are never chosen. ``uniform`` has probs' shape without the last dim; None
    gives the argmax (greedy).
    """
    if uniform is None:
        return probs.argmax(-1)
    # float64: a float32 running sum over 16k entries has an error far above the tail probabilities
    cdf = probs.double().cumsum(-1)
    target = (uniform.double() * cdf[..., -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # u * total can round up to total: fall back to the last token that has probability
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).to(torch.uint8).argmax(-1)
    return torch.minimum(index, last)


def speculative_step(draft: torch.Tensor, p_draft: torch.Tensor, p_target: torch.Tensor, uniform: torch.Tensor,
                     resample_uniform: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify a draft token drawn from ``p_draft`` against ``p_target`` (paper eq. 2-3).

    Accept with probability min(1, p_target(x) / p_draft(x)); on rejection resample from
    norm(max(0, p_target - p_draft)), or from p_target when that residual is (numerically) empty. The
    returned token is distributed exactly as p_target. Shapes: draft (n,), p_* (n, V), uniform (n,) the
    accept draw, resample_uniform (n,) the residual's draw or None for greedy. Returns (token (n,),
    accepted (n,) bool).
    """
    p_t = p_target.gather(-1, draft[:, None]).squeeze(-1)
    p_d = p_draft.gather(-1, draft[:, None]).squeeze(-1)
    accepted = uniform * p_d < p_t  # r < p_t / p_d without dividing by a zero p_d
    resampled = sample_from(residual(p_target, p_draft), resample_uniform)
    return torch.where(accepted, draft, resampled), accepted


def residual(p_target: torch.Tensor, p_draft: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p_target - p_draft)), where a rejected draft's replacement is drawn from; p_target
    when that is (numerically) empty."""
    res = (p_target - p_draft).clamp_min(0)
    mass = res.sum(-1, keepdim=True)
    return torch.where(mass > 1e-12, res / mass.clamp_min(1e-12), p_target)


def one_hot(index: torch.Tensor, size: int) -> torch.Tensor:
    """float32 one-hot of ``index`` over ``size`` entries; unlike F.one_hot it does not read the indices back
    to check their range (a host sync)."""
    out = torch.zeros((*index.shape, size), device=index.device)
    return out.scatter_(-1, index[..., None], 1.0)


def distribution(logits: torch.Tensor, config, scales, target: torch.Tensor, batch: int) -> torch.Tensor:
    """A pass's logits (sequences, q, V) -> the distributions sampled from (batch, q, V): guidance at each query's
    scale (``scales`` from :func:`guidance_scales`, looked up by the code-buffer entry ``target`` it predicts), then
    temperature, top-k and top-p. The one place a pass's distributions are made."""
    if config.guidance:
        logits = apply_guidance(logits, batch, scale_at(scales, target, logits.dtype))
    return probabilities(logits, config.temperature, config.top_k, config.top_p)


class Uniforms:
    """Each image's U[0, 1) draws, from its own generator, in its own order: image b's k-th draw is the same alone
    and in a batch. ``generator``: None, one shared by the batch (then drawn image after image), or one per
    image. Greedy decoding (temperature 0) draws nothing. Float64: float32 draws sit on a 6e-8 grid."""

    def __init__(self, generator, batch: int, greedy: bool, device):
        self.gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * batch
        if len(self.gens) != batch:
            raise ValueError(f"got {len(self.gens)} generators for a batch of {batch} images; pass one per image or a "
                             "single one")
        self.greedy, self.device = greedy, device

    def draw(self, counts: list[int]) -> torch.Tensor | None:
        """(batch, max(counts)) float64: row b holds image b's next counts[b] draws (0.5 after them); None when
        greedy."""
        if self.greedy:
            return None
        u = torch.full((len(self.gens), max(counts, default=0)), 0.5, dtype=torch.float64, device=self.device)
        for b, (g, n) in enumerate(zip(self.gens, counts)):
            u[b, :n].uniform_(generator=g)
        return u
