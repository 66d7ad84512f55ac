"""Janus-Pro adapter on a tiny random JanusForConditionalGeneration (4 x 4 grid, 48 codes, 64 px)."""
import pytest
import torch
from zipar.zipar_core.config import ZipARConfig
from zipar.zipar_core.loading import LoadOptions
from zipar.zipar_core.models import load_model, registry
from zipar.zipar_core.models.janus import JanusAdapter
from zipar.zipar_core.models.tiny import tiny_janus
from zipar.zipar_core.modes import count_passes
from zipar.zipar_core.sampler import generate


@pytest.fixture(scope="module")
def janus():
    model, tok = tiny_janus()
    return JanusAdapter(model, tok)


def _hf_generate(adapter, ids, scale):
    """transformers' own image generation path, greedy."""
    ids = torch.as_tensor(ids)
    out = adapter.model.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image", do_sample=False,
                                 guidance_scale=scale)
    return out.view(ids.shape[0], adapter.rows, adapter.cols)


@pytest.mark.parametrize("scale", [1.5, 5.0])  # transformers needs cfg > 1 here
def test_ntp_greedy_equals_transformers_generate(janus, scale):
    # two prompts of equal token length: transformers' Janus generate ignores left padding in its positions
    prompts = ["a cat on the mat", "a red dog on blue"]
    cond = janus.prepare(prompt=prompts, guidance_scale=scale)
    assert cond.prefix_valid.all()
    ours = generate(janus, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=scale))
    ref = _hf_generate(janus, cond.payload.ids[:2], scale)
    assert ours.codes.tolist() == ref.tolist()
    assert len(set(ref.flatten().tolist())) > 3  # the tiny model's argmax is not degenerate
    assert ours.stats.passes == 16


def test_prompt_template_and_unconditional_rows(janus):
    cond = janus.prepare(prompt="a cat", guidance_scale=5.0)
    cond_ids, uncond_ids = cond.payload.ids.tolist()
    text = janus.tokenizer.decode(cond_ids)
    assert text.startswith("<bos>") and text.endswith("<begin_of_image>") and "User" in text and "Assistant" in text
    # transformers' uncond prompt: BOS and BOI kept, everything else pad
    assert uncond_ids == [2] + [1] * (len(cond_ids) - 2) + [4]


def test_full_window_equals_ntp_and_modes_run_batched(janus):
    prompts = ["a cat on the mat", "a dog"]  # different lengths: left padding in the batch
    cond = janus.prepare(prompt=prompts, guidance_scale=2.0)
    assert not cond.prefix_valid.all()
    ntp = generate(janus, cond, ZipARConfig(mode="ntp", temperature=0, guidance_scale=2.0))
    full = generate(janus, cond, ZipARConfig(mode="fixed", window=4, temperature=0, guidance_scale=2.0))
    assert full.codes.tolist() == ntp.codes.tolist()
    # a padded row computes what the same prompt computes alone
    alone = generate(janus, janus.prepare(prompt=prompts[1], guidance_scale=2.0),
                     ZipARConfig(mode="ntp", temperature=0, guidance_scale=2.0))
    assert alone.codes[0].tolist() == ntp.codes[1].tolist()

    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    cfg = ZipARConfig(mode="fixed", window=2, guidance_scale=2.0, top_k=10)
    fixed = generate(janus, cond, cfg, generator=gens)
    assert fixed.codes.shape == (2, 4, 4) and 0 <= fixed.codes.min() and fixed.codes.max() < 48
    # no EOL: rows start from a placeholder, (H-1)*s + W passes
    assert fixed.stats.passes == count_passes(cond.layout, cfg) == 3 * 2 + 4
    adaptive = generate(janus, cond, ZipARConfig(mode="adaptive", window=2, guidance_scale=2.0),
                        generator=[torch.Generator().manual_seed(s) for s in (3, 4)])
    assert adaptive.codes.shape == (2, 4, 4)
    assert 3 * 3 + 4 <= adaptive.stats.passes <= 16  # each row pays >= 1 verification pass


