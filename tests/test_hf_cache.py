"""The slot cache inside transformers: K/V written at chosen slots, explicit positions, 4-D masks."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaModel
from transformers.cache_utils import Cache
from zipar.zipar_core.cache import SlotKVCache
from zipar.zipar_core.models import registry
from zipar.zipar_core.models.hf_cache import HFSlotCache
from zipar.zipar_core.models.hf_common import (
    attention_mask_4d,
    cache_argument,
    check_attention,
    left_pad,
    positions_for,
)


def tiny_llama(attn="sdpa"):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    cfg._attn_implementation = attn
    return LlamaModel(cfg).eval()


def uncached(model, tokens, positions):
    """Plain causal forward over a token list at the given positions (no cache): the reference. The causal
    mask is explicit: without one, transformers reads a jump in position_ids as a new packed sequence."""
    n = len(tokens)
    causal = attention_mask_4d(torch.ones(1, n, n, dtype=torch.bool).tril(), model.config._attn_implementation,
                               torch.float32)
    out = model(input_ids=torch.tensor([tokens]), position_ids=torch.tensor([positions]), attention_mask=causal,
                use_cache=False)
    return out.last_hidden_state[0]


def cached_pass(model, cache, tokens, slots, visible, impl):
    slots = torch.tensor([slots])
    mask = attention_mask_4d(visible[None], impl, torch.float32)
    out = model(input_ids=torch.tensor([tokens]), position_ids=slots, attention_mask=mask, use_cache=True,
                **{cache_argument(model): cache.at(slots, visible.shape[-1])})  # the keyword this transformers takes (cache, past_key_values before)
    return out.last_hidden_state[0]


def test_a_forward_writes_through_a_cache_bound_to_its_slots():
    """The store holds no "current slots": ``at(slots, kv_len)`` is the transformers Cache one forward writes
    through, at those slots (gpt-fast's update(input_pos, k, v))."""
    cache = HFSlotCache.for_config(tiny_llama().config, batch=3, num_slots=12, dtype=torch.float32, device="cpu")
    assert isinstance(cache, SlotKVCache) and cache.keys[0].shape == (3, 2, 12, 8)
    view = cache.at(torch.tensor([[5, 1]] * 3), kv_len=6)
    assert isinstance(view, Cache) and len(view.layers) == 2
    k = torch.randn(3, 2, 2, 8)
    keys, _values = view.update(k, k + 1, layer_idx=1)
    assert keys.shape == (3, 2, 6, 8)
    assert torch.equal(cache.keys[1][:, :, 5], k[:, :, 0]) and torch.equal(cache.values[1][:, :, 1], k[:, :, 1] + 1)
    assert view.get_seq_length() == 6 and view.layers[0].get_mask_sizes(2) == (6, 0)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_out_of_order_slots_match_uncached_forward(impl):
    model = tiny_llama(impl)
    toks = [3, 17, 8, 22, 41, 5, 9, 30, 12, 44]
    cache = HFSlotCache.for_config(model.config, 1, 11, torch.float32, "cpu").fill_(1e4)  # unwritten slots poisoned
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with torch.no_grad():
        h = cached_pass(model, cache, toks[:6], list(range(6)), causal, impl)
        assert torch.allclose(h, uncached(model, toks[:6], list(range(6))), atol=1e-5)
        # slots 8 then 6 in one pass, each seeing the prompt and itself (7 is not decoded yet)
        vis = torch.zeros(2, 9, dtype=torch.bool)
        vis[:, :6] = True
        vis[0, 8] = vis[1, 6] = True
        h = cached_pass(model, cache, [toks[8], toks[6]], [8, 6], vis, impl)
        assert torch.allclose(h[0], uncached(model, toks[:6] + [toks[8]], list(range(6)) + [8])[-1], atol=1e-5)
        assert torch.allclose(h[1], uncached(model, toks[:7], list(range(7)))[-1], atol=1e-5)
        # slot 7 sees 0..7: its entry and hidden state are those of plain raster decoding
        vis = torch.zeros(1, 8, dtype=torch.bool)
        vis[0, :8] = True
        h = cached_pass(model, cache, [toks[7]], [7], vis, impl)
        assert torch.allclose(h[0], uncached(model, toks[:8], list(range(8)))[-1], atol=1e-5)


def test_eager_needs_additive_mask():
    visible = torch.tensor([[[True, False], [True, True]]])
    assert attention_mask_4d(visible, "sdpa", torch.float32).dtype == torch.bool
    add = attention_mask_4d(visible, "eager", torch.bfloat16)
    assert add.shape == (1, 1, 2, 2) and add.dtype == torch.bfloat16
    assert add[0, 0, 0, 0] == 0 and add[0, 0, 0, 1] == torch.finfo(torch.bfloat16).min


def test_flash_attention_refused():
    for impl in ("flash_attention_2", "flash_attention_3", "paged|sdpa"):
        with pytest.raises(ValueError, match="flash-attention ignores the 4-D visibility mask"):
            check_attention(impl)
    with pytest.raises(ValueError, match="not supported"):
        check_attention("flex_attention")
    assert check_attention(None) == "sdpa" and check_attention("eager") == "eager"


def test_left_padding_positions():
    ids, valid, pad = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and valid.tolist() == [[True] * 3, [False, False, True]]
    pos = positions_for(torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]), pad)
    assert pos.tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]


def test_family_detection(tmp_path):
    for model_type, family in [("janus", "janus"), ("emu3", "emu3"), ("chameleon", "lumina")]:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert registry.detect(str(tmp_path)).name == family
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="unsupported model type 'llama'.*janus.*emu3.*chameleon"):
        registry.detect(str(tmp_path))
    (tmp_path / "sub").mkdir()  # no config.json: a folder of LlamaGen checkpoint files
    assert registry.detect(str(tmp_path / "sub")).name == "llamagen"
