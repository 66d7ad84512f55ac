"""Our ``sjd`` mode side by side with the SJD authors' own sampler, on the same weights (issue 12).

The authors' code (Teng et al. 2024, "Accelerating Auto-regressive Text-to-Image Generation with Training-free
Speculative Jacobi Decoding", repository tyshiwo1/Accelerating-T2I-AR-with-SJD) is not part of this repository and
nothing here fetches it: give a checkout with ``--sjd-path`` or ``ZIPAR_SJD_PATH``. Their code targets
transformers 4.x (it overrides ``GenerationMixin._sample`` and uses ``DynamicCache.key_cache``), so run this
script in an environment with transformers 4.x (4.47.1 is the version of their environment.yaml); our LlamaGen
path imports no transformers and runs there too.

What runs, per image (classes 0..9 in turn, one seed per image, batch 1), interleaved in one process, the
order reversed every other image:

- theirs: their LlamaGen GPT class (``llamagen/llamagen.py`` Transformer/ModelArgs) with the embedded demo
  model's state dict, wrapped the way their ``test_llamagen.py`` wraps it (``renew_llamagen``, then
  ``renew_sampler`` from ``scheduler/jacobi_iteration_lumina_mgpt.py``), sampled by their ``LlamaGenSolver``;
  speculative Jacobi with ``multi_token_init_scheme="random"`` and their Jacobi interval of test_llamagen.py
  (``jacobi_loop_interval_r = HW - L - 2``). Passes = calls of the model's ``inference`` (prefill included).
- ours: ``ZipARConfig(mode="sjd", draft_length=L, draft_init="random")`` (the paper's init) and
  ``draft_init="spatial"`` (our default). Passes = ``result.stats.passes`` (prefill included).
- ours ``mode="ntp"``: a reference row for scale (256 passes), not part of the comparison.

Same settings on both sides: guidance scale (their prefill ``cfg_scale`` and their loop's ``guidance_scale``),
temperature 1 (their loop hard-codes 1.0), top-k (0 = off; theirs then gets top_k = vocabulary size, a no-op
``TopKLogitsWarper``), top-p, draft length. Seconds are wall seconds of sampling only, per image, one thread.
Before measuring, the two GPTs are checked to give the same logits on one input; ``--audit N`` also re-runs
every pass of their first N images as an uncached causal forward, to check that no pass saw stale draft K/V.

Runtime adaptations of their code (nothing of it is edited): CUDA events/synchronize are stubbed when CUDA is
absent (their ``_sample`` times itself with them), their prints are silenced, ``use_chameleon_tokenizer=False``
with ``img_vocab = arange(vocab)`` (their default reads Lumina-mGPT's Chameleon tokenizer file to choose the
random draft tokens).

    ZIPAR_SJD_PATH=/path/to/Accelerating-T2I-AR-with-SJD python benchmarks/sjd_side_by_side.py \\
        --images 50 --draft-lengths 8 --audit 2 --json docs/sjd_side_by_side.json

(docs/sjd_side_by_side.json: that run on the retrained demo model, against their commit b389cfb, on the project's 2-core
CPU machine; --draft-lengths 8 4 16 on the previous demo weights is in its git history.)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# the files of their checkout this script uses (checked before anything is imported from it)
SJD_FILES = ("llamagen/llamagen.py", "llamagen/llamagen_solver.py", "scheduler/jacobi_iteration_lumina_mgpt.py",
             "scheduler/logit_processor_3dim.py", "test_llamagen.py")
THEIRS, OURS_RANDOM, OURS_SPATIAL = "theirs (SJD authors)", "ours sjd, random init", "ours sjd, spatial init"
OURS_NTP = "ours ntp (reference)"  # one token per pass, for scale: not part of the comparison
VARIANTS = (THEIRS, OURS_RANDOM, OURS_SPATIAL, OURS_NTP)
SIDE = 16  # the demo model's token grid is SIDE x SIDE
SHORT = {THEIRS: "theirs", OURS_RANDOM: "ours random", OURS_SPATIAL: "ours spatial", OURS_NTP: "ours ntp"}


# -- pure helpers (tests/test_sjd_side_by_side.py) ------------------------------------------------------------
class CheckoutError(SystemExit):
    """No usable checkout of the authors' code: the message says what to do."""


