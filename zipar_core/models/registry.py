"""The model families ZipAR runs: one entry each, read by every face (docs/design.md, "The registry").

An entry says how to recognise the family (transformers ``model_type`` values in ``config.json``, or the
class name of a module), where its adapter lives, what it makes, and its decoding defaults: the values
the pipeline, the command line, the ComfyUI nodes, the shipped workflows and the benchmarks use when the
user does not choose. Nothing else in the project holds a family list or a default.

This module imports no torch: ``zipar --help`` and ComfyUI's start-up read it. Adapters and tiny
builders are named by import path and imported on first use.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import import_module

from ..config import Defaults
from ..model_files import PART_MODEL_TYPES

_MODELS = __name__.rsplit(".", 1)[0]  # zipar.zipar_core.models (whatever the top package is called)

# The embedded demo model's name in every face (load_model, ZipARPipeline.from_pretrained, --model, zipar convert):
# the built-in name wins over a local folder called "demo" (reach that one as ./demo). Its files ship in the package.
DEMO = "demo"
DEMO_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "demo_model", "weights")
DEMO_FILES = ("c2i_demo_32.safetensors", "vq_demo.safetensors")  # its GPT and its VQ tokenizer


def builtin_path(name) -> str | None:
    """The folder a built-in model name stands for (``"demo"``), or None when ``name`` is not one; a missing
    file of the demo model is an error that says so."""
    if not isinstance(name, str) or name != DEMO:
        return None
    missing = [f for f in DEMO_FILES if not os.path.isfile(os.path.join(DEMO_FOLDER, f))]
    if missing:
        raise FileNotFoundError(f"the demo model's weights are missing ({', '.join(missing)} in {DEMO_FOLDER}); "
                                "reinstall zipar")
    return DEMO_FOLDER


# LlamaGen's GPT sizes, name -> (n_layer, n_head, dim), as in the official GPT_models table (here, without torch:
# the command line's --preset choices read it); "tiny" is a random-weight model of ours for speed checks.
LLAMAGEN_PRESETS: dict[str, tuple[int, int, int]] = {
    "GPT-B": (12, 12, 768),
    "GPT-L": (24, 16, 1024),
    "GPT-XL": (36, 20, 1280),
    "GPT-XXL": (48, 24, 1536),
    "GPT-XXXL": (48, 40, 2560),
    "GPT-1B": (22, 32, 2048),
    "GPT-3B": (24, 32, 3200),
    "GPT-7B": (32, 32, 4096),
}
RANDOM_PRESETS = ("tiny", *LLAMAGEN_PRESETS)


@dataclass(frozen=True)
class Published:
    """A model folder as its publisher puts it on the hub, and how ZipAR reads it (README's table)."""

    where: str  # hub ids or release files
    layout: str  # whose format: the original publisher's, or transformers' conversion
    loads: str  # how ZipAR reads it
    put: str  # what goes where (a face points at the folder; ComfyUI: models/zipar/<folder>)


@dataclass(frozen=True)
class Family:
    name: str  # the one name: config values, model_index.json, adapters' ``family``
    title: str  # what people call it
    adapter: str  # "module:Class" below zipar_core.models
    conditioning: str  # "class", "text" or "class or text"
    defaults: Defaults
    variants: dict[str, Defaults] = field(default_factory=dict)  # keyed by the adapter's ``variant``
    labels: dict[str, str] = field(default_factory=dict)  # what each variant ("" = default) is, for tables
    model_types: tuple[str, ...] = ()  # config.json model_type values (transformers' and the original publishers')
    claims: str = ""  # "module:function" of config.json -> bool, for a family that shares a model_type with another
    module_classes: tuple[str, ...] = ()  # class names of the main module (non-transformers families)
    sizes: str = ""  # what sizes it makes, for help texts
    pixels_per_token: int = 16
    eol: bool = False  # an end-of-row token after every row
    files: str = ""  # what a user downloads, for help texts
    tiny: str = ""  # "module:function" building a tiny random adapter (tests, benchmarks)
    sources: str = ""  # where the defaults come from
    published: tuple[Published, ...] = ()  # the folders people download, in every layout that loads

    def defaults_for(self, variant: str | None = None) -> Defaults:
        return self.variants.get(variant or "", self.defaults)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        name="llamagen", title="LlamaGen", adapter="llamagen.adapter:LlamaGenAdapter", conditioning="class or text",
        module_classes=("LlamaGenTransformer",),
        # c2i B/L: the FID settings of the LlamaGen release (cfg 2.0, no top-k); XL and larger cfg 1.75.
        defaults=Defaults(guidance_scale=2.0),
        variants={"c2i-xl": Defaults(guidance_scale=1.75),
                  "t2i": Defaults(guidance_scale=7.5, top_k=1000),
                  # the embedded demo model: 16x16 tokens, window 4 (30% of NTP's passes)
                  "demo": Defaults(window=4, guidance_scale=2.0)},
        labels={"": "c2i B, L", "c2i-xl": "c2i XL, XXL, 3B", "t2i": "t2i", "demo": "the embedded demo model"},
        sizes="multiples of 16 px, at most the trained number of tokens (c2i 256/384 px, t2i 256/512 px); a side "
              "longer than the trained one is accepted with a warning",
        files="a GPT checkpoint (c2i_L_384.pt, t2i_XL_stage2_512.pt) with its VQ-16 tokenizer (vq_ds16_c2i.pt); "
              "text-to-image also the google/flan-t5-xl folder",
        tiny="tiny:tiny_llamagen", sources="LlamaGen README / sample_c2i_ddp.py, sample_t2i.py",
        published=(
            Published("FoundationVision/LlamaGen: c2i_{B,L,XL,XXL,3B}_{256,384}.pt + vq_ds16_c2i.pt",
                      "LlamaGen release (.pt, weights under \"model\")", "as published (pickles read weights-only)",
                      "the GPT .pt file (VQ beside it), or a folder holding both"),
            Published("FoundationVision/LlamaGen: t2i_XL_stage{1,2}_{256,512}.pt + vq_ds16_t2i.pt, google/flan-t5-xl",
                      "LlamaGen release", "as published",
                      "a folder with the GPT .pt, the VQ .pt and the FLAN-T5 folder (a subfolder named *t5*)"))),
    Family(
        name="janus", title="Janus-Pro", adapter="janus:JanusAdapter", conditioning="text",
        model_types=("janus", "multi_modality"), defaults=Defaults(guidance_scale=5.0),
        # Janus-1.3B: the same defaults (DeepSeek's cfg 5), its own chat roles ("User" / "Assistant")
        variants={"janus-1.3b": Defaults(guidance_scale=5.0)}, labels={"": "Janus-Pro 1B, 7B", "janus-1.3b": "Janus-1.3B"},
        sizes="384x384 only",
        files="the folder of deepseek-ai/Janus-Pro-7B (or -1B, Janus-1.3B), or transformers' "
              "deepseek-community/Janus-Pro-7B",
        tiny="tiny:tiny_janus_adapter", sources="transformers' Janus generate (cfg 5)",
        published=(
            Published("deepseek-ai/Janus-Pro-7B, deepseek-ai/Janus-Pro-1B, deepseek-ai/Janus-1.3B",
                      "DeepSeek (model_type multi_modality; .bin or .safetensors, one file or shards)", "converted in memory",
                      "the downloaded folder as it is"),
            Published("deepseek-community/Janus-Pro-7B, deepseek-community/Janus-Pro-1B", "transformers (janus)",
                      "as published", "the downloaded folder as it is"))),
    Family(
        name="emu3", title="Emu3-Gen", adapter="emu3:Emu3Adapter", conditioning="text", model_types=("emu3", "Emu3"),
        defaults=Defaults(window=8, guidance_scale=3.0, top_k=2048), pixels_per_token=8, eol=True,
        sizes="multiples of 8 px, any aspect ratio (720x720 by default)",
        files="the folder of BAAI/Emu3-Gen with BAAI/Emu3-VisionTokenizer inside it (vision_tokenizer/), or "
              "transformers' BAAI/Emu3-Gen-hf", tiny="tiny:tiny_emu3_adapter",
        sources="BAAI's Emu3-Gen example; window 8 ~ the paper's 91% fewer steps at 720 px",
        published=(
            Published("BAAI/Emu3-Gen + BAAI/Emu3-VisionTokenizer", "BAAI (model_type Emu3, emu3.tiktoken; the vision "
                      "tokenizer a separate Emu3VisionVQ folder)", "converted in memory",
                      "the Emu3-Gen folder with the Emu3-VisionTokenizer folder inside it as vision_tokenizer/ (or "
                      "beside it, or vision_tokenizer=)"),
            Published("BAAI/Emu3-Gen-hf", "transformers (emu3)", "as published", "the downloaded folder as it is"))),
    Family(
        name="lumina", title="Lumina-mGPT", adapter="lumina:LuminaAdapter", conditioning="text",
        model_types=("chameleon",), defaults=Defaults(guidance_scale=3.0, top_k=2000), eol=True,
        sizes="its training sizes: w*h <= target^2 in 32-px steps, aspect ratio <= 4 (768x768 for -768)",
        files="the folder of Alpha-VLLM/Lumina-mGPT-7B-768 with Chameleon's vqgan.ckpt + vqgan.yaml "
              "(+ text_tokenizer.json) in its tokenizer/ subfolder",
        tiny="tiny:tiny_lumina_adapter", sources="Lumina-mGPT's inference solver (cfg 3.0, image top-k 2000)",
        published=(
            Published("Alpha-VLLM/Lumina-mGPT-7B-768, -7B-512, -7B-1024, -7B-768-Omni + Meta's Chameleon tokenizer/ "
                      "(vqgan.ckpt, vqgan.yaml, text_tokenizer.json)",
                      "Alpha-VLLM (ChameleonXLLMXForConditionalGeneration; q/k norms per model-parallel shard)",
                      "converted in memory", "the downloaded folder with Chameleon's files in its tokenizer/ "
                      "subfolder (or one chameleon/tokenizer/ folder beside the model folders, or vqgan=)"),
            Published("a transformers Chameleon folder (e.g. written by zipar convert)", "transformers (chameleon)",
                      "as published", "the folder, with vqgan.ckpt + vqgan.yaml or vqgan.safetensors in it"))),
    Family(
        name="lumina2", title="Lumina-mGPT 2.0", adapter="lumina2:Lumina2Adapter", conditioning="text",
        model_types=("chameleon",), claims="lumina2_original:is_lumina2_config",
        defaults=Defaults(window=16, guidance_scale=4.0, top_k=4096), pixels_per_token=8, eol=True,
        sizes="its training sizes: 32-px steps with w*h just under 768^2, aspect ratio <= 4 (768x768 by default); a "
              "prompt starting with <depth>, <canny>, <hed> or <openpose> makes its dual-panel image (the image above, "
              "the map below)",
        files="the folder of Alpha-VLLM/Lumina-mGPT-2.0 with movqgan_270M.ckpt (ai-forever/MoVQGAN) in it, in its "
              "movqgan/270M/ subfolder or beside it",
        tiny="tiny:tiny_lumina2_adapter",
        # guidance: README / scripts/sample.sh (cfg 4.0, image top-k 4096, temperature 1.0; its processor then keeps
        # the scale at 4, see lumina2.guidance_schedule). window 16: `zipar steps --eol` gives 1616 passes at 96x96
        # (768 px; 17.5% of NTP's 9216) and 2160 at 128x128; it sees 128 px of the row above, between Emu3-Gen's 8
        # (64 px; the ZipAR paper's setting for its 90x90 grid of 8-px tokens) and the 16-px families' 16 (256 px).
        # Not measured on this model (7B, no GPU here): window 24 (2376 passes) is the cautious choice, 8 (856) the
        # fast one.
        sources="Lumina-mGPT 2.0's README and sample.sh (cfg 4.0, image top-k 4096); window 16 chosen by pass count "
                "(1616 of 9216 at 768 px) and the context it keeps (128 px of the row above), not measured",
        published=(
            Published("Alpha-VLLM/Lumina-mGPT-2.0 + ai-forever/MoVQGAN's movqgan_270M.ckpt",
                      "Alpha-VLLM (chameleon, ChameleonXLLMX config; q/k norms per model-parallel shard; Qwen2.5-style "
                      "tokenizer.json; MoVQGAN a separate pickle)", "converted in memory (the MoVQGAN pickle read "
                      "weights-only)", "the downloaded folder with movqgan_270M.ckpt in it, in its movqgan/270M/ or "
                      "beside it (or vqgan=)"),
            Published("a transformers Chameleon folder of it written by zipar convert", "transformers (chameleon)",
                      "as published", "the folder (movqgan.safetensors in it)"))),
)}


