"""Lumina-mGPT 2.0 adapter on a tiny random model in its layout (image tokens at 155000 + code, Qwen-style
tokenizer, 8-px MoVQGAN): prompt, guidance schedule, exactness of every mode, sizes, decoder."""
import pytest
import torch
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.errors import SettingError
from zipar.zipar_core.models import registry
from zipar.zipar_core.models.lumina2 import Lumina2Adapter, guidance_schedule
from zipar.zipar_core.models.movqgan import MoVQGANConfig, MoVQGANDecoder, config_from_state_dict
from zipar.zipar_core.models.tiny import tiny_lumina2_adapter
from zipar.zipar_core.modes import count_passes
from zipar.zipar_core.sampler import generate

BOI, SEP, EOL, ENDOFTEXT = "<racm3:break>", "<reserved08706>", "<reserved08799>", "<|endoftext|>"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: threads cost more than they give (30x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lumina2(one_thread):
    return tiny_lumina2_adapter()


def vocab_id(adapter, name):
    return adapter.tokenizer.get_vocab()[name]


@torch.no_grad()
def raster_reference(adapter, cond, scale):
    """Plain raster decoding of image 0 with a full, uncached forward per token: the Chameleon base model over the
    whole sequence, lm_head, the rows 155000 + code, Lumina-mGPT 2.0's per-token scale, argmax."""
    H, W = cond.layout.rows, cond.layout.cols
    rows = [0, cond.batch_size] if cond.guidance else [0]
    seqs = [cond.payload.ids[r][cond.prefix_valid[r]].tolist() for r in rows]
    scales = guidance_schedule(scale, H, W)
    eol, codes, all_logits = vocab_id(adapter, EOL), [], []
    for i in range(H * W):
        logits = []
        for s in seqs:
            hidden = adapter.model.model(input_ids=torch.tensor([s]), use_cache=False).last_hidden_state
            logits.append(adapter.model.lm_head(hidden[0, -1])[155000:155000 + adapter.codebook_size].float())
        guided = logits[1] + scales[i] * (logits[0] - logits[1]) if cond.guidance else logits[0]
        codes.append(int(guided.argmax()))
        all_logits.append(torch.stack(logits))
        seqs = [s + [155000 + codes[-1]] + ([eol] if i % W == W - 1 else []) for s in seqs]
    return torch.tensor(codes).view(H, W), torch.stack(all_logits)  # (H*W, branches, codebook)


class PassLogits:
    """The adapter, keeping the logits of every pass by the raster index of the token they predict (ntp)."""

    def __init__(self, adapter):
        self.adapter, self.logits = adapter, []

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def prefill(self, *args):
        self.logits.append(self.adapter.prefill(*args))
        return self.logits[-1]

    def forward(self, *args):
        out = self.adapter.forward(*args)
        self.logits.append(out[:, -1])  # ntp: the last query predicts the next image token (after an EOL, too)
        return out


def test_guidance_schedule_is_the_original_processors():
    """create_logits_processor's scale, worked by hand: s = max(4, s * (1 - n / D)) at every generated token,
    n = tokens since the image start (2 size tokens first), D = rows * cols / 4; end-of-line tokens count."""
    s = guidance_schedule(100.0, 16, 4)  # D = 16; k = 4 is the end of row 0: it updates the scale unseen
    expected = [100 * 14 / 16, 100 * 14 / 16 * 13 / 16, 100 * 14 * 13 * 12 / 16 ** 3, 100 * 14 * 13 * 12 * 11 / 16 ** 4,
                100 * 14 * 13 * 12 * 11 * 10 * 9 / 16 ** 6]
    assert s[:5].tolist() == pytest.approx(expected, rel=1e-6) and s.shape == (64,)
    assert s[6:].tolist() == [4.0] * 58  # never below 4
    assert guidance_schedule(4.0, 8, 8).tolist() == [4.0] * 64  # the default stays 4
    assert guidance_schedule(2.0, 8, 8).tolist() == [4.0] * 64  # below 4: 4 from the first token on
    assert guidance_schedule(1.0, 8, 8).tolist() == [1.0] * 64  # exactly 1: no guidance


def test_the_sampler_s_table_of_scales():
    """sampling.guidance_scales: the scale itself when it is one number, else a table by target index (grid, EOL
    sentinel, trash) from the family's schedule, 1 from guidance_interval on."""
    from zipar.zipar_core.sampling import guidance_scales, scale_at

    schedule = lambda s: torch.arange(6.0) + s  # noqa: E731 -- a made-up schedule for a 2 x 3 grid
    assert guidance_scales(ZipARConfig(guidance_scale=1.0), schedule, 6, "cpu") is None
    assert guidance_scales(ZipARConfig(guidance_scale=3.0), None, 6, "cpu") == 3.0
    table = guidance_scales(ZipARConfig(guidance_scale=3.0, guidance_interval=4), schedule, 6, "cpu")
    assert table.tolist() == [3.0, 4.0, 5.0, 6.0, 1.0, 1.0, 1.0, 1.0]
    assert scale_at(table, torch.tensor([[0, 3, 7]]), torch.float32).tolist() == [[[3.0], [6.0], [1.0]]]
    assert guidance_scales(ZipARConfig(guidance_scale=3.0, guidance_interval=2), None, 6, "cpu").tolist()[:3] == \
        [3.0, 3.0, 1.0]


def test_prompt_as_the_original_builds_it(lumina2):
    cond = lumina2.prepare(prompt="a red cat", height=64, width=96, guidance_scale=4.0)
    ids = cond.payload.ids[0][cond.prefix_valid[0]].tolist()
    # BOS is the tokenizer's (Qwen's has none: its EOS), not config.json's bos_token_id (1)
    assert ids[0] == vocab_id(lumina2, ENDOFTEXT) != lumina2.model.config.bos_token_id
    header = [vocab_id(lumina2, BOI), vocab_id(lumina2, "<reserved08802>"), vocab_id(lumina2, "<reserved08803>")]
    assert ids[-4:] == [vocab_id(lumina2, SEP), *header]  # end of turn, image start, height 64/32, width 96/32
    text = "Generate an image of 96x64 according to the following prompt:\na red cat" + SEP
    assert ids[1:-3] == lumina2.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert cond.payload.ids[1][cond.prefix_valid[1]].tolist() == header  # unconditional: the image part alone
    assert (cond.layout.rows, cond.layout.cols, cond.layout.eol) == (8, 12, True)


def test_dual_panel_tasks_are_prompts(lumina2):
    cond = lumina2.prepare(prompt="<depth> a dog", negative_prompt="lowres", height=64, width=64, guidance_scale=4.0)
    rows = [lumina2.tokenizer.decode(cond.payload.ids[r][cond.prefix_valid[r]][1:-3]) for r in (0, 1)]
    panel = ("Generate a dual-panel image of 64x64 where the <lower half> displays a <depth map>, while the <upper "
             "half> retains the original image for direct visual comparison:\n")
    assert rows == [panel + "a dog" + SEP, panel + "lowres" + SEP]  # the negative prompt in its prompt's task
    with pytest.raises(SettingError, match=r"<dpeth>.*<depth>, <canny>, <hed>, <openpose>"):
        lumina2.check(prompt="<dpeth> a dog", height=64, width=64)


@pytest.mark.parametrize("scale", [1.0, 7.0])
def test_ntp_greedy_equals_an_uncached_raster_loop(lumina2, scale):
    cond = lumina2.prepare(prompt="a red cat on the mat", height=32, width=64, guidance_scale=scale)
    recorded = PassLogits(lumina2)
    ours = generate(recorded, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=scale, top_k=4096))
    ref, ref_logits = raster_reference(lumina2, cond, scale)
    assert ours.codes[0].tolist() == ref.tolist() and len(set(ref.flatten().tolist())) > 3
    passes = torch.stack(recorded.logits)  # (passes, rows: [cond, uncond], codebook): every pass's logits
    assert torch.allclose(passes, ref_logits, atol=1e-5, rtol=1e-5)  # ... equal an uncached forward's
    assert ours.stats.passes == 4 * 8  # one pass per image token: EOL tokens are fed at known slots


