"""NTP against ZipAR on the same model, in one process: the numbers a user feels (seconds per image).

Every configuration runs once to warm up, then all configurations run in turn, ``reps`` times (interleaved,
so drift in machine speed hits them alike). Reported per configuration: passes, seconds per image
(median, min, max), pass ratio and latency ratio against NTP, their quotient (the efficiency: 1.0 means
every pass saved was time saved), time inside the model's forward against time in the sampler, and
peak memory. A plain KV-cached raster loop of the same model (no ZipAR machinery) is the baseline
that our NTP must not be slower than.
"""
from __future__ import annotations

import re
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch

from .cache import visibility_mask
from .config import ZipARConfig, check_windows
from .layout import EOL
from .sampler import generate, settings
from .sampling import apply_guidance, probabilities, sample_from


@dataclass
class BenchRow:
    name: str
    passes: int
    seconds: list[float] = field(default_factory=list)  # per image
    model_seconds: list[float] = field(default_factory=list)  # per image, inside model forward calls
    peak_memory_mb: float | None = None

    def summary(self, base: "BenchRow") -> dict:
        med = statistics.median(self.seconds)
        pass_ratio = base.passes / self.passes
        latency_ratio = statistics.median(base.seconds) / med
        model = statistics.median(self.model_seconds) if self.model_seconds else None
        return {"name": self.name, "passes": self.passes, "sec_per_image_median": med,
                "sec_per_image_min": min(self.seconds), "sec_per_image_max": max(self.seconds),
                "pass_ratio": pass_ratio, "latency_ratio": latency_ratio, "efficiency": latency_ratio / pass_ratio,
                "model_sec_per_image": model,
                "sampler_overhead": None if model is None else (med - model) / med,
                "peak_memory_mb": self.peak_memory_mb}


