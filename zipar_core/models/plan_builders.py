"""What each family tells the memory plan (``zipar_core.memory_plan``): its modules, its cache, its widths, its
defaults, what stays unquantized and its image decoder on the meta device, for a loaded adapter or for a model
known only by its configuration (a published name, a hub id, a folder, a LlamaGen checkpoint), built on the meta
device without reading a weight.

The faces call :func:`plan_adapter` (a loaded model and a checked request), :func:`plan_model` (``zipar memory``)
and :func:`check_adapter` / :func:`check_model` (refuse before loading, in the face's words).
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..config import ZipARConfig
from ..loading import HubOptions, LoadOptions
from ..memory_plan import DEFAULT_TEXT_TOKENS, MemoryPlan, Subject, check, free_bytes, plan, resolve_config
from ..quantization import parse, quantization_of
from . import keep_unquantized, published, registry

_KEEP = object()


# -- a family's facts -----------------------------------------------------------------------------------

def _text_config(family: str, transformer: nn.Module):
    cfg = transformer.config
    return cfg if family == "llamagen" else getattr(cfg, "text_config", None) or cfg


def _dims(family: str, transformer: nn.Module) -> dict:
    cfg = _text_config(family, transformer)
    get = lambda *names: next((getattr(cfg, n) for n in names if getattr(cfg, n, None)), 0)  # noqa: E731
    return {"dim": get("hidden_size", "dim"), "heads": get("num_attention_heads", "n_head"),
            "ffn": get("intermediate_size", "hidden_dim"), "vocab": get("vocab_size")}


def _kv_cache(family: str, transformer: nn.Module):
    """(rows, slots, dtype) -> bytes of the slot cache the family's adapter allocates, built on the meta device
    (LlamaGen: ``SlotKVCache``; the transformers families: ``HFSlotCache.for_config``)."""
    cfg = _text_config(family, transformer)

    def size(rows: int, slots: int, dtype: torch.dtype) -> int:
        if family == "llamagen":
            from ..cache import SlotKVCache

            cache = SlotKVCache(cfg.n_layer, rows, cfg.kv_heads, slots, cfg.head_dim, dtype, "meta")
        else:
            from .hf_cache import HFSlotCache

            cache = HFSlotCache.for_config(cfg, rows, slots, dtype, "meta")
        return sum(t.numel() * t.element_size() for t in (*cache.keys, *cache.values))
    return size


def _meta_decoder(family: str, transformer: nn.Module, parts: dict, dtype: torch.dtype):
    """The family's image decoder rebuilt on the meta device from its config, as a function of codes (B, H, W)."""
    with torch.device("meta"):
        if family == "janus":
            from transformers.models.janus.modeling_janus import JanusVQVAE

            vq = JanusVQVAE(transformer.config.vq_config).to(dtype)
            return lambda codes: vq.decode(codes.flatten(1))
        if family == "emu3":
            from transformers.models.emu3.modeling_emu3 import Emu3VQVAE

            vq = Emu3VQVAE(transformer.config.vq_config).to(dtype)
            return vq.decode
        part = parts.get("vqvae")
        if part is None:
            return None
        dtype = next(part.parameters()).dtype
        if family == "llamagen":
            from .llamagen.vq import VQModel

            vq = VQModel(part.config).to(dtype)
            return vq.decode_codes
        return type(part)(part.config).to(dtype)  # ChameleonVQGANDecoder / MoVQGANDecoder: codes -> pixels


def _subject(name: str, family: str, transformer: nn.Module, parts: dict, dtype: torch.dtype, quantization,
             codebook: int, variant: str, size, text_tokens: int, pixels_per_token: int | None = None) -> Subject:
    fam = registry.get(family)
    return Subject(name=name, family=family, transformer=transformer, parts=parts, dtype=dtype,
                   quantization=quantization, keep=keep_unquantized(family), codebook=codebook,
                   dims=_dims(family, transformer), kv_cache=_kv_cache(family, transformer),
                   defaults=fam.defaults_for(variant).as_dict(), eol=fam.eol,
                   pixels_per_token=pixels_per_token or fam.pixels_per_token, default_size=size, text_tokens=text_tokens,
                   decode=_meta_decoder(family, transformer, parts, dtype))


# -- a loaded (or configuration-only) adapter -------------------------------------------------------

