"""ZipAR Model Loader: a model from the ``zipar`` model folder, family detected, memory handed to ComfyUI.

Every failure to load (any exception type, except ComfyUI's interrupt) reaches the user as one
:class:`ModelLoadError` that names the entry, the cause and the fix (``explain``).

Before any weight loads, the model's memory plan (``zipar_core.memory_plan``, from its configuration on the meta
device) is set against what ComfyUI can free on its device: it loads whole, through ComfyUI's lowvram path
(``comfy_glue.memory_mode``), or is refused with the plan and the ``quantization`` that would fit.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache

from . import comfy_glue as glue

DTYPES = ["auto", "bf16", "fp16", "fp32"]
QUANTIZATIONS = ("none", "nf4", "fp4", "int8")  # zipar_core.quantization.CHOICES (kept here: no torch at import)
# Runs with no download: the embedded demo model (zipar.demo_model), shipped with the package. Short, so
# that the widget shows its label and value in a node of ordinary width, and free of facts (class count,
# size) that a retrained demo model may change.
BUILTIN_DEMO = "zipar demo (built-in)"


def _family_help() -> str:
    """'LlamaGen (a GPT checkpoint ...), Janus-Pro (the transformers folder ...), ...' from the registry."""
    from ..zipar_core.models import registry

    return "; ".join(f"{f.title}: {f.files}" for f in registry.FAMILIES.values())


# ----------------------------------------------------------------------------------------------------
# The demo model's facts, read from its files and code (it is retrained now and then: never hard-coded)


@dataclass(frozen=True)
class DemoFacts:
    num_classes: int
    class_names: tuple[str, ...]
    image_size: int  # pixels per side
    pixels_per_token: int


@lru_cache(maxsize=1)
def demo_facts() -> DemoFacts:
    """What the built-in demo model makes, without torch: the class names of its dataset, the class count,
    image size and token size from its GPT file's safetensors metadata (a JSON header)."""
    from ..demo_model import GPT_WEIGHTS, dataset
    from ..zipar_core.model_files import safetensors_metadata

    meta = safetensors_metadata(GPT_WEIGHTS)
    config = json.loads(meta.get("config", "{}"))
    size = int(meta.get("image_size", dataset.IMAGE_SIZE))
    return DemoFacts(num_classes=int(config.get("num_classes", dataset.NUM_CLASSES)),
                     class_names=tuple(dataset.CLASSES), image_size=size,
                     pixels_per_token=int(meta.get("pixels_per_token", 16)))


def builtin_demo_model(device=None, dtype=None, quantization=None):
    """The embedded demo model, loaded through the standard LlamaGen loader."""
    from ..demo_model import load_demo_model

    return load_demo_model(device=device or "cpu", dtype=dtype, quantization=quantization)


def _load_model(path: str, torch_dtype, device, quantization=None):
    from ..zipar_core.loading import LoadOptions
    from ..zipar_core.models import load_model

    return load_model(path, LoadOptions(dtype=torch_dtype, device=device, quantization=quantization))


def plan_memory(path: str, torch_dtype, quantization, name: str):
    """(the memory plan of one image with the model's defaults on ComfyUI's device, "full" | "lowvram"): refused
    (a SettingError in the widget's words) when even ComfyUI's lowvram path cannot fit it. Files the plan cannot
    read give (None, "full"): loading them says what is wrong."""
    from ..zipar_core.memory_plan import alternatives, gib
    from ..zipar_core.models.plan_builders import planner

    device = glue.load_device()
    try:
        replan = planner(path, dtype=torch_dtype, quantization=quantization, device=str(device))
        plan = replan()
    except Exception:  # noqa: BLE001 -- files the plan cannot read: the loader says what is wrong with them
        return None, "full"
    room = glue.obtainable_memory(device)
    mode = glue.memory_mode(plan, room)
    if mode != "refuse":
        return plan, mode
    from ..zipar_core.errors import SettingError

    fits = [f"{value} ({gib(total)})" for setting, value, total in alternatives(replan, plan, room)
            if setting == "quantization"]
    fix = f"set quantization to {' or '.join(fits)}" if fits else "use a GPU with more memory"
    raise SettingError("quantization", f"{name} needs {plan.summary()} and, with every castable layer offloaded, "
                                       f"still {gib(plan.least_on_device)}, but ComfyUI can free {gib(room)} on "
                                       f"{device}: {fix}")


# ----------------------------------------------------------------------------------------------------
# Errors: entry, cause, fix


class ModelLoadError(ValueError):
    """A model entry that could not be loaded; the message names the entry, the cause and the fix."""


def _is_transformers_folder(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "config.json"))


