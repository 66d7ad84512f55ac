"""LlamaGen GPT: logits against an independent per-layer reference; cached slot decoding against uncached.

The reference below is written from the architecture, not from the module: float64, explicit matmuls,
rotary embedding with complex numbers built per token from (row, col), explicit masks.
"""
import math

import pytest
import torch
from helpers import T2I_PREFIX, caption_batch, tiny_gpt, tiny_vq
from zipar.zipar_core.cache import visibility_mask
from zipar.zipar_core.models.llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer
from zipar.zipar_core.models.llamagen.gpt import PRESETS, rope_cos_sin
from zipar.zipar_core.models.llamagen.t5 import left_pad
from zipar.zipar_core.protocol import ZipARModel

# ----------------------------------------------------------------------------------------------------
# Independent reference


def ref_forward(model, cond_emb, codes, positions, visible):
    """cond_emb (N, P, dim); codes (N, T); positions: T (row, col) pairs; visible (N, L, L) bool.
    Returns float64 logits (N, L, vocab)."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    n, p = cond_emb.shape[:2]
    hd, nh, nkv = cfg.head_dim, cfg.n_head, cfg.kv_heads
    x = torch.cat([cond_emb.double(), sd["tok_embeddings.weight"][codes]], 1)  # (N, L, dim)
    L = x.shape[1]

    # Complex rotation per slot: angle = row*f for the first hd/4 pairs, col*f for the rest; 0 magnitude
    # for the condition slots (their q and k vanish).
    quarter = hd // 4
    f = torch.tensor([10000.0 ** (-(2 * i) / (hd / 2)) for i in range(quarter)], dtype=torch.float64)
    ang = torch.zeros(L, hd // 2, dtype=torch.float64)
    mag = torch.zeros(L, hd // 2, dtype=torch.float64)
    for t, (r, c) in enumerate(positions):
        ang[p + t] = torch.cat([r * f, c * f])
        mag[p + t] = 1.0
    cis = torch.polar(mag, ang)  # (L, hd/2) complex

    def rope(t):  # (N, L, h, hd)
        tc = torch.view_as_complex(t.reshape(*t.shape[:-1], hd // 2, 2).contiguous())
        return torch.view_as_real(tc * cis[None, :, None]).flatten(-2)

    def rms(t, w):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + cfg.norm_eps) * w

    for i in range(cfg.n_layer):
        pre = f"layers.{i}."
        h = rms(x, sd[pre + "attention_norm.weight"])
        qkv = h @ sd[pre + "attention.wqkv.weight"].T
        q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], -1)
        q = rope(q.reshape(n, L, nh, hd)).transpose(1, 2)  # (N, h, L, hd)
        k = rope(k.reshape(n, L, nkv, hd)).transpose(1, 2)
        v = v.reshape(n, L, nkv, hd).transpose(1, 2)
        k = k.repeat_interleave(nh // nkv, 1)
        v = v.repeat_interleave(nh // nkv, 1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        scores = scores.masked_fill(~visible[:, None], float("-inf"))
        att = torch.softmax(scores, -1) @ v
        x = x + att.transpose(1, 2).reshape(n, L, nh * hd) @ sd[pre + "attention.wo.weight"].T
        h = rms(x, sd[pre + "ffn_norm.weight"])
        g = h @ sd[pre + "feed_forward.w1.weight"].T
        u = h @ sd[pre + "feed_forward.w3.weight"].T
        x = x + (g * torch.sigmoid(g) * u) @ sd[pre + "feed_forward.w2.weight"].T
    return rms(x, sd["norm.weight"]) @ sd["output.weight"].T


def ref_cond_embedding(model, labels=None, captions=None):
    sd = {k: v.double() for k, v in model.state_dict().items()}
    if labels is not None:
        return sd["cls_embedding.embedding_table.weight"][labels][:, None]
    h = captions.double() @ sd["cls_embedding.cap_proj.fc1.weight"].T
    h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))  # GELU, tanh form
    return h @ sd["cls_embedding.cap_proj.fc2.weight"].T


def raster_positions(rows, cols, count=None):
    pos = [(r, c) for r in range(rows) for c in range(cols)]
    return pos[: count if count is not None else len(pos)]


def full_visible(n, p, t, prefix_valid=None):
    """Causal mask over [prefix, t tokens]; padded prefix slots are seen only by themselves (LlamaGen)."""
    L = p + t
    vis = torch.tril(torch.ones(L, L, dtype=torch.bool)).expand(n, L, L).clone()
    if prefix_valid is not None:
        vis[:, :, :p] &= prefix_valid[:, None, :]
        vis |= torch.eye(L, dtype=torch.bool)
    return vis


# ----------------------------------------------------------------------------------------------------
# Architecture facts


def test_presets_match_published_sizes():
    published = {"GPT-B": 111e6, "GPT-L": 343e6, "GPT-XL": 775e6, "GPT-XXL": 1.4e9, "GPT-3B": 3.1e9}
    for name, size in published.items():
        with torch.device("meta"):
            m = LlamaGenTransformer(LlamaGenConfig.from_preset(name, "c2i", 576))
        n = sum(p.numel() for p in m.parameters())
        assert abs(n - size) / size < 0.01, (name, n)
    assert PRESETS["GPT-3B"] == (24, 32, 3200)
    assert LlamaGenConfig.from_preset("L").hidden_dim == 2816  # multiple of 256 above 8*1024/3


def test_state_dict_keys_are_official():
    keys = set(tiny_gpt("c2i").state_dict())
    for k in ["tok_embeddings.weight", "cls_embedding.embedding_table.weight", "layers.1.attention.wqkv.weight",
              "layers.1.attention.wo.weight", "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight",
              "layers.0.feed_forward.w3.weight", "layers.0.attention_norm.weight", "layers.0.ffn_norm.weight",
              "norm.weight", "output.weight"]:
        assert k in keys
    assert tiny_gpt("c2i").state_dict()["cls_embedding.embedding_table.weight"].shape[0] == 11  # + null class
    t2i = set(tiny_gpt("t2i").state_dict())
    assert {"cls_embedding.cap_proj.fc1.weight", "cls_embedding.cap_proj.fc2.weight",
            "cls_embedding.uncond_embedding"} <= t2i


def test_rope_matches_square_table_and_zeroes_condition():
    # LlamaGen's square table: entry r*g+c holds (r*f, c*f); condition rows are zero.
    g, hd = 5, 16
    f = 1.0 / (10000 ** (torch.arange(0, hd // 2, 2)[: hd // 4].float() / (hd // 2)))
    table = torch.stack([torch.cat([r * f, c * f]) for r in range(g) for c in range(g)])  # (g*g, hd/2)
    idx = torch.arange(g * g)
    cos, sin = rope_cos_sin(idx[None] // g, idx[None] % g, torch.zeros(1, g * g, dtype=torch.bool), hd, 10000)
    torch.testing.assert_close(cos[0], torch.cos(table), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[0], torch.sin(table), rtol=0, atol=1e-6)
    cos, sin = rope_cos_sin(idx[None] // g, idx[None] % g, torch.ones(1, g * g, dtype=torch.bool), hd, 10000)
    assert cos.abs().max() == 0 and sin.abs().max() == 0


# ----------------------------------------------------------------------------------------------------
# Uncached forward == reference


@pytest.mark.parametrize("rows,cols", [(6, 6), (4, 6), (6, 3)])
@pytest.mark.parametrize("kv_heads", [None, 2])
def test_c2i_logits_match_reference(rows, cols, kv_heads):
    model = tiny_gpt("c2i", n_kv_head=kv_heads)
    labels = torch.tensor([3, 7])
    codes = torch.randint(0, 96, (2, rows * cols), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cond = model.embed_labels(labels)
        torch.testing.assert_close(cond.double(), ref_cond_embedding(model, labels=labels), rtol=1e-5, atol=1e-6)
        got = model(cond, codes, cols)
    ref = ref_forward(model, cond, codes, raster_positions(rows, cols), full_visible(2, 1, rows * cols))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows,cols", [(6, 6), (3, 5)])
def test_t2i_logits_match_reference_with_left_padding(rows, cols):
    model = tiny_gpt("t2i")
    caps, mask = caption_batch(2, T2I_PREFIX, 24)
    codes = torch.randint(0, 96, (2, rows * cols), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cond = model.embed_captions(caps)
        torch.testing.assert_close(cond.double(), ref_cond_embedding(model, captions=caps), rtol=1e-5, atol=1e-6)
        got = model(cond, codes, cols, prefix_valid=mask)
    ref = ref_forward(model, cond, codes, raster_positions(rows, cols),
                      full_visible(2, T2I_PREFIX, rows * cols, mask))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    # The padding matters: ignoring the mask changes the image logits.
    with torch.no_grad():
        unmasked = model(cond, codes, cols)
    assert not torch.allclose(unmasked[:, T2I_PREFIX:], got[:, T2I_PREFIX:], atol=1e-4)


# ----------------------------------------------------------------------------------------------------
# Adapter: cached slot decoding == uncached reference


def _adapter(model_type, **kw):
    return LlamaGenAdapter(tiny_gpt(model_type, **kw), tiny_vq())


def _raster_decode(adapter, cond, codes):
    """Prefill, then one token per step through the slot cache. Returns (rows, P-1+T+1... ) logits list."""
    lay = cond.layout
    n = cond.num_sequences
    P, S = lay.prefix, lay.num_slots
    cache = adapter.new_cache(cond, S).fill_(1e3)  # unwritten slots hold junk that must never be read
    filled = torch.zeros(n, S, dtype=torch.bool)
    filled[:, :P] = cond.prefix_valid
    slots = torch.arange(P).expand(n, -1)
    out = [adapter.prefill(cond, cache, visibility_mask(filled, slots, P))]
    rows_codes = codes.repeat(n // codes.shape[0], 1)  # cond and uncond rows share the image tokens
    for t in range(codes.shape[1] - 1):
        s = lay.slot(*divmod(t, lay.cols))
        filled[:, s] = True
        q_slots = torch.full((n, 1), s)
        kv_len = S if t % 2 else s + 1  # both a full-length and a trimmed key span
        logits = adapter.forward(cond, rows_codes[:, t: t + 1], q_slots, visibility_mask(filled, q_slots, kv_len), cache)
        out.append(logits[:, 0])
    return torch.stack(out, 1)  # (rows, T, codebook): entry t predicts token t


@pytest.mark.parametrize("rows,cols", [(5, 5), (3, 6)])
def test_cached_c2i_with_guidance_matches_reference(rows, cols):
    ad = _adapter("c2i", block_size=25 if rows == 5 else 18)
    assert isinstance(ad, ZipARModel)
    cond = ad.prepare(class_labels=[1, 9], rows=rows, cols=cols, guidance_scale=2.0)
    assert cond.num_sequences == 4 and cond.layout.prefix == 1 and not cond.layout.eol
    codes = torch.randint(0, 96, (2, rows * cols), generator=torch.Generator().manual_seed(4))
    got = _raster_decode(ad, cond, codes)
    labels = torch.tensor([1, 9, 10, 10])  # uncond rows use the null class (num_classes)
    all_codes = codes.repeat(2, 1)
    ref = ref_forward(ad.gpt, ref_cond_embedding(ad.gpt, labels=labels), all_codes,
                      raster_positions(rows, cols), full_visible(4, 1, rows * cols))
    torch.testing.assert_close(got.double(), ref[:, :-1], rtol=1e-5, atol=1e-5)


def test_cached_t2i_with_guidance_and_padding_matches_reference():
    ad = _adapter("t2i")
    caps, mask = caption_batch(2, T2I_PREFIX, 24)
    cond = ad.encode_captions((caps, mask), rows=4, cols=5, guidance_scale=3.0)
    assert torch.equal(cond.prefix_valid, torch.cat([mask, mask]))
    codes = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(5))
    got = _raster_decode(ad, cond, codes)
    uncond = ad.gpt.cls_embedding.uncond_embedding.expand(2, -1, -1)
    cond_emb = ref_cond_embedding(ad.gpt, captions=torch.cat([caps, uncond]))
    ref = ref_forward(ad.gpt, cond_emb, codes.repeat(2, 1), raster_positions(4, 5),
                      full_visible(4, T2I_PREFIX, 20, cond.prefix_valid))
    torch.testing.assert_close(got.double(), ref[:, T2I_PREFIX - 1: -1], rtol=1e-5, atol=1e-5)


def test_out_of_order_multi_row_step_matches_uncached_forward_over_visible_tokens():
    """A ZipAR-style pass: row 1 starts while row 0 is unfinished; positions come from the slots."""
    ad = _adapter("c2i", block_size=16)
    cond = ad.prepare(class_labels=[4], rows=4, cols=4)
    lay = cond.layout
    codes = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(6))
    cache = ad.new_cache(cond, lay.num_slots).fill_(-1e3)
    filled = torch.zeros(1, lay.num_slots, dtype=torch.bool)
    filled[:, 0] = True
    ad.prefill(cond, cache, visibility_mask(filled, torch.zeros(1, 1, dtype=torch.long), 1))
    # Step A: row 0 tokens 0..2. Step B: row 0 token 3 together with row 1 token 0 and 1.
    step_a = [(0, 0), (0, 1), (0, 2)]
    step_b = [(0, 3), (1, 0), (1, 1)]
    for step in (step_a, step_b):
        slots = torch.tensor([[lay.slot(r, c) for r, c in step]])
        toks = torch.stack([codes[:, r * 4 + c] for r, c in step], 1)
        filled[0, slots[0]] = True
        vis = visibility_mask(filled, slots, lay.num_slots)
        got = ad.forward(cond, toks, slots, vis, cache)
    # Rebuild step B uncached: every token written so far, in slot order, same visibility.
    order = step_a + step_b
    seq_codes = torch.stack([codes[:, r * 4 + c] for r, c in order], 1)
    seq_slots = [0] + [lay.slot(r, c) for r, c in order]
    full = visibility_mask(filled, torch.tensor([seq_slots]), lay.num_slots)[:, :, seq_slots]  # (1, 7, 7)
    ref = ref_forward(ad.gpt, ref_cond_embedding(ad.gpt, labels=torch.tensor([4])), seq_codes, order, full)
    torch.testing.assert_close(got.double(), ref[:, -3:], rtol=1e-5, atol=1e-5)


def test_protocol_attributes_sizes_and_validation():
    ad = _adapter("c2i")  # trained grid 6x6; the tiny VQ has 2 px per token
    assert isinstance(ad, ZipARModel)
    assert (ad.family, ad.conditioning, ad.num_classes, ad.codebook_size) == ("llamagen", "class", 10, 96)
    assert ad.default_grid == (6, 6) and ad.pixels_per_token == 2 and ad.default_size == (12, 12)
    assert ad.grid_for(None, None) == (6, 6) and ad.grid_for(12, 8) == (6, 4)
    cond = ad.prepare(class_labels=[0], height=8, width=12)
    assert (cond.layout.rows, cond.layout.cols, cond.extras["height"], cond.extras["width"]) == (4, 6, 8, 12)
    with pytest.raises(ValueError, match="multiple of 2 px"):
        ad.grid_for(13, None)
    with pytest.raises(ValueError, match=r"7x7 tokens.*6x6 tokens \(12x12 px\)"):
        ad.prepare(class_labels=[0], height=14, width=14)
    with pytest.raises(ValueError, match="out of range"):
        ad.prepare(class_labels=[10])
    with pytest.raises(ValueError, match=r"7x6.*6x6"):
        ad.prepare(class_labels=[0], rows=7, cols=6)
    with pytest.raises(ValueError, match="class-conditional"):
        ad.prepare(prompt=["a cat"])
    with pytest.warns(UserWarning, match="longer than the trained"):
        ad.prepare(class_labels=[0], rows=3, cols=9)
    img = ad.decode(torch.randint(0, 96, (2, 3, 5)))
    assert img.shape == (2, 3, 6, 10) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1

    t2i = _adapter("t2i")
    assert (t2i.conditioning, t2i.num_classes) == ("text", None)
    with pytest.raises(ValueError, match=r"\(batch, 6, 24\)"):
        t2i.encode_captions(torch.zeros(1, 5, 24))
    with pytest.raises(ValueError, match="text-to-image"):
        t2i.prepare(class_labels=[1])
    with pytest.raises(ValueError, match="FLAN-T5"):
        t2i.prepare(prompt="a cat")


def test_t2i_negative_captions_replace_the_empty_caption():
    ad = _adapter("t2i")
    caps, mask = caption_batch(2, T2I_PREFIX, 24)
    neg, nmask = caption_batch(2, T2I_PREFIX, 24, seed=9)
    nmask = nmask.flip(0)
    cond = ad.encode_captions((caps, mask), negative_captions=(neg, nmask), guidance_scale=4.0)
    assert torch.equal(cond.prefix_valid, torch.cat([mask, nmask]))
    with torch.no_grad():
        want = ad.gpt.embed_captions(neg * nmask[..., None])
    torch.testing.assert_close(cond.payload[2:], want)
    plain = ad.encode_captions((caps, mask), guidance_scale=4.0)  # default: learned empty caption
    with torch.no_grad():
        empty = ad.gpt.embed_captions(ad.gpt.cls_embedding.uncond_embedding.expand(2, -1, -1))
    torch.testing.assert_close(plain.payload[2:], empty)


def test_left_pad_matches_llamagen_roll():
    emb = torch.randn(3, 7, 4)
    lens = [7, 3, 0]
    mask = torch.tensor([[i < n for i in range(7)] for n in lens])
    out, new_mask = left_pad(emb, mask)
    for b, n in enumerate(lens):  # LlamaGen: cat(emb[n:], emb[:n]), mask flipped, padding zeroed
        want = torch.cat([emb[b, n:], emb[b, :n]]) * mask[b].flip(0)[:, None]
        torch.testing.assert_close(out[b], want)
        assert torch.equal(new_mask[b], mask[b].flip(0))


def test_t5_caption_encoder_left_pads_and_feeds_prepare(tmp_path):
    """The FLAN-T5 glue on a tiny local T5: 'caption_len' tokens, left-padded, padding zeroed."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    from zipar.zipar_core.models.llamagen.t5 import T5CaptionEncoder

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "on": 5, "mat": 6, "red": 7}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=8, d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=3,
                                 feed_forward_proj="gated-gelu")).eval()
    t5.save_pretrained(tmp_path)

    enc = T5CaptionEncoder(str(tmp_path), max_length=T2I_PREFIX)
    feats, mask = enc.encode(["A  Cat", "a red cat on a mat"])  # cleaned to lower case; second is truncated
    assert feats.shape == (2, T2I_PREFIX, 24)
    assert mask.tolist()[0] == [False] * 3 + [True] * 3
    assert mask[1].all()
    with torch.no_grad():
        direct = t5(input_ids=torch.tensor([[3, 4, 1]])).last_hidden_state[0]
    torch.testing.assert_close(feats[0, 3:], direct, rtol=1e-5, atol=1e-5)
    assert feats[0, :3].abs().max() == 0

    ad = LlamaGenAdapter(tiny_gpt("t2i"), tiny_vq(), t5=enc)
    cond = ad.prepare(prompt=["a cat", "a red cat on a mat"], guidance_scale=2.0)
    assert torch.equal(cond.prefix_valid, torch.cat([mask, mask]))
    with torch.no_grad():
        torch.testing.assert_close(cond.payload[:2], ad.gpt.embed_captions(feats))


