"""Loading official LlamaGen checkpoints (GPT and VQ-16) without being told their configuration.

The release ships ``c2i_{B,L,XL,XXL,3B}_{256,384}.pt``, ``t2i_XL_stage{1,2}_{256,512}.pt`` and
``vq_ds16_{c2i,t2i}.pt``. The architecture is read off the weight shapes, the trained grid off the file
name (16 px per token) unless ``image_size`` is given, and the key set is checked strictly so that a wrong
file fails with a message that says what the file is, instead of producing noise images.

A ``.safetensors`` GPT file may say what its shapes cannot in its metadata: ``n_head``, ``image_size`` and
``pixels_per_token`` (the embedded demo model does: 2 px per token, 32 px images). Arguments given to the
loader win over metadata; with a VQ tokenizer, ``load_llamagen`` takes the pixels per token from it.
"""
from __future__ import annotations

import os
import re

import torch
from torch import nn

from ...checkpoints import (
    CheckpointError,
    CheckpointSettingError,
    format_key_mismatch,
    format_shape_mismatch,
    load_state_dict,
    strip_prefixes,
)
from ...errors import SettingError
from ...model_files import is_checkpoint, is_vq_checkpoint, llamagen_parts
from .gpt import KEEP_UNQUANTIZED, PRESETS, LlamaGenConfig, LlamaGenTransformer
from .vq import VQConfig, VQModel

PIXELS_PER_TOKEN = 16
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.")
# Derived inference state that some exports carry (rotary table, gpt-fast style caches/masks): not weights.
_DERIVED_GPT_KEY = re.compile(r"^(freqs_cis|causal_mask|layers\.\d+\.attention\.kv_cache\.[kv]_cache)$")


# ----------------------------------------------------------------------------------------------------
# What is this file?


def describe_state_dict(sd: dict) -> str:
    """A short guess at what a state dict is, for error messages."""
    keys = set(sd)
    if "tok_embeddings.weight" in keys and any(k.startswith("layers.") for k in keys):
        kind = "t2i" if any(k.startswith("cls_embedding.cap_proj") for k in keys) else "c2i"
        return f"a LlamaGen GPT checkpoint ({kind})"
    if "quantize.embedding.weight" in keys and any(k.startswith("decoder.") for k in keys):
        return "a VQ tokenizer checkpoint"
    if any(k.startswith(("model.layers.", "model.embed_tokens", "lm_head.")) for k in keys):
        return "a transformers (Hugging Face) language-model state dict"
    if any(k.startswith(("shared.", "encoder.block.")) for k in keys):
        return "a T5 text-encoder state dict"
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys):
        return "a Stable Diffusion style checkpoint"
    first = ", ".join(repr(k) for k in sorted(keys)[:3])
    return f"an unrecognised state dict (keys like {first})"


def is_gpt_state_dict(sd: dict) -> bool:
    return "tok_embeddings.weight" in sd and "layers.0.attention.wqkv.weight" in sd


def is_vq_state_dict(sd: dict) -> bool:
    return "quantize.embedding.weight" in sd and "decoder.conv_in.weight" in sd


# ----------------------------------------------------------------------------------------------------
# Configuration from names and shapes


def image_size_from_name(path: str) -> int | None:
    """``c2i_L_384.pt`` -> 384, ``t2i_XL_stage2_512.pt`` -> 512; None when the name does not say."""
    stem = os.path.splitext(os.path.basename(path))[0]
    m = re.search(r"(?:^|[_\-])(\d{3,4})(?:px)?$", stem)
    return int(m.group(1)) if m else None


def preset_from_name(path: str) -> str | None:
    stem = os.path.basename(path)
    m = re.search(r"(?:^|[_\-])(B|L|XL|XXL|XXXL|1B|3B|7B)(?:[_\-.])", stem)
    return f"GPT-{m.group(1)}" if m else None


