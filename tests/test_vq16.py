"""LlamaGen VQ-16 tokenizer: official layout, codebook lookup, decode/encode shapes on any grid."""
import math

import torch
import torch.nn.functional as F
from zipar.zipar_core.models.llamagen.vq import AttnBlock, VQConfig, VQModel


def tiny_vq(seed=0, **kw) -> VQModel:
    torch.manual_seed(seed)
    cfg = {"codebook_size": 64, "codebook_embed_dim": 8, "z_channels": 16, "ch": 32, "ch_mult": (1, 2)}
    cfg.update(kw)
    return VQModel(VQConfig(**cfg)).eval()


def test_full_size_matches_published_vq16():
    with torch.device("meta"):
        vq = VQModel()
    n = sum(p.numel() for p in vq.parameters())
    assert 71.5e6 < n < 72.5e6  # LlamaGen reports 72M for VQ-16
    assert vq.pixels_per_token == 16
    keys = set(vq.state_dict())
    for k in ["encoder.conv_in.weight", "encoder.conv_blocks.0.downsample.conv.weight",
              "encoder.conv_blocks.2.res.0.nin_shortcut.weight", "encoder.conv_blocks.4.attn.1.proj_out.weight",
              "encoder.mid.1.q.weight", "encoder.norm_out.weight", "encoder.conv_out.weight",
              "decoder.conv_in.weight", "decoder.mid.0.conv1.weight", "decoder.mid.1.k.weight",
              "decoder.conv_blocks.0.res.2.conv2.weight", "decoder.conv_blocks.0.attn.2.v.weight",
              "decoder.conv_blocks.0.upsample.conv.weight", "decoder.conv_blocks.1.res.0.nin_shortcut.weight",
              "decoder.norm_out.bias", "decoder.conv_out.weight", "quantize.embedding.weight",
              "quantize.codebook_used", "quant_conv.weight", "post_quant_conv.bias"]:
        assert k in keys, k
    assert "decoder.conv_blocks.4.upsample.conv.weight" not in keys  # the last (full-res) level has none
    assert vq.state_dict()["quantize.embedding.weight"].shape == (16384, 8)


def test_codebook_lookup_l2_norm_and_post_quant_conv_match_reference():
    vq = tiny_vq()
    with torch.no_grad():
        vq.quantize.embedding.weight.mul_(torch.rand(64, 1) * 3 + 0.5)  # entries no longer unit length
    codes = torch.randint(0, 64, (2, 3, 5), generator=torch.Generator().manual_seed(0))
    w = vq.quantize.embedding.weight.detach()
    unit = w / w.norm(dim=1, keepdim=True)
    lat = unit[codes].permute(0, 3, 1, 2)  # (B, 8, 3, 5)
    torch.testing.assert_close(vq.quantize.lookup(codes), lat)
    pq = vq.post_quant_conv
    ref = torch.einsum("oc,bchw->bohw", pq.weight[:, :, 0, 0], lat) + pq.bias[None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(pq(lat), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vq.decode_codes(codes), vq.decoder(ref), rtol=1e-4, atol=1e-5)
    # Without L2 normalisation the raw entries are used.
    raw = tiny_vq(codebook_l2_norm=False)
    torch.testing.assert_close(raw.quantize.lookup(codes), raw.quantize.embedding.weight[codes].permute(0, 3, 1, 2))


def test_decode_shapes_square_and_non_square():
    vq = tiny_vq()
    f = vq.pixels_per_token
    assert f == 2
    with torch.no_grad():
        for h, w in [(4, 4), (3, 5), (6, 2)]:
            img = vq.decode_codes(torch.randint(0, 64, (2, h, w)))
            assert img.shape == (2, 3, f * h, f * w)
            assert torch.isfinite(img).all()


def test_encode_gives_nearest_normalised_codes():
    vq = tiny_vq()
    x = torch.rand(2, 3, 8, 12) * 2 - 1
    with torch.no_grad():
        codes = vq.encode(x)
        assert codes.shape == (2, 4, 6) and codes.dtype == torch.long
        z = F.normalize(vq.quant_conv(vq.encoder(x)), dim=1)  # (B, 8, 4, 6)
        unit = F.normalize(vq.quantize.embedding.weight, dim=1)
        want = torch.einsum("bchw,nc->bhwn", z, unit).argmax(-1)  # unit vectors: nearest = most aligned
    assert torch.equal(codes, want)
    # Training path: straight-through latents, losses present, reconstruction shaped like the input.
    vq.train()
    rec, _codes2, losses = vq(x)
    assert rec.shape == x.shape and set(losses) == {"vq", "commit"}
    (rec.mean() + sum(losses.values())).backward()
    assert vq.encoder.conv_in.weight.grad is not None


def test_attention_block_matches_explicit_softmax():
    torch.manual_seed(1)
    blk = AttnBlock(32).eval()
    x = torch.randn(2, 32, 3, 4)
    with torch.no_grad():
        y = blk.norm(x)
        q, k, v = (m(y).reshape(2, 32, 12) for m in (blk.q, blk.k, blk.v))
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(32), dim=2)  # (B, q, k)
        out = torch.bmm(v, w.transpose(1, 2)).reshape(2, 32, 3, 4)
        torch.testing.assert_close(blk(x), x + blk.proj_out(out), rtol=1e-5, atol=1e-5)


def test_downsample_pads_right_and_bottom_only():
    vq = tiny_vq()
    ds = vq.encoder.conv_blocks[0].downsample
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), ds.conv.weight, ds.conv.bias, stride=2)
        torch.testing.assert_close(ds(x), ref)
    assert ds(x).shape[-2:] == (3, 3)
