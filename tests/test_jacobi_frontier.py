"""Coupled drafts (``draft_coupling``: maximal, gumbel) and rows visibility (``draft_visibility="rows"``: a
query of row r also sees the drafts of row r-1 that eq. 1 gives its target, and the pass is verified from the top
row down) in the Jacobi modes.

Exact as the uncoupled chains are: greedy == NTP's tokens in fewer passes (toy model, every family's tiny model),
chi-square against the enumerated NTP joint for every coupling (and broken coupling rules that fail it), and for
rows visibility a per-token test: every accepted token follows p(x | the final tokens it saw), an uncached forward
over exactly those tokens reproduces its logits, and a variant that accepts a row regardless of the verdict on the
row above fails both. Batch == alone, the schedule's window rule and the widest-pass bound hold for each.
"""
import itertools
import random

import pytest
import torch
from helpers import FAMILY_CASES, Recorder, ToyAR
from scipy.stats import chisquare
from test_jacobi import COLS, ROWS, V3, _chi_square, gens
from zipar.zipar_core import ZipARConfig, generate, sampling
from zipar.zipar_core.layout import EOL, TokenLayout
from zipar.zipar_core.modes import get as get_mode
from zipar.zipar_core.modes import jacobi

COUPLINGS = ("none", "maximal", "gumbel")
VARIANTS = [("sjd", c, "chain") for c in COUPLINGS] + [("zipar_sjd", c, v) for c in COUPLINGS
                                                         for v in ("chain", "rows")]


@pytest.fixture(scope="module")
def model():
    return ToyAR()


@pytest.fixture(scope="module")
def tiny3():
    return ToyAR(codebook=V3, classes=2, dim=16, heads=2, seed=3, dtype=torch.float64)


# -- exactness: greedy ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eol", [False, True])
def test_greedy_coupled_and_rows_jacobi_is_ntp_in_fewer_passes(model, eol):
    cond = model.prepare([1, 3], ROWS, COLS, eol=eol, guidance=True)
    ntp = generate(model, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=2.5))
    for i, (mode, coupling, visibility) in enumerate(VARIANTS):
        init = ("random", "spatial")[i % 2]
        cfg = ZipARConfig(mode=mode, window=COLS, draft_length=3, draft_init=init, temperature=0,
                          guidance_scale=2.5, draft_coupling=coupling, draft_visibility=visibility)
        out = generate(model, cond, cfg)
        assert torch.equal(out.codes, ntp.codes), (mode, coupling, visibility, init)
        assert out.stats.passes < ntp.stats.passes and out.stats.mean_accepted_length > 1


@pytest.mark.parametrize("name", FAMILY_CASES)
def test_every_family_greedy_coupled_jacobi_is_ntp(name):
    adapter, cond, scale = FAMILY_CASES[name]()
    ntp = generate(adapter, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=scale))
    for mode, coupling, visibility in (("sjd", "maximal", "chain"), ("sjd", "gumbel", "chain"),
                                       ("zipar_sjd", "maximal", "rows")):
        cfg = ZipARConfig(mode=mode, window=cond.layout.cols, draft_length=4, temperature=0, guidance_scale=scale,
                          draft_coupling=coupling, draft_visibility=visibility)
        out = generate(adapter, cond, cfg)
        assert torch.equal(out.codes, ntp.codes), (name, mode, coupling)
        assert out.stats.passes < ntp.stats.passes, (name, mode, coupling, out.stats.passes, ntp.stats.passes)


# -- exactness: the distribution -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    ZipARConfig(mode="sjd", draft_length=2, draft_coupling="maximal"),
    ZipARConfig(mode="sjd", draft_length=3, draft_coupling="gumbel", guidance_scale=1.5, top_k=2),
    ZipARConfig(mode="zipar_sjd", window=3, draft_length=2, draft_init="spatial", draft_coupling="maximal",
                draft_visibility="rows"),
    ZipARConfig(mode="zipar_sjd", window=3, draft_length=2, draft_coupling="gumbel", draft_visibility="rows"),
], ids=["sjd maximal", "sjd gumbel cfg1.5 topk2", "zipar_sjd maximal rows", "zipar_sjd gumbel rows"])
def test_coupled_samples_follow_the_ntp_distribution(tiny3, cfg):
    assert _chi_square(tiny3, cfg) > 1e-3