def subject_of_adapter(adapter, name: str | None = None) -> Subject:
    """A loaded adapter (or LlamaGen's configuration-only one, on the meta device) as a plan's subject."""
    modules, _ = adapter.components()
    transformer = modules["transformer"]
    parts = {k: modules[k] for k in ("vqvae", "text_encoder") if isinstance(modules.get(k), nn.Module)}
    t5 = getattr(adapter, "t5", None)
    if "text_encoder" not in parts and getattr(t5, "path", None):  # an unloaded FLAN-T5: its config, on meta
        parts["text_encoder"] = _meta_t5(_read_json(os.path.join(t5.path, "config.json")), adapter.dtype)
    return _subject(name or getattr(adapter, "family", "model"), adapter.family, transformer, parts, adapter.dtype,
                    quantization_of(transformer), adapter.codebook_size, getattr(adapter, "variant", "") or "",
                    adapter.default_size, getattr(adapter, "prefix", 1), adapter.pixels_per_token)


def plan_adapter(adapter, request, config: ZipARConfig, batch: int, device, *, quantization=_KEEP,
                 decode_images: int | None = None, name: str | None = None) -> MemoryPlan:
    """The plan of an adapter decoding ``batch`` images of a checked request."""
    from ..memory_plan import _KEEP as KEEP

    subject = subject_of_adapter(adapter, name)
    return plan(subject, layout_of(adapter, request), config, batch, device,
                quantization=KEEP if quantization is _KEEP else quantization, decode_images=decode_images)


def layout_of(adapter, request):
    """The token layout of one image of a checked request (its prompt encoded once, without guidance)."""
    import dataclasses

    if hasattr(adapter, "layout"):  # LlamaGen: known without encoding
        return adapter.layout(request.rows, request.cols)
    one = dataclasses.replace(request, prompts=request.prompts[:1] if request.prompts else None,
                              class_labels=request.class_labels[:1] if request.class_labels else None,
                              negative_prompts=request.negative_prompts[:1] if request.negative_prompts else None)
    return adapter.encode(one, 1.0).layout


def check_adapter(adapter, request, config: ZipARConfig, batch: int, device, what: str, *, quantization=_KEEP,
                  decode_images: int | None = None, offload: str | None = None, batch_setting: str = "batch_size",
                  free: int | None = -1, loaded: bool | None = None) -> MemoryPlan:
    """The plan of an adapter, refused (a SettingError in the face's words) when it exceeds the free memory of
    ``device`` (``free``: bytes, or -1 to ask the device). ``loaded`` (default: whether the adapter holds real
    weights): the free memory is what is left beside them, so only what decoding adds is checked."""
    from ..memory_plan import _KEEP as KEEP

    subject = subject_of_adapter(adapter)
    layout = layout_of(adapter, request)
    q0 = KEEP if quantization is _KEEP else quantization

    def replan(quantization=q0, batch=batch):
        return plan(subject, layout, config, batch, device, quantization=quantization, decode_images=decode_images)

    current = replan()
    if loaded is None:
        loaded = next(subject.transformer.parameters()).device.type != "meta"
    check(current, replan, free_bytes(device) if free == -1 else free, what, offload, batch_setting, loaded)
    return current


# -- a model known by its configuration ---------------------------------------------------------------

def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _meta_t5(config: dict, dtype: torch.dtype) -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        return T5EncoderModel(T5Config(**config)).to(dtype)


def _transformers_config(family: str, config: dict, folder: str | None = None):
    """A family's transformers config from a config.json in transformers' layout or the original publisher's
    (DeepSeek's ``multi_modality``, BAAI's ``Emu3``, Alpha-VLLM's Chameleon), for a model built on meta."""
    cfg = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "architectures",
                                                        "quantization_config", "auto_map")}
    if family == "janus":
        from transformers import JanusConfig

        if "language_config" in cfg:  # DeepSeek's layout: the language model's sizes; SigLIP-L and VQ-16 as published
            cfg = published._janus({k: v for k, v in cfg["language_config"].items() if k != "model_type"})
        return JanusConfig(**cfg)
    if family == "emu3":
        from transformers import Emu3Config

        if "text_config" in cfg:
            return Emu3Config(**cfg)
        from .emu3_original import find_vision_tokenizer, hf_config

        try:
            vq = _read_json(os.path.join(find_vision_tokenizer(folder, None), "config.json")) if folder else {}
        except (OSError, ValueError):
            vq = {}  # BAAI's vision tokenizer not beside it: Emu3VisionVQ's defaults (its published sizes)
        return hf_config(config, vq, {})
    from transformers import ChameleonConfig

    from .lumina_original import LUMINA_ONLY

    cfg = {k: v for k, v in cfg.items() if k not in LUMINA_ONLY}
    cfg["vocabulary_map"] = cfg.get("vocabulary_map") or {}
    if family == "lumina2":
        from .lumina2_original import STUB_ENCODER

        cfg["vq_config"] = dict(STUB_ENCODER)
    return ChameleonConfig(**cfg)


