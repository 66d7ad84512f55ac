"""ZipAR Sampler: prompt (or class) -> VQ code grids, decoded with the ZipAR schedule."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import comfy_glue as glue

MAX_SEED = 0xFFFFFFFFFFFFFFFF
IMAGENET_EXAMPLE = "207 = golden retriever"  # a class of the 1000 ImageNet classes of LlamaGen c2i


def modes() -> list[str]:
    """The mode combo: every decoding mode the core offers (zipar_core.modes.MODES), so new ones appear."""
    from ..zipar_core.modes import NAMES

    return list(NAMES)


def mode_help() -> dict[str, str]:
    from ..zipar_core.modes import MODES

    return {name: mode.help for name, mode in MODES.items()}


def draft_choices(name: str) -> list[str]:
    """A combo of the choices of a draft setting (``draft_init``, ``draft_coupling``, ``draft_visibility``), the
    model's default first."""
    from ..zipar_core import config

    return [MODEL_DEFAULT_CHOICE, *getattr(config, {"draft_init": "DRAFT_INITS", "draft_coupling": "DRAFT_COUPLINGS",
                                                    "draft_visibility": "DRAFT_VISIBILITIES"}[name])]


MODEL_DEFAULT_CHOICE = "model default"  # a combo's "the model's default" (the registry's value)
DRAFT_COMBOS = ("draft_init", "draft_coupling", "draft_visibility")


@dataclass
class ZipARCodes:
    """What flows along a ZIPAR_CODES link: (B, H, W) VQ codes on CPU and the model that made them."""

    codes: Any  # torch.LongTensor (B, H, W)
    model: glue.ZipARModelHandle
    stats: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # the ZipARConfig used (model defaults filled in)


# ----------------------------------------------------------------------------------------------------
# Class-conditional prompts


def class_names_of(adapter) -> tuple[str, ...] | None:
    """The names of a class-conditional model's classes where known (the built-in demo model's dataset)."""
    if getattr(adapter, "variant", "") == "demo":
        from .loader import demo_facts

        return demo_facts().class_names
    return None


def class_range_text(num_classes: int | None, names=None) -> str:
    """'0 to 9: 0 circle, 1 square, ...' / '0 to 999 (ImageNet: 207 = golden retriever, ...)'."""
    if not num_classes:
        return "0 and up"
    text = f"0 to {num_classes - 1}"
    if names:
        return text + ": " + ", ".join(f"{i} {n}" for i, n in enumerate(names[:num_classes]))
    if num_classes == 1000:
        return text + f" (ImageNet classes, e.g. {IMAGENET_EXAMPLE})"
    return text


def class_labels_from_prompt(prompt: str, num_classes: int | None, batch_size: int, seed: int = 0,
                             names=None) -> list[int]:
    """The class of each image. '3' or '3, 5' (or class names where the model has them: 'circle, cross'):
    one class per listed entry, cycled over the batch. Empty: image i gets class (seed + i) mod the class
    count, so a batch image matches a single run with its seed, as every other setting does."""
    text = prompt.strip()
    if not text:
        n = num_classes or 1
        return [(int(seed) + i) % n for i in range(batch_size)]
    lookup = {name.lower(): i for i, name in enumerate(names or ())}
    labels = []
    for item in filter(None, (x.strip() for x in re.split(r"[,;\n]", text))):
        if re.fullmatch(r"\d+(\s+\d+)*", item):
            labels += [int(x) for x in item.split()]
        elif item.lower() in lookup:
            labels.append(lookup[item.lower()])
        else:
            what = "a class number or name" if lookup else "a class number"
            raise ValueError(f"this model is class-conditional: write {what} in the prompt "
                             f"({class_range_text(num_classes, names)}); several separated by commas make one "
                             f"image each, and an empty prompt picks class (seed + i) for image i. Got {prompt!r}")
    bad = [x for x in labels if num_classes and x >= num_classes]
    if bad:
        raise ValueError(f"class {bad[0]} is out of range: this model knows classes "
                         f"{class_range_text(num_classes, names)}; change the prompt")
    return [labels[i % len(labels)] for i in range(batch_size)]


