"""Lumina-mGPT adapter on a tiny random ChameleonForConditionalGeneration (32 image codes, Lumina's ids)."""
import pytest
import torch
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.models import load_model, registry
from zipar.zipar_core.models.chameleon_vqgan import ChameleonVQGANDecoder, VQGANConfig, save_safetensors
from zipar.zipar_core.models.lumina import LuminaAdapter, supported_sizes
from zipar.zipar_core.models.tiny import tiny_chameleon
from zipar.zipar_core.modes import count_passes
from zipar.zipar_core.sampler import generate

TINY_VQ = VQGANConfig(n_embed=32, embed_dim=4, z_channels=8, resolution=64, ch=32, ch_mult=[1, 1, 1, 1, 1],
                      num_res_blocks=1)


@pytest.fixture(scope="module")
def lumina():
    model, tok = tiny_chameleon()
    torch.manual_seed(0)
    return LuminaAdapter(model, tok, vqgan=ChameleonVQGANDecoder(TINY_VQ).eval(), target_size=None)


@torch.no_grad()
def raster_reference(adapter, cond, scale):
    """Plain raster decoding of sample 0 with a full, uncached forward per token (no ZipAR code involved):
    the base Chameleon model over the whole sequence, lm_head, image columns, guidance, argmax."""
    H, W = cond.layout.rows, cond.layout.cols
    rows = [0, cond.batch_size] if cond.guidance else [0]
    seqs = [cond.payload.ids[r][cond.prefix_valid[r]].tolist() for r in rows]
    img_ids = adapter.img2bpe
    model = adapter.model
    codes = []
    for _ in range(H):
        for _ in range(W):
            logits = []
            for s in seqs:
                hidden = model.model(input_ids=torch.tensor([s]), use_cache=False).last_hidden_state
                logits.append(model.lm_head(hidden[0, -1])[img_ids].float())
            guided = logits[1] + scale * (logits[0] - logits[1]) if cond.guidance else logits[0]
            code = int(guided.argmax())
            codes.append(code)
            seqs = [s + [int(img_ids[code])] for s in seqs]
        seqs = [s + [8803] for s in seqs]  # EOL
    return torch.tensor(codes).view(H, W)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_ntp_greedy_equals_uncached_raster_loop(lumina, scale):
    cond = lumina.prepare(prompt="a red cat on the mat", height=64, width=96, guidance_scale=scale)
    assert (cond.layout.rows, cond.layout.cols, cond.layout.eol) == (4, 6, True)
    ours = generate(lumina, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=scale))
    ref = raster_reference(lumina, cond, scale)
    assert ours.codes[0].tolist() == ref.tolist()
    assert len(set(ref.flatten().tolist())) > 4
    assert ours.stats.passes == 4 * 6  # EOL row starts need no placeholder


def test_prompt_and_unconditional_rows(lumina):
    cond = lumina.prepare(prompt="a cat", height=64, width=96, guidance_scale=3.0)
    ids = cond.payload.ids
    cond_ids = ids[0][cond.prefix_valid[0]].tolist()
    assert cond_ids[0] == 0 and cond_ids[-4:] == [8710, 8197, 8804 + 2, 8804 + 3]  # sep, BOI, h/32, w/32
    text = lumina.tokenizer.decode(cond_ids[1:-4]).replace(" ", "")
    assert text == "Generateanimageof96x64accordingtothefollowingprompt:acat"
    assert ids[1][cond.prefix_valid[1]].tolist() == [8197, 8806, 8807]  # uncond starts at the image-start token
    neg = lumina.prepare(prompt="a cat", negative_prompt="lowres", height=64, width=96, guidance_scale=3.0)
    assert neg.payload.ids[1][neg.prefix_valid[1]].tolist()[-4:] == [8710, 8197, 8806, 8807]