def test_decode_size_and_range(janus):
    codes = torch.randint(0, 48, (2, 4, 4))
    img = janus.decode(codes)
    assert img.shape == (2, 3, 64, 64) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1


def test_errors(janus):
    with pytest.raises(ValueError, match="64x64 images only"):
        janus.prepare(prompt="a cat", height=128, width=128)
    with pytest.raises(ValueError, match="context"):
        janus.prepare(prompt=" ".join(["cat"] * 60))
    with pytest.raises(ValueError, match="4x4 code grids"):
        janus.decode(torch.zeros((1, 3, 3), dtype=torch.long))
    model, tok = tiny_janus()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash-attention"):
        JanusAdapter(model, tok)


def test_eager_attention_same_tokens(janus):
    model, tok = tiny_janus(attn="eager")
    eager = JanusAdapter(model, tok)
    assert eager.attn_implementation == "eager"
    cond = janus.prepare(prompt=["a cat on the mat", "a dog"], guidance_scale=2.0)
    cfg = ZipARConfig(mode="fixed", window=2, temperature=0, guidance_scale=2.0)
    assert generate(eager, cond, cfg).codes.tolist() == generate(janus, cond, cfg).codes.tolist()


def test_from_pretrained_folder(janus, tmp_path):
    janus.model.save_pretrained(tmp_path)
    janus.tokenizer.save_pretrained(tmp_path)
    assert registry.detect(str(tmp_path)).name == "janus"
    loaded = load_model(str(tmp_path), torch_dtype=torch.float32, device="cpu")
    assert isinstance(loaded, JanusAdapter) and loaded.attn_implementation == "sdpa"
    cond = loaded.prepare(prompt="a cat on the mat", guidance_scale=3.0)
    cfg = ZipARConfig(mode="ntp", temperature=0, guidance_scale=3.0)
    assert generate(loaded, cond, cfg).codes.tolist() == generate(janus, cond, cfg).codes.tolist()
    with pytest.raises(ValueError, match="flash-attention"):
        JanusAdapter.from_pretrained(str(tmp_path), LoadOptions(attn_implementation="flash_attention_2"))


@pytest.mark.parametrize("hidden, layers, heads", [(2048, 24, 16), (4096, 30, 32)])  # Janus-Pro-1B, -7B
def test_real_configs_layout(hidden, layers, heads):
    """The adapter reads everything from the config: on the meta device (no weights), Janus-Pro's 24 x 24
    grid, 16384 codes, 384 px, and a cache sized for the text model."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    text = {"model_type": "llama", "vocab_size": 102400, "hidden_size": hidden, "intermediate_size": 4 * hidden,
                "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": heads,
                "max_position_embeddings": 16384, "bos_token_id": 100000, "pad_token_id": 100015}
    cfg = JanusConfig(text_config=text, vision_config={"projection_dim": hidden},
                      vq_config={"image_token_embed_dim": hidden, "projection_dim": hidden})
    with torch.device("meta"):
        model = JanusForConditionalGeneration(cfg)
    model.generation_config.generation_kwargs = {"boi_token_id": 100016}
    adapter = JanusAdapter(model)
    assert (adapter.rows, adapter.cols, adapter.pixels_per_token, adapter.codebook_size) == (24, 24, 16, 16384)
    cond = adapter.conditioning_from_ids([[100000, 7, 8, 100016]], [[100000, 100015, 100015, 100016]], *adapter.grid_for())
    assert cond.layout.num_slots == 4 + 576 and cond.extras == {"height": 384, "width": 384}
    cache = adapter.new_cache(cond, cond.layout.num_slots + 1)
    assert len(cache.keys) == layers and cache.keys[0].shape == (2, heads, 581, hidden // heads)