def preview_fn(adapter):
    """codes (B, H, W), -1 where undecoded -> PIL preview of image 0: decoded tokens through the VQ
    decoder, undecoded ones grey, so the rows can be watched filling in."""
    import torch
    from PIL import Image

    from ..zipar_core.protocol import decode_known

    def preview(codes):
        with torch.no_grad():
            img = decode_known(adapter, codes[:1])  # (1, 3, h, w) in [-1, 1], undecoded tokens mid grey
        arr = ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
        return Image.fromarray(arr)

    return preview


def _ntp_passes(layout) -> int:
    from ..zipar_core import ZipARConfig, count_passes

    return count_passes(layout, ZipARConfig(mode="ntp"))


def stats_text(config, layout, stats, ntp: int, note: str = "", classes: str = "") -> str:
    """What was decoded, with which values (after the model defaults were filled in), and what it saved."""
    from ..zipar_core.modes import get as get_mode

    window = config.window_for(layout.cols)  # the effective one: ntp decodes whole rows
    windowed = f" window {window}" if config.uses("window") else ""  # sjd and ntp have none
    mode = get_mode(config.mode)
    what = mode.label if mode.baseline else f"{config.mode}{windowed}"
    speedup = ntp / max(stats.passes, 1)
    head = f"ZipAR {what}: {stats.passes} forward passes for {stats.batch_size} image(s) of {layout.rows}x{layout.cols}"
    lines = [f"{head} tokens",
             f"NTP needs {ntp}: {speedup:.2f}x fewer passes, {stats.tokens_per_pass:.2f} tokens/pass",
             (f"used: mode {config.mode},{windowed + ',' if windowed else ''} guidance_scale {config.guidance_scale:g}, "
              f"temperature {config.temperature:g}, top_k {config.top_k}, top_p {config.top_p:g}, "
              f"passes {stats.passes}, time {stats.seconds:.2f} s")]
    if classes:
        lines.append(f"classes: {classes}")
    if stats.mean_accepted_length is not None:
        lines.append(f"Jacobi drafts ({config.draft_length} per chain, {config.draft_init} start) accepted: "
                     f"{stats.drafts_accepted}/{stats.drafts_proposed}, {stats.mean_accepted_length:.2f} tokens per "
                     "chain and pass")
    elif stats.drafts_proposed:
        lines.append(f"adaptive row starts accepted: {stats.drafts_accepted}/{stats.drafts_proposed}")
    if note:
        lines.append(note)
    return "\n".join(lines)


def classes_text(labels: list[int], names=None) -> str:
    """'3 horizontal stripes, 5 checkerboard' (names where known) for the stats output."""
    return ", ".join(f"{x} {names[x]}" if names and x < len(names) else str(x) for x in labels)


MODEL_DEFAULT = -1  # guidance_scale / top_k / window / draft_length widgets: "the model's default" (registry)


def _defaults_help(key: str) -> str:
    """'LlamaGen 2.0, t2i 7.5, ...' for a tooltip: every family's (and variant's) registry default of ``key``."""
    from ..zipar_core.models import registry

    parts = []
    for fam in registry.FAMILIES.values():
        values = {"": getattr(fam.defaults, key), **{v: getattr(d, key) for v, d in fam.variants.items()}}
        extra = ", ".join(f"{v} {x:g}" for v, x in values.items() if v and x != values[""])
        parts.append(f"{fam.title} {values[''] :g}" + (f" ({extra})" if extra else ""))
    return "; ".join(parts)


def widget_name(setting: str) -> str:
    """The widget a ZipAR setting is set with on this node (for error messages)."""
    return {"class_labels": "prompt", "prompt": "prompt", "negative_prompt": "negative_prompt"}.get(setting, setting)