def fix_for(error: BaseException, path: str | None, dtype: str = "auto", name: str = "") -> str:
    """What the user should do about ``error`` raised while loading ``path`` (None: the entry did not
    resolve to a path, or the dtype was refused before)."""
    from ..zipar_core.checkpoints import CheckpointError
    from ..zipar_core.errors import SettingError
    from ..zipar_core.models.registry import UnknownFamily

    folders = ", ".join(glue.model_folders()) or "ComfyUI/models/zipar"
    refresh = f"put the files in the ZipAR model folder ({folders}), press 'r' in ComfyUI and pick the entry again"
    if isinstance(error, SettingError) and error.name == "quantization":
        return "set quantization as the cause says (none loads the weights in dtype)"
    if path is None:
        if dtype not in DTYPES:
            return f"set dtype to one of {', '.join(DTYPES)}"
        return f"pick an entry from the list; to add a model, {refresh}"
    if name == BUILTIN_DEMO and isinstance(error, OSError):
        return "reinstall the ZipAR pack (the demo's weights in demo_model/weights/ are part of it)"
    if isinstance(error, UnknownFamily) or (isinstance(error, CheckpointError) and "not a LlamaGen" in str(error)):
        return f"place a model of a supported family in ComfyUI/models/zipar. {_family_help()}"
    if isinstance(error, json.JSONDecodeError):
        return "the model's JSON file (config.json) is damaged: download it again"
    if isinstance(error, CheckpointError):
        return "download the file again (a finished download, not an HTML page); check it is one of the files " \
               "its family needs (workflows/README.md)"
    if isinstance(error, SettingError):
        return "add the missing part beside the model as workflows/README.md shows for its family, then press 'r'"
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return "free memory: pick dtype bf16 or fp16, close other models or workflows, or use a smaller checkpoint"
    if isinstance(error, ImportError):
        return "a Python package is missing: run 'pip install -r requirements.txt' in the ZipAR folder with " \
               "ComfyUI's Python, then restart ComfyUI"
    if isinstance(error, OSError) and _is_transformers_folder(path):
        return "the folder has a config.json but its weights are missing or incomplete: download the whole " \
               "model folder (every *.safetensors file, and model.safetensors.index.json where there is one)"
    if isinstance(error, OSError):
        return "check that the files are complete and readable (a finished download, file permissions)"
    return "check the files against workflows/README.md for the model's family; if they are right, report " \
           "this message to the ZipAR issue tracker"


def explain(name: str, error: BaseException, path: str | None, dtype: str = "auto") -> str:
    cause = str(error).strip() or "(no message)"
    where = f" ({path})" if path else ""
    return (f"ZipAR Model Loader could not load {name!r}{where}.\nCause ({type(error).__name__}): {cause}\n"
            f"Fix: {fix_for(error, path, dtype, name)}.")


# ----------------------------------------------------------------------------------------------------
# The node


class ZipARModelLoader:
    """Loads one ZipAR model; ComfyUI moves it to the GPU when a ZipAR node runs and evicts it when needed."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": ([BUILTIN_DEMO] + glue.list_model_entries(), {
                    "tooltip": "A model file or folder from ComfyUI/models/zipar (more folders: a 'zipar:' entry in "
                               "extra_model_paths.yaml); the family is detected from the files. "
                               f"'{BUILTIN_DEMO}' needs no download: {_demo_summary()}. Families and what to "
                               f"download: {_family_help()}."}),
                "dtype": (DTYPES, {
                    "default": "auto",
                    "tooltip": "Weight precision. auto: bf16 on GPUs that support it, else fp16 where ComfyUI "
                               "recommends it, else fp32 (always fp32 on CPU)."}),
            },
            "optional": {
                "quantization": (list(QUANTIZATIONS), {
                    "default": "none",
                    "tooltip": "The transformer's linear layers in 4-bit (nf4, fp4) or 8-bit (int8) weights through "
                               "bitsandbytes (pip install 'bitsandbytes>=0.48'): a 7B model in nf4 takes about a "
                               "third of its bf16 size. The image head, embeddings, norms and the VQ decoder stay in "
                               "dtype. A folder saved quantized loads as saved. If the model does not fit the GPU "
                               "even so, ComfyUI's lowvram path keeps part of it on the CPU (said in the stats)."}),
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

    def load(self, model_name: str, dtype: str = "auto", quantization: str = "none"):
        path = None  # where the entry points, once resolved
        try:
            torch_dtype = glue.pick_dtype(dtype, glue.load_device())
            q = _quantization(quantization)
            if model_name == BUILTIN_DEMO:
                from ..demo_model import WEIGHTS_DIR

                path = WEIGHTS_DIR
            else:
                path = glue.resolve_model_path(model_name)
            plan, mode = plan_memory(path, torch_dtype, q, model_name)  # before any weight loads
            info = {"dtype": str(torch_dtype), "quantization": str(q or "none"),
                    "planned_bytes": plan.total if plan is not None else None}
            if model_name == BUILTIN_DEMO:
                adapter = builtin_demo_model(glue.offload_device(), torch_dtype, q)  # the VQ decoder stays fp32
            else:
                info["path"] = path
                adapter = _load_model(path, torch_dtype, glue.offload_device(), q)
            return (glue.wrap_model(adapter, model_name, info, lowvram=mode == "lowvram"),)
        except Exception as e:
            if glue.is_interrupt(e):
                raise
            raise ModelLoadError(explain(model_name, e, path, dtype)) from e


def _quantization(choice: str):
    """The widget's value as a setting, checked before anything loads (bitsandbytes installed, a device it runs on)."""
    from ..zipar_core.quantization import check_available, parse

    q = parse(choice, "quantization")
    if q is not None:
        check_available("quantization", glue.load_device())
    return q


def _demo_summary() -> str:
    facts = demo_facts()
    return (f"a small class-conditional model trained on {facts.num_classes} shape classes, "
            f"{facts.image_size}x{facts.image_size} px")
