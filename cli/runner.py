"""The run of ``zipar generate`` and ``zipar sample``: check, load, check again, decode batches, record.

1. :func:`preflight`: the request checked against the model's facts before the weights load (LlamaGen:
   the configuration-only adapter of ``source.probe``), and the memory plan (``zipar_core.memory_plan``) of the
   batch against the free memory, weights included (the other families: planned from their config.json on the
   meta device);
2. :func:`load_checked`: the pipeline, and the same checks on the loaded model (the other families are
   checked here, still before anything is written);
3. :func:`decode`: one batch through ``ZipARPipeline.__call__``, an out-of-memory error said as what to
   lower; :func:`image_meta`: the PNG metadata that reproduces an image (``zipar generate --from-png``).

The checks are the pipeline's own (``pipelines.settings``): one validator for every face.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .common import device_of, generators, layout_matters, speed_of, versions
from .source import Source, explicit_dtype, loader_options, model_facts, model_options, probe


@dataclass
class Checked:
    adapter: object  # the model's adapter (meta device before loading)
    request: object  # zipar_core.protocol.Request of the whole job (every condition once)
    config: object  # the resolved ZipARConfig
    record: dict  # the settings record: what out.settings will hold
    facts: dict  # model_facts: architecture and dtype
    loaded: bool


def check_with(adapter, saved: dict, call: dict, settings: dict, loaded: bool) -> Checked:
    """``ZipARPipeline.__call__``'s checks on any adapter: the request (every condition of the job at once) and
    the settings, resolved call > pipeline config (``saved``) > family default."""
    from ..pipelines.settings import check_request, resolve_settings, settings_record

    s = dict(settings)
    request = check_request(adapter, call.get("prompt"), call.get("class_labels"), s.pop("negative_prompt", None),
                            s.pop("height", None), s.pop("width", None))
    config = resolve_settings(adapter, request.cols, saved, **s)
    return Checked(adapter, request, config, settings_record(adapter, config, request.rows, request.cols),
                   model_facts(adapter), loaded)


def preflight(source: Source, args, call: dict, settings: dict, batch: int, what: str) -> Checked | None:
    """Checks before the weights load, where the model's facts can be read without them (LlamaGen); None
    otherwise. Also refuses a batch that cannot fit in memory, weights included, for every family (the others
    planned from their config.json on the meta device, before anything loads)."""
    from ..zipar_core.models.plan_builders import check_adapter

    adapter, saved = probe(source, args)
    if adapter is None:
        _check_configured(source, args, settings, batch, what)
        return None
    checked = check_with(adapter, saved, call, settings, loaded=False)
    check_adapter(adapter, checked.request, checked.config, batch, device_of(args), what, decode_images=1)
    return checked


def _check_configured(source: Source, args, settings: dict, batch: int, what: str) -> None:
    """The memory plan of a transformers-family model from its config.json (its weights are not read)."""
    from ..zipar_core.loading import HubOptions
    from ..zipar_core.models.plan_builders import check_model

    if source.kind not in ("folder", "hub"):
        return
    plan_settings = {k: settings.get(k) for k in ("mode", "window", "draft_length", "guidance_scale", "height",
                                                  "width")}
    check_model(source.path, what, device=device_of(args), dtype=explicit_dtype(args), batch=batch,
                quantization=loader_options(args).get("quantization"),
                hub=HubOptions(local_files_only=source.cache_only), **plan_settings)


def load_checked(source: Source, args, call: dict, settings: dict, device: str):
    """(pipeline, Checked) with the checks run on the loaded model."""
    from ..pipelines.settings import SETTINGS
    from .source import load_pipeline

    pipe = load_pipeline(source, args, device)
    saved = {k: pipe.config.get(k) for k in SETTINGS}
    return pipe, check_with(pipe.build_adapter(), saved, call, settings, loaded=True)


def memory_plan(checked: Checked, batch: int, device: str, what: str):
    """The plan of a batch on the loaded model, printed, and refused when what decoding adds cannot fit beside the
    loaded weights."""
    from ..zipar_core.models.plan_builders import check_adapter
    from .memory import plan_line

    plan = check_adapter(checked.adapter, checked.request, checked.config, batch, device, what, decode_images=1,
                         loaded=True)
    print(plan_line(plan), file=sys.stderr)
    return plan


def decode(pipe, call: dict, seeds: list[int], device: str, settings: dict, args, est=None, on_pass=None):
    """One batch: ``call`` holds one condition per image (``prompt`` or ``class_labels`` lists)."""
    from .memory import is_out_of_memory, out_of_memory

    callback = None
    if on_pass is not None:
        def callback(pipe_, step, timestep, kwargs):
            on_pass()
            return {}
    try:
        out = pipe(**call, generator=generators(device, seeds), **settings, **speed_of(args), output_type="codes",
                   callback_on_step_end=callback)
        # each image decoded to pixels alone: the VQ decoder's kernels round differently in another batch
        out.images = [pipe.decode_codes(out.codes[b: b + 1])[0] for b in range(len(seeds))]
        return out
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(e, len(seeds), device, est) from None
        raise


def image_meta(source: Source, args, checked: Checked, device: str, out, b: int, condition: dict, seed: int,
               batch: dict) -> dict:
    """Everything that made image ``b`` of ``out``: the model (files, options), dtype and device type, the
    condition, the seed, every resolved setting, the batch it was decoded in, and the library versions."""
    stats = out.stats
    return {"zipar": versions()["zipar"], "versions": versions(),
            "model": {**source.record(), "name": source.name, "options": model_options(args)},
            "dtype": checked.facts["dtype"], "device_type": _device_type(device),
            "condition": condition, "seed": seed, "settings": dict(out.settings),
            "batch": {**batch, "slot": b}, "layout_matters": layout_matters(checked.facts["dtype"], _device_type(device)),
            "stats": {"passes": stats.passes, "tokens": stats.tokens, "sample_passes": stats.sample_passes[b]}}


def _device_type(device: str) -> str:
    return device.split(":")[0]
