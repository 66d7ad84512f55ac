"""The decoder half of Chameleon's VQGAN (taming-transformers layout), which transformers does not ship.

Chameleon / Lumina-mGPT images are 8192 codes x 256 dims, 16 px per token (``ch_mult`` [1, 1, 2, 2, 4]).
Meta's release has ``vqgan.yaml`` (``model.params``: ``embed_dim``, ``n_embed``, ``ddconfig``) and
``vqgan.ckpt`` (a Lightning pickle, weights under ``state_dict``, read with ``weights_only=True``). Module
names follow taming's ``VQModel`` so the checkpoint's keys load as they are: ``quantize.embedding``,
``post_quant_conv``, ``decoder.{conv_in, mid.*, up.N.{block,attn,upsample}, norm_out, conv_out}``. The
encoder and loss weights in the file are skipped: ZipAR only decodes.

A safetensors conversion (:func:`save_safetensors`) stores the decoder weights with the config in the
file's metadata, so it loads without the yaml and without unpickling anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

DECODER_PREFIXES = ("quantize.embedding.", "post_quant_conv.", "decoder.")
METADATA_KEY = "zipar_chameleon_vqgan_config"
# where Chameleon's tokenizer files are looked for inside a model folder (Meta's release calls the folder
# tokenizer/, Lumina-mGPT's code ckpts/chameleon/tokenizer/); a chameleon/[tokenizer/] folder beside it also works
SUBFOLDERS = ("", "tokenizer", os.path.join("chameleon", "tokenizer"), "chameleon", "vqgan", "image_tokenizer",
              os.path.join("image_tokenizer", "chameleon"))


@dataclass
class VQGANConfig:
    n_embed: int = 8192
    embed_dim: int = 256
    z_channels: int = 256
    resolution: int = 512
    out_ch: int = 3
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=list)
    attn_type: str = "vanilla"

    @classmethod
    def from_yaml_params(cls, params: dict) -> VQGANConfig:
        """``model.params`` of vqgan.yaml -> config (unknown taming keys are ignored)."""
        dd = params.get("ddconfig", {})
        keys = ("z_channels", "resolution", "out_ch", "ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                "attn_type")
        return cls(n_embed=params.get("n_embed", 8192), embed_dim=params.get("embed_dim", 256),
                   **{k: (list(dd[k]) if isinstance(dd[k], (list, tuple)) else dd[k]) for k in keys if k in dd})

    @property
    def pixels_per_token(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        # taming names the 1x1 projection of a channel change nin_shortcut (conv_shortcut is never used)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout 0 at inference
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all h*w positions."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        return x + self.attend(self.norm(x))

    def attend(self, y):
        """Attention of the normed map y over its own h*w positions, projected (shared by MoVQGAN's block)."""
        b, c, h, w = y.shape
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))  # (b, 1, hw, c)
        a = F.scaled_dot_product_attention(q, k, v)  # scale c ** -0.5, as taming's
        return self.proj_out(a.transpose(2, 3).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block, self.attn = nn.ModuleList(), nn.ModuleList()


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        n = len(cfg.ch_mult)
        attn = (lambda c: AttnBlock(c)) if cfg.attn_type == "vanilla" else (lambda c: nn.Identity())
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n - 1)  # nominal resolution: decides where attention blocks sit
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(block_in, block_in), attn(block_in), \
            ResnetBlock(block_in, block_in)
        levels = []
        for i in reversed(range(n)):  # built coarse to fine, stored fine to coarse (taming's `up` order)
            level, block_out = _Level(), cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(attn(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ChameleonVQGANDecoder(nn.Module):
    """codes (B, H, W) -> pixels (B, 3, H*16, W*16) in [-1, 1]."""

    def __init__(self, cfg: VQGANConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or VQGANConfig()
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    @property
    def pixels_per_token(self) -> int:
        return self.config.pixels_per_token

    @torch.no_grad()
    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        weight = self.quantize.embedding.weight
        z = F.embedding(codes.to(weight.device), weight).permute(0, 3, 1, 2)  # (B, embed_dim, H, W)
        return self.decoder(self.post_quant_conv(z)).float().clamp(-1, 1)

    decode = forward

    def load_weights(self, state_dict: dict[str, torch.Tensor],
                     source: str = "<state dict>") -> ChameleonVQGANDecoder:
        """Load taming-layout weights, keeping only the decoder's; missing or misshapen keys are errors."""
        sd = {k: v for k, v in state_dict.items() if k.startswith(DECODER_PREFIXES)}
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        bad = [k for k in own if k in sd and sd[k].shape != own[k].shape]
        if missing or unexpected or bad:
            raise ValueError(
                f"{source} does not fit this Chameleon VQGAN decoder: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}, wrong shapes {[(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in bad[:5]]}. "
                "Is vqgan.yaml the one that came with this checkpoint?")
        self.load_state_dict(sd)
        return self


# -- files ------------------------------------------------------------------------------------------

def _read_yaml(path: str) -> VQGANConfig:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    params = data.get("model", {}).get("params", data) if isinstance(data, dict) else {}
    return VQGANConfig.from_yaml_params(params)


def find_vqgan_files(path: str) -> tuple[str, str | None]:
    """A folder or file -> (weights file, yaml or None). Looks for vqgan.safetensors, then vqgan.ckpt, also in
    the ``vqgan/`` and ``image_tokenizer/`` subfolders Chameleon and Lumina releases use."""
    if os.path.isfile(path):
        folder, weights = os.path.dirname(path), path
    else:
        weights = None
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), "chameleon")  # one copy for several models
        places = [os.path.join(path, sub) for sub in SUBFOLDERS] + [os.path.join(beside, "tokenizer"), beside]
        for place in places:
            for name in ("vqgan.safetensors", "vqgan.ckpt"):
                candidate = os.path.join(place, name)
                if os.path.isfile(candidate):
                    weights = candidate
                    break
            if weights:
                break
        if weights is None:
            raise FileNotFoundError(
                f"no Chameleon VQGAN in {path}: expected vqgan.ckpt + vqgan.yaml (from Meta's Chameleon release, "
                "tokenizer/ folder) or vqgan.safetensors")
        folder = os.path.dirname(weights)
    yaml_path = os.path.join(folder, "vqgan.yaml")
    return weights, yaml_path if os.path.isfile(yaml_path) else None


def read_metadata_config(weights: str) -> VQGANConfig | None:
    """The config a ``save_safetensors`` file carries in its metadata (None for other files)."""
    if not weights.endswith(".safetensors"):
        return None
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        meta = (f.metadata() or {}).get(METADATA_KEY)
    return VQGANConfig(**json.loads(meta)) if meta else None


def load_chameleon_vqgan(path: str, config: VQGANConfig | None = None, device=None,
                         dtype: torch.dtype = torch.float32) -> ChameleonVQGANDecoder:
    """Load the decoder from vqgan.ckpt (+ vqgan.yaml) or a safetensors conversion; ``path`` is the file
    or its folder. Config precedence: argument, safetensors metadata, vqgan.yaml, Chameleon's defaults."""
    from ..checkpoints import load_state_dict

    weights, yaml_path = find_vqgan_files(path)
    if config is None:
        config = read_metadata_config(weights)
    if config is None and yaml_path is not None:
        config = _read_yaml(yaml_path)
    model = ChameleonVQGANDecoder(config).load_weights(load_state_dict(weights), weights)  # pickles: weights_only
    return model.to(device=device or "cpu", dtype=dtype).eval()


def save_safetensors(model: ChameleonVQGANDecoder, path: str) -> None:
    """Write the decoder weights with their config in the metadata (no pickle needed to load it back)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, path, metadata={METADATA_KEY: json.dumps(asdict(model.config))})