def test_every_mode_is_exact_under_greedy_decoding(lumina2):
    prompts = ["a red cat on the mat", "<canny> a dog"]
    cond = lumina2.prepare(prompt=prompts, height=32, width=64, guidance_scale=7.0)
    greedy = dict(temperature=0, guidance_scale=7.0, top_k=4096)
    ntp = generate(lumina2, cond, ZipARConfig(mode="ntp", **greedy)).codes
    for config in (ZipARConfig(mode="fixed", window=8, **greedy), ZipARConfig(mode="sjd", draft_length=4, **greedy),
                   ZipARConfig(mode="zipar_sjd", window=8, draft_length=4, **greedy)):
        assert generate(lumina2, cond, config).codes.tolist() == ntp.tolist(), config.mode
    alone = lumina2.prepare(prompt=prompts[1], height=32, width=64, guidance_scale=7.0)
    assert generate(lumina2, alone, ZipARConfig(mode="ntp", **greedy)).codes[0].tolist() == ntp[1].tolist()
    fixed = ZipARConfig(mode="fixed", window=2, guidance_scale=4.0, top_k=4096)
    out = generate(lumina2, cond, fixed, generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    assert out.stats.passes == count_passes(cond.layout, fixed) == 3 * 2 + 8
    adaptive = generate(lumina2, cond, ZipARConfig(mode="adaptive", window=2, guidance_scale=4.0, top_k=8),
                        generator=[torch.Generator().manual_seed(s) for s in (2, 3)])
    assert adaptive.codes.shape == (2, 4, 8) and adaptive.stats.passes <= 32


def test_the_schedule_reaches_the_sampler(lumina2):
    """A constant scale of 7 is not what Lumina-mGPT 2.0 guides with: without its schedule the tokens differ."""
    cond = lumina2.prepare(prompt="a red cat on the mat", height=32, width=64, guidance_scale=7.0)
    config = ZipARConfig(mode="ntp", temperature=0, guidance_scale=7.0)
    scheduled = generate(lumina2, cond, config).codes
    cond.guidance_schedule = None
    assert generate(lumina2, cond, config).codes.tolist() != scheduled.tolist()


def test_sizes_and_their_errors(lumina2):
    sized = tiny_lumina2_adapter(target_size=768, vqgan=False)
    assert sized.grid_for(768, 768) == (96, 96) and sized.default_size == (768, 768)
    assert sized.grid_for(576, 1024) == (72, 128)  # its training sizes: 32-px steps near 768^2 px, aspect ratio <= 4
    with pytest.raises(SettingError, match=r"Lumina-mGPT 2.0 \(768 px\) was not trained for 1024x1024"):
        sized.grid_for(1024, 1024)
    with pytest.raises(SettingError, match=r"770x768.*multiples of 32 px"):
        lumina2.check(prompt="a cat", height=768, width=770)
    with pytest.raises(SettingError, match="context"):
        lumina2.prepare(prompt="a cat", height=256, width=256)  # 32 x 33 slots > 512 positions
    with pytest.raises(SettingError, match=r"no image decoder: MoVQGAN 270M.*ai-forever/MoVQGAN"):
        sized.decode(torch.zeros((1, 4, 4), dtype=torch.long))


def test_movqgan_decodes_eight_px_per_token(lumina2):
    codes = torch.randint(0, 32, (2, 4, 8))
    img = lumina2.decode(codes)
    assert img.shape == (2, 3, 32, 64) and img.min() >= -1 and img.max() <= 1 and img.std() > 0
    assert torch.allclose(lumina2.decode(codes[1:]), img[1:], atol=1e-5)  # batched as the original's batch of one


def test_the_published_movqgan_architecture_is_read_from_its_tensors():
    with torch.device("meta"):
        published = MoVQGANDecoder(MoVQGANConfig())  # the 270M entry of MoVQGAN's MODELS table
    assert config_from_state_dict(published.state_dict()) == MoVQGANConfig()
    assert sum(p.numel() for p in published.parameters()) > 100e6 and published.pixels_per_token == 8
    sd = {k: v for k, v in published.state_dict().items() if ".attn." not in k}
    assert config_from_state_dict(sd).attn_levels == []


def test_the_registry_tells_lumina_mgpt_2_from_lumina_mgpt(lumina2):
    assert registry.family_for_config({"model_type": "chameleon", "vocab_size": 171385}).name == "lumina2"
    assert registry.family_for_config({"model_type": "chameleon", "vocab_size": 65536}).name == "lumina"
    assert registry.family_of_module(lumina2.model).name == "lumina2"
    assert isinstance(registry.build_tiny("lumina2"), Lumina2Adapter)
    assert not hasattr(lumina2.model.model, "vqmodel")  # 2.0 has no Chameleon image encoder
