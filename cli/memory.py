"""``zipar memory MODEL``: the memory plan of a model before it is downloaded or loaded, and the command line's words
for memory (the plan line ``generate`` / ``sample`` print, an out-of-memory error said as what to lower).

The plan is every face's (``zipar_core.memory_plan``, a model's facts from ``zipar_core.models.plan_builders``):
weights (quantized layers at bitsandbytes' packed size), KV cache, the activations of the widest pass, VQ decode,
total per device, from the model's configuration on the meta device with no weights. MODEL is a name the registry
publishes (``zipar memory --list``), a hub id (its config.json), a local folder in any layout ZipAR loads, or
LlamaGen checkpoint files. No torch is imported until the command runs.
"""
from __future__ import annotations

import json

from ..zipar_core.errors import SettingError


def add_parser(sub) -> None:
    from .common import finite_float, positive_int, quantize_arg

    p = sub.add_parser("memory", help="what a model needs in memory (weights, KV cache, activations, VQ decode), "
                                      "from its configuration alone, with and without quantization")
    p.add_argument("model", nargs="?", help="a published name (see --list), a hub id, a model folder or a LlamaGen "
                                            "GPT checkpoint")
    p.add_argument("--list", action="store_true", help="the published models this command knows without a download")
    p.add_argument("--table", action="store_true", help="every published model in bfloat16, int8 and nf4, NTP and the "
                                                        "default ZipAR window, batch 1 with guidance, on CUDA (the "
                                                        "README's table)")
    quantize_arg(p)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="the compute dtype; auto: the checkpoint's (published releases: bfloat16; LlamaGen: float32)")
    p.add_argument("--device", default="cuda", help="what the plan is for (cuda adds its runtime; default cuda)")
    p.add_argument("--mode", help="decoding mode (default: the family's)")
    p.add_argument("--window", type=positive_int, help="ZipAR window (default: the family's)")
    p.add_argument("--draft-length", type=positive_int, help="sjd / zipar_sjd draft length")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images decoded together (default 1)")
    p.add_argument("--cfg", "--guidance", "--guidance-scale", dest="guidance_scale", type=finite_float,
                   help="guidance scale (default: the family's; 1 = no guidance, one row per image)")
    p.add_argument("--height", type=positive_int)
    p.add_argument("--width", type=positive_int)
    p.add_argument("--prompt-tokens", type=positive_int,
                   help="prompt and chat template, in tokens (default 96; LlamaGen: its condition slots)")
    p.add_argument("--vq", help="LlamaGen VQ checkpoint, if not beside the GPT file")
    p.add_argument("--image-size", type=positive_int, help="LlamaGen training size, when the GPT file name does not say")
    p.add_argument("--n-head", type=positive_int, help="LlamaGen heads, for a GPT file that matches no preset")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..zipar_core.models import published

    if args.list:
        for m in published.MODELS:
            print(f"{m.name:24} {m.family:9} {', '.join(m.hub_ids)}")
        return
    if args.table:
        from ..zipar_core.models.plan_builders import published_table

        print(published_table())
        return
    if not args.model:
        raise ValueError("give MODEL: a published name (zipar memory --list), a hub id, a model folder or a LlamaGen "
                         "checkpoint")
    import torch

    from ..zipar_core.models.plan_builders import plan_model

    loader = {k: v for k, v in (("vq_path", args.vq), ("image_size", args.image_size), ("n_head", args.n_head)) if v}
    plan = plan_model(args.model, dtype=None if args.dtype == "auto" else getattr(torch, args.dtype),
                      quantization=args.quantize, device=args.device, batch=args.batch_size,
                      guidance_scale=args.guidance_scale, mode=args.mode, window=args.window,
                      draft_length=args.draft_length, height=args.height, width=args.width,
                      text_tokens=args.prompt_tokens, **loader)
    print(json.dumps(plan.as_dict(), indent=1) if args.json else plan.describe())


# -- the words generate and sample use ---------------------------------------------------------------------

def plan_line(plan) -> str:
    return f"memory plan: {plan.summary()}"


def is_out_of_memory(e: BaseException) -> bool:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                            or "DefaultCPUAllocator" in text)


def out_of_memory(e: BaseException, batch: int, device: str, plan=None) -> SettingError:
    said = f" (planned {plan.summary()})" if plan is not None else ""
    lower = f"lower {{name}} (e.g. to {max(1, batch // 2)})" if batch > 1 else \
        "use a smaller {other:height} / {other:width}, {other:quantization} nf4, or a device with more memory"
    return SettingError("batch_size", f"out of memory on {device} decoding a batch of {batch} images{said}: {lower}")
