"""Guidance, logit filters, seeded sampling and the speculative accept/resample step (paper eq. 2-3).

All functions take flattened or batched logits and never edit their inputs in place. Filters follow
transformers' semantics (temperature, then top-k, then top-p, at least one token kept) so that tests can
compare them with ``TopKLogitsWarper`` / ``TopPLogitsWarper``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def apply_guidance(logits: torch.Tensor, batch: int, scale: torch.Tensor | float) -> torch.Tensor:
    """[cond; uncond] rows (2B, ...) -> uncond + scale * (cond - uncond), (B, ...).

    ``scale`` may be a tensor broadcastable to the result, e.g. (B, q, 1) to guide only some tokens;
    scale 1 gives the conditional logits.
    """
    cond, uncond = logits[:batch], logits[batch:]
    assert cond.shape == uncond.shape, "guidance needs as many unconditional rows as conditional ones"
    return uncond + (cond - uncond) * scale


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
    remove_sorted[..., -1:] = False  # min_tokens_to_keep = 1
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def probabilities(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution actually sampled from (float32). Temperature 0 gives the one-hot argmax, so that
    greedy decoding and the adaptive accept test share one code path."""
    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return logits.softmax(dim=-1)


def exponential_noise(shape_per_sample: Sequence[tuple[int, ...]], generators, device) -> list[torch.Tensor]:
    """One Exp(1) tensor per sample, drawn from that sample's own generator.

    A single generator (or None) is shared by the batch in sample order, as diffusers does.
    """
    gens = _per_sample(generators, len(shape_per_sample))
    return [torch.empty(s, device=device).exponential_(1, generator=g) for s, g in zip(shape_per_sample, gens)]


def sample_from(probs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """Categorical sample with no host sync (argmax of p / Exp(1), gpt-fast's trick); noise None = argmax."""
    if noise is None:
        return probs.argmax(-1)
    return (probs / noise).argmax(-1)


def speculative_step(draft: torch.Tensor, p_draft: torch.Tensor, p_target: torch.Tensor, uniform: torch.Tensor,
                     noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify a draft token drawn from ``p_draft`` against ``p_target`` (paper eq. 2-3).

    Accept with probability min(1, p_target(x) / p_draft(x)); on rejection resample from
    norm(max(0, p_target - p_draft)), or from p_target when that residual is (numerically) empty. The
    returned token is distributed exactly as p_target. Shapes: draft (n,), p_* (n, V), uniform (n,),
    noise (n, V) Exp(1) or None for greedy. Returns (token (n,), accepted (n,) bool).
    """
    p_t = p_target.gather(-1, draft[:, None]).squeeze(-1)
    p_d = p_draft.gather(-1, draft[:, None]).squeeze(-1)
    accepted = uniform * p_d < p_t  # r < p_t / p_d without dividing by a zero p_d
    residual = (p_target - p_draft).clamp_min(0)
    mass = residual.sum(-1, keepdim=True)
    residual = torch.where(mass > 1e-12, residual / mass.clamp_min(1e-12), p_target)
    resampled = sample_from(residual, noise)
    return torch.where(accepted, draft, resampled), accepted


def _per_sample(generators, n: int) -> list:
    if generators is None or isinstance(generators, torch.Generator):
        return [generators] * n
    gens = list(generators)
    if len(gens) != n:
        raise ValueError(f"got {len(gens)} generators for a batch of {n}; pass one per image or a single one")
    return gens
