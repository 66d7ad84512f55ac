"""The ZipAR sampler on LlamaGen (placeholder row starts, 2-D RoPE, c2i and t2i), end to end."""
import pytest
import torch
from helpers import T2I_PREFIX, Recorder, caption_batch, tiny_gpt, tiny_vq
from zipar.zipar_core import ZipARConfig, generate
from zipar.zipar_core.models.llamagen import LlamaGenAdapter, load_llamagen

ROWS, COLS = 5, 6
MODES = [dict(mode="ntp"), dict(window=COLS), dict(mode="adaptive", window=COLS), dict(window=2),
         dict(window=3, paper_first_row=True), dict(mode="adaptive", window=2)]


@pytest.fixture(scope="module")
def c2i():
    return LlamaGenAdapter(tiny_gpt("c2i", block_size=36), tiny_vq())


@pytest.fixture(scope="module")
def t2i():
    return LlamaGenAdapter(tiny_gpt("t2i", block_size=36), tiny_vq())


def _prepare(model, batch, guidance_scale):
    if model.model_type == "c2i":
        return model.prepare(class_labels=list(range(batch)), rows=ROWS, cols=COLS, guidance_scale=guidance_scale)
    caps, mask = caption_batch(batch, T2I_PREFIX, model.config.caption_dim)
    return model.encode_captions(caps, caption_mask=mask, rows=ROWS, cols=COLS, guidance_scale=guidance_scale)


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("mode", MODES[:3], ids=lambda m: "-".join(map(str, m.values())))
def test_full_window_passes_equal_uncached_forward(kind, mode, request):
    """Every pass's logits (cond and uncond rows) equal LlamaGen's uncached full forward; greedy tokens
    are the argmax of the guided reference, i.e. plain raster decoding."""
    model = request.getfixturevalue(kind)
    rec = Recorder(model)
    cfg = ZipARConfig(temperature=0, guidance_scale=3.0, **mode)
    cond = _prepare(model, 2, cfg.guidance_scale)
    result = generate(rec, cond, cfg)
    assert result.stats.passes == ROWS * COLS
    codes = result.codes.view(2, -1).repeat(2, 1)  # [cond; uncond] rows share the tokens
    ref = model.gpt(cond.payload, codes, COLS, cond.prefix_valid)  # (rows, P + T, V)
    P = cond.layout.prefix
    for tokens, slots, logits in rec.calls:
        for q, slot in enumerate(slots[0].tolist()):
            if slot < cond.layout.num_slots:
                torch.testing.assert_close(logits[:, q], ref[:, slot], atol=2e-4, rtol=2e-4)
    guided = ref[2:, P - 1:-1] + 3.0 * (ref[:2, P - 1:-1] - ref[2:, P - 1:-1])
    assert torch.equal(result.codes.view(2, -1), guided.argmax(-1))


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(map(str, m.values())))
def test_poisoned_empty_slots_change_nothing(kind, mode, request):
    model = request.getfixturevalue(kind)
    cfg = ZipARConfig(guidance_scale=2.0, top_k=20, **mode)
    runs = []
    for poison in (None, 1e4):
        cond = _prepare(model, 2, cfg.guidance_scale)
        cache = model.new_cache(cond, cond.layout.num_slots + 1)
        if poison:
            cache.fill_(poison)
        gens = [torch.Generator().manual_seed(7 + i) for i in range(2)]
        runs.append(generate(model, cond, cfg, generator=gens, cache=cache))
    assert torch.equal(runs[0].codes, runs[1].codes)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(map(str, m.values())))
def test_batch_of_three_with_guidance_equals_each_alone(mode):
    c2i = LlamaGenAdapter(tiny_gpt("c2i", block_size=36).double(), tiny_vq())  # float64: see test_sampler
    cfg = ZipARConfig(guidance_scale=2.0, temperature=1.0, **mode)
    gens = lambda: [torch.Generator().manual_seed(40 + i) for i in range(3)]  # noqa: E731
    batch = generate(c2i, c2i.prepare(class_labels=[4, 1, 7], rows=ROWS, cols=COLS, guidance_scale=2.0), cfg,
                     generator=gens())
    for i, label in enumerate([4, 1, 7]):
        alone = generate(c2i, c2i.prepare(class_labels=[label], rows=ROWS, cols=COLS, guidance_scale=2.0), cfg,
                         generator=[gens()[i]])
        assert torch.equal(batch.codes[i], alone.codes[0])


def test_official_checkpoint_loads_generates_and_decodes(tmp_path):
    torch.save({"model": tiny_gpt("c2i", block_size=36).state_dict()}, tmp_path / "c2i_B_96.pt")
    torch.save({"model": tiny_vq().state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    model = load_llamagen(tmp_path / "c2i_B_96.pt", tmp_path / "vq_ds16_c2i.pt", image_size=96, n_head=4)
    cfg = ZipARConfig(window=2, guidance_scale=2.0)
    result = generate(model, model.prepare(class_labels=[1, 2], guidance_scale=2.0), cfg,
                      generator=torch.Generator().manual_seed(0))
    assert result.codes.shape == (2, 6, 6) and result.stats.passes == 5 * 2 + 6
    images = model.decode(result.codes)
    assert images.shape == (2, 3, 12, 12) and images.min() >= -1 and images.max() <= 1


def test_bad_grid_and_window_are_refused(c2i):
    with pytest.raises(ValueError, match=r"grid 7x7 tokens .* is larger than the 6x6 tokens .* grid this LlamaGen model was trained on"):
        c2i.prepare(class_labels=[1], rows=7, cols=7)
    with pytest.raises(ValueError, match="window must be a whole number >= 1"):
        ZipARConfig(window=0)
    with pytest.raises(ValueError, match="window 9 is larger than the grid width"):
        generate(c2i, c2i.prepare(class_labels=[1], rows=ROWS, cols=COLS), ZipARConfig(window=9))
    with pytest.raises(ValueError, match="out of range"):
        c2i.prepare(class_labels=[10])
