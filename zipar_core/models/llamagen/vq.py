"""LlamaGen's VQ tokenizer (VQ-16: 16 px per token, 16384 x 8 codebook with L2-normalised entries).

A taming-transformers style conv encoder/decoder around a vector quantizer. Module names match the
official checkpoints (``vq_ds16_c2i.pt``, ``vq_ds16_t2i.pt``). Fully convolutional apart from the
mid-block attention, so any H x W code grid decodes (non-square included).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VQConfig:
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True  # keeps the `quantize.codebook_used` buffer the checkpoints carry
    commit_loss_beta: float = 0.25
    z_channels: int = 256
    ch: int = 128
    ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
    decoder_ch_mult: Sequence[int] | None = None  # None: same as ch_mult
    num_res_blocks: int = 2
    dropout: float = 0.0

    @property
    def pixels_per_token(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # 1x1 projection of the skip path only when the width changes (key: nin_shortcut).
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, HW, C)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # scale 1/sqrt(C)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        # Pad right/bottom only (asymmetric), as the checkpoints were trained.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _mid(channels: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels, dropout), AttnBlock(channels),
                          ResnetBlock(channels, channels, dropout)])


def _run_levels(blocks: nn.ModuleList, h: torch.Tensor, resample: str) -> torch.Tensor:
    """Encoder/decoder levels: res blocks (each followed by its attention block where the level has them),
    then the level's down- or upsampling, except after the last level."""
    for level, block in enumerate(blocks):
        for i, res in enumerate(block.res):
            h = res(h)
            if len(block.attn):
                h = block.attn[i](h)
        if level != len(blocks) - 1:
            h = getattr(block, resample)(h)
    return h


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig, in_channels: int = 3):
        super().__init__()
        ch, mult, nres = cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        cin = ch
        for level, m in enumerate(mult):
            block = nn.Module()
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nres):
                block.res.append(ResnetBlock(cin, ch * m, cfg.dropout))
                cin = ch * m
                if level == len(mult) - 1:  # attention only at the lowest resolution
                    block.attn.append(AttnBlock(cin))
            if level != len(mult) - 1:
                block.downsample = Downsample(cin)
            self.conv_blocks.append(block)
        self.mid = _mid(cin, cfg.dropout)
        self.norm_out = group_norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x):
        h = _run_levels(self.conv_blocks, self.conv_in(x), "downsample")
        for m in self.mid:
            h = m(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig, out_channels: int = 3):
        super().__init__()
        ch, nres = cfg.ch, cfg.num_res_blocks
        mult = tuple(cfg.decoder_ch_mult or cfg.ch_mult)
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _mid(cin, cfg.dropout)
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):  # conv_blocks.0 is the lowest resolution
            block = nn.Module()
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nres + 1):
                block.res.append(ResnetBlock(cin, ch * mult[level], cfg.dropout))
                cin = ch * mult[level]
                if level == len(mult) - 1:
                    block.attn.append(AttnBlock(cin))
            if level != 0:
                block.upsample = Upsample(cin)
            self.conv_blocks.append(block)
        self.norm_out = group_norm(cin)
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        h = _run_levels(self.conv_blocks, h, "upsample")
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.l2_norm = cfg.codebook_l2_norm
        self.beta = cfg.commit_loss_beta
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size)
        if self.l2_norm:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        if cfg.codebook_show_usage:
            # Rolling record of recent codes (training statistic); kept so official files load strictly.
            self.register_buffer("codebook_used", torch.zeros(65536))

    def codebook(self) -> torch.Tensor:
        """(codebook_size, embed_dim), L2-normalised when the model uses a normalised codebook."""
        w = self.embedding.weight
        return F.normalize(w, p=2, dim=-1) if self.l2_norm else w

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, H, W) long -> latents (B, embed_dim, H, W)."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor):
        """z (B, embed_dim, H, W) -> (z_q straight-through (B, D, H, W), codes (B, H, W), losses dict)."""
        zf = z.permute(0, 2, 3, 1)  # (B, H, W, D)
        if self.l2_norm:
            zf = F.normalize(zf, p=2, dim=-1)
        emb = self.codebook()
        flat = zf.reshape(-1, zf.shape[-1])
        dist = flat.pow(2).sum(1, keepdim=True) + emb.pow(2).sum(1) - 2 * flat @ emb.t()  # (BHW, n)
        codes = dist.argmin(1).view(zf.shape[:-1])
        zq = emb[codes]  # (B, H, W, D)
        losses = {}
        if self.training:
            losses["vq"] = torch.mean((zq - zf.detach()) ** 2)
            losses["commit"] = self.beta * torch.mean((zq.detach() - zf) ** 2)
        zq = zf + (zq - zf).detach()  # straight-through gradient to the encoder
        return zq.permute(0, 3, 1, 2).contiguous(), codes, losses


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig | None = None):
        super().__init__()
        cfg = cfg or VQConfig()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)

    @property
    def pixels_per_token(self) -> int:
        return self.config.pixels_per_token

    def encode_latents(self, images: torch.Tensor):
        """images (B, 3, H, W) in [-1, 1] -> quantizer output (z_q, codes, losses)."""
        return self.quantize(self.quant_conv(self.encoder(images)))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, f*h, f*w) in [-1, 1] -> codes (B, h, w) long."""
        return self.encode_latents(images)[1]

    def decode_latents(self, zq: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) -> images (B, 3, f*h, f*w), not clamped."""
        return self.decoder(self.post_quant_conv(zq))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long -> images (B, 3, f*h, f*w), about [-1, 1] (not clamped)."""
        zq = self.quantize.lookup(codes).to(self.post_quant_conv.weight.dtype)
        return self.decode_latents(zq)

    def forward(self, images: torch.Tensor):
        """Reconstruction for training: (reconstruction, codes, losses)."""
        zq, codes, losses = self.encode_latents(images)
        return self.decode_latents(zq), codes, losses
