"""ZipAR: training-free parallel decoding of autoregressive image models (model-agnostic core).

>>> from zipar.zipar_core import ZipARConfig, generate
>>> result = generate(adapter, adapter.prepare(class_labels=[207], rows=24, cols=24, guidance_scale=2.0),
...                   ZipARConfig(mode="fixed", window=8, guidance_scale=2.0))
>>> result.codes.shape, result.stats.passes

Names are imported on first use, so torch-free parts (``model_files``) can be imported without torch.
"""
from importlib import import_module

_EXPORTS = {"MODES": "modes", "ZipARConfig": "config", "TokenLayout": "layout", "DecodeStats": "sampler",
            "DecodingCancelled": "sampler", "ZipARResult": "sampler", "generate": "sampler",
            "count_passes": "modes", "expected_passes": "modes"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
