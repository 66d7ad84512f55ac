"""ZipAR Model Loader: a model from the ``zipar`` model folder, family detected, memory handed to ComfyUI."""
from __future__ import annotations

from . import comfy_glue as glue

DTYPES = ["auto", "bf16", "fp16", "fp32"]
# Runs with no download: the embedded demo model (a small class-conditional LlamaGen trained on the
# procedural shapes dataset of zipar.demo_model; classes 0-9), shipped with the package.
BUILTIN_DEMO = "zipar-demo (built-in, 10 shape classes)"
FAMILY_HELP = ("LlamaGen (a GPT checkpoint such as c2i_L_384.pt with its vq_ds16_*.pt), Janus-Pro, Emu3-Gen or "
               "Lumina-mGPT (model folders as published: the original publishers' or transformers' layout)")


def builtin_demo_model(device=None, dtype=None):
    """The embedded demo model, loaded through the standard LlamaGen loader."""
    from ..demo_model import load_demo_model

    return load_demo_model(device=device or "cpu", dtype=dtype)


def _load_model(path: str, torch_dtype, device):
    from ..zipar_core.models import load_model

    return load_model(path, torch_dtype=torch_dtype, device=device)


class ZipARModelLoader:
    """Loads one ZipAR model; ComfyUI moves it to the GPU when a ZipAR node runs and evicts it when needed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": ([BUILTIN_DEMO] + glue.list_model_entries(), {
                    "tooltip": "A model file or folder from ComfyUI/models/zipar (more folders: a 'zipar:' entry in "
                               f"extra_model_paths.yaml). Families: {FAMILY_HELP}. The family is detected from "
                               f"the files. '{BUILTIN_DEMO}' needs no download (a small model trained on 10 shape classes)."}),
                "dtype": (DTYPES, {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: bf16 on GPUs that support it, else fp16 where ComfyUI "
                               "recommends it, else fp32 (always fp32 on CPU)."}),
            },
        }

    RETURN_TYPES = ("ZIPAR_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = (("The model, managed by ComfyUI (loaded to the GPU when sampling, offloaded when memory "
                        "is needed)."),)
    FUNCTION = "load"
    CATEGORY = "ZipAR/loaders"
    DESCRIPTION = "Load an autoregressive image model (LlamaGen, Janus-Pro, Emu3-Gen, Lumina-mGPT) for ZipAR sampling."
    SEARCH_ALIASES = ("zipar", "llamagen", "janus", "emu3", "lumina", "autoregressive")

    def load(self, model_name: str, dtype: str = "auto"):
        device = glue.load_device()
        torch_dtype = glue.pick_dtype(dtype, device)
        if model_name == BUILTIN_DEMO:
            adapter = builtin_demo_model(glue.offload_device(), torch_dtype)  # the VQ decoder stays fp32
            return (glue.wrap_model(adapter, model_name, {"dtype": str(torch_dtype)}),)
        path = glue.resolve_model_path(model_name)
        try:
            adapter = _load_model(path, torch_dtype, glue.offload_device())
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise ValueError(f"ZipAR Model Loader could not load {model_name!r}: {e}\nSupported: {FAMILY_HELP}, "
                             f"placed in ComfyUI/models/zipar.") from e
        return (glue.wrap_model(adapter, model_name, {"dtype": str(torch_dtype), "path": path}),)