def infer_gpt_config(sd: dict, path: str = "<memory>", preset: str | None = None,
                     model_type: str | None = None, image_size: int | None = None,
                     pixels_per_token: int = PIXELS_PER_TOKEN, **overrides) -> LlamaGenConfig:
    """Architecture from weight shapes; head count from the preset table (or ``n_head=`` override)."""
    vocab, dim = sd["tok_embeddings.weight"].shape
    n_layer = 1 + max(int(m.group(1)) for k in sd if (m := _LAYER_KEY.match(k)))
    file_type = "t2i" if "cls_embedding.cap_proj.fc1.weight" in sd else "c2i"
    if model_type is not None and model_type != file_type:
        raise CheckpointError(f"{path} is a {file_type} LlamaGen model, but model_type={model_type!r} was asked for")

    n_head = overrides.pop("n_head", None)
    if n_head is None:
        # An explicit preset must fit; otherwise the file name's preset, then any preset of this shape.
        named = preset or preset_from_name(path)
        candidates = [named] if named else []
        if preset is None:
            candidates += [p for p, (nl, _, d) in PRESETS.items() if (nl, d) == (n_layer, dim)]
        for name in candidates:
            key = name if name.startswith("GPT-") else f"GPT-{name}"
            if key in PRESETS and (PRESETS[key][0], PRESETS[key][2]) == (n_layer, dim):
                n_head = PRESETS[key][1]
                break
        else:
            if preset is not None:
                nl, _nh, d = PRESETS.get(preset if preset.startswith("GPT-") else f"GPT-{preset}", (None,) * 3)
                raise CheckpointError(f"{path} has {n_layer} layers of width {dim}, which is not preset {preset} "
                                      f"({nl} layers of width {d})")
            raise CheckpointSettingError("n_head", f"{path}: {n_layer} layers of width {dim} match no LlamaGen preset "
                                         f"({', '.join(PRESETS)}); give its number of attention heads with {{name}} "
                                         "to load it")
    head_dim = dim // n_head
    qkv_rows = sd["layers.0.attention.wqkv.weight"].shape[0]
    n_kv_head = (qkv_rows // head_dim - n_head) // 2

    if image_size is None:
        image_size = image_size_from_name(path)
    if image_size is None:
        raise SettingError("image_size", f"cannot tell the image size LlamaGen model {path} was trained at from its "
                                         "name; give it with {name} (256, 384 or 512)")
    if image_size % pixels_per_token:
        raise SettingError("image_size", f"{{name}} {image_size} is not a multiple of {pixels_per_token} px per token")
    side = image_size // pixels_per_token

    cfg = {"dim": dim, "n_layer": n_layer, "n_head": n_head, "n_kv_head": None if n_kv_head == n_head else n_kv_head,
               "vocab_size": vocab, "model_type": file_type, "block_size": side * side}
    if file_type == "c2i":
        cfg.update(num_classes=sd["cls_embedding.embedding_table.weight"].shape[0] - 1, cls_token_num=1)
    else:
        cfg.update(caption_dim=sd["cls_embedding.cap_proj.fc1.weight"].shape[1],
                   cls_token_num=sd["cls_embedding.uncond_embedding"].shape[0])
    config = LlamaGenConfig(**cfg)
    hidden = sd["layers.0.feed_forward.w1.weight"].shape[0]
    if hidden != config.hidden_dim:  # e.g. a different multiple_of: take the width the file has
        config = config.replace(ffn_hidden=hidden)
    return config.replace(**overrides) if overrides else config


def infer_vq_config(sd: dict, **overrides) -> VQConfig:
    n, d = sd["quantize.embedding.weight"].shape
    ch = sd["encoder.conv_in.weight"].shape[0]
    z = sd["quant_conv.weight"].shape[1]

    def mults(prefix: str) -> tuple[int, ...]:
        levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith(prefix + ".conv_blocks.")})
        return tuple(sd[f"{prefix}.conv_blocks.{lv}.res.0.conv1.weight"].shape[0] // ch for lv in levels)

    enc = mults("encoder")
    dec = tuple(reversed(mults("decoder")))  # decoder blocks are stored lowest resolution first
    nres = len({k.split(".")[4] for k in sd if k.startswith("encoder.conv_blocks.0.res.")})
    cfg = VQConfig(codebook_size=n, codebook_embed_dim=d, z_channels=z, ch=ch, ch_mult=enc,
                   decoder_ch_mult=None if dec == enc else dec, num_res_blocks=nres)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


# ----------------------------------------------------------------------------------------------------
# Strict loading


def _load_strict(model: nn.Module, sd: dict, path: str, what: str) -> None:
    """Load with assign=True onto a meta-built model; refuse any key or shape mismatch with a clear message."""
    model_sd = model.state_dict()
    missing = set(model_sd) - set(sd)
    unexpected = set(sd) - set(model_sd)
    shapes = format_shape_mismatch(model_sd, sd)
    if missing or unexpected or shapes:
        detail = "; ".join(x for x in (format_key_mismatch(missing, unexpected) if missing or unexpected else "",
                                       shapes or "") if x)
        raise CheckpointError(f"{path} does not match the {what} it was read as ({describe_state_dict(sd)}): {detail}")
    model.load_state_dict(sd, strict=True, assign=True)


def _read(path, meta: bool = False) -> tuple[str, dict]:
    path = os.fspath(path)
    return path, read_shapes(path) if meta else load_state_dict(path)


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


def read_shapes(path) -> dict[str, torch.Tensor]:
    """A checkpoint's keys, shapes and dtypes as meta tensors, without reading its weights: the safetensors
    header, or a memory-mapped pickle (the same weights-only unpickler; no tensor data is read). What the
    loaders infer a configuration from, so a configuration can be known, and a request checked, in seconds."""
    path = os.fspath(path)
    if path.endswith(".safetensors") and os.path.isfile(path) and os.path.getsize(path):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                out = {}
                for k in f.keys():  # noqa: SIM118  (a safe_open handle, not a dict)
                    sl = f.get_slice(k)
                    out[k] = torch.empty(sl.get_shape(), dtype=_SAFETENSORS_DTYPES.get(sl.get_dtype(), torch.float32),
                                         device="meta")
            return strip_prefixes(out)
        except Exception:  # noqa: BLE001, S110  a broken header: the reader below says what is wrong with it
            pass
    sd = load_state_dict(path, mmap=True)
    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in sd.items()}


