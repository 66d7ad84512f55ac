"""diffusers integration: :class:`ZipARPipeline` and the diffusers components for LlamaGen and Chameleon's VQGAN.

The names below import diffusers on first use; ``zipar.pipelines.settings`` (what a call resolves to, the
checks before any model work) does not, so the command line can check a request before diffusers and the
weights load.
"""
from importlib import import_module

_LAZY = {"ChameleonVQGANModel": ".components", "LlamaGenGPTModel": ".components", "LlamaGenVQModel": ".components",
         "ZipARPipeline": ".pipeline_zipar", "ZipARPipelineOutput": ".pipeline_output"}

__all__ = ["ChameleonVQGANModel", "LlamaGenGPTModel", "LlamaGenVQModel", "ZipARPipeline", "ZipARPipelineOutput"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