def test_sampler_greedy_raster_equals_reference_and_zipar_runs():
    """End to end through the ZipAR sampler: window == cols is plain raster decoding (docs/design.md, rule 2)."""
    from zipar.zipar_core.config import ZipARConfig
    from zipar.zipar_core.sampler import generate

    ad = _adapter("c2i")
    cond = ad.prepare(class_labels=[1, 5], guidance_scale=2.0)
    ntp = generate(ad, cond, ZipARConfig(mode="ntp", guidance_scale=2.0, temperature=0.0)).codes
    full = generate(ad, cond, ZipARConfig(mode="fixed", window=6, guidance_scale=2.0, temperature=0.0)).codes
    assert torch.equal(ntp, full)
    codes = ntp.reshape(2, -1)
    ref = ref_forward(ad.gpt, ref_cond_embedding(ad.gpt, labels=torch.tensor([1, 5, 10, 10])), codes.repeat(2, 1),
                      raster_positions(6, 6), full_visible(4, 1, 36))
    guided = ref[2:] + 2.0 * (ref[:2] - ref[2:])
    assert torch.equal(guided[:, :-1].argmax(-1), codes)
    zipar = generate(ad, cond, ZipARConfig(mode="fixed", window=2, guidance_scale=2.0, temperature=0.0))
    assert zipar.stats.passes == (6 - 1) * 2 + 6
    assert ad.decode(zipar.codes).shape == (2, 3, 12, 12)
