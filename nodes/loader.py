"""ZipAR Model Loader: a model from the ``zipar`` model folder, family detected, memory handed to ComfyUI."""
from __future__ import annotations

from . import comfy_glue as glue

DTYPES = ["auto", "bf16", "fp16", "fp32"]
# Runs with no download: a small class-conditional LlamaGen plus VQ-16 decoder with RANDOM weights (the
# images are noise; pass counts and timings are real), until the trained demo model ships.
BUILTIN_DEMO = "zipar-demo (built-in, random weights)"
FAMILY_HELP = ("LlamaGen (a GPT checkpoint such as c2i_L_384.pt with its vq_ds16_*.pt), Janus-Pro, Emu3-Gen or "
               "Lumina-mGPT (transformers model folders)")


def builtin_demo_model(seed: int = 0):
    """The built-in demo adapter: LlamaGen c2i (dim 256, 4 layers, 10 classes, 16x16 tokens = 256 px)
    with a small VQ-16 decoder, both seeded random."""
    import torch

    from ..zipar_core.models.llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gpt = LlamaGenTransformer(LlamaGenConfig(dim=256, n_layer=4, n_head=8, vocab_size=4096, num_classes=10,
                                                 block_size=256, multiple_of=64))
        vq = VQModel(VQConfig(codebook_size=4096, codebook_embed_dim=8, z_channels=64, ch=32,
                              ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1))
    return LlamaGenAdapter(gpt.eval(), vq.eval())


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
                               f"the files. '{BUILTIN_DEMO}' needs no download but draws noise."}),
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
            adapter = builtin_demo_model()
            adapter.gpt.to(device=glue.offload_device(), dtype=torch_dtype)
            adapter.vq.to(device=glue.offload_device())  # the VQ decoder stays fp32, as in LlamaGen
            return (glue.wrap_model(adapter, model_name, {"dtype": str(torch_dtype)}),)
        path = glue.resolve_model_path(model_name)
        try:
            adapter = _load_model(path, torch_dtype, glue.offload_device())
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise ValueError(f"ZipAR Model Loader could not load {model_name!r}: {e}\nSupported: {FAMILY_HELP}, "
                             f"placed in ComfyUI/models/zipar.") from e
        return (glue.wrap_model(adapter, model_name, {"dtype": str(torch_dtype), "path": path}),)