def test_broken_coupling_rules_fail_the_same_test(tiny3, monkeypatch):
    """The test can tell a wrong coupling: the residual rule broken (a rejected position and a redrawn draft drawn
    from p / q instead of max(0, p - q) / max(0, q - q')), or a draft that keeps its previous value whenever it had
    one (no min(1, q/q') test), or Gumbel noise shared by every position (drafts not independent of the tokens
    before them)."""
    with monkeypatch.context() as m:
        m.setattr(sampling, "residual", lambda p, q: p)
        assert _chi_square(tiny3, ZipARConfig(mode="sjd", draft_length=2, draft_coupling="maximal")) < 1e-6
    with monkeypatch.context() as m:
        m.setattr(jacobi, "_keep_previous", lambda u, q_old_x, q_x: torch.ones_like(q_x, dtype=torch.bool))
        assert _chi_square(tiny3, ZipARConfig(mode="sjd", draft_length=2, draft_coupling="maximal")) < 1e-6
    with monkeypatch.context() as m:
        real = jacobi.gumbel_noise
        m.setattr(jacobi, "gumbel_noise", lambda seed, target, V: real(seed, torch.zeros_like(target), V))
        assert _chi_square(tiny3, ZipARConfig(mode="sjd", draft_length=2, draft_coupling="gumbel")) < 1e-6


# -- rows visibility: every accepted token follows p(x | the final tokens it saw) ----------------------------------

R3, C4 = 3, 4


def _accepted_tokens(model, n, cfg, seed=0):
    """Run n grids; for every token made final: its image, the slot of the query that predicted it, the slots that
    query saw (a bool row), the probabilities it was sampled or accepted with, its code-buffer entry, and how many
    drafts of the row above its query saw; and the final grids."""
    passes = []

    class Spy(Recorder):
        def forward(self, cond, tokens, slots, visible, cache):
            passes.append({"slots": slots[:n].clone(), "visible": visible[:n].clone()})
            return super().forward(cond, tokens, slots, visible, cache)

    real_verify = jacobi.Sjd.verify

    def verify(self, probs, step, u):
        a = real_verify(self, probs, step, u)
        finals = self.finals if self.finals is not None else a + 1
        passes[-1].update(probs=probs.clone(), out=step.out.clone(), target=step.target.clone(), finals=finals.clone(),
                          up_need=step.up_need.clone())
        return a

    cond = model.prepare([1] * n, R3, C4, eol=True)
    mp = pytest.MonkeyPatch()
    mp.setattr(jacobi.Sjd, "verify", verify)
    try:
        out = generate(Spy(model), cond, cfg, generator=gens(n, seed))
    finally:
        mp.undo()
    S, grid = cond.layout.num_slots + 1, R3 * C4
    fields = {k: [] for k in ("image", "slot", "seen", "probs", "target", "up_need")}
    for p in passes:
        made = (torch.arange(p["out"].shape[-1]) < p["finals"][..., None]) & (p["target"] < grid)
        b, c, j = made.nonzero().unbind(1)
        q = p["out"][b, c, j]
        seen = torch.zeros((len(b), S), dtype=torch.bool)
        seen[:, : p["visible"].shape[-1]] = p["visible"][b, q]
        for k, v in (("image", b), ("slot", p["slots"][b, q]), ("seen", seen), ("probs", p["probs"][b, q]),
                     ("target", p["target"][b, c, j]), ("up_need", p["up_need"][b, c, j])):
            fields[k].append(v)
    return {k: torch.cat(v) for k, v in fields.items()}, out.codes.view(n, -1), cond.layout