class UnknownFamily(ValueError):
    pass


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise UnknownFamily(f"unknown model family {name!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_for_model_type(model_type: str, where: str = "") -> Family:
    """The family of a config.json ``model_type``; a clear error for anything else."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    part = PART_MODEL_TYPES.get(model_type)
    if part:
        raise UnknownFamily(f"{where or 'this folder'} is {part}")
    known = ", ".join(f"{t} ({f.title})" for f in FAMILIES.values() for t in f.model_types)
    raise UnknownFamily(f"unsupported model type {model_type!r}{' in ' + where if where else ''}: ZipAR supports "
                        f"the config.json model types {known}; LlamaGen checkpoints load as files or folders of "
                        "checkpoint files")


def family_for_config(config: dict, where: str = "") -> Family:
    """The family of a config.json: by ``model_type``, and where families share one (Lumina-mGPT and Lumina-mGPT
    2.0 are both "chameleon"), the one whose ``claims`` accepts the config, else the one without ``claims``."""
    model_type = config.get("model_type", "")
    sharing = [f for f in FAMILIES.values() if model_type in f.model_types]
    for fam in sharing:
        if fam.claims and _attr(fam.claims)(config):
            return fam
    for fam in sharing:
        if not fam.claims:
            return fam
    return family_for_model_type(model_type, where)


def family_of_module(module) -> Family:
    """The family of a main model module (a pipeline's ``transformer`` component, unwrapped)."""
    for fam in FAMILIES.values():
        if type(module).__name__ in fam.module_classes:
            return fam
    config = getattr(module, "config", None)
    model_type = getattr(config, "model_type", None)
    try:
        return family_for_config(config.to_dict() if hasattr(config, "to_dict") else {"model_type": model_type})
    except UnknownFamily:
        raise UnknownFamily(
            f"unknown model family: the transformer component is a {type(module).__name__} (model_type "
            f"{model_type!r}); ZipAR supports {', '.join(f.title for f in FAMILIES.values())}") from None


def detect(path: str) -> Family:
    """The family of a local model file or folder (without loading weights)."""
    if os.path.isfile(path):
        return FAMILIES["llamagen"]  # a checkpoint file: LlamaGen's GPT
    config = os.path.join(path, "config.json")
    if os.path.isdir(path) and not os.path.isfile(config):
        return FAMILIES["llamagen"]  # a folder of checkpoint files
    with open(config, encoding="utf-8") as f:
        return family_for_config(json.load(f), path)


def _attr(spec: str):
    module, name = spec.split(":")
    return getattr(import_module(f"{_MODELS}.{module}"), name)


def adapter_class(name: str) -> type:
    """The adapter class of a family (imports it)."""
    return _attr(get(name).adapter)


def defaults_for(adapter) -> Defaults:
    """The defaults of a loaded adapter: its family's, or its variant's (LlamaGen t2i, XL, the demo model)."""
    return get(adapter.family).defaults_for(getattr(adapter, "variant", None))


class Registered:
    """What every family's adapter has from its registry entry: ``defaults()``, the decoding settings a call that
    leaves them unset gets (``zipar_core.config.resolve``, in every face and in ``generate``)."""

    def defaults(self) -> Defaults:
        return defaults_for(self)


def build_tiny(name: str, **options):
    """A tiny random adapter of a family, in milliseconds, offline (tests and benchmarks)."""
    return _attr(get(name).tiny)(**options)


def defaults_table() -> str:
    """The families and their decoding defaults as a Markdown table (README; a test keeps it in sync)."""
    lines = ["| family | checkpoint | mode | window | guidance_scale | temperature | top_k | top_p | draft_length "
             "| sizes |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for fam in FAMILIES.values():
        for variant, d in (("", fam.defaults), *fam.variants.items()):
            lines.append(f"| {fam.title} | {fam.labels.get(variant, variant or 'all')} | {d.mode} | {d.window} | {d.guidance_scale:g} "
                         f"| {d.temperature:g} | {d.top_k} | {d.top_p:g} | {d.draft_length} | {fam.sizes if not variant else ''} |")
    return "\n".join(lines)


def published_table() -> str:
    """The model folders people download, per family and layout, as a Markdown table (README; a test keeps it
    in sync)."""
    lines = ["| family | published folder | layout | ZipAR reads it | point a face at |", "|---|---|---|---|---|"]
    for fam in FAMILIES.values():
        for p in fam.published:
            lines.append(f"| {fam.title} | {p.where} | {p.layout} | {p.loads} | {p.put} |")
    return "\n".join(lines)