def checkpoint_kind(path) -> str:
    """What a checkpoint file holds, by content (its keys, not its name): "gpt" (a LlamaGen GPT), "vq" (a
    LlamaGen VQ tokenizer), or a description of anything else ("a T5 text-encoder state dict", or why it
    cannot be read)."""
    try:
        sd = read_shapes(path)
    except (CheckpointError, OSError) as e:
        return f"unreadable: {e}"
    sd = {k: v for k, v in sd.items() if not _DERIVED_GPT_KEY.match(k)}
    if is_gpt_state_dict(sd):
        return "gpt"
    if is_vq_state_dict(sd):
        return "vq"
    return describe_state_dict(sd)


_METADATA_INTS = ("n_head", "image_size", "pixels_per_token")


def _config_metadata(path: str) -> dict:
    """``n_head`` / ``image_size`` / ``pixels_per_token`` (ints) and ``variant`` (the registry variant whose
    defaults apply, e.g. "demo") from a safetensors file's metadata ({} if none)."""
    if not path.endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    out = {}
    for key in _METADATA_INTS:
        if key in meta:
            try:
                out[key] = int(meta[key])
            except ValueError:
                raise CheckpointError(f"{path}: metadata {key}={meta[key]!r} is not a whole number") from None
    variant = meta.get("variant")
    if variant:
        out["variant"] = variant
    from ...quantization import METADATA_KEY

    if meta.get(METADATA_KEY):  # saved quantized: the setting and the real shapes of the packed weights
        out["quantization"] = {METADATA_KEY: meta[METADATA_KEY]}
    return out


