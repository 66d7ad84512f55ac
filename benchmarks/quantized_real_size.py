"""Janus-Pro-1B at its real size on this machine, with random weights: float32 / bfloat16 / int8 / nf4 (issue 22).

For each dtype, in a process of its own (so one configuration's memory is not another's): the model is built from
Janus-Pro-1B's published configuration (``zipar_core/models/published.py``) with random weights (quantized
configurations: built in bfloat16, then their linear layers quantized in place, one at a time, by
``zipar_core.quantization.quantize_linears``: the same bitsandbytes layers and the same unquantized modules as
the loaders make), wrapped in ``JanusAdapter``, and decoded at batch 1 with guidance (two rows) in NTP and at the
family's default window (16), interleaved, ``--passes`` passes each per repetition (the run is stopped there:
a whole 24x24 image in float32 takes minutes a pass on two cores). Reported:

- seconds per pass: the median over the passes after the first ``--skip`` of every repetition (ZipAR: the passes
  with two rows in flight);
- peak resident memory while decoding (``VmHWM`` after resetting it once the model is built) and the resident
  memory before the model was built (imports), and the memory plan of the same adapter and request
  (``zipar_core.memory_plan``: weights + KV cache + activations of the widest pass; on the CPU there is no runtime
  term) beside the measured growth over the baseline.

    python benchmarks/quantized_real_size.py --json docs/quantized_real_size.json
    python benchmarks/quantized_real_size.py --device cuda --dtypes bfloat16 nf4 --whole   # on a GPU

``--whole`` decodes whole images and reports seconds per image instead (CUDA: peak allocated memory).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT = "a red fox asleep in fresh snow"


def rss(field: str = "VmRSS") -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current one."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def build(dtype_name: str, device: str):
    """JanusAdapter around Janus-Pro-1B's architecture with random weights, in ``dtype_name``."""
    import torch
    from transformers import JanusConfig, JanusForConditionalGeneration
    from zipar.zipar_core.models import keep_unquantized, published
    from zipar.zipar_core.models.janus import JanusAdapter
    from zipar.zipar_core.models.tiny import WORDS, word_tokenizer
    from zipar.zipar_core.quantization import Quantization, quantize_linears

    quantized = dtype_name in ("int8", "nf4", "fp4")
    dtype = torch.bfloat16 if quantized else getattr(torch, dtype_name)
    config = JanusConfig(**published.find("Janus-Pro-1B").config)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device if not quantized else "cpu"):
            model = JanusForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    if quantized:
        quantize_linears(model, Quantization(dtype_name), keep_unquantized("janus"), device, dtype)
        model.to(device)
    specials = ["<unk>", "<pad>", "<bos>", "<eos>", "<begin_of_image>"]
    tok = word_tokenizer({w: i for i, w in enumerate(specials + WORDS + PROMPT.split())}, specials, unk_token="<unk>",
                         pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    gen = model.generation_config
    gen.bos_token_id, gen.pad_token_id, gen.generation_kwargs = 2, 1, {"boi_token_id": 4}
    return JanusAdapter(model, tok)


def timed_passes(adapter, cond, config, passes: int) -> tuple[list[float], object]:
    """Seconds of each pass (callback to callback) of a run stopped after ``passes`` passes."""
    import torch
    from zipar.zipar_core import generate
    from zipar.zipar_core.sampler import DecodingCancelled

    stamps = [time.perf_counter()]

    def on_pass(step, codes, stats):
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    try:
        result = generate(adapter, cond, config, generator=[torch.Generator(adapter.device).manual_seed(0)],
                          callback=on_pass, cancel=lambda: len(stamps) > passes)
    except DecodingCancelled as stopped:  # stopped where asked: what it decoded so far
        result = stopped.result
    return [b - a for a, b in zip(stamps, stamps[1:])], result


def trim() -> None:
    """Hand the allocator's free pages back to the system (glibc), so resident memory is what is in use."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(args) -> dict:
    """One dtype, in this process (every module imported before the baseline is read)."""
    import bitsandbytes  # noqa: F401
    import torch
    import transformers.models.janus.modeling_janus  # noqa: F401
    from zipar.zipar_core import ZipARConfig, generate  # noqa: F401
    from zipar.zipar_core.models import janus, registry, tiny  # noqa: F401
    from zipar.zipar_core.models.plan_builders import plan_adapter

    torch.set_num_threads(args.threads)
    trim()
    baseline = rss()
    t = time.perf_counter()
    adapter = build(args.dtype, args.device)
    build_seconds = time.perf_counter() - t
    trim()
    loaded = rss()
    request = adapter.check(prompt=[PROMPT])
    defaults = registry.defaults_for(adapter)
    scale = defaults.guidance_scale
    configs = {"ntp": ZipARConfig(mode="ntp", guidance_scale=scale, temperature=1.0),
               f"fixed s={defaults.window}": ZipARConfig(mode="fixed", window=defaults.window, guidance_scale=scale,
                                                        temperature=1.0)}
    cond = adapter.prepare(prompt=[PROMPT], guidance_scale=scale)
    plans = {name: plan_adapter(adapter, request, cfg, 1, args.device, decode_images=1)
             for name, cfg in configs.items()}
    timings = {name: [] for name in configs}
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reset_peak()
    for _ in range(args.reps):  # interleaved: every configuration once per repetition
        for name, cfg in configs.items():
            if args.whole:
                t = time.perf_counter()
                timed_passes(adapter, cond, cfg, 10 ** 9)
                timings[name].append(time.perf_counter() - t)
            else:
                times, _ = timed_passes(adapter, cond, cfg, args.passes)
                timings[name] += times[args.skip:]
    peak = rss("VmHWM")
    from zipar.zipar_core.quantization import resident_bytes

    out = {"dtype": args.dtype, "device": args.device, "threads": torch.get_num_threads(),
           "build_seconds": build_seconds, "rss_before_model": baseline, "rss_after_build": loaded,
           "peak_rss_decoding": peak, "measured_growth": peak - baseline, "model_resident": loaded - baseline,
           "weights_bytes": resident_bytes(adapter.model), "passes_per_run": args.passes, "skipped": args.skip,
           "reps": args.reps, "whole_images": args.whole}
    if args.device == "cuda":
        out["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    for name in configs:
        p = plans[name]
        key = "seconds_per_image" if args.whole else "seconds_per_pass"
        out[name] = {key: statistics.median(timings[name]), "min": min(timings[name]), "max": max(timings[name]),
                     "samples": len(timings[name]), "plan": p.as_dict(),
                     "plan_decoding": p.weights + p.runtime + p.kv_cache + p.activations}
    return out


def run_all(args) -> list[dict]:
    rows = []
    for dtype in args.dtypes:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", dtype, "--device", args.device, "--passes",
               str(args.passes), "--skip", str(args.skip), "--reps", str(args.reps), "--threads", str(args.threads)]
        cmd += ["--whole"] if args.whole else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{dtype}: {done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(table_line(row), flush=True)
    return rows


def table_line(row: dict) -> str:
    gib = 1 << 30
    names = [k for k in row if k == "ntp" or k.startswith("fixed")]
    key = "seconds_per_image" if row["whole_images"] else "seconds_per_pass"
    timing = ", ".join(f"{n}: {row[n][key]:.3f} s" for n in names)
    plan = row[names[-1]]["plan_decoding"]
    measured = row["measured_growth"]
    weights = row[names[-1]]["plan"]["weights"]
    return (f"| {row['dtype']} | {row['peak_rss_decoding'] / gib:.2f} | {row['model_resident'] / gib:.2f} | "
            f"{weights / gib:.2f} | {measured / gib:.2f} | {plan / gib:.2f} | {(plan - measured) / measured * 100:+.1f}% "
            f"| {timing} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8", "nf4"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--passes", type=int, default=36, help="passes per run (the run is stopped there)")
    p.add_argument("--skip", type=int, default=20, help="passes of each run left out of the timing (warm-up; ZipAR's "
                                                        "single-row start)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--whole", action="store_true", help="whole images: seconds per image")
    p.add_argument("--json")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        args.dtype = args.one
        print(json.dumps(measure(args)))
        return
    print("| dtype | peak RSS decoding (GiB) | model resident (GiB) | plan: weights (GiB) | peak growth over the "
          "process before the model (GiB) | plan: weights + KV + activations (GiB) | plan vs growth | seconds per pass "
          "(median) |")
    rows = run_all(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": "python benchmarks/quantized_real_size.py " + " ".join(argv or sys.argv[1:]),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
