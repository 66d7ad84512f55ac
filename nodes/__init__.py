"""ZipAR nodes for ComfyUI. Importing this package is cheap (no torch, no comfy): the node modules
import those when a node runs. Relative imports only: the pack's folder name varies by install and
ComfyUI has its own top-level ``nodes`` module."""
from . import comfy_glue
from .decode import ZipARVQDecode
from .loader import ZipARModelLoader
from .sampler import ZipARSampler

NODE_CLASS_MAPPINGS = {
    "ZipARModelLoader": ZipARModelLoader,
    "ZipARSampler": ZipARSampler,
    "ZipARVQDecode": ZipARVQDecode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ZipARModelLoader": "ZipAR Model Loader",
    "ZipARSampler": "ZipAR Sampler",
    "ZipARVQDecode": "ZipAR VQ Decode",
}

comfy_glue.register_model_folder()  # models/zipar (a no-op outside ComfyUI)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