def _meta_model(family: str, config, dtype: torch.dtype) -> tuple[nn.Module, dict]:
    """(transformer, parts) of a family on the meta device, in ``dtype`` (the image decoders that load beside it
    in their own dtype, float32)."""
    with torch.device("meta"):
        if family == "janus":
            from transformers import JanusForConditionalGeneration

            return JanusForConditionalGeneration(config).to(dtype), {}
        if family == "emu3":
            from transformers import Emu3ForConditionalGeneration

            return Emu3ForConditionalGeneration(config).to(dtype), {}
        from transformers import ChameleonForConditionalGeneration

        model = ChameleonForConditionalGeneration(config).to(dtype)
        if family == "lumina2":
            from .lumina2_original import drop_image_encoder
            from .movqgan import MoVQGANConfig, MoVQGANDecoder

            return drop_image_encoder(model), {"vqvae": MoVQGANDecoder(MoVQGANConfig())}
        from .chameleon_vqgan import ChameleonVQGANDecoder, VQGANConfig

        return model, {"vqvae": ChameleonVQGANDecoder(VQGANConfig())}


def _codebook(family: str, transformer: nn.Module, parts: dict) -> int:
    if family == "janus":
        return transformer.config.vq_config.num_embeddings
    if family == "emu3":
        return transformer.config.vq_config.codebook_size
    if family == "lumina2":
        return parts["vqvae"].config.n_embed
    return parts["vqvae"].config.n_embed if "vqvae" in parts else 8192


def _llamagen_published(entry: published.PublishedModel, dtype: torch.dtype, quantization) -> Subject:
    from .llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel

    c = entry.config
    cfg = LlamaGenConfig.from_preset(c["preset"], c["model_type"], c["block_size"])
    with torch.device("meta"):
        gpt = LlamaGenTransformer(cfg).to(dtype)
        vq = VQModel(VQConfig())
    adapter = LlamaGenAdapter(gpt, vq)
    parts = {"vqvae": vq}
    if "t5" in entry.parts:
        parts["text_encoder"] = _meta_t5(entry.parts["t5"], dtype)
    return _subject(entry.name, "llamagen", gpt, parts, dtype, quantization, cfg.vocab_size, adapter.variant,
                    entry.size, cfg.cls_token_num)


def subject_of(model: str, dtype: torch.dtype | None = None, quantization=None, hub: HubOptions | None = None,
               **loader) -> Subject:
    """A plan's subject for a published name (``Janus-Pro-7B``, ``deepseek-ai/Janus-Pro-7B``), another hub id (its
    config.json), a local folder (its config.json, in any layout ZipAR loads; a saved pipeline) or LlamaGen checkpoint
    files (their headers), on the meta device: no weights are read. A folder saved quantized plans its own
    quantization. dtype None: the checkpoint's (the published releases: bfloat16; LlamaGen: float32)."""
    quantization = parse(quantization)
    entry = published.find(model)
    if entry is not None and entry.family == "llamagen":
        return _llamagen_published(entry, dtype or torch.float32, quantization)
    if entry is not None:
        family, config, folder = entry.family, _transformers_config(entry.family, entry.config), None
        name, size, tokens = entry.name, entry.size, entry.text_tokens
        dtype = dtype or torch.bfloat16  # the releases' dtype
    else:
        path = registry.builtin_path(model) or model
        from ..model_files import is_hub_id

        if not os.path.exists(path) and not is_hub_id(path):
            raise FileNotFoundError(f"no model at {path}: give a model folder, a checkpoint file, a published name "
                                    f"({', '.join(published.names()[:3])}, ...) or a hub id (owner/name)")
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return _pipeline_folder(path, dtype, quantization)
        if os.path.exists(path) and registry.detect(path).name == "llamagen":
            adapter = registry.adapter_class("llamagen").from_pretrained(
                path, LoadOptions(dtype=dtype, device="meta", quantization=quantization), **loader)
            return subject_of_adapter(adapter, os.path.basename(os.path.normpath(model)))
        from .hub import read_config

        raw = read_config(path, hub)
        dtype = dtype or _config_dtype(raw)
        family = registry.family_for_config(raw, path).name
        folder = path if os.path.isdir(path) else None
        config, name = _transformers_config(family, raw, folder), os.path.basename(os.path.normpath(model))
        size, tokens = None, DEFAULT_TEXT_TOKENS
        saved = raw.get("quantization_config")
        if saved:  # saved quantized: that is how it loads
            from types import SimpleNamespace

            quantization = quantization_of(SimpleNamespace(quantization_config=saved))
    transformer, parts = _meta_model(family, config, dtype)
    return _subject(name, family, transformer, parts, dtype, quantization, _codebook(family, transformer, parts), "",
                    size or _folder_size(family, path, transformer), tokens)