def plain_raster_loop(model, cond, config: ZipARConfig, generator=None) -> tuple[torch.Tensor, int]:
    """The baseline: prefill, then one token per pass in raster order (EOL tokens forced in their own pass,
    as a model's own generate does), a causal mask sliced from one preallocated buffer, no schedule."""
    layout, B, N, dev = cond.layout, cond.batch_size, cond.num_sequences, model.device
    order = [layout.slot(r, c) for r in range(layout.rows) for c in range(layout.cols)]
    if layout.eol:
        order = sorted(order + [layout.eol_slot(r) for r in range(layout.rows - 1)])
    cache = model.new_cache(cond, layout.num_slots + 1)
    filled = torch.zeros((N, layout.num_slots + 1), dtype=torch.bool, device=dev)
    filled[:, : layout.prefix] = cond.prefix_valid
    logits = model.prefill(cond, cache, visibility_mask(filled, torch.arange(layout.prefix, device=dev).expand(N, -1),
                                                        layout.prefix))[:, None]
    visible = filled[:, None, :].clone()  # (N, 1, S): becomes causal as slots are written
    codes, passes, eol = [], 1, {layout.eol_slot(r) for r in range(layout.rows - 1)} if layout.eol else set()
    for i, slot in enumerate(order):
        if slot in eol:
            token = torch.full((B,), EOL, dtype=torch.long, device=dev)
        else:
            guided = apply_guidance(logits, B, config.guidance_scale) if cond.guidance else logits
            probs = probabilities(guided[:, -1], config.temperature, config.top_k, config.top_p)
            u = None if config.temperature == 0 else torch.rand(B, generator=generator, device=dev)
            token = sample_from(probs, u)
            codes.append(token)
        if i == len(order) - 1:
            break
        visible[:, 0, slot] = True
        logits = model.forward(cond, token.repeat(N // B)[:, None], torch.full((N, 1), slot, device=dev),
                               visible[:, :, : slot + 1], cache)
        passes += 1
    return torch.stack(codes, 1).view(B, layout.rows, layout.cols), passes


def run_configs(model, cond, configs: dict[str, ZipARConfig], reps: int = 3, plain: bool = True,
                seed: int = 0, alternate: bool = False, **generate_options) -> list[dict]:
    """Warm up every configuration, then run all of them ``reps`` times, interleaved; ``alternate``
    reverses the order every other repetition, so no configuration always runs right after another."""
    B = cond.batch_size
    cuda = model.device.type == "cuda"
    configs = {name: settings(model, cond, cfg) for name, cfg in configs.items()}  # unset: the model's defaults
    runners = {}
    if plain:
        ntp = next(iter(configs.values()))
        runners["plain KV-cached loop"] = lambda: (None, *plain_raster_loop(
            model, cond, ntp, torch.Generator(model.device).manual_seed(seed)))
    for name, cfg in configs.items():
        runners[name] = (lambda cfg=cfg: _zipar_run(model, cond, cfg, seed, **generate_options))
    rows: dict[str, BenchRow] = {}
    for name, fn in runners.items():  # warm-up
        _, _, passes = fn()
        rows[name] = BenchRow(name, passes)
    for rep in range(reps):
        order = list(runners.items())
        for name, fn in (order[::-1] if alternate and rep % 2 else order):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            else:
                _reset_host_peak()
            t = time.perf_counter()
            model_seconds, _, _ = fn()
            if cuda:
                torch.cuda.synchronize()
            rows[name].seconds.append((time.perf_counter() - t) / B)
            if model_seconds is not None:
                rows[name].model_seconds.append(model_seconds / B)
            rows[name].peak_memory_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else _host_peak_mb()
    base = rows[next(iter(configs))]
    return [rows[name].summary(base) for name in runners]


def _reset_host_peak() -> None:
    """Linux resets the process's peak resident size (VmHWM) when 5 is written to clear_refs, so each
    configuration reports its own peak instead of the whole process's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the peak is the process's so far


def _host_peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _zipar_run(model, cond, cfg, seed, **generate_options):
    gens = [torch.Generator(model.device).manual_seed(seed + i) for i in range(cond.batch_size)]
    r = generate(model, cond, cfg, generator=gens, profile=True, **generate_options)
    return r.stats.model_seconds, r.codes, r.stats.passes


def default_configs(cols: int, windows=(4, 8, 12, 16), adaptive=(8,), sjd=(), zipar_sjd=(), draft_length: int = 8,
                    **sampling) -> dict[str, ZipARConfig]:
    """The configurations a benchmark compares: ntp, fixed windows, adaptive minimum windows, sjd draft
    lengths, and zipar_sjd windows (each with ``draft_length`` drafts per row). A window wider than the grid is
    refused (naming the list it is in: ``windows``, ``adaptive``, ``zipar_sjd``), never dropped."""
    check_windows(cols, windows=windows, adaptive=adaptive, zipar_sjd=zipar_sjd)
    configs = {"ntp": ZipARConfig(mode="ntp", **sampling)}
    configs.update({f"fixed s={s}": ZipARConfig(mode="fixed", window=s, **sampling) for s in windows})
    configs.update({f"adaptive s_min={s}": ZipARConfig(mode="adaptive", window=s, **sampling) for s in adaptive})
    configs.update({f"sjd L={n}": ZipARConfig(mode="sjd", draft_length=n, **sampling) for n in sjd})
    configs.update({f"zipar_sjd s={s} L={draft_length}": ZipARConfig(mode="zipar_sjd", window=s,
                                                                     draft_length=draft_length, **sampling)
                    for s in zipar_sjd})
    return configs


def format_table(title: str, results: list[dict]) -> str:
    lines = [f"**{title}**", "",
             "| decoding | passes | s/image (median) | min | max | pass ratio | latency ratio | efficiency "
             "| in model | peak MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        inside = "" if r["sampler_overhead"] is None else f"{1 - r['sampler_overhead']:.0%}"
        lines.append(f"| {r['name']} | {r['passes']} | {r['sec_per_image_median']:.3f} | {r['sec_per_image_min']:.3f} "
                     f"| {r['sec_per_image_max']:.3f} | {r['pass_ratio']:.2f}x | {r['latency_ratio']:.2f}x "
                     f"| {r['efficiency']:.2f} | {inside} | {r['peak_memory_mb']:.0f} |")
    return "\n".join(lines)


def format_summary(cases: list[dict]) -> str:
    """One line per benchmarked case: NTP against the plain loop, window 8 and the adaptive window."""
    lines = ["| case | NTP s/image | plain loop | fixed s=8: passes, s/image, speed-up, efficiency "
             "| adaptive: passes, s/image, speed-up | sampler share (max) |",
             "|---|---:|---:|---|---|---:|"]
    for case in cases:
        rows = {r["name"]: r for r in case["results"]}
        plain, s8 = rows.get("plain KV-cached loop"), rows.get("fixed s=8")
        adaptive = next((r for name, r in rows.items() if name.startswith("adaptive")), None)
        overhead = max(r["sampler_overhead"] for r in case["results"] if r["sampler_overhead"] is not None)
        cells = [case["title"], f"{rows['ntp']['sec_per_image_median']:.2f}",
                 f"{plain['sec_per_image_median']:.2f}" if plain else "",
                 f"{s8['passes']}, {s8['sec_per_image_median']:.2f}, {s8['latency_ratio']:.2f}x, {s8['efficiency']:.2f}"
                 if s8 else "",
                 f"{adaptive['name'].split()[-1]}: {adaptive['passes']}, {adaptive['sec_per_image_median']:.2f}, "
                 f"{adaptive['latency_ratio']:.2f}x" if adaptive else "",
                 f"{overhead:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
