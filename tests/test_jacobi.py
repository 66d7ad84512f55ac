"""The Jacobi modes: ``sjd`` (speculative Jacobi decoding in raster order) and ``zipar_sjd`` (the ZipAR rows,
each carrying its own Jacobi drafts).

Exact where it must be (greedy == NTP's tokens, in fewer passes, on every family), the visibility rule
(a draft is seen only by the later elements of its own chain; nothing else that is not final is ever
read), per-pass logits against an uncached forward, lossless in distribution (chi-square against the
enumerated NTP joint, and a broken rule that fails the same test), batch == alone, and the schedule's
bookkeeping.
"""
import itertools
import random

import pytest
import torch
from helpers import FAMILY_CASES, Recorder, ToyAR
from scipy.stats import chi2_contingency, chisquare
from zipar.zipar_core import ZipARConfig, generate, sampling
from zipar.zipar_core.config import resolve
from zipar.zipar_core.layout import TokenLayout
from zipar.zipar_core.modes import count_passes
from zipar.zipar_core.modes import get as get_mode
from zipar.zipar_core.sampling import apply_guidance, probabilities

ROWS, COLS = 4, 6


@pytest.fixture(scope="module")
def model():
    return ToyAR()


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


# -- the schedule ------------------------------------------------------------------------------------

@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("rows, cols", [(4, 6), (5, 3), (3, 7)])
def test_schedule_bookkeeping(eol, rows, cols):
    lay = TokenLayout(rows, cols, prefix=1, eol=eol)
    for window in range(1, cols + 1):
        for length in (1, 2, 3, 9):
            cfg = ZipARConfig(mode="zipar_sjd", window=window, draft_length=length)
            # no draft ever accepted: exactly the fixed-window schedule (zipar_sjd never needs more passes)
            assert get_mode(cfg.mode).count_passes(lay, cfg, accept=lambda c: 0) == \
                count_passes(lay, ZipARConfig(mode="fixed", window=window))
            rng, sched, final = random.Random(window * 31 + length), get_mode(cfg.mode).schedule(lay, cfg), {(0, 0)}
            sched.start_prefill()
            while not sched.done():
                plan = sched.plan()
                slots = [e.slot for c in plan.chains for e in c.elements] + [w.slot for w in plan.writes]
                assert plan.chains or plan.writes
                assert len(slots) == len(set(slots))  # no slot fed twice in a pass
                accepted = [rng.randint(0, c.drafts) for c in plan.chains]
                for chain, a in zip(plan.chains, accepted):
                    assert chain.drafts <= length
                    for r, c in chain.targets[: a + 1]:
                        # the window rule at the moment a token becomes final: the row above has its window
                        # final, or the row above belongs to this chain (then it was accepted before it)
                        above_ok = r == 0 or sched.decoded[r - 1] >= min(c + window, cols) or \
                            (r - 1, cols - 1) in chain.targets[:a]
                        assert above_ok and (r, c) not in final
                        final.add((r, c))
                sched.commit(plan, accepted)
            assert len(final) == rows * cols
    # window W is plain SJD: the same plans
    for length in (1, 4):
        sjd, zipar_sjd = (ZipARConfig(mode="sjd", draft_length=length),
                          ZipARConfig(mode="zipar_sjd", window=cols, draft_length=length))
        assert get_mode("sjd").count_passes(lay, sjd) == get_mode("zipar_sjd").count_passes(lay, zipar_sjd)


def test_config_checks():
    with pytest.raises(ValueError, match="draft_length must be a whole number >= 1"):
        ZipARConfig(mode="sjd", draft_length=0)
    with pytest.raises(ValueError, match="draft_init must be one of random, spatial"):
        ZipARConfig(mode="sjd", draft_init="zeros")
    with pytest.raises(ValueError, match="window 9 is larger than the grid width"):
        ZipARConfig(mode="zipar_sjd", window=9).window_for(6)
    assert ZipARConfig(mode="sjd", window=100).window_for(6) == 6  # sjd is raster order: the window is W


# -- exactness ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
def test_greedy_jacobi_is_ntp_in_fewer_passes(model, eol, guidance_scale):
    cond = model.prepare([1, 3], ROWS, COLS, eol=eol, guidance=guidance_scale != 1.0)
    ntp = generate(model, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=guidance_scale))
    for mode, init in itertools.product(("sjd", "zipar_sjd"), ("random", "spatial")):
        for length in (1, 3, 8):
            cfg = ZipARConfig(mode=mode, window=COLS, draft_length=length, draft_init=init, temperature=0,
                              guidance_scale=guidance_scale)
            out = generate(model, cond, cfg)
            assert torch.equal(out.codes, ntp.codes), (mode, init, length)
            assert out.stats.passes < ntp.stats.passes
            assert out.stats.drafts_accepted > 0 and out.stats.mean_accepted_length > 1