def load_llamagen_gpt(path, preset: str | None = None, model_type: str | None = None,
                      image_size: int | None = None, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu", pixels_per_token: int | None = None,
                      quantization=None, **overrides) -> LlamaGenTransformer:
    """Official GPT checkpoint (``.pt`` with weights under "model", raw FSDP, or ``.safetensors``) -> model in eval.

    ``pixels_per_token``: side of one token in pixels (16 for VQ-16), used with ``image_size``; None: the
    file's metadata, else 16. ``device="meta"``: the model with its configuration and no weights (read from
    the file's header in seconds, with the same checks), to check a request before loading.
    ``quantization`` (a ``zipar_core.quantization.Quantization``): the linear layers outside the adapter's
    ``keep_unquantized`` quantized through bitsandbytes once loaded, layer by layer onto ``device``. A file
    saved quantized (``LlamaGenAdapter.save_pretrained`` of a quantized model) loads as saved."""
    from ...quantization import check_available, logical_shapes, parse, read_saved

    on_meta = torch.device(device).type == "meta"  # the configuration only: shapes read, no weights
    quantization = parse(quantization)
    try:
        meta = _config_metadata(os.fspath(path))  # a header: read before any weight
    except CheckpointError:
        raise
    except Exception:  # noqa: BLE001 -- a broken header: reading the file below says what is wrong with it
        meta = {}
    saved, shapes = read_saved(meta.get("quantization"))
    if (saved or quantization) is not None and not on_meta:
        check_available(device=device)
    path, sd = _read(path, on_meta)
    packed, sd = sd, logical_shapes(sd, shapes) if saved else sd  # the configuration is read off the real shapes
    if image_size is None:
        image_size = meta.get("image_size")
    if pixels_per_token is None:
        pixels_per_token = meta.get("pixels_per_token", PIXELS_PER_TOKEN)
    if preset is None and "n_head" in meta:
        overrides.setdefault("n_head", meta["n_head"])
    if "variant" in meta:
        overrides.setdefault("variant", meta["variant"])
    sd = {k: v for k, v in sd.items() if not _DERIVED_GPT_KEY.match(k)}  # recomputed / reallocated here
    if not is_gpt_state_dict(sd):
        hint = " Give it as the VQ checkpoint instead." if is_vq_state_dict(sd) else ""
        raise CheckpointError(f"{path} is not a LlamaGen GPT checkpoint: this looks like {describe_state_dict(sd)}.{hint}")
    cfg = infer_gpt_config(sd, path, preset=preset, model_type=model_type, image_size=image_size,
                           pixels_per_token=pixels_per_token, **overrides)
    with torch.device("meta"):  # no random init of billions of weights; the file supplies every tensor
        model = LlamaGenTransformer(cfg)
    _load_strict(model, sd, path, f"LlamaGen GPT ({cfg.model_type}, {cfg.n_layer} layers, dim {cfg.dim})")
    if saved or quantization is not None:
        return _quantized(model, packed, path, saved, quantization, dtype, device, on_meta)
    return model.to(device=device, dtype=dtype).eval()


def _quantized(model: LlamaGenTransformer, packed: dict, path: str, saved, quantization, dtype, device,
               on_meta: bool) -> LlamaGenTransformer:
    """The GPT with bitsandbytes layers: from a file saved quantized (``saved``: its setting; another one asked
    for is refused), or quantized now, layer by layer onto ``device``. On the meta device only the setting is
    recorded (the configuration-only adapter of the command line's checks and memory plan)."""
    from ...quantization import load_prequantized, quantize_linears

    if saved is not None and quantization is not None and quantization.method != saved.method:
        raise SettingError("quantization", f"{{name}}={quantization.method!r} cannot apply: {path} is saved quantized "
                                           f"as {saved.method}; leave {{name}} unset (it loads as saved) or give "
                                           f"{saved.method}")
    setting = saved or quantization
    if on_meta:
        model = model.to(dtype)
        model.zipar_quantization = setting
        return model.eval()
    keep = KEEP_UNQUANTIZED + tuple(setting.skip)
    if saved is not None:
        with torch.device("meta"):
            model = LlamaGenTransformer(model.config)
        load_prequantized(model, {k: v for k, v in packed.items() if not _DERIVED_GPT_KEY.match(k)}, saved, keep,
                          device, dtype)
        model.zipar_quantization = saved
        return model.to(device).eval()
    quantize_linears(model.to(dtype), setting, keep, device, dtype)
    return model.to(device).eval()


