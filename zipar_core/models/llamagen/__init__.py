"""LlamaGen (class- and text-conditional) for ZipAR: GPT, VQ-16 tokenizer, checkpoint loading, adapter.

The T5 caption encoder (``.t5``) is imported lazily: it needs transformers, the rest does not.
"""
from .adapter import LlamaGenAdapter, load_llamagen
from .gpt import PRESETS, LlamaGenConfig, LlamaGenTransformer
from .loading import find_llamagen_files, load_llamagen_gpt, load_llamagen_vq
from .vq import VQConfig, VQModel

__all__ = [
           "PRESETS",
           "LlamaGenAdapter",
           "LlamaGenConfig",
           "LlamaGenTransformer",
           "VQConfig",
           "VQModel",
           "find_llamagen_files",
           "load_llamagen",
           "load_llamagen_gpt",
           "load_llamagen_vq",
]