def _config_dtype(config: dict) -> torch.dtype:
    """The dtype a config.json says its weights are in (what ``dtype="auto"`` loads), else float32."""
    text = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("torch_dtype")
    return getattr(torch, str(text).replace("torch.", ""), torch.float32) if text else torch.float32


def _pipeline_folder(folder: str, dtype, quantization) -> Subject:
    """A saved ZipAR pipeline: the transformer's config (LlamaGen: its GPT and VQ configs) on the meta device."""
    index = _read_json(os.path.join(folder, "model_index.json"))
    family = index.get("family") or "llamagen"
    raw = _read_json(os.path.join(folder, "transformer", "config.json"))
    name = os.path.basename(os.path.normpath(folder))
    if raw.get("quantization_config") or raw.get("quantization"):
        from types import SimpleNamespace

        quantization = quantization_of(SimpleNamespace(quantization_config=raw.get("quantization_config")
                                                       or raw["quantization"]))
    if family != "llamagen":
        dtype = dtype or _config_dtype(raw)
        transformer, parts = _meta_model(family, _transformers_config(family, raw, None), dtype)
        if "vqvae" in parts and not os.path.isdir(os.path.join(folder, "vqvae")):
            parts.pop("vqvae")
        return _subject(name, family, transformer, parts, dtype, quantization, _codebook(family, transformer, parts),
                        "", _folder_size(family, folder, transformer), DEFAULT_TEXT_TOKENS)
    import dataclasses

    from .llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel

    def config(cls, sub):
        fields = _read_json(os.path.join(folder, sub, "config.json"))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in names})

    dtype = dtype or torch.float32
    with torch.device("meta"):
        gpt = LlamaGenTransformer(config(LlamaGenConfig, "transformer")).to(dtype)
        vq = VQModel(config(VQConfig, "vqvae")) if os.path.isdir(os.path.join(folder, "vqvae")) else None
    adapter = LlamaGenAdapter(gpt, vq)
    parts = {"vqvae": vq} if vq is not None else {}
    if os.path.isdir(os.path.join(folder, "text_encoder")):
        parts["text_encoder"] = _meta_t5(_read_json(os.path.join(folder, "text_encoder", "config.json")), dtype)
    return _subject(name, "llamagen", gpt, parts, dtype, quantization, gpt.config.vocab_size, adapter.variant,
                    adapter.default_size, gpt.config.cls_token_num, adapter.pixels_per_token)


def _folder_size(family: str, path: str, transformer: nn.Module) -> tuple[int, int]:
    """The image size a folder's model makes by default: Janus its VQ decoder's fixed grid, Lumina-mGPT its training
    size (read from its name, as the loader does), Emu3-Gen its processor's 720x720, Lumina-mGPT 2.0 768x768."""
    if family == "janus":
        vq = transformer.config.vq_config
        side = vq.num_patches * 2 ** (len(vq.channel_multiplier) - 1)
        return side, side
    if family == "lumina":
        from .lumina import guess_target_size

        side = guess_target_size(path) or 768
        return side, side
    size = {"emu3": 720, "lumina2": 768}[family]
    return size, size