def load_llamagen_vq(path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                     **overrides) -> VQModel:
    """Official VQ checkpoint (``vq_ds16_c2i.pt`` / ``vq_ds16_t2i.pt``) -> VQModel in eval (``device="meta"``:
    its configuration only, as for the GPT)."""
    path, sd = _read(path, torch.device(device).type == "meta")
    if not is_vq_state_dict(sd):
        hint = " Give it as the GPT checkpoint instead." if is_gpt_state_dict(sd) else ""
        raise CheckpointError(f"{path} is not a LlamaGen VQ tokenizer checkpoint: this looks like "
                              f"{describe_state_dict(sd)}.{hint}")
    cfg = infer_vq_config(sd, **overrides)
    with torch.device("meta"):
        model = VQModel(cfg)
    # Training-only statistic: absent from some exports; fill it so the strict check stays meaningful.
    if cfg.codebook_show_usage and "quantize.codebook_used" not in sd:
        sd["quantize.codebook_used"] = torch.zeros(model.quantize.codebook_used.shape,
                                                   device=next(iter(sd.values())).device)
    _load_strict(model, sd, path, "LlamaGen VQ tokenizer")
    return model.to(device=device, dtype=dtype).eval()


def find_llamagen_files(folder: str) -> tuple[str, str | None, str | None]:
    """(gpt, vq, t5 folder) inside a LlamaGen model folder. The checkpoints are told apart by content (their
    keys, read without loading the weights), not by name, so other files beside them (a reference state
    dict, an optimizer) are passed over; errors list every checkpoint file with what it holds."""
    names = sorted(n for n in os.listdir(folder) if is_checkpoint(n) and os.path.isfile(os.path.join(folder, n)))
    kinds = {n: checkpoint_kind(os.path.join(folder, n)) for n in names}
    for n, kind in kinds.items():  # a file that cannot be read is taken by its name, so loading says why it fails
        if kind.startswith("unreadable"):
            kinds[n] = "vq" if is_vq_checkpoint(n) else "gpt"
    gpt = [n for n in names if kinds[n] == "gpt"]
    vq = [n for n in names if kinds[n] == "vq"]
    t5 = llamagen_parts(folder)[2]
    if len(gpt) != 1 or len(vq) > 1:
        what = {"gpt": "a LlamaGen GPT", "vq": "a VQ tokenizer"}
        found = "; ".join(f"{n}: {what.get(kinds[n], kinds[n])}" for n in names) or "found no checkpoint files"
        raise ValueError(
            f"{folder} is neither a transformers model folder (no config.json) nor a LlamaGen folder with one "
            f"GPT checkpoint and at most one VQ tokenizer checkpoint ({found})")
    join = lambda names: os.path.join(folder, names[0]) if names else None  # noqa: E731
    return join(gpt), join(vq), join(t5)


def find_vq_beside(gpt_path: str) -> str | None:
    """The one VQ tokenizer checkpoint in the folder of a GPT file, by content; None if none or several."""
    folder = os.path.dirname(os.path.abspath(gpt_path))
    named = [os.path.join(folder, n) for n in llamagen_parts(folder)[1]]  # names containing "vq": look first
    found = [p for p in named if checkpoint_kind(p) == "vq"]
    if not found:
        others = [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                  if is_checkpoint(n) and os.path.join(folder, n) not in named
                  and os.path.abspath(os.path.join(folder, n)) != os.path.abspath(gpt_path)]
        found = [p for p in others if os.path.isfile(p) and checkpoint_kind(p) == "vq"]
    return found[0] if len(found) == 1 else None
