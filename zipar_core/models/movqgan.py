"""The decoder half of SBER's MoVQGAN (ai-forever/MoVQGAN), Lumina-mGPT 2.0's image tokenizer.

Read from Lumina-mGPT 2.0's copy of the MoVQGAN code (``lumina_mgpt/movqgan``: ``models/vqgan.py`` class
``MOVQ``, ``modules/vqvae/movq_modules.py`` class ``MOVQDecoder``, ``__init__.py`` table ``MODELS``):

- 270M: 16,384 codes of 4 dims, ``ch`` 256, ``ch_mult`` [1, 2, 2, 4], 2 res blocks per level, attention at
  resolution 32 of 256 (the coarsest level), ``z_channels`` 4; three 2x upsamplings: 8 px per token.
- ``decode_code``: codes -> ``quantize.embedding`` (the quantised latent zq, B x 4 x h x w) ->
  ``post_quant_conv`` -> the decoder, whose every norm is a *spatial* norm conditioned on zq:
  ``GroupNorm(32, eps=1e-6)(f) * conv_y(zq') + conv_b(zq')`` with zq' = zq resized to f's size (nearest).
  Its output is the image in about [-1, 1] (their ``show_images`` maps it to pixels with ``(x + 1) * 127.5``).
- the published file ``movqgan_270M.ckpt`` is a flat state dict of the whole MOVQ (encoder, quant_conv,
  quantize, post_quant_conv, decoder), loaded by their ``get_movqgan_model`` with ``strict=False``.

Here only the decoder is built, under MOVQ's module names, so the file's keys load as they are; the file
is read with ``weights_only=True`` (``checkpoints.load_state_dict``), every decoder tensor is checked (no
``strict=False``: a missing tensor is an error naming it), and the architecture is read from the tensors'
names and shapes (the file carries no config), so one loader serves the 270M file, its ``.safetensors``
twin and the tiny test models.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .chameleon_vqgan import AttnBlock as _ChameleonAttn
from .chameleon_vqgan import Upsample, _Level  # the same modules under the same key names

PUBLISHED = "huggingface.co/ai-forever/MoVQGAN (file movqgan_270M.ckpt)"
DECODER_PREFIXES = ("quantize.embedding.", "post_quant_conv.", "decoder.")
FILE_NAMES = ("movqgan.safetensors", "movqgan_270M.safetensors", "movqgan_270M.ckpt")  # preferred first
# where the file is looked for, inside a model folder and beside it: the original's README puts it in
# lumina_mgpt/movqgan/270M/, a hub download of ai-forever/MoVQGAN is a MoVQGAN/ folder
SUBFOLDERS = ("", os.path.join("movqgan", "270M"), "movqgan", "MoVQGAN")


@dataclass
class MoVQGANConfig:
    """The decoder's sizes; the defaults are the 270M entry of MoVQGAN's ``MODELS`` table."""

    n_embed: int = 16384
    embed_dim: int = 4  # zq channels
    z_channels: int = 4
    ch: int = 256
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_levels: list[int] = field(default_factory=lambda: [3])  # levels with attention (resolution 32 of 256)
    out_ch: int = 3

    @property
    def pixels_per_token(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


class SpatialNorm(nn.Module):
    """MoVQ's norm: GroupNorm of the features, scaled and shifted by 1x1 convolutions of zq."""

    def __init__(self, channels: int, zq_channels: int):
        super().__init__()
        self.norm_layer = nn.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, 1)
        self.conv_b = nn.Conv2d(zq_channels, channels, 1)

    def forward(self, f, zq):
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, zq_channels: int):
        super().__init__()
        self.norm1, self.conv1 = SpatialNorm(cin, zq_channels), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = SpatialNorm(cout, zq_channels), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, zq):
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(F.silu(self.norm2(h, zq)))  # dropout 0 at inference
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head attention over all h*w positions, scale c ** -0.5 (MoVQ's bmm + softmax); Chameleon's VQGAN
    block with the norm conditioned on zq."""

    def __init__(self, c: int, zq_channels: int):
        super().__init__()
        self.norm = SpatialNorm(c, zq_channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    attend = _ChameleonAttn.attend

    def forward(self, x, zq):
        return x + self.attend(self.norm(x, zq))


class Decoder(nn.Module):
    """``MOVQDecoder``: conv_in, mid (block, attention, block), levels coarse to fine (stored fine to coarse,
    as ``up``), norm_out, conv_out; every norm conditioned on zq."""

    def __init__(self, cfg: MoVQGANConfig):
        super().__init__()
        n, zq = len(cfg.ch_mult), cfg.embed_dim
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, zq)
        self.mid.attn_1 = AttnBlock(block_in, zq)
        self.mid.block_2 = ResnetBlock(block_in, block_in, zq)
        levels = []
        for i in reversed(range(n)):
            level, block_out = _Level(), cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, zq))
                block_in = block_out
                if i in cfg.attn_levels:
                    level.attn.append(AttnBlock(block_in, zq))
            if i != 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm(block_in, zq)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z, zq):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, zq), zq), zq)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h, zq)
                if len(level.attn):
                    h = level.attn[j](h, zq)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h, zq)))


class MoVQGANDecoder(nn.Module):
    """codes (B, H, W) -> pixels (B, 3, 8H, 8W) in [-1, 1] (MOVQ.decode_code, batched)."""

    def __init__(self, cfg: MoVQGANConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or MoVQGANConfig()
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
        zq = F.embedding(codes.to(weight.device), weight).permute(0, 3, 1, 2).contiguous()  # (B, embed_dim, H, W)
        return self.decoder(self.post_quant_conv(zq), zq).float().clamp(-1, 1)

    decode = forward

    def load_weights(self, state_dict: dict[str, torch.Tensor], source: str = "<state dict>") -> MoVQGANDecoder:
        """Load MOVQ-layout weights, keeping the decoder's; a missing, extra or misshapen decoder tensor is an
        error naming it (the original loads with ``strict=False``, which would keep random weights)."""
        sd = {k: v for k, v in state_dict.items() if k.startswith(DECODER_PREFIXES)}
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        bad = [k for k in own if k in sd and sd[k].shape != own[k].shape]
        if missing or unexpected or bad:
            shapes = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in bad[:3]]
            raise ValueError(f"{source} is not a complete MoVQGAN decoder: missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}, wrong shapes {shapes}. Fix: download movqgan_270M.ckpt again "
                             f"({PUBLISHED})")
        self.load_state_dict(sd)
        return self


# -- the architecture from the tensors ---------------------------------------------------------------

_LEVEL = re.compile(r"^decoder\.up\.(\d+)\.(block|attn)\.(\d+)\.")


def config_from_state_dict(sd: dict[str, torch.Tensor], source: str = "<state dict>") -> MoVQGANConfig:
    """The decoder's sizes read from MOVQ-layout tensors: codebook from ``quantize.embedding``, channels per
    level from each level's first block, blocks per level and attention levels from the names."""
    needed = ("quantize.embedding.weight", "post_quant_conv.weight", "decoder.conv_in.weight",
              "decoder.conv_out.weight")
    absent = [k for k in needed if k not in sd]
    if absent:
        raise ValueError(f"{source} holds no MoVQGAN decoder (no {absent[0]!r}). Fix: give movqgan_270M.ckpt "
                         f"({PUBLISHED})")
    blocks: dict[int, set[int]] = {}
    attn: set[int] = set()
    for k in sd:
        m = _LEVEL.match(k)
        if m is None:
            continue
        level, kind, index = int(m.group(1)), m.group(2), int(m.group(3))
        if kind == "block":
            blocks.setdefault(level, set()).add(index)
        else:
            attn.add(level)
    if not blocks or sorted(blocks) != list(range(len(blocks))) or "decoder.up.0.block.0.conv1.weight" not in sd:
        raise ValueError(f"{source}: the MoVQGAN decoder's levels are incomplete. Fix: download movqgan_270M.ckpt "
                         f"again ({PUBLISHED})")
    widths = [int(sd.get(f"decoder.up.{i}.block.0.conv1.weight", sd["decoder.conv_in.weight"]).shape[0])
              for i in range(len(blocks))]
    n_embed, embed_dim = sd["quantize.embedding.weight"].shape
    return MoVQGANConfig(n_embed=int(n_embed), embed_dim=int(embed_dim),
                         z_channels=int(sd["post_quant_conv.weight"].shape[0]), ch=widths[0],
                         ch_mult=[w // widths[0] for w in widths], num_res_blocks=len(blocks[0]) - 1,
                         attn_levels=sorted(attn), out_ch=int(sd["decoder.conv_out.weight"].shape[0]))


# -- files --------------------------------------------------------------------------------------------

def find_movqgan_file(path: str, beside: bool = True) -> str | None:
    """The MoVQGAN weights for a file or folder: the file itself, else the first of ``FILE_NAMES`` in the folder,
    its ``movqgan/270M/``, ``movqgan/`` or ``MoVQGAN/`` subfolder, and (``beside``) the same places beside it.
    A ``.safetensors`` is preferred to the pickle it converts. None when there is none."""
    if os.path.isfile(path):
        return path
    roots = [path] + ([os.path.dirname(os.path.abspath(path))] if beside else [])
    for root in roots:
        for sub in SUBFOLDERS:
            for name in FILE_NAMES:
                candidate = os.path.join(root, sub, name)
                if os.path.isfile(candidate):
                    return candidate
    return None


def load_movqgan(path: str, device=None, dtype: torch.dtype = torch.float32) -> MoVQGANDecoder:
    """The decoder from ``movqgan_270M.ckpt`` (a pickle, read with ``weights_only=True``), its safetensors
    twin or a ``zipar convert`` copy (``movqgan.safetensors``); the architecture comes from the tensors."""
    from ..checkpoints import load_state_dict

    sd = load_state_dict(path)  # refuses a pickle that needs more than weights_only, with the command to convert
    model = MoVQGANDecoder(config_from_state_dict(sd, path)).load_weights(sd, path)
    return model.to(device=device or "cpu", dtype=dtype).eval()


def save_safetensors(model: MoVQGANDecoder, path: str) -> None:
    """The decoder's tensors under MOVQ's names (no pickle needed to load them back)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, path)
