"""ZipAR: fast, faithful decoding of autoregressive image models.

This folder is the ``zipar`` Python package and, dropped into ``ComfyUI/custom_nodes/``, a ComfyUI node
pack. Importing it is cheap: torch, transformers and diffusers load only when something that needs them
is used.
"""
__version__ = "0.1.0"

# ComfyUI entry point (V1 contract). Torch-free to import: the nodes load torch when they run.
# Guarded because test runners may import this file as a loose module (no parent package) when the
# checkout's folder name is not a Python identifier; as `zipar` or as a custom node it is a package.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# The Python API, imported on first use (``from zipar import generate, ZipARConfig, load_model, ZipARPipeline``):
# ComfyUI's start-up imports this file and must stay fast, and diffusers loads only for the pipeline.
_LAZY = {"ZipARPipeline": ".pipelines", "ZipARPipelineOutput": ".pipelines", "ZipARConfig": ".zipar_core",
         "generate": ".zipar_core", "load_model": ".zipar_core.models", "DecodingCancelled": ".zipar_core"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
