"""The sampler on a tiny generic model (with and without end-of-row tokens).

Exactness (docs/design.md, "Correctness rules"): window >= W reproduces a plain raster loop, and every pass's logits equal
an uncached forward over the same tokens; unwritten cache slots are never read; a batch gives every
image the tokens it gets alone; adaptive pass counts lie between fixed(s_min) and NTP.
"""
import os

import pytest
import torch
from helpers import Recorder, ToyAR
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.layout import EOL
from zipar.zipar_core.sampler import DecodingCancelled, generate
from zipar.zipar_core.sampling import apply_guidance

ROWS, COLS = 4, 6


@pytest.fixture(scope="module")
def model():
    return ToyAR()


def raster_reference(model, labels, rows, cols, eol, guidance_scale=1.0):
    """Plain raster decoding, greedy, one uncached full forward per token."""
    cond = model.prepare(labels, rows, cols, eol=eol, guidance=guidance_scale != 1.0)
    B = len(labels)
    tokens = torch.zeros((cond.num_sequences, 0), dtype=torch.long)
    slots = torch.zeros_like(tokens)
    out = []
    for r in range(rows):
        for c in range(cols):
            logits = model.full_forward(cond, tokens, slots)[:, -1]
            if cond.guidance:
                logits = apply_guidance(logits, B, guidance_scale)
            x = logits.argmax(-1)
            out.append(x)
            new = [(x.repeat(cond.num_sequences // B), cond.layout.slot(r, c))]
            if eol and c == cols - 1 and r < rows - 1:
                new.append((torch.full((cond.num_sequences,), EOL), cond.layout.eol_slot(r)))
            for tok, slot in new:
                tokens = torch.cat([tokens, tok[:, None]], 1)
                slots = torch.cat([slots, torch.full((cond.num_sequences, 1), slot)], 1)
    return torch.stack(out, 1).view(B, rows, cols)


EXACT_MODES = [dict(mode="ntp"), dict(mode="fixed", window=COLS), dict(mode="adaptive", window=COLS),
               dict(mode="fixed", window=COLS, paper_first_row=True)]


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("mode", EXACT_MODES, ids=lambda m: "-".join(map(str, m.values())))
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_full_window_equals_raster_decoding(model, eol, mode, guidance_scale):
    cfg = ZipARConfig(temperature=0, guidance_scale=guidance_scale, **mode)
    got = generate(model, model.prepare([1, 3], ROWS, COLS, eol, cfg.guidance), cfg)
    expected = raster_reference(model, [1, 3], ROWS, COLS, eol, guidance_scale)
    assert torch.equal(got.codes, expected)
    assert got.stats.passes == ROWS * COLS


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("mode", EXACT_MODES[:3], ids=lambda m: m["mode"])
def test_every_pass_equals_an_uncached_forward(model, eol, mode):
    rec = Recorder(model)
    cfg = ZipARConfig(temperature=0.9, top_k=10, **mode)
    cond = model.prepare([2], ROWS, COLS, eol, False)
    result = generate(rec, cond, cfg, generator=torch.Generator().manual_seed(0))
    # the whole sequence in slot order; each fed slot's logits must match the uncached causal forward
    layout = cond.layout
    seq = {}
    for r in range(ROWS):
        for c in range(COLS):
            seq[layout.slot(r, c)] = result.codes[0, r, c].item()
        if eol and r < ROWS - 1:
            seq[layout.eol_slot(r)] = EOL
    order = sorted(seq)
    reference = model.full_forward(cond, torch.tensor([[seq[s] for s in order]]), torch.tensor([order]))
    position = {s: i + 1 for i, s in enumerate(order)}
    checked = 0
    for tokens, slots, logits in rec.calls:
        for q, slot in enumerate(slots[0].tolist()):
            if slot in position:
                assert tokens[0, q].item() == seq[slot]
                torch.testing.assert_close(logits[0, q], reference[0, position[slot]], atol=1e-4, rtol=1e-4)
                checked += 1
    assert checked == len(order) - 1  # every slot but the last token's was fed, and checked


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("cfg", [dict(mode="ntp"), dict(window=2), dict(window=3, paper_first_row=True),
                                 dict(mode="adaptive", window=2), dict(window=1, guidance_scale=2.5)],
                         ids=str)
def test_unwritten_slots_are_never_read(model, eol, cfg):
    """Poison the whole cache with huge values: nothing changes, so no masked slot is attended."""
    config = ZipARConfig(temperature=1.0, top_p=0.95, **cfg)
    runs = []
    for poison in (None, 1e4):
        cond = model.prepare([0, 4], ROWS, COLS, eol, config.guidance)
        cache = model.new_cache(cond, cond.layout.num_slots + 1)
        if poison is not None:
            cache.fill_(poison)
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        runs.append(generate(model, cond, config, generator=gens, cache=cache))
    assert torch.equal(runs[0].codes, runs[1].codes)
    assert runs[0].stats.passes == runs[1].stats.passes


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("cfg", [dict(mode="ntp"), dict(window=2), dict(mode="adaptive", window=2),
                                 dict(mode="adaptive", window=3, top_k=8)], ids=str)
def test_batch_gives_each_image_its_tokens_alone(eol, cfg):
    """In float64, so that the float rounding of batched vs single matmuls (~1e-7 in float32, which can
    flip a draw that lands right on a CDF boundary) cannot hide a real difference."""
    model = ToyAR(dtype=torch.float64)
    config = ZipARConfig(guidance_scale=2.0, temperature=1.0, **cfg)
    labels = [0, 3, 4]
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(3)]  # noqa: E731
    batch = generate(model, model.prepare(labels, ROWS, COLS, eol, True), config, generator=gens())
    for i, label in enumerate(labels):
        alone = generate(model, model.prepare([label], ROWS, COLS, eol, True), config, generator=[gens()[i]])
        assert torch.equal(batch.codes[i], alone.codes[0]), f"image {i} differs in a batch"
        assert batch.stats.sample_passes[i] == alone.stats.passes


@pytest.mark.parametrize("eol", [False, True])
@pytest.mark.parametrize("s_min", [1, 2, 4])
def test_adaptive_passes_lie_between_fixed_and_ntp(model, eol, s_min):
    rows, cols = 6, 8
    fixed = (rows - 1) * s_min + cols
    at_least = (rows - 1) * (s_min + 1) + cols if s_min < cols else fixed  # >= 1 verification per row
    for seed in range(4):
        cond = model.prepare([seed % 5], rows, cols, eol, False)
        r = generate(model, cond, ZipARConfig(mode="adaptive", window=s_min),
                     generator=torch.Generator().manual_seed(seed))
        assert fixed <= at_least <= r.stats.passes <= rows * cols
        assert r.stats.drafts_proposed >= r.stats.drafts_accepted
        assert (r.codes >= 0).all() and (r.codes < model.codebook_size).all()


def test_fixed_windows_give_eq1_pass_counts_and_valid_codes(model):
    for s in range(1, COLS + 1):
        r = generate(model, model.prepare([1], ROWS, COLS, False, False), ZipARConfig(window=s),
                     generator=torch.Generator().manual_seed(s))
        assert r.stats.passes == r.stats.expected_passes == (ROWS - 1) * s + COLS
        assert r.codes.shape == (1, ROWS, COLS) and (r.codes >= 0).all()


def test_same_generator_same_image_and_seeds_differ(model):
    cfg = ZipARConfig(window=2)
    run = lambda seed: generate(model, model.prepare([1], ROWS, COLS), cfg,  # noqa: E731
                                generator=torch.Generator().manual_seed(seed)).codes
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_callback_sees_every_pass_and_cancel_stops_within_one(model):
    seen = []
    cfg = ZipARConfig(window=2)
    r = generate(model, model.prepare([1], ROWS, COLS), cfg, generator=torch.Generator().manual_seed(0),
                 callback=lambda step, codes, stats: seen.append((step, int((codes >= 0).sum()), stats.passes)))
    assert [s for s, _, _ in seen] == list(range(r.stats.passes))
    assert seen[-1][1] == ROWS * COLS and seen[0][1] == 1
    calls = []
    with pytest.raises(DecodingCancelled) as stop:
        generate(model, model.prepare([1], ROWS, COLS), cfg, cancel=lambda: len(calls) >= 3,
                 callback=lambda *a: calls.append(1), generator=torch.Generator().manual_seed(0))
    assert len(calls) == 3  # stopped right after the pass that asked
    partial = stop.value.result  # what was decoded until then, -1 elsewhere
    assert partial.stats.stopped and partial.stats.passes == 4
    known = partial.codes >= 0
    assert int(known.sum()) == seen[3][1] and torch.equal(partial.codes[known], r.codes[known])


def test_bad_input_is_refused_with_the_fix(model):
    with pytest.raises(ValueError, match="larger than the grid width"):
        generate(model, model.prepare([1], ROWS, COLS), ZipARConfig(window=COLS + 1))
    with pytest.raises(ValueError, match="prepare it with the same guidance_scale"):
        generate(model, model.prepare([1], ROWS, COLS), ZipARConfig(guidance_scale=3.0))
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        generate(model, model.prepare([1, 2, 3], ROWS, COLS), ZipARConfig(window=2),
                 generator=[torch.Generator(), torch.Generator()])


def test_statistics(model):
    r = generate(model, model.prepare([1, 2], ROWS, COLS), ZipARConfig(window=2))
    s = r.stats
    assert s.tokens == ROWS * COLS and s.batch_size == 2
    assert s.tokens_per_pass == pytest.approx(ROWS * COLS / s.passes)
    assert s.seconds > 0 and 0 < s.model_seconds <= s.seconds
    assert s.as_dict()["passes"] == s.passes


@pytest.mark.parametrize("cfg", [dict(mode="ntp"), dict(window=2), dict(mode="adaptive", window=2)], ids=str)
def test_static_shape_steps_give_the_same_images(model, cfg):
    """Keys padded to the whole cache (the torch.compile / CUDA-graph path) change nothing."""
    config = ZipARConfig(temperature=1.0, **cfg)
    runs = [generate(model, model.prepare([1, 2], ROWS, COLS, True), config,
                     generator=[torch.Generator().manual_seed(i) for i in range(2)], cuda_graphs=static)
            for static in (False, True)]  # on CPU cuda_graphs=True runs the static-shape step eagerly
    assert torch.equal(runs[0].codes, runs[1].codes)


@pytest.mark.parametrize("cfg", [dict(mode="ntp"), dict(window=2), dict(mode="adaptive", window=2)], ids=str)
def test_cuda_graph_bookkeeping_gives_the_same_images(model, emulated_cuda_graphs, cfg):
    """The CUDA-graph path with capture and replay emulated on CPU (conftest): one graph per query count,
    each pass's inputs copied into that graph's static buffers, the static output cloned before the next
    replay overwrites it. Images equal eager decoding; at most rows + 1 graphs are captured."""
    config = ZipARConfig(temperature=1.0, guidance_scale=2.0, **cfg)
    runs = [generate(model, model.prepare([1, 2], ROWS, COLS, guidance=True), config,
                     generator=[torch.Generator().manual_seed(i) for i in range(2)], cuda_graphs=graphs)
            for graphs in (False, True)]
    assert torch.equal(runs[0].codes, runs[1].codes)
    captured = emulated_cuda_graphs
    assert 1 <= len(captured) <= ROWS + 1 and len(set(captured)) == len(captured)


@pytest.mark.parametrize("backend", [
    "aot_eager",  # dynamo capture + AOT functionalization of the static step, in a second
    pytest.param("inductor", marks=pytest.mark.skipif(not os.environ.get("ZIPAR_SLOW_TESTS"),
                                                      reason="compiles C++ kernels (~35 s); set ZIPAR_SLOW_TESTS=1")),
])
def test_compiled_steps_give_the_same_images(model, backend, monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=backend, **kw))
    config = ZipARConfig(window=2, temperature=0)
    eager = generate(model, model.prepare([1], ROWS, COLS), config)
    compiled = generate(model, model.prepare([1], ROWS, COLS), config, compile=True)
    assert torch.equal(eager.codes, compiled.codes)


@pytest.mark.parametrize("eol", [False, True])
def test_callback_codes_replace_the_sampled_tokens_and_are_what_the_model_reads(model, eol):
    """The callback's codes are written before the next pass, so every token the model is fed afterwards is
    the rewritten one (placeholders included: they copy decoded tokens)."""
    rec = Recorder(model)

    def force(step, codes, stats):
        out = codes.clone()
        out[out >= 0] = 7
        return out

    result = generate(rec, model.prepare([1, 2], ROWS, COLS, eol=eol), ZipARConfig(window=2), callback=force,
                      generator=[torch.Generator().manual_seed(i) for i in range(2)])
    assert (result.codes == 7).all()
    fed = torch.cat([tokens.flatten() for tokens, _, _ in rec.calls])
    assert set(fed.tolist()) <= {7, EOL}