def test_image_logits_not_masked(lumina):
    """transformers' forward masks image logits to -inf; the adapter's must be real numbers."""
    cond = lumina.prepare(prompt="a cat", height=64, width=64, guidance_scale=1.0)
    cache = lumina.new_cache(cond, cond.layout.num_slots + 1)
    P = cond.layout.prefix
    logits = lumina.prefill(cond, cache, torch.ones(1, P, P, dtype=torch.bool).tril())
    assert logits.shape == (1, 32) and torch.isfinite(logits).all() and logits.std() > 0
    full = lumina.model(input_ids=cond.payload.ids).logits[0, -1, lumina.img2bpe]
    assert (full == torch.finfo(full.dtype).min).all()


def test_modes_batched_and_pass_counts(lumina):
    prompts = ["a red cat on the mat", "a dog"]
    cond = lumina.prepare(prompt=prompts, height=64, width=96, guidance_scale=3.0)
    cfg = ZipARConfig(mode="ntp", temperature=0, guidance_scale=3.0)
    ntp = generate(lumina, cond, cfg)
    full = generate(lumina, cond, ZipARConfig(mode="fixed", window=6, temperature=0, guidance_scale=3.0))
    assert full.codes.tolist() == ntp.codes.tolist()
    alone = generate(lumina, lumina.prepare(prompt=prompts[1], height=64, width=96, guidance_scale=3.0), cfg)
    assert alone.codes[0].tolist() == ntp.codes[1].tolist()

    fcfg = ZipARConfig(mode="fixed", window=2, guidance_scale=3.0, top_k=2000)
    fixed = generate(lumina, cond, fcfg, generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    assert fixed.codes.shape == (2, 4, 6) and fixed.stats.passes == count_passes(cond.layout, fcfg) == 3 * 2 + 6
    adaptive = generate(lumina, cond, ZipARConfig(mode="adaptive", window=2, guidance_scale=3.0, top_k=8),
                        generator=[torch.Generator().manual_seed(s) for s in (2, 3)])
    assert adaptive.codes.shape == (2, 4, 6) and adaptive.stats.passes <= 24


def test_decode_sixteen_px_per_token(lumina):
    img = lumina.decode(torch.randint(0, 32, (2, 4, 6)))
    assert img.shape == (2, 3, 64, 96) and img.min() >= -1 and img.max() <= 1


def test_supported_sizes_and_errors(lumina):
    s768, s1024 = supported_sizes(768), supported_sizes(1024)
    assert (768, 768) in s768 and (1024, 1024) in s1024 and (1024, 576) in s768 and (1024, 1024) not in s768
    model, tok = tiny_chameleon()
    sized = LuminaAdapter(model, tok, target_size=768)
    assert sized.grid_for(768, 768) == (48, 48) and sized.grid_for(576, 1024) == (36, 64)
    with pytest.raises(ValueError, match="not trained for 1024x1024"):
        sized.grid_for(1024, 1024)
    with pytest.raises(ValueError, match="multiples of 32"):
        lumina.prepare(prompt="a cat", height=80, width=80)
    with pytest.raises(ValueError, match="context"):
        lumina.prepare(prompt="a cat", height=512, width=512)  # 32 x 33 slots > 512 positions
    with pytest.raises(ValueError, match="no VQGAN decoder"):
        sized.decode(torch.zeros((1, 2, 2), dtype=torch.long))


def test_from_pretrained_folder_with_vqgan(lumina, tmp_path):
    folder = tmp_path / "Lumina-mGPT-7B-768"
    lumina.model.save_pretrained(folder)
    lumina.tokenizer.save_pretrained(folder)
    save_safetensors(lumina.vqgan, str(folder / "vqgan.safetensors"))
    assert registry.detect(str(folder)).name == "lumina"
    loaded = load_model(str(folder), torch_dtype=torch.float32, device="cpu")
    assert isinstance(loaded, LuminaAdapter) and loaded.target_size == 768 and loaded.vqgan is not None
    codes = torch.randint(0, 32, (1, 2, 4))
    assert torch.equal(loaded.decode(codes), lumina.decode(codes))
    cond = lumina.prepare(prompt="a cat", height=64, width=64, guidance_scale=3.0)
    cfg = ZipARConfig(mode="fixed", window=2, temperature=0, guidance_scale=3.0)
    assert generate(loaded, cond, cfg).codes.tolist() == generate(lumina, cond, cfg).codes.tolist()
