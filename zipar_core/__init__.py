"""ZipAR: training-free parallel decoding of autoregressive image models (model-agnostic core).

>>> from zipar.zipar_core import ZipARConfig, generate
>>> result = generate(adapter, adapter.prepare(class_labels=[207], rows=24, cols=24, guidance_scale=2.0),
...                   ZipARConfig(mode="fixed", window=8, guidance_scale=2.0))
>>> result.codes.shape, result.stats.passes
"""
from .config import MODES, ZipARConfig
from .layout import TokenLayout
from .sampler import DecodeStats, DecodingCancelled, ZipARResult, generate
from .schedule import count_passes, expected_passes

__all__ = ["MODES", "DecodeStats", "DecodingCancelled", "TokenLayout", "ZipARConfig", "ZipARResult",
           "count_passes", "expected_passes", "generate"]