@torch.no_grad()
def _reference(model, tokens, grids, layout):
    """p(x | the final values of the slots its query saw) for each token, by one uncached forward over exactly those
    tokens (a one-layer model: a slot's K/V is its token's and position's)."""
    slot_tokens = torch.zeros((grids.shape[0], layout.num_slots), dtype=torch.long)
    for r in range(layout.rows):
        slot_tokens[:, layout.eol_slot(r)] = EOL
        for c in range(layout.cols):
            slot_tokens[:, layout.slot(r, c)] = grids[:, r * layout.cols + c]
    ref = torch.zeros_like(tokens["probs"], dtype=torch.float64)
    cls = model.cls(torch.ones(1, dtype=torch.long))[:, None] + model.pos.weight[0]
    for slot in tokens["slot"].unique().tolist():  # one uncached forward per query slot
        at = (tokens["slot"] == slot).nonzero().squeeze(1)
        h = torch.cat([cls.expand(len(at), -1, -1), model._embed_tokens(slot_tokens[tokens["image"][at], 1:slot + 1])
                       + model.pos(torch.arange(1, slot + 1))], 1)
        mask = tokens["seen"][at, None, : slot + 1].expand(-1, slot + 1, -1)
        ref[at] = torch.softmax(model._layers(h, mask, lambda i, k, v: (k, v))[:, slot].double(), -1)
    return ref


def _pit_p(ref, x):
    """Chi-square p-value of the tokens' randomised PITs under ``ref`` against uniform (10 cells): x ~ ref for every
    token makes them uniform, whatever each token's distribution."""
    below = (ref.cumsum(-1) - ref).gather(1, x[:, None]).squeeze(1)
    u = torch.rand(len(x), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pits = below + u * ref.gather(1, x[:, None]).squeeze(1)
    return chisquare(torch.histc(pits, bins=10, min=0, max=1).numpy()).pvalue


@pytest.fixture(scope="module")
def one_layer():
    return ToyAR(codebook=4, classes=2, dim=16, heads=2, layers=1, seed=5, dtype=torch.float64)


@pytest.mark.parametrize("broken", [False, True], ids=["rows rule", "broken: rows accepted regardless"])
def test_rows_visibility_accepts_each_token_from_what_it_saw(one_layer, monkeypatch, broken):
    """20,000 3x4 grids at window 1. Every token made final is checked against p(x | the final tokens its query
    saw): the logits of 2,000 grids' tokens against an uncached forward over exactly those tokens, and the tokens
    whose query saw drafts of the row above (the ones the rule is about) by a chi-square test of their PITs. A
    variant that accepts a row regardless of the verdict on the row above (so a token may have seen a draft that
    was then rejected) fails both."""
    if broken:
        monkeypatch.setattr(jacobi, "rows_verdict", lambda own, up, up_need: (own, own + 1))
    cfg = ZipARConfig(mode="zipar_sjd", window=1, draft_length=3, draft_visibility="rows", draft_init="random")
    tokens, grids, layout = _accepted_tokens(one_layer, 20000, cfg)
    assert len(tokens["image"]) == 20000 * (R3 * C4 - 1)  # every token once (x[0, 0]: the prefill's)
    first = {k: v[tokens["image"] < 2000] for k, v in tokens.items()}
    differ = int((_reference(one_layer, first, grids, layout) - first["probs"].double()).abs().amax(-1).gt(1e-6).sum())
    crossed = {k: v[tokens["up_need"] > 0] for k, v in tokens.items()}
    assert len(crossed["image"]) > 20000  # many tokens were accepted from a view with the row above's drafts
    p = _pit_p(_reference(one_layer, crossed, grids, layout), grids[crossed["image"], crossed["target"]])
    if broken:
        assert differ > 100 and p < 1e-6
    else:
        assert differ == 0 and p > 1e-3  # the sampler's probabilities are float32: 1e-6


# -- batches, visibility, schedule --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, coupling, visibility", [("sjd", "maximal", "chain"), ("sjd", "gumbel", "chain"),
                                                        ("zipar_sjd", "maximal", "rows"),
                                                        ("zipar_sjd", "gumbel", "rows")])
def test_an_image_gets_the_same_tokens_alone_and_in_a_batch(mode, coupling, visibility):
    m = ToyAR(dtype=torch.float64)
    cfg = ZipARConfig(mode=mode, window=2, draft_length=3, guidance_scale=2.0, top_k=20, top_p=0.9,
                      draft_coupling=coupling, draft_visibility=visibility)
    batch = generate(m, m.prepare([0, 1, 4], ROWS, COLS, eol=True, guidance=True), cfg, generator=gens(3, 10))
    for b, label in enumerate([0, 1, 4]):
        alone = generate(m, m.prepare([label], ROWS, COLS, eol=True, guidance=True), cfg, generator=gens(1, 10 + b))
        assert torch.equal(alone.codes[0], batch.codes[b])
        assert alone.stats.sample_passes[0] == batch.stats.sample_passes[b]