def plan_model(model: str, *, dtype=None, quantization=None, device="cuda", batch: int = 1,
               guidance_scale: float | None = None, mode: str | None = None, window: int | None = None,
               draft_length: int | None = None, height: int | None = None, width: int | None = None,
               text_tokens: int | None = None, hub: HubOptions | None = None, **loader) -> MemoryPlan:
    """The plan of a model known by its name, hub id, folder or checkpoint (``zipar memory``): settings left None
    take the family's defaults; images are decoded one at a time (as the command line does)."""
    return planner(model, dtype=dtype, quantization=quantization, device=device, batch=batch,
                   guidance_scale=guidance_scale, mode=mode, window=window, draft_length=draft_length, height=height,
                   width=width, text_tokens=text_tokens, hub=hub, **loader)()


def planner(model: str, *, dtype=None, quantization=None, device="cuda", batch: int = 1,
            guidance_scale: float | None = None, mode: str | None = None, window: int | None = None,
            draft_length: int | None = None, height: int | None = None, width: int | None = None,
            text_tokens: int | None = None, hub: HubOptions | None = None, **loader):
    """A function of (quantization, batch) giving the plan of ``model`` (its subject built once, on meta)."""
    from ..memory_plan import _KEEP as KEEP

    subject = subject_of(model, dtype=dtype, quantization=quantization, hub=hub, **loader)
    if text_tokens is not None:
        subject.text_tokens = text_tokens
    layout = subject.layout(height, width)
    config = resolve_config(subject, layout.cols, mode=mode, window=window, draft_length=draft_length,
                            guidance_scale=guidance_scale)

    def replan(quantization=KEEP, batch=batch):
        return plan(subject, layout, config, batch, device, quantization=quantization, decode_images=1)
    return replan


def check_model(model: str, what: str, *, device, offload: str | None = None, batch_setting: str = "batch_size",
                free: int | None = -1, dtype=None, quantization=None, batch: int = 1,
                guidance_scale: float | None = None, mode: str | None = None, window: int | None = None,
                draft_length: int | None = None, height: int | None = None, width: int | None = None,
                text_tokens: int | None = None, hub: HubOptions | None = None, **loader) -> MemoryPlan:
    """:func:`plan_model`, refused (a SettingError in the face's words) when it exceeds the free memory."""
    replan = planner(model, dtype=dtype, quantization=quantization, device=device, batch=batch,
                      guidance_scale=guidance_scale, mode=mode, window=window, draft_length=draft_length,
                      height=height, width=width, text_tokens=text_tokens, hub=hub, **loader)
    current = replan()
    check(current, replan, free_bytes(device) if free == -1 else free, what, offload, batch_setting)
    return current


# -- the README's table ---------------------------------------------------------------------------------

TARGET = 8 << 30  # the target: a 7-8B model in nf4 with ZipAR at its default window fits 8 GB


def published_table(device: str = "cuda", dtype=torch.bfloat16, quantizations=(None, "int8", "nf4"),
                    models: list[str] | None = None) -> str:
    """Every published model the registry names, in ``dtype`` and each quantization: weights, and the total in NTP
    and at the family's default ZipAR window, batch 1 with guidance (``zipar memory --table``; README)."""
    from ..memory_plan import gib
    from ..quantization import parse

    lines = ["| model | weights | KV cache | total, NTP | total, ZipAR (window) | VQ decode | fits 8 GiB (ZipAR) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for entry in [published.find(m) for m in models] if models else published.MODELS:
        subject = subject_of(entry.name, dtype=dtype)
        layout = subject.layout()
        for q in quantizations:
            q = parse(q)
            rows = []
            for mode in ("ntp", None):
                config = resolve_config(subject, layout.cols, mode=mode)
                rows.append(plan(subject, layout, config, 1, device, quantization=q, decode_images=1))
            ntp, zipar = rows
            name = f"{entry.name}, {q or str(dtype).replace('torch.', '')}"
            fits = "yes" if zipar.total <= TARGET else f"no: {_why(zipar)}"
            lines.append(f"| {name} | {gib(zipar.weights)} | {gib(zipar.kv_cache)} | {gib(ntp.total)} | "
                         f"{gib(zipar.total)} ({zipar.window}) | {gib(zipar.vq_decode)} | {fits} |")
    return "\n".join(lines)


def _why(p: MemoryPlan) -> str:
    """The term that takes a plan past the target."""
    terms = {"weights": p.weights, "KV cache": p.kv_cache, "VQ decode": p.vq_decode}
    big = max(terms, key=terms.get)
    return f"{big} {terms[big] / (1 << 30):.1f} GiB"
