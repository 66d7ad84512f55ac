"""Sampling primitives: filters match transformers, the accept/resample step samples the target."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from zipar.zipar_core.sampling import (
    apply_guidance,
    probabilities,
    sample_from,
    speculative_step,
    top_k_filter,
    top_p_filter,
)


@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_matches_transformers(k):
    from transformers.generation.logits_process import TopKLogitsWarper
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(k))
    assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits.clone()))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_transformers(p):
    from transformers.generation.logits_process import TopPLogitsWarper
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(3)) * 3
    assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(p)(None, logits.clone()))


def test_filters_do_not_edit_their_input():
    logits = torch.randn(3, 20)
    copy = logits.clone()
    probabilities(logits, 0.7, 5, 0.8)
    assert torch.equal(logits, copy)


def test_guidance_mixes_cond_and_uncond():
    cond, uncond = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    out = apply_guidance(torch.cat([cond, uncond]), 2, 4.0)
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))
    torch.testing.assert_close(apply_guidance(torch.cat([cond, uncond]), 2, 1.0), cond)


def test_sampling_follows_the_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 40000
    draws = sample_from(probs.expand(n, -1), torch.rand(n, generator=g))
    counts = np.bincount(draws.numpy(), minlength=4)
    assert chisquare(counts, probs.double().numpy() / probs.double().sum().item() * n).pvalue > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_speculative_step_samples_the_target_distribution(seed):
    """Draft from p_k, accept/resample against p_k+1: the result must follow p_k+1 exactly."""
    g = torch.Generator().manual_seed(seed)
    V, n = 6, 60000
    p_draft = torch.softmax(torch.randn(V, generator=g) * 1.5, 0)
    p_target = torch.softmax(torch.randn(V, generator=g) * 1.5, 0)
    draft = sample_from(p_draft.expand(n, -1), torch.rand(n, generator=g))
    token, accepted = speculative_step(draft, p_draft.expand(n, -1), p_target.expand(n, -1),
                                       torch.rand(n, generator=g), torch.rand(n, generator=g))
    counts = np.bincount(token.numpy(), minlength=V)
    expected_counts = p_target.double().numpy() * n
    assert chisquare(counts, expected_counts / expected_counts.sum() * n).pvalue > 1e-3
    # the acceptance rate of speculative sampling is sum_x min(p_draft, p_target)
    expected = torch.minimum(p_draft, p_target).sum().item()
    assert abs(accepted.float().mean().item() - expected) < 0.01


def test_speculative_step_edge_cases():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    # identical distributions: always accepted
    tok, ok = speculative_step(torch.tensor([1]), p, p, torch.tensor([0.999]), None)
    assert ok.item() and tok.item() == 1
    # the draft has no mass under the target: always rejected, resampled from the residual
    target = torch.tensor([[0.0, 0.0, 1.0]])
    tok, ok = speculative_step(torch.tensor([0]), p, target, torch.tensor([0.0]), None)
    assert not ok.item() and tok.item() == 2


def test_inverse_cdf_never_picks_a_filtered_token():
    probs = probabilities(torch.randn(4, 30, generator=torch.Generator().manual_seed(1)), 1.0, 3, 1.0)
    u = torch.tensor([0.0, 0.3, 0.999999, 1 - 1e-9])
    picks = sample_from(probs, u)
    assert (probs.gather(-1, picks[:, None]) > 0).all()


def test_greedy_is_one_hot():
    logits = torch.tensor([[0.1, 3.0, -1.0]])
    assert torch.equal(probabilities(logits, 0, 0, 1.0), torch.tensor([[0.0, 1.0, 0.0]]))