@pytest.mark.parametrize("name", FAMILY_CASES)
def test_every_family_greedy_jacobi_is_ntp(name):
    adapter, cond, scale = FAMILY_CASES[name]()
    ntp = generate(adapter, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=scale))
    assert len(ntp.codes.unique()) > 3  # varied argmaxes: equality means something
    for mode in ("sjd", "zipar_sjd"):
        cfg = ZipARConfig(mode=mode, window=cond.layout.cols, draft_length=4, temperature=0, guidance_scale=scale)
        out = generate(adapter, cond, cfg)
        assert torch.equal(out.codes, ntp.codes), (name, mode)
        assert out.stats.passes < ntp.stats.passes, (name, mode, out.stats.passes, ntp.stats.passes)


class _Poisoner(Recorder):
    """Before every pass, fills the cache at every slot no query of the pass may see with 1e4."""

    def __init__(self, model):
        super().__init__(model)
        self.visible = []

    def forward(self, cond, tokens, slots, visible, cache):
        seen = visible.any(1)  # (rows, kv)
        for buf in (*cache.keys, *cache.values):
            buf[:, :, : seen.shape[1]].masked_fill_(~seen[:, None, :, None], 1e4)
            buf[:, :, seen.shape[1]:].fill_(1e4)
        self.visible.append(visible.clone())
        return super().forward(cond, tokens, slots, visible, cache)


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("mode, window", [("sjd", COLS), ("zipar_sjd", 2), ("zipar_sjd", 3)])
def test_slots_that_are_not_visible_are_never_read(model, eol, mode, window):
    """Poisoning every slot that is neither final nor an earlier draft of the query's own chain (stale
    rejected drafts, other chains' drafts, undecoded slots) changes nothing."""
    cond = model.prepare([1, 3], ROWS, COLS, eol=eol, guidance=True)
    cfg = ZipARConfig(mode=mode, window=window, draft_length=3, guidance_scale=2.0)
    clean = generate(model, cond, cfg, generator=gens(2))
    poisoned = _Poisoner(model)
    out = generate(poisoned, cond, cfg, generator=gens(2))
    assert torch.equal(out.codes, clean.codes) and out.stats.passes == clean.stats.passes
    assert clean.stats.drafts_accepted > 0 and clean.stats.drafts_accepted < clean.stats.drafts_proposed


def test_other_rows_never_see_a_chain_s_drafts(model, monkeypatch):
    """zipar_sjd with chain visibility: within a pass, a query sees another query's slot only if that query fed a
    final token (a chain head, a row start, a K/V write) or an earlier draft of the query's own chain (rows
    visibility: tests/test_jacobi_frontier.py)."""
    from zipar.zipar_core.modes import jacobi

    steps, real_build = [], jacobi.jacobi_pass
    monkeypatch.setattr(jacobi, "jacobi_pass", lambda *a, **k: steps.append(real_build(*a, **k)) or steps[-1])
    cond = model.prepare([2], 5, COLS)
    rec = _Poisoner(model)
    generate(rec, cond, ZipARConfig(mode="zipar_sjd", window=2, draft_length=3, draft_visibility="chain"),
             generator=gens(1))
    own, other_final, multi_chain = 0, 0, 0
    for step, visible in zip(steps, rec.visible):
        slots, chain = step.slots[0].tolist(), step.chain[0].tolist()
        multi_chain += len(set(c for c in chain if c >= 0)) > 1
        for i, s in enumerate(slots):
            for k, t in enumerate(slots):
                if k == i or chain[k] == -2 or not visible[0, i, t]:
                    continue
                assert t < s and (chain[k] == -1 or chain[k] == chain[i]), (s, t, chain[i], chain[k])
                own += chain[k] == chain[i]
                other_final += chain[k] == -1
    assert own and other_final and multi_chain  # several rows in flight, each seeing its own drafts


def test_per_pass_logits_equal_an_uncached_forward(model):
    """Greedy sjd: the logits every accepted token was verified (or sampled) with equal one uncached
    forward over the image so far in raster order."""
    cond = model.prepare([1], ROWS, COLS)
    rec = Recorder(model)
    out = generate(rec, cond, ZipARConfig(mode="sjd", draft_length=3, temperature=0))
    flat = out.codes.view(1, -1)
    ref = model.full_forward(cond, flat, torch.arange(1, ROWS * COLS + 1)[None])  # position t predicts token t
    compared = 0
    for tokens, slots, logits in rec.calls:
        for i, s in enumerate(slots[0].tolist()):
            t = s - 1  # image index of the token fed at this slot; its output predicts t + 1
            if t + 1 >= ROWS * COLS:
                continue
            # every token fed this pass up to this slot is the final one: the query saw the true image so far
            earlier = [(int(u) - 1, int(x)) for u, x in zip(slots[0], tokens[0]) if int(u) <= s]
            if all(x == int(flat[0, k]) for k, x in earlier):
                torch.testing.assert_close(logits[0, i], ref[0, t + 1], rtol=1e-4, atol=1e-5)
                compared += 1
    assert compared >= ROWS * COLS - 1


