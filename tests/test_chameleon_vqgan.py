"""Chameleon VQGAN decoder: loading vqgan.ckpt / vqgan.yaml / safetensors, and agreement with an
independent computation straight from taming-transformers' equations on the raw state dict."""
import pytest
import torch
import yaml
from torch.nn import functional as F
from zipar.zipar_core.models.chameleon_vqgan import (
    ChameleonVQGANDecoder,
    VQGANConfig,
    load_chameleon_vqgan,
    save_safetensors,
)

# attention at the coarsest level (nominal 8 px) and in the middle; a channel change (nin_shortcut)
DD = {"double_z": False, "z_channels": 8, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2],
          "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
PARAMS = {"embed_dim": 4, "n_embed": 16, "ddconfig": DD}


def _random_state_dict(seed=0):
    torch.manual_seed(seed)
    model = ChameleonVQGANDecoder(VQGANConfig.from_yaml_params(PARAMS))
    sd = {k: torch.randn_like(v) * (0.3 if v.dim() > 1 else 0.1) for k, v in model.state_dict().items()}
    for k, v in list(sd.items()):  # GroupNorm scales near 1, as trained ones are
        if "norm" in k and k.endswith("weight"):
            sd[k] = 1 + 0.1 * torch.randn_like(v)
    # what else a Lightning vqgan.ckpt holds: the encoder, quant_conv and the loss's discriminator
    extra = {"encoder.conv_in.weight": torch.randn(32, 3, 3, 3), "quant_conv.weight": torch.randn(4, 8, 1, 1),
             "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4)}
    return sd, extra


# -- independent reference: taming's Decoder written as plain functions over the state dict -----------

def _gn(sd, p, x):
    return F.group_norm(x, 32, sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)


def _conv(sd, p, x, pad):
    return F.conv2d(x, sd[p + ".weight"], sd[p + ".bias"], padding=pad)


def _swish(x):
    return x * torch.sigmoid(x)


def _resnet(sd, p, x):
    h = _conv(sd, p + ".conv1", _swish(_gn(sd, p + ".norm1", x)), 1)
    h = _conv(sd, p + ".conv2", _swish(_gn(sd, p + ".norm2", h)), 1)
    if p + ".nin_shortcut.weight" in sd:
        x = _conv(sd, p + ".nin_shortcut", x, 0)
    return x + h


def _attn(sd, p, x):
    b, c, h, w = x.shape
    y = _gn(sd, p + ".norm", x)
    q, k, v = (_conv(sd, f"{p}.{n}", y, 0).reshape(b, c, h * w) for n in "qkv")
    weights = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * c ** -0.5, dim=2)  # (b, hw_q, hw_k)
    out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, h, w)
    return x + _conv(sd, p + ".proj_out", out, 0)


def reference_decode(sd, codes):
    z = sd["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)  # (B, embed, H, W)
    h = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", z, 0), 1)
    h = _resnet(sd, "decoder.mid.block_2", _attn(sd, "decoder.mid.attn_1", _resnet(sd, "decoder.mid.block_1", h)))
    levels = len(DD["ch_mult"])
    for i in reversed(range(levels)):
        for j in range(DD["num_res_blocks"] + 1):
            h = _resnet(sd, f"decoder.up.{i}.block.{j}", h)
            if f"decoder.up.{i}.attn.{j}.q.weight" in sd:
                h = _attn(sd, f"decoder.up.{i}.attn.{j}", h)
        if i != 0:
            h = _conv(sd, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"), 1)
    return _conv(sd, "decoder.conv_out", _swish(_gn(sd, "decoder.norm_out", h)), 1)


@pytest.fixture
def release(tmp_path):
    """A folder laid out like Meta's release: vqgan.yaml + a Lightning vqgan.ckpt."""
    sd, extra = _random_state_dict()
    (tmp_path / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel",
                                                                   "params": {**PARAMS, "lossconfig": {}}}}))
    torch.save({"state_dict": {**sd, **extra}, "global_step": 7}, tmp_path / "vqgan.ckpt")
    return tmp_path, sd


def test_matches_reference_computation(release):
    folder, sd = release
    model = load_chameleon_vqgan(str(folder))
    assert any(k.startswith("decoder.up.1.attn") for k in model.state_dict())  # attention is exercised
    codes = torch.randint(0, 16, (2, 3, 5))
    out = model(codes)
    ref = reference_decode(sd, codes)
    assert out.shape == (2, 3, 6, 10)  # 2 px per token for this 2-level config
    assert torch.allclose(out, ref.clamp(-1, 1), atol=1e-4)
    assert (ref.abs() < 1).float().mean() > 0.2  # not everything clipped: the comparison means something


def test_safetensors_round_trip(release, tmp_path):
    folder, _ = release
    model = load_chameleon_vqgan(str(folder / "vqgan.ckpt"))
    path = tmp_path / "conv" / "vqgan.safetensors"
    path.parent.mkdir()
    save_safetensors(model, str(path))
    again = load_chameleon_vqgan(str(path.parent))  # no yaml next to it: the config is in the metadata
    codes = torch.randint(0, 16, (1, 2, 2))
    assert again.config == model.config and torch.equal(again(codes), model(codes))


def test_chameleon_defaults_shape():
    cfg = VQGANConfig()
    assert (cfg.n_embed, cfg.embed_dim, cfg.pixels_per_token) == (8192, 256, 16)
    model = ChameleonVQGANDecoder(cfg)
    assert model.quantize.embedding.weight.shape == (8192, 256)
    assert model(torch.zeros((1, 1, 1), dtype=torch.long)).shape == (1, 3, 16, 16)


def test_clear_errors(release, tmp_path):
    folder, _sd = release
    with pytest.raises(FileNotFoundError, match="vqgan.ckpt"):
        load_chameleon_vqgan(str(tmp_path / "nothing_here"))
    wrong = VQGANConfig(n_embed=16, embed_dim=4, z_channels=8, resolution=16, ch=32, ch_mult=[1, 2, 2],
                        num_res_blocks=1, attn_resolutions=[8])
    with pytest.raises(ValueError, match="does not fit"):
        load_chameleon_vqgan(str(folder), config=wrong)
