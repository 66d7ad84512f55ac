"""The embedded demo model: a small class-conditional LlamaGen trained on a procedural dataset.

It ships with the package (``weights/``: ``c2i_demo_32.safetensors``, the GPT, and ``vq_demo.safetensors``,
its VQ tokenizer), so ``zipar demo`` shows real images with no download. It is loaded through the same
LlamaGen loader as the official checkpoints (``load_llamagen`` / ``load_model``), and the folder is a
LlamaGen model folder that ``load_model(WEIGHTS_DIR)`` and the ComfyUI loader accept.

- 32x32 px images, 16x16 tokens (2 px per token), codebook 512, 10 classes (``dataset.CLASSES``).
- Training: ``train_vq.py``, ``train_gpt.py``; evaluation classifier: ``train_classifier.py``;
  quality-versus-speed table: ``evaluate.py``. See docs/demo_model.md.
"""
from __future__ import annotations

import os

from ..zipar_core.models.registry import DEMO_FILES, DEMO_FOLDER
from .dataset import CLASSES, IMAGE_SIZE, NUM_CLASSES

WEIGHTS_DIR = DEMO_FOLDER  # the registry names the built-in model ("demo") and where its files are
GPT_WEIGHTS, VQ_WEIGHTS = (os.path.join(WEIGHTS_DIR, f) for f in DEMO_FILES)
GUIDANCE_SCALE = 2.0  # the default of the demo, the evaluation and the ComfyUI workflow

__all__ = ["CLASSES", "GPT_WEIGHTS", "GUIDANCE_SCALE", "IMAGE_SIZE", "NUM_CLASSES", "VQ_WEIGHTS", "WEIGHTS_DIR",
           "load_demo_model"]


def load_demo_model(device="cpu", dtype=None, quantization=None):
    """The embedded demo model as a ``LlamaGenAdapter`` (GPT in ``dtype``, default float32; VQ float32); quantization:
    its linear layers through bitsandbytes (``zipar_core.quantization``: "nf4", "fp4", "int8")."""
    import torch

    from ..zipar_core.models.llamagen import load_llamagen

    for path in (GPT_WEIGHTS, VQ_WEIGHTS):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the demo model's weights are missing ({path}); reinstall zipar, or train them "
                                    "with python -m zipar.demo_model.train_vq / train_gpt")
    return load_llamagen(GPT_WEIGHTS, VQ_WEIGHTS, dtype=dtype or torch.float32, device=device,
                         quantization=quantization)