def resolve_checkout(flag: str | None, environ=os.environ) -> str:
    """The checkout path from --sjd-path, else ZIPAR_SJD_PATH; refuses clearly when neither names one that
    holds the files this script runs."""
    path = flag or environ.get("ZIPAR_SJD_PATH")
    if not path:
        raise CheckoutError("sjd_side_by_side: no checkout of the SJD authors' code given. Pass --sjd-path PATH or "
                            "set ZIPAR_SJD_PATH to a checkout of the authors repository tyshiwo1/Accelerating-T2I-AR-with-SJD "
                            "(it is not part of this repository and this script does not fetch it).")
    path = os.path.abspath(os.path.expanduser(path))
    missing = [f for f in SJD_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckoutError(f"sjd_side_by_side: {path} is not a checkout of the SJD authors' code: missing "
                            f"{', '.join(missing)}. Pass --sjd-path (or ZIPAR_SJD_PATH) pointing at the folder that "
                            "holds llamagen/ and scheduler/.")
    return path


def their_interval_r(num_tokens: int, draft_length: int) -> int:
    """Their Jacobi interval end, as their test_llamagen.py sets it: (size // 16) ** 2 - max_num_new_tokens - 2,
    i.e. the grid's token count - L - 2. (Their next pass's length is computed from the token count before the
    pass's accepted tokens, so a later end would run past the grid.)"""
    return num_tokens - draft_length - 2


def variant_order(image: int, variants=VARIANTS) -> list[str]:
    """The order of the samplers for one image: as given on even images, reversed on odd ones."""
    return list(variants) if image % 2 == 0 else list(reversed(variants))


def summarize(values) -> dict:
    values = [float(v) for v in values]
    return {"n": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def paired_ratio(ours, theirs) -> float:
    """Median over images of ours_i / theirs_i (the images ran interleaved, so each pair saw the same load)."""
    return statistics.median(o / t for o, t in zip(ours, theirs))


def valid_grid(codes, num_tokens: int, vocab: int) -> bool:
    """A complete code grid: num_tokens integer codes, each in 0..vocab-1."""
    flat = [int(c) for c in codes]
    return len(flat) == num_tokens and all(0 <= c < vocab for c in flat)


def histogram_tv(a, b, vocab: int) -> float:
    """Total-variation distance between the token histograms of two lists of codes."""
    ca, cb = [0] * vocab, [0] * vocab
    for c in a:
        ca[int(c)] += 1
    for c in b:
        cb[int(c)] += 1
    na, nb = max(sum(ca), 1), max(sum(cb), 1)
    return 0.5 * sum(abs(x / na - y / nb) for x, y in zip(ca, cb))


def block_halves(n: int, block: int = 10) -> tuple[list[int], list[int]]:
    """Images 0..n-1 in two halves of whole blocks of ``block`` (image i has class i % block): even blocks,
    odd blocks. Both halves hold every class equally often and share no seed."""
    a = [i for i in range(n) if (i // block) % 2 == 0]
    return a, [i for i in range(n) if (i // block) % 2 == 1]


def histogram_check(codes: dict, vocab: int, block: int = 10) -> dict:
    """Token-histogram total variation on independent draws: each sampler's two halves (``block_halves``)
    against each other ("within": the noise level), and theirs against each of ours across halves ("cross":
    theirs' first half against ours' second and vice versa, averaged). Seeds are never shared, so a cross
    value near the within values means the histograms agree as well as two runs of one sampler do."""
    names = list(codes)
    a, b = block_halves(len(codes[names[0]]), block)
    flat = {n: ([t for i in a for t in codes[n][i]], [t for i in b for t in codes[n][i]]) for n in names}
    within = {n: histogram_tv(flat[n][0], flat[n][1], vocab) for n in names}
    base = names[0]
    cross = {n: 0.5 * (histogram_tv(flat[base][0], flat[n][1], vocab) + histogram_tv(flat[base][1], flat[n][0], vocab))
             for n in names[1:]}
    return {"halves": [len(a), len(b)], "within": within, "cross_vs_" + base: cross}


def summarize_variant(passes, seconds, base_passes=None, base_seconds=None) -> dict:
    out = {"passes": summarize(passes), "seconds": summarize(seconds)}
    if base_passes is not None:
        out["passes_vs_theirs"] = {"ratio_of_means": out["passes"]["mean"] / statistics.fmean(base_passes),
                                   "paired_median_ratio": paired_ratio(passes, base_passes)}
        out["seconds_vs_theirs"] = {"ratio_of_means": out["seconds"]["mean"] / statistics.fmean(base_seconds),
                                    "ratio_of_medians": out["seconds"]["median"] / statistics.median(base_seconds),
                                    "paired_median_ratio": paired_ratio(seconds, base_seconds)}
    return out


def format_table(results: dict, meta: dict) -> str:
    """Markdown: one row per draft length and sampler (results[str(L)][variant] = summarize_variant(...) plus
    'valid', 'accuracy')."""
    lines = [(f"SJD side by side on the embedded demo model ({meta['grid']} tokens, vocab {meta['vocab']}), "
              f"{meta['images']} images per row (classes 0..9 in turn, batch 1, one seed per image), "
              f"guidance {meta['guidance_scale']}, temperature {meta['temperature']}, top-k "
              f"{meta['top_k'] or 'off'}, top-p {meta['top_p']}, {meta['threads']} thread(s), {meta['device']}; "
              "seconds: sampling only, wall clock, samplers interleaved image by image."),
             "",
             ("| L | sampler | passes/img mean | median | s/img mean | median | passes vs theirs | s vs theirs "
              "(mean / paired median) | valid grids | class acc |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for L, rows in results.items():
        for name, r in rows.items():
            p, s = r["passes"], r["seconds"]
            pv = r.get("passes_vs_theirs")
            sv = r.get("seconds_vs_theirs")
            acc = r.get("accuracy")
            lines.append(f"| {L} | {name} | {p['mean']:.1f} | {p['median']:.0f} | {s['mean']:.3f} | {s['median']:.3f} | "
                         f"{'1' if pv is None else format(pv['ratio_of_means'], '.3f')} | "
                         f"{'1' if sv is None else format(sv['ratio_of_means'], '.3f') + ' / ' + format(sv['paired_median_ratio'], '.3f')} | "
                         f"{r['valid']}/{p['n']} | {'-' if acc is None else format(acc, '.2f')} |")
    return "\n".join(lines)


# -- the two samplers -----------------------------------------------------------------------------------------
class _CudaEventStub:
    def __init__(self, *a, **k):
        pass

    def record(self, *a, **k):
        pass

    def elapsed_time(self, other):
        return 0.0


def _patch_cuda_timing(torch):
    """Their _sample times itself with torch.cuda.Event / synchronize (jacobi_iteration_lumina_mgpt.py
    1050-1055, 1213-1215); without CUDA those raise, so stub them (only then; our sampler never calls them on
    CPU)."""
    if not torch.cuda.is_available():
        torch.cuda.Event = _CudaEventStub
        torch.cuda.synchronize = lambda *a, **k: None


def _file_hashes(root: str) -> dict:
    from zipar.zipar_core.model_files import file_sha256

    return {f: file_sha256(os.path.join(root, f))[:16] for f in SJD_FILES}


def _git_commit(root: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


class Theirs:
    """Their LlamaGen GPT with our demo weights, wired into their sampler as their test_llamagen.py does."""

    def __init__(self, root: str, state_dict: dict, arch: dict, args, device):
        import torch

        sys.path.insert(0, root)
        import llamagen.llamagen as their_gpt
        from llamagen.llamagen_solver import LlamaGenSolver, renew_llamagen
        from scheduler.jacobi_iteration_lumina_mgpt import renew_sampler

        self.torch, self.vocab, self.num_tokens = torch, arch["vocab_size"], arch["block_size"]
        self.model_args = their_gpt.ModelArgs(**arch, cls_token_num=1, model_type="c2i")
        gpt = their_gpt.Transformer(self.model_args)
        gpt.load_state_dict(state_dict, strict=True)
        self.plain = gpt.to(device).eval()  # before wrapping: their uncached forward, for the logits check
        self.device, self.args = device, args
        self._solver_cls, self._renew_llamagen, self._renew_sampler = LlamaGenSolver, renew_llamagen, renew_sampler
        self.calls: list = []
        self.fed: list[int] = []  # tokens fed by each pass of the last image (0: the prefill)
        self.record = False

    def plain_logits(self, labels, codes):
        """Uncached, unwrapped forward: (N, 1 + T, vocab); position k predicts image token k."""
        return self.plain(codes, labels)[0]

    def build(self, draft_length: int):
        """Wrap (a copy of) the model for one draft length; their _init_new_params sets everything per model."""
        import copy

        torch, a = self.torch, self.args
        gpt = copy.deepcopy(self.plain)
        params = {"jacobi_loop_interval_l": 1, "jacobi_loop_interval_r": their_interval_r(self.num_tokens, draft_length),
                  "max_num_new_tokens": draft_length, "guidance_scale": a.guidance_scale, "seed": None,
                  "multi_token_init_scheme": "random", "do_cfg": True,
                  "image_top_k": a.top_k if a.top_k > 0 else self.vocab, "text_top_k": 10,
                  "prefix_token_sampler_scheme": "speculative_jacobi", "use_chameleon_tokenizer": False}
        gpt.__class__ = self._renew_llamagen(gpt.__class__)
        gpt._init_new_params(**params)
        gpt.__class__ = self._renew_sampler(gpt.__class__)
        gpt._init_new_params(**params)
        gpt.img_vocab = torch.arange(self.vocab, device=self.device)  # the random drafts' vocabulary: every code
        inference = gpt.inference

        def counted(idx, cond_idx, input_pos=None, mask=None):
            logits = inference(idx, cond_idx, input_pos, mask)
            self.fed.append(0 if idx is None else idx.shape[1])
            self.calls.append((None if idx is None else idx.clone(), input_pos.clone(), logits.clone())
                              if self.record else None)
            return logits

        gpt.inference = counted  # every forward of their sampler goes through here (prefill and loop)
        self.gpt = gpt
        self.solver = self._solver_cls(model=gpt, image_top_k=params["image_top_k"], image_top_p=a.top_p)
        return params

    def sample(self, label: int, seed: int, record: bool = False):
        torch, a = self.torch, self.args
        self.calls, self.fed, self.record = [], [], record
        cond = torch.tensor([label], device=self.device)
        torch.manual_seed(seed)  # their prefill, draft init and accept draws use the global generator
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # their _sample prints its timing and NFE
            codes = self.solver.generate(cond, self.num_tokens, None, cfg_scale=a.guidance_scale,
                                         temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, sample_logits=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return codes[0].cpu(), len(self.fed), seconds


class Ours:
    def __init__(self, model, args):
        from zipar.zipar_core import ZipARConfig, generate

        self.model, self.args, self._config, self._generate = model, args, ZipARConfig, generate

    def config(self, draft_length: int, init: str, mode: str = "sjd"):
        a = self.args
        return self._config(mode=mode, draft_length=draft_length, draft_init=init, guidance_scale=a.guidance_scale,
                            temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                            draft_coupling=None if mode == "ntp" else a.draft_coupling)

    def sample(self, config, label: int, seed: int):
        torch = __import__("torch")
        t0 = time.perf_counter()
        cond = self.model.prepare(class_labels=[label], rows=SIDE, cols=SIDE, guidance_scale=config.guidance_scale)
        result = self._generate(self.model, cond, config, generator=torch.Generator().manual_seed(seed))
        if self.model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return result.codes.flatten().cpu(), result.stats.passes, seconds


def _resolved_coupling(chosen: str | None) -> str:
    from zipar.zipar_core.models import registry

    return chosen or registry.get("llamagen").defaults_for("demo").draft_coupling


# -- checks ---------------------------------------------------------------------------------------------------
def check_same_logits(theirs: Theirs, ours_model, vocab: int, num_classes: int, seed: int = 0) -> float:
    """Max |logit difference| of the two GPTs on random codes, every class and the null class, uncached."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes + 1, device=ours_model.device)  # the last one is the null class
    codes = torch.randint(0, vocab, (len(labels), theirs.num_tokens), generator=g).to(ours_model.device)
    with torch.no_grad():
        lt = theirs.plain_logits(labels, codes)[:, : theirs.num_tokens]
        lo = ours_model.gpt(ours_model.gpt.embed_labels(labels), codes, SIDE)[:, : theirs.num_tokens]
    return float((lt - lo).abs().max())


def audit_their_passes(theirs: Theirs, ours_model, label: int, codes, num_classes: int) -> dict:
    """Each loop pass of their last image against an uncached causal forward of [class, the final tokens before
    the pass's first position, the tokens the pass fed]: equal logits mean no query saw a K/V entry it should
    not (a stale draft or a rejected token). Also checks that each pass starts right after the final prefix."""
    import torch

    worst, passes, starts_ok = 0.0, 0, True
    for idx, pos, logits in theirs.calls:
        if idx is None:  # the prefill (class token only)
            continue
        rows = idx.shape[0]  # [cond; uncond] with guidance, as their sampler feeds them
        emb = ours_model.gpt.embed_labels(torch.tensor([label, num_classes][:rows], device=idx.device))
        p0, n = int(pos[0]), int(pos.numel())
        assert pos.tolist() == list(range(p0, p0 + n)), "their pass fed non-contiguous positions"
        starts_ok &= int(idx[0, 0]) == int(codes[p0 - 1])  # the head is the newest final token x[p0-1]
        seq = torch.cat([codes[: p0 - 1].to(idx.device).expand(rows, -1), idx], 1)
        with torch.no_grad():
            ref = ours_model.gpt(emb, seq, SIDE)[:, p0: p0 + n]
        worst = max(worst, float((ref - logits).abs().max()))
        passes += 1
    return {"passes_checked": passes, "max_abs_logit_diff": worst, "head_is_final_token": bool(starts_ok)}


def class_accuracy(ours_model, codes_list, labels) -> float | None:
    """Share of decoded images the demo classifier assigns to their class (a rough distribution check)."""
    import torch

    try:
        from zipar.demo_model.classifier import classify, load_classifier
        from zipar.demo_model.dataset import to_uint8
    except ImportError:
        return None
    codes = torch.stack([c.view(SIDE, SIDE) for c in codes_list]).to(ours_model.device)
    with torch.no_grad():
        images = to_uint8(ours_model.decode(codes))
    pred, _ = classify(load_classifier(), images)
    return float(sum(int(p) == int(y) for p, y in zip(pred, labels)) / len(labels))


def measure(L: int, theirs: Theirs, ours: Ours, ours_model, args, arch: dict):
    """All samplers at draft length L, interleaved image by image -> (summary rows, per-image numbers, audit of
    their passes, their sampler's parameters)."""
    import torch

    HW, vocab, classes = arch["block_size"], arch["vocab_size"], arch["num_classes"]
    params = theirs.build(L)
    configs = {OURS_RANDOM: ours.config(L, "random"), OURS_SPATIAL: ours.config(L, "spatial"),
               OURS_NTP: ours.config(L, "random", mode="ntp")}
    shown = ("jacobi_loop_interval_l", "jacobi_loop_interval_r", "max_num_new_tokens", "guidance_scale",
             "multi_token_init_scheme", "image_top_k", "prefix_token_sampler_scheme")
    print(f"\ndraft length {L}: theirs {json.dumps({k: params[k] for k in shown})}; ours {configs[OURS_RANDOM]}")
    labels = [i % classes for i in range(args.images)]

    def run(name, i, record=False):
        label, seed = i % classes, args.seed + i
        if name == THEIRS:
            return theirs.sample(label, seed, record=record)
        return ours.sample(configs[name], label, seed)

    audit = []
    for i in range(min(args.audit, args.images)):  # untimed runs of the first images (same seeds), recorded
        codes = run(THEIRS, i, record=True)[0]
        audit.append(audit_their_passes(theirs, ours_model, labels[i], codes, classes))
        theirs.calls, theirs.record = [], False
    for name in VARIANTS:  # warm-up, not measured
        run(name, 0)
    rec = {n: {"passes": [], "seconds": [], "codes": []} for n in VARIANTS}
    single = []
    for i in range(args.images):
        for name in variant_order(i):
            codes, passes, seconds = run(name, i)
            rec[name]["passes"].append(passes)
            rec[name]["seconds"].append(seconds)
            rec[name]["codes"].append(codes.to(torch.long))
            if name == THEIRS:  # passes outside their Jacobi interval feed one token each
                single.append(sum(n == 1 for n in theirs.fed))
        print(f"  image {i + 1}/{args.images} (class {labels[i]}): " + ", ".join(
            f"{SHORT[n]} {rec[n]['passes'][-1]} passes {rec[n]['seconds'][-1]:.2f}s" for n in VARIANTS), flush=True)
    base, rows = rec[THEIRS], {}
    for name in VARIANTS:
        r = rec[name]
        against = () if name == THEIRS else (base["passes"], base["seconds"])
        rows[name] = summarize_variant(r["passes"], r["seconds"], *against)
        rows[name]["valid"] = sum(valid_grid(c, HW, vocab) for c in r["codes"])
        rows[name]["accuracy"] = None if args.no_accuracy else class_accuracy(ours_model, r["codes"], labels)
    rows[THEIRS]["single_token_passes"] = summarize(single)
    rows["token_histogram_tv"] = histogram_check({SHORT[n]: [c.tolist() for c in rec[n]["codes"]] for n in VARIANTS},
                                                 vocab, classes)
    raw = {"classes": labels, "seeds": [args.seed + i for i in range(args.images)],
           **{n: {"passes": rec[n]["passes"], "seconds": rec[n]["seconds"]} for n in VARIANTS}}
    raw[THEIRS]["single_token_passes"] = single
    return rows, raw, audit, params


# -- main -----------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sjd-path", default=None, help="checkout of the SJD authors' code (default: $ZIPAR_SJD_PATH)")
    p.add_argument("--images", type=int, default=50, help="images per draft length (classes 0..9 in turn)")
    p.add_argument("--draft-lengths", type=int, nargs="+", default=[8])
    p.add_argument("--draft-coupling", default=None, help="ours: none, maximal or gumbel (default: the demo "
                   "model's default)")
    p.add_argument("--guidance-scale", type=float, default=2.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off (theirs: top_k = vocabulary size)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i on every sampler")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--audit", type=int, default=2, help="re-check every pass of their first N images (0 = off)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the demo classifier's class accuracy")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--table", default=None, help="also write the Markdown table here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = resolve_checkout(args.sjd_path)
    if args.temperature != 1.0:
        raise SystemExit("sjd_side_by_side: their Jacobi loop samples at temperature 1 whatever it is given "
                         "(llamagen_solver.py: GenerationConfig(temperature=1.0), no temperature warper), so the "
                         "comparison runs at --temperature 1 only")
    if args.guidance_scale < 1.0:
        raise SystemExit("sjd_side_by_side: their prefill applies guidance only for cfg_scale > 1; use >= 1")
    import torch
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        raise SystemExit(f"sjd_side_by_side: transformers {transformers.__version__} is installed; the authors' "
                         "sampler needs transformers 4.x (it overrides GenerationMixin._sample and uses "
                         "DynamicCache.key_cache). Run this in an environment with transformers 4.47.1 "
                         "(their environment.yaml).")
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    _patch_cuda_timing(torch)
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    from safetensors import safe_open
    from safetensors.torch import load_file
    from zipar.demo_model import GPT_WEIGHTS, load_demo_model

    device = torch.device(args.device)
    meta_cfg = json.loads(safe_open(GPT_WEIGHTS, "pt").metadata()["config"])
    state = load_file(GPT_WEIGHTS)
    vocab = state["output.weight"].shape[0]
    arch = {k: meta_cfg[k] for k in ("dim", "n_layer", "n_head", "multiple_of", "num_classes", "class_dropout_prob",
                                     "block_size")}
    arch["vocab_size"] = vocab
    ours_model = load_demo_model(device=device)
    theirs = Theirs(root, state, arch, args, device)
    ours = Ours(ours_model, args)
    diff = check_same_logits(theirs, ours_model, vocab, arch["num_classes"])
    print(f"same weights: max |logit difference| of their GPT and ours (uncached, {arch['num_classes'] + 1} "
          f"conditions incl. the null class, random codes): {diff:.3g}")
    if diff > 1e-3:
        raise SystemExit("sjd_side_by_side: the two GPTs disagree; the comparison would be meaningless")

    meta = {"grid": "16x16", "vocab": vocab, "images": args.images, "guidance_scale": args.guidance_scale,
            "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "threads": args.threads,
            "device": str(device), "seed": args.seed, "draft_lengths": args.draft_lengths,
            "draft_coupling": _resolved_coupling(args.draft_coupling),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "sjd_checkout": {"commit": _git_commit(root), "sha256_16": _file_hashes(root)},
            "max_abs_logit_diff": diff, "architecture": arch}
    results, raw, audits = {}, {}, {}
    for L in args.draft_lengths:
        results[str(L)], raw[str(L)], audits[str(L)], params = measure(L, theirs, ours, ours_model, args, arch)
        meta.setdefault("their_params", {})[str(L)] = params
    table_rows = {L: {n: r for n, r in rows.items() if n in VARIANTS} for L, rows in results.items()}
    table = format_table(table_rows, meta)
    print("\n" + table)
    for L, rows in results.items():
        print(f"\nL={L}: their passes that fed one token (outside their Jacobi interval): mean "
              f"{rows[THEIRS]['single_token_passes']['mean']:.1f}")
        h = rows["token_histogram_tv"]
        if min(h["halves"]) > 0:
            print(f"L={L}: token-histogram total variation, halves of {h['halves']} images, no seed shared: within "
                  + ", ".join(f"{k} {v:.3f}" for k, v in h["within"].items()) + "; theirs against "
                  + ", ".join(f"{k} {v:.3f}" for k, v in h["cross_vs_theirs"].items()))
        if audits[L]:
            print(f"L={L}: audit of their passes (uncached causal re-run): {audits[L]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "audit": audits, "per_image": raw, "table": table}, f, indent=1)
        print(f"\nwrote {args.json}")
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    return results


if __name__ == "__main__":
    main()