# The one rule of these widgets: -1 is "the model's default" (as ComfyUI's own nodes use -1 for "default"), any other
# value is the setting itself, checked like every face's: window / draft_length >= 1, guidance_scale / top_k >= 0.
LOWEST = {"guidance_scale": 0, "top_k": 0, "window": 1, "draft_length": 1}


def chosen_settings(mode, window, guidance_scale, temperature, top_k, top_p, paper_first_row,
                    draft_length=MODEL_DEFAULT, draft_init=MODEL_DEFAULT_CHOICE, draft_coupling=MODEL_DEFAULT_CHOICE,
                    draft_visibility=MODEL_DEFAULT_CHOICE) -> dict:
    """Widget values -> ZipAR settings; the "model default" values (-1) become None, for the registry to fill."""
    values = {"guidance_scale": guidance_scale, "top_k": top_k, "window": window, "draft_length": draft_length}
    for name, value in values.items():
        if value != MODEL_DEFAULT and value < LOWEST[name]:
            raise ValueError(f"ZipAR Sampler: {name} {value:g} is not allowed; use {MODEL_DEFAULT} for the model's "
                             f"default, or a value >= {LOWEST[name]}")
    given = {k: None if v == MODEL_DEFAULT else v for k, v in values.items()}
    return {"mode": mode, "window": _maybe(int, given["window"]), "guidance_scale": _maybe(float, given["guidance_scale"]),
            "temperature": float(temperature), "top_k": _maybe(int, given["top_k"]), "top_p": float(top_p),
            "paper_first_row": bool(paper_first_row), "draft_length": _maybe(int, given["draft_length"]),
            **{name: None if choice == MODEL_DEFAULT_CHOICE else choice for name, choice in
               zip(DRAFT_COMBOS, (draft_init, draft_coupling, draft_visibility))}}


def _maybe(kind, value):
    return None if value is None else kind(value)


