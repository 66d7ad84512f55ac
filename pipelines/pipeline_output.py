"""What ``ZipARPipeline.__call__`` returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class ZipARPipelineOutput(BaseOutput):
    """
    Output of [`ZipARPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            One image per generated sample, in the requested `output_type`: a list of PIL images (`"pil"`), a float32
            array `(batch, height, width, 3)` in [0, 1] (`"np"`), a float tensor `(batch, 3, height, width)` in
            [0, 1] (`"pt"`), or, for `"codes"` / `"latent"`, the VQ code grids themselves (same as `codes`).
        codes (`torch.Tensor`):
            The sampled VQ codes, `(batch, rows, cols)` long, one grid per image. Decode them later with the model's
            VQ decoder, or compare runs token by token.
        stats (`zipar.zipar_core.DecodeStats`):
            Decoding statistics of the batch: forward passes (prefill included), image tokens per image, tokens per
            pass, adaptive-mode drafts proposed and accepted, wall and model seconds, and the passes each image needed
            on its own (`stats.sample_passes`).
        settings (`dict`):
            The resolved decoding settings (mode, window, guidance scale, temperature, top-k, top-p, size), after
            per-call arguments, the pipeline's config and the family defaults were merged: what to record next to an
            image to reproduce it.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    codes: torch.Tensor
    stats: Any
    settings: dict