# -- lossless in distribution -------------------------------------------------------------------------

V3, R2, C3 = 3, 2, 3


def _ntp_joint(model, guidance_scale, top_k):
    """The exact joint distribution of NTP sampling over all V^6 grids, by enumeration."""
    grids = torch.tensor(list(itertools.product(range(V3), repeat=R2 * C3)))
    n = len(grids)
    cond = model.prepare([1] * n, R2, C3, guidance=guidance_scale != 1.0)
    slots = torch.arange(1, R2 * C3 + 1).expand(cond.num_sequences, -1)
    logits = model.full_forward(cond, grids.repeat(cond.num_sequences // n, 1), slots)[:, :-1]
    if cond.guidance:
        logits = apply_guidance(logits, n, guidance_scale)
    p = probabilities(logits, 1.0, top_k, 1.0).double()
    return p.gather(-1, grids[..., None]).squeeze(-1).prod(-1), grids


def _chi_square(model, cfg, samples=20000):
    cfg = resolve(None, C3, cfg.chosen())  # settings left unset: the base defaults (the toy model has no family)
    joint, grids = _ntp_joint(model, cfg.guidance_scale, cfg.top_k)
    cond = model.prepare([1] * samples, R2, C3, guidance=cfg.guidance)
    out = generate(model, cond, cfg, generator=torch.Generator().manual_seed(0)).codes.view(samples, -1)
    index = (out * torch.tensor([V3 ** (5 - i) for i in range(6)])).sum(1)
    observed = torch.bincount(index, minlength=len(grids)).double()
    expected = joint * samples
    rare = expected < 5  # pool the rare grids into one cell
    obs = torch.cat([observed[~rare], observed[rare].sum()[None]])
    exp = torch.cat([expected[~rare], expected[rare].sum()[None]])
    return chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue


@pytest.fixture(scope="module")
def tiny3():
    return ToyAR(codebook=V3, classes=2, dim=16, heads=2, seed=3, dtype=torch.float64)


@pytest.mark.parametrize("cfg", [
    ZipARConfig(mode="sjd", draft_length=2),
    ZipARConfig(mode="sjd", draft_length=3, draft_init="spatial", guidance_scale=1.5, top_k=2),
    ZipARConfig(mode="zipar_sjd", window=C3, draft_length=2, draft_init="spatial"),
], ids=["sjd L2", "sjd L3 spatial cfg1.5 topk2", "zipar_sjd window=cols L2"])
def test_sjd_samples_follow_the_ntp_distribution(tiny3, cfg):
    assert _chi_square(tiny3, cfg) > 1e-3


def _grid_counts(model, cfg, samples=20000, seed=0):
    cond = model.prepare([1] * samples, R2, C3, guidance=cfg.guidance)
    out = generate(model, cond, cfg, generator=torch.Generator().manual_seed(seed)).codes.view(samples, -1)
    index = (out * torch.tensor([V3 ** (5 - i) for i in range(6)])).sum(1)
    return torch.bincount(index, minlength=V3 ** 6).double()


def _two_sample_p(a, b):
    """Chi-square test of homogeneity of two histograms (cells expected below 5 in either pooled)."""
    total = a + b
    rare = total * min(a.sum(), b.sum()) / total.sum() < 5
    table = torch.stack([torch.cat([a[~rare], a[rare].sum()[None]]), torch.cat([b[~rare], b[rare].sum()[None]])])
    return chi2_contingency(table.numpy()).pvalue


def test_zipar_sjd_samples_follow_the_fixed_window_distribution(tiny3, monkeypatch):
    """zipar_sjd at window 1 (rows overlap: the schedule is not NTP's) against fixed ZipAR at window 1 on the
    same model: 20,000 grids each, different seeds, a chi-square test of homogeneity; NTP's grids and the broken
    residual rule fail the same test against the same fixed-window sample."""
    fixed = _grid_counts(tiny3, ZipARConfig(mode="fixed", window=1), seed=1)
    cfg = ZipARConfig(mode="zipar_sjd", window=1, draft_length=2, draft_init="spatial")
    assert _two_sample_p(_grid_counts(tiny3, cfg), fixed) > 1e-3
    # the test can tell the schedules apart: NTP's grids are not fixed window 1's
    assert _two_sample_p(_grid_counts(tiny3, ZipARConfig(mode="ntp")), fixed) < 1e-6
    monkeypatch.setattr(sampling, "residual", lambda p, q: p)
    assert _two_sample_p(_grid_counts(tiny3, cfg), fixed) < 1e-6


def test_a_broken_acceptance_rule_fails_the_same_test(tiny3, monkeypatch):
    """Drawing a rejected position from p instead of the residual max(0, p - q) biases the samples towards
    the drafts; the chi-square test above must catch it."""
    monkeypatch.setattr(sampling, "residual", lambda p, q: p)
    assert _chi_square(tiny3, ZipARConfig(mode="sjd", draft_length=2)) < 1e-6


# -- batches, callbacks, cancel ---------------------------------------------------------------------

@pytest.mark.parametrize("mode, window", [("sjd", COLS), ("zipar_sjd", 2)])
@pytest.mark.parametrize("eol", [False, True])
def test_an_image_gets_the_same_tokens_alone_and_in_a_batch(mode, window, eol):
    m = ToyAR(dtype=torch.float64)  # float64: batched and single matmuls agree to the last bit that matters
    cfg = ZipARConfig(mode=mode, window=window, draft_length=3, guidance_scale=2.0, top_k=20, top_p=0.9)
    batch = generate(m, m.prepare([0, 1, 4], ROWS, COLS, eol=eol, guidance=True), cfg, generator=gens(3, 10))
    for b, label in enumerate([0, 1, 4]):
        alone = generate(m, m.prepare([label], ROWS, COLS, eol=eol, guidance=True), cfg, generator=gens(1, 10 + b))
        assert torch.equal(alone.codes[0], batch.codes[b])
        assert alone.stats.sample_passes[0] == batch.stats.sample_passes[b]
    assert len(set(batch.stats.sample_passes)) > 1 or batch.stats.drafts_accepted > 0


def test_callback_cancel_and_stats(model):
    cond = model.prepare([1, 2], ROWS, COLS, eol=True)
    seen = []
    out = generate(model, cond, ZipARConfig(mode="zipar_sjd", window=2, draft_length=4), generator=gens(2),
                   callback=lambda step, codes, stats: seen.append((step, int((codes >= 0).sum()))))
    assert [s for s, _ in seen] == list(range(out.stats.passes)) and seen[-1][1] == 2 * ROWS * COLS
    st = out.stats
    assert 0 < st.drafts_accepted <= st.drafts_proposed and st.chain_steps > 0
    assert st.mean_accepted_length == pytest.approx((st.drafts_accepted + st.chain_steps) / st.chain_steps)
    assert st.as_dict()["mean_accepted_length"] == st.mean_accepted_length
    assert all(n <= st.passes for n in st.sample_passes)

    # a callback may rewrite each chain's newest final token (the next pass feeds it), nothing older
    rec, before = Recorder(model), {}

    def force_newest(step, codes, stats):
        new = codes.clone()
        fresh = (codes >= 0) & (before.get("codes", torch.full_like(codes, -1)) < 0)
        for b in range(codes.shape[0]):  # sjd: one chain per image; its newest final token is the last fresh one
            flat = fresh[b].flatten().nonzero()
            if len(flat):
                new[b].view(-1)[flat.max()] = 5
        before["codes"] = new.clone()
        return new

    forced = generate(rec, cond, ZipARConfig(mode="sjd", draft_length=2), generator=gens(2), callback=force_newest)
    assert (forced.codes == 5).sum() >= ROWS  # one per pass and image, and each was what the next pass fed
    fed = {(int(s), int(t)) for tokens, slots, _ in rec.calls for s, t in zip(slots[0], tokens[0])}
    assert all((cond.layout.slot(r, c), 5) in fed for r, c in (forced.codes[0] == 5).nonzero().tolist()
               if (r, c) != (ROWS - 1, COLS - 1))

    def rewrite_old(step, codes, stats):
        new = codes.clone()
        if step == 3:
            new[0, 0, 0] = (new[0, 0, 0] + 1) % model.codebook_size
        return new

    with pytest.raises(ValueError, match="row 0, column 0, which the model has already read"):
        generate(model, cond, ZipARConfig(mode="sjd", draft_length=2), generator=gens(2), callback=rewrite_old)
    calls = []
    with pytest.raises(RuntimeError, match="cancelled after 3 forward passes"):
        generate(model, cond, ZipARConfig(mode="sjd", draft_length=2), generator=gens(2),
                 cancel=lambda: calls.append(1) or len(calls) >= 3)