class ZipARSampler:
    """Generates VQ code grids, several rows per forward pass (ZipAR), with progress, previews and Cancel."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("ZIPAR_MODEL", {"tooltip": "The model from ZipAR Model Loader."}),
                "prompt": ("STRING", {
                    "multiline": True, "dynamicPrompts": True, "default": "",
                    "tooltip": "What to draw. Text models (Janus-Pro, Emu3-Gen, Lumina-mGPT, Lumina-mGPT 2.0, LlamaGen "
                               "t2i): a description; Lumina-mGPT 2.0's dual-panel tasks (the image above, its map below) "
                               "start it with <depth>, <canny>, <hed> or <openpose>. Class-conditional models: a class number, from that model's own "
                               f"range: LlamaGen c2i {class_range_text(1000)}; the built-in demo {_demo_classes()}. "
                               "Several, separated by commas, give one image each (cycled over the batch). "
                               "Empty: image i gets class (seed + i) mod the number of classes."}),
                "negative_prompt": ("STRING", {
                    "multiline": True, "default": "",
                    "tooltip": "Text models: what to steer away from (used with guidance > 1). Empty: the "
                               "model's own unconditional input. Ignored by class-conditional models."}),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                    "tooltip": "Random seed. Image i of a batch uses seed + i, so it matches a single run with "
                               "that seed."}),
                "guidance_scale": ("FLOAT", {
                    "default": MODEL_DEFAULT, "min": MODEL_DEFAULT, "max": 30.0, "step": 0.05, "round": 0.01,
                    "tooltip": "Classifier-free guidance scale; 1.0 turns it off (and halves the work). -1: the "
                               f"model's default ({_defaults_help('guidance_scale')})."}),
                "temperature": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01, "round": 0.001,
                    "tooltip": "Sampling temperature; 0 always takes the most likely token (greedy)."}),
                "top_k": ("INT", {
                    "default": MODEL_DEFAULT, "min": MODEL_DEFAULT, "max": 1 << 20,
                    "tooltip": "Sample only from the k most likely tokens; 0 = off. -1: the model's default "
                               f"({_defaults_help('top_k')})."}),
                "top_p": ("FLOAT", {
                    "default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                    "tooltip": "Nucleus sampling: keep the most likely tokens up to this total probability; "
                               "1.0 = off."}),
                "mode": (modes(), {
                    "default": "fixed",
                    "tooltip": " ".join(f"{m}: {mode_help()[m]}." for m in modes())}),
                "window": ("INT", {
                    "default": MODEL_DEFAULT, "min": MODEL_DEFAULT, "max": 512,
                    "tooltip": "Tokens of the row above a token waits for (adaptive: the minimum). Smaller = "
                               "fewer passes, larger = closer to raster order; at most the grid width in tokens "
                               "(image width / the model's pixels per token). -1: the model's default "
                               f"({_defaults_help('window')}; never wider than the grid). Ignored by ntp and sjd."}),
                "width": ("INT", {
                    "default": 0, "min": 0, "max": 4096, "step": 8,
                    "tooltip": "Image width in pixels; 0 = the model's trained size. A multiple of the model's "
                               f"pixels per token: {_token_sizes_help()}. Janus-Pro only makes 384 px."}),
                "height": ("INT", {
                    "default": 0, "min": 0, "max": 4096, "step": 8,
                    "tooltip": "Image height in pixels; 0 = the model's trained size (see width)."}),
                "batch_size": ("INT", {
                    "default": 1, "min": 1, "max": 64,
                    "tooltip": "Images generated together in each forward pass."}),
            },
            "optional": {
                "paper_first_row": ("BOOLEAN", {
                    "default": False, "advanced": True,
                    "tooltip": "Decode row 0 completely before row 1 starts, as the authors' code does (matches "
                               "the paper's pass counts; a few more passes)."}),
                "draft_length": ("INT", {
                    "default": MODEL_DEFAULT, "min": MODEL_DEFAULT, "max": 64, "advanced": True,
                    "tooltip": "sjd / zipar_sjd: draft tokens each row carries ahead of its newest token, checked "
                               "together in one pass (accepted ones cost no pass of their own). -1: the model's "
                               f"default ({_defaults_help('draft_length')}). Ignored by the other modes."}),
                "draft_init": (draft_choices("draft_init"), {
                    "default": MODEL_DEFAULT_CHOICE, "advanced": True,
                    "tooltip": "sjd / zipar_sjd: how a new draft token starts: random (as SJD), or spatial (the "
                               "token above it)."}),
                "draft_coupling": (draft_choices("draft_coupling"), {
                    "default": MODEL_DEFAULT_CHOICE, "advanced": True,
                    "tooltip": "sjd / zipar_sjd: how a draft that was not checked is drawn again: none (afresh, as "
                               "SJD), maximal (kept whenever the model's new guess allows it), gumbel (from the "
                               "position's fixed noise). The images' distribution is the same with each."}),
                "draft_visibility": (draft_choices("draft_visibility"), {
                    "default": MODEL_DEFAULT_CHOICE, "advanced": True,
                    "tooltip": "zipar_sjd: whether a row's drafts may look at the row above's drafts (rows) or only "
                               "at its final tokens (chain); with rows a token is kept only if what it saw was "
                               "accepted."}),
            },
        }

    RETURN_TYPES = ("ZIPAR_CODES", "STRING")
    RETURN_NAMES = ("codes", "stats")
    OUTPUT_TOOLTIPS = ("VQ code grids; turn them into images with ZipAR VQ Decode.",
                       "Forward passes used, the values used (model defaults filled in) and the saving over plain "
                       "next-token (raster) decoding.")
    FUNCTION = "sample"
    CATEGORY = "ZipAR/sampling"
    DESCRIPTION = ("Autoregressive image generation with ZipAR parallel decoding: several rows of tokens per "
                   "forward pass, no retraining.")
    SEARCH_ALIASES = ("zipar", "autoregressive sampler", "llamagen", "janus", "emu3", "lumina")

    def sample(self, model, prompt, negative_prompt, seed, guidance_scale, temperature, top_k, top_p, mode, window,
               width, height, batch_size, paper_first_row=False, draft_length=MODEL_DEFAULT,
               draft_init=MODEL_DEFAULT_CHOICE, draft_coupling=MODEL_DEFAULT_CHOICE,
               draft_visibility=MODEL_DEFAULT_CHOICE):
        import torch

        from ..zipar_core import generate
        from ..zipar_core.config import resolve
        from ..zipar_core.errors import render
        from ..zipar_core.modes import get as get_mode

        adapter = model.adapter  # checks first: the weights move to the device once the memory decoding needs is known
        chosen = chosen_settings(mode, window, guidance_scale, temperature, top_k, top_p, paper_first_row,
                                 draft_length, draft_init, draft_coupling, draft_visibility)
        note, classes, request = "", "", {"height": int(height) or None, "width": int(width) or None}
        try:
            if adapter.conditioning == "class":
                names = class_names_of(adapter)
                request["class_labels"] = class_labels_from_prompt(prompt, adapter.num_classes, batch_size, seed,
                                                                   names)
                classes = classes_text(request["class_labels"], names)
                if negative_prompt.strip():
                    note = "negative prompt ignored: class-conditional model"
            else:
                request["prompt"] = [prompt] * batch_size
                if negative_prompt.strip():
                    request["negative_prompt"] = [negative_prompt] * batch_size
            checked = adapter.check(**request)
            config = resolve(adapter.defaults(), checked.cols, chosen)  # the one resolution every face uses
        except ValueError as e:
            size = getattr(e, "name", None) in ("height", "width")
            hint = f". Change width/height (0 = the model's trained size {_size_text(adapter)})" if size else ""
            raise ValueError(f"ZipAR Sampler: {render(e, widget_name)}{hint}") from e
        model.load(memory_required=decoding_memory(adapter, checked, config, batch_size))
        offloaded = model.offload_note()
        note = "\n".join(x for x in (note, offloaded) if x)
        with torch.no_grad():
            cond = adapter.encode(checked, config.guidance_scale)
            layout = cond.layout
            dev = adapter.device
            gens = [torch.Generator(device=dev).manual_seed((int(seed) + i) % (MAX_SEED + 1))
                    for i in range(batch_size)]
            preview = preview_fn(adapter) if glue.previews_enabled() else None
            mode = get_mode(config.mode)
            progress = glue.PassProgress(mode.count_passes(layout, config), preview, exact=mode.exact_passes)
            result = generate(adapter, cond, config, generator=gens, callback=progress)
            progress.finish()
        codes = ZipARCodes(result.codes.cpu(), model, result.stats.as_dict(), config.to_dict())
        return codes, stats_text(config, layout, result.stats, _ntp_passes(layout), note, classes)


def decoding_memory(adapter, request, config, batch: int) -> int:
    """Bytes decoding needs beside the weights (the memory plan's KV cache and widest pass, and the VQ decode it
    does not overlap), for ComfyUI to free before it loads the weights."""
    from ..zipar_core.models.plan_builders import plan_adapter

    plan = plan_adapter(adapter, request, config, batch, glue.load_device())
    return max(plan.kv_cache + plan.activations, plan.vq_decode)


def _demo_classes() -> str:
    from .loader import demo_facts

    facts = demo_facts()
    return class_range_text(facts.num_classes, facts.class_names)


def _token_sizes_help() -> str:
    """'LlamaGen 16, Janus-Pro 16, Emu3-Gen 8, Lumina-mGPT 16; the built-in demo 2 (32 px by default)'."""
    from ..zipar_core.models import registry
    from .loader import demo_facts

    facts = demo_facts()
    fams = ", ".join(f"{f.title} {f.pixels_per_token}" for f in registry.FAMILIES.values())
    return f"{fams}; the built-in demo {facts.pixels_per_token} ({facts.image_size} px by default)"


def _size_text(adapter) -> str:
    size = getattr(adapter, "default_size", None)
    return f"{size[1]}x{size[0]} px" if size else "(model-defined)"