@pytest.mark.parametrize("eol", [False, True])
def test_rows_queries_see_only_final_tokens_and_the_drafts_eq1_gives_them(model, eol, monkeypatch):
    """Poisoning every slot a query may not see changes nothing; a query sees another chain's draft only if that
    chain is the row above's and the draft's column is below min(c + s, W), c its target's column."""
    from test_jacobi import _Poisoner

    steps, real_build = [], jacobi.jacobi_pass
    monkeypatch.setattr(jacobi, "jacobi_pass", lambda *a, **k: steps.append(real_build(*a, **k)) or steps[-1])
    cond = model.prepare([1, 3], 5, COLS, eol=eol, guidance=True)
    cfg = ZipARConfig(mode="zipar_sjd", window=2, draft_length=3, guidance_scale=2.0, draft_visibility="rows")
    rec = _Poisoner(model)
    out = generate(rec, cond, cfg, generator=gens(2))
    steps_clean = len(steps)
    clean = generate(model, cond, cfg, generator=gens(2))
    assert torch.equal(out.codes, clean.codes) and out.stats.passes == clean.stats.passes
    lay, crossed = cond.layout, 0
    for step, visible in zip(steps[:steps_clean], rec.visible):
        for b in range(2):
            slots, chain = step.slots[b].tolist(), step.chain[b].tolist()
            query_target = step.query_target[b].tolist()
            for i, s in enumerate(slots):
                for k, t in enumerate(slots):
                    if k == i or chain[k] in (-1, -2) or chain[k] == chain[i] or not visible[b, i, t]:
                        continue
                    tr, tc = divmod(query_target[i], COLS)  # the code-buffer entry of a grid token: r * W + c
                    dr, dc = lay.locate(t)
                    assert dr == tr - 1 and dc < min(tc + 2, COLS), (s, t)
                    crossed += 1
    assert crossed > 0


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("rows, cols", [(4, 6), (5, 3), (6, 7)])
def test_rows_schedule_keeps_eq1_for_every_final_token(eol, rows, cols):
    """Random verdicts through the rows rule (``jacobi.rows_verdict``): when a token becomes final, the row above
    has min(c + s, W) final tokens (its drafts seen were accepted in the same pass); every pass makes progress; no
    pass holds more queries than ``widest_pass`` says; never accepting a draft is the fixed schedule."""
    lay = TokenLayout(rows, cols, prefix=1, eol=eol)
    mode = get_mode("zipar_sjd")
    for window, length in itertools.product(range(1, cols + 1), (1, 3, 8)):
        cfg = ZipARConfig(mode="zipar_sjd", window=window, draft_length=length, draft_visibility="rows")
        assert mode.count_passes(lay, cfg, accept=lambda c: 0) == \
            get_mode("fixed").count_passes(lay, ZipARConfig(mode="fixed", window=window))
        widest, most = mode.widest_pass(lay, cfg), 0
        rng, sched = random.Random(window * 31 + length), mode.schedule(lay, cfg)
        sched.start_prefill()
        while not sched.done():
            plan = sched.plan()
            most = max(most, plan.num_queries)
            C, K = max(len(plan.chains), 1), max([c.drafts for c in plan.chains] + [1])
            own = torch.tensor([[rng.randint(0, c.drafts) for c in plan.chains] + [0] * (C - len(plan.chains))])
            up = torch.tensor([[-1 if c.up is None else c.up for c in plan.chains] + [-1] * (C - len(plan.chains))])
            need = torch.full((1, C, K + 1), jacobi.NEVER)
            for i, c in enumerate(plan.chains):
                need[0, i, : len(c.up_need)] = torch.tensor(c.up_need)
            accepted, finals = (x[0, : len(plan.chains)].tolist() for x in jacobi.rows_verdict(own, up, need))
            before = list(sched.decoded)
            made = [t for c, f in zip(plan.chains, finals) for t in c.targets[:f]]
            sched.commit(plan, accepted, finals)
            assert sum(sched.decoded) > sum(before)
            for r, c in made:
                assert r == 0 or sched.decoded[r - 1] >= min(c + window, cols), (r, c, sched.decoded)
        assert most <= widest, (window, length, most, widest)
