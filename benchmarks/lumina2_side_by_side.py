"""Lumina-mGPT 2.0 through ZipAR, side by side with Alpha-VLLM's own code on the same tiny model (issue 23).

Alpha-VLLM's code (repository Alpha-VLLM/Lumina-mGPT-2.0) is not part of this repository and nothing here fetches
it: give a checkout with ``--lumina2-path`` or ``ZIPAR_LUMINA2_PATH``. It needs transformers 4.46 (its
requirements.txt pins 4.46.2; ZipAR needs 5.x), so its side runs in a second Python: ``--original-python`` or
``ZIPAR_LUMINA2_PYTHON``, an environment with torch, transformers==4.46.2, sentencepiece, einops, pyyaml, pillow
(this script's own interpreter when not given). Two stages, one process each:

1. theirs (their Python, their code): a tiny model built with their ``ChameleonXLLMXConfig`` /
   ``ChameleonXLLMXForConditionalGeneration`` (two model-parallel shards of q/k norms, random norms), its image
   encoder deleted and saved with ``save_pretrained`` as their ``finetune_solver.py`` does (safetensors shards +
   index), the tiny tokenizer files beside it; a tiny MoVQGAN built with their ``MOVQ`` class and saved as the
   published file is, a flat state dict in ``movqgan/270M/movqgan_270M.ckpt``. Then their outputs: prompt ids
   from their ``FlexARItemProcessor.process_item`` (the prompt of their ``generate.py``, text-to-image and a
   dual-panel task); greedy generation by their model's ``generate`` with their ``create_logits_processor``
   (their CFG scale schedule, image-token and end-of-line constraints, image top-k), the prompt followed by
   ``<racm3:break>`` and the two size tokens (a random tiny model would not choose to start an image); the logits
   of an uncached forward of their model over the whole sequence (conditional, and the unconditional branch:
   the image part alone); the scores their processors hand to sampling; their ``MOVQ.decode_code`` of the codes.
2. ours (ZipAR's Python): the same folder loaded by ``zipar_core.models.load_model`` (published layout, MoVQGAN
   found beside it), the same prompts: prompt ids, the logits of every pass of ``mode="ntp"`` (conditional and
   unconditional rows), the guided logits (with ``lumina2.guidance_schedule``), greedy codes of ``ntp`` and of
   ``fixed`` at window == cols, the decode; the maximum differences, written as JSON.

Runtime adaptations of their code for a CPU (nothing of it is edited): ``torchvision`` and ``pytorch_lightning``
are stub modules (imported at the top of ``data/item_processor.py`` and ``movqgan/models/vqgan.py``; the
path run here uses neither: MOVQ's ``LightningModule`` base is a plain ``nn.Module``); ``FlexARItemProcessor``'s
default device "cuda" is "cpu", and the ``torch`` of ``inference_solver.py`` reads ``device="cuda"`` as the CPU
(``MultiModalLogitsProcessor`` builds its masks on "cuda"); their MoVQGAN table entry ``MODELS["270M"]`` gets the
tiny model's sizes (their item processor builds the MoVQGAN from it); its default tokenizer
"Alpha-VLLM/Lumina-mGPT-2.0" is the tiny folder, served by an offline hub cache in the work folder; the working
folder is the work folder (they read ``./movqgan/270M/movqgan_270M.ckpt``).

    ZIPAR_LUMINA2_PATH=/path/to/Lumina-mGPT-2.0 ZIPAR_LUMINA2_PYTHON=/path/to/transformers-4.46/bin/python \\
        python benchmarks/lumina2_side_by_side.py --json docs/lumina2_side_by_side.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

# the files of their checkout this script imports (checked before anything is run)
THEIR_FILES = ("lumina_mgpt/inference_solver.py", "lumina_mgpt/data/item_processor.py",
               "lumina_mgpt/movqgan/__init__.py", "lumina_mgpt/model/modeling_xllmx_chameleon.py",
               "xllmx/data/item_processor.py")
REPO_ID = "Alpha-VLLM/Lumina-mGPT-2.0"
IMAGE_TOKEN_BASE = 155000
CODEBOOK = 32
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512)
PARALLEL = 2  # model-parallel shards of the q/k norms
MOVQ = dict(ddconfig={"double_z": False, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                      "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [32], "dropout": 0.0},
            n_embed=CODEBOOK, embed_dim=4)
# (name, task, prompt, width, height, cfg): the grids are height/8 x width/8 tokens
CASES = (("t2i cfg 7 (decaying scale)", None, "a red cat on the mat, a photo", 96, 64, 7.0),
         ("depth dual-panel cfg 4", "depth", "a blue dog", 64, 96, 4.0),
         ("t2i cfg 1 (no guidance)", None, "a red cat", 64, 64, 1.0))
TOP_K = 4096
MODEL_DIR = "Lumina-mGPT-2.0"


class CheckoutError(SystemExit):
    """No usable checkout of Alpha-VLLM's code: the message says what to do."""


def resolve_checkout(flag: str | None, environ=os.environ) -> str:
    """The checkout from --lumina2-path, else ZIPAR_LUMINA2_PATH; refused clearly when it does not hold the files
    this script imports."""
    path = flag or environ.get("ZIPAR_LUMINA2_PATH")
    if not path:
        raise CheckoutError("lumina2_side_by_side: no checkout of Alpha-VLLM's Lumina-mGPT 2.0 code given. Pass "
                            "--lumina2-path PATH or set ZIPAR_LUMINA2_PATH to a checkout of github.com/Alpha-VLLM/"
                            "Lumina-mGPT-2.0 (it is not part of this repository and this script does not fetch it).")
    path = os.path.abspath(os.path.expanduser(path))
    missing = [f for f in THEIR_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise CheckoutError(f"lumina2_side_by_side: {path} is not a checkout of Lumina-mGPT 2.0: missing "
                            f"{', '.join(missing)}. Pass --lumina2-path (or ZIPAR_LUMINA2_PATH) pointing at the folder "
                            "that holds lumina_mgpt/ and xllmx/.")
    return path


def instruction(task: str | None, prompt: str, width: int, height: int) -> str:
    """The human turn of their generate.py (t2i, or --task depth|canny|hed|openpose)."""
    if task is None:
        return f"Generate an image of {width}x{height} according to the following prompt:\n{prompt}"
    panel = {"depth": "depth map", "canny": "canny edge map", "hed": "hed edge map", "openpose": "pose estimation map"}
    return (f"Generate a dual-panel image of {width}x{height} where the <lower half> displays a <{panel[task]}>, while "
            f"the <upper half> retains the original image for direct visual comparison:\n{prompt}")


def max_diff(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return float("inf")
    return float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0


# ----------------------------------------------------------------------------------------------------
# Stage 1: their code (their Python)


def _cpu(device):
    return "cpu" if device is not None and str(device).startswith("cuda") else device


class _CpuTorch:
    """inference_solver's ``torch``, reading device="cuda" as the CPU (a runtime adaptation, see the docstring)."""

    def __init__(self, torch):
        self._torch = torch

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def tensor(self, *a, device=None, **k):
        return self._torch.tensor(*a, device=_cpu(device), **k)

    def arange(self, *a, device=None, **k):
        return self._torch.arange(*a, device=_cpu(device), **k)


def _import_theirs(root: str):
    import types

    import torch
    import transformers  # noqa: F401 -- before the stubs: it must not see a torchvision
    import transformers.generation  # noqa: F401

    sys.path[:0] = [os.path.join(root, "lumina_mgpt"), root]
    stub = types.ModuleType("torchvision")
    stub.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
    lightning = types.ModuleType("pytorch_lightning")
    lightning.LightningModule = torch.nn.Module
    sys.modules["pytorch_lightning"] = lightning
    import inference_solver
    import movqgan
    from data.item_processor import FlexARItemProcessor

    inference_solver.torch = _CpuTorch(torch)
    defaults = list(FlexARItemProcessor.__init__.__defaults__)  # (tokenizer, conv_template, target_size, device)
    defaults[-1] = "cpu"
    FlexARItemProcessor.__init__.__defaults__ = tuple(defaults)
    movqgan.MODELS["270M"]["model_params"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MOVQ.items()}
    return inference_solver, movqgan, FlexARItemProcessor


def _their_model(work: str, vocab: dict):
    """Their classes, their save code: the tiny model in the published layout."""
    import torch
    from model import ChameleonXLLMXConfig, ChameleonXLLMXForConditionalGeneration

    config = ChameleonXLLMXConfig(vocab_size=IMAGE_TOKEN_BASE + CODEBOOK + 1, model_parallel_size=PARALLEL,
                                  swin_norm=False, mask_image_logits=False, dropout=0.05, z_loss_weight=1e-5,
                                  vocabulary_map=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                                  **TEXT)
    torch.manual_seed(0)
    model = ChameleonXLLMXForConditionalGeneration(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # every norm away from 1 / 0, each model-parallel shard its own q/k norm row
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.mul_(2.0)  # sharper logits: varied greedy tokens
    del model.model.vqmodel  # as their finetune_solver.py does before training and saving
    model.save_pretrained(os.path.join(work, MODEL_DIR), max_shard_size="20MB")
    from model.chameleon import ChameleonForConditionalGeneration  # what their inference solver loads it with

    return ChameleonForConditionalGeneration.from_pretrained(os.path.join(work, MODEL_DIR),
                                                             torch_dtype=torch.float32).eval()


def _their_movqgan(work: str, movqgan):
    import torch
    from movqgan.models.vqgan import MOVQ as MOVQClass

    torch.manual_seed(1)
    movq = MOVQClass(**movqgan.MODELS["270M"]["model_params"])
    with torch.no_grad():
        movq.quantize.embedding.weight.normal_()
    os.makedirs(os.path.join(work, "movqgan", "270M"), exist_ok=True)
    torch.save(movq.state_dict(), os.path.join(work, "movqgan", "270M", "movqgan_270M.ckpt"))  # a flat state dict


def _hub_cache(work: str) -> None:
    """An offline hub cache in which their default tokenizer id is the tiny folder."""
    snap = os.path.join(work, "hub", "models--" + REPO_ID.replace("/", "--"), "snapshots", "0" * 40)
    os.makedirs(snap, exist_ok=True)
    for f in os.listdir(os.path.join(work, MODEL_DIR)):
        if f.endswith(".json"):
            shutil.copy(os.path.join(work, MODEL_DIR, f), snap)
    os.makedirs(os.path.join(work, "hub", "models--" + REPO_ID.replace("/", "--"), "refs"), exist_ok=True)
    with open(os.path.join(work, "hub", "models--" + REPO_ID.replace("/", "--"), "refs", "main"), "w") as f:
        f.write("0" * 40)


class _Recorder:
    """A logits processor appended after theirs: keeps the scores they hand to sampling."""

    def __init__(self):
        self.scores = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores[0].clone())
        return scores


def _their_case(solver, item, model, task, prompt, width, height, cfg) -> dict:
    import torch
    from transformers import GenerationConfig

    rows, cols = height // 8, width // 8
    conversations = [{"from": "human", "value": instruction(task, prompt, width, height)},
                     {"from": "gpt", "value": None}]
    ids = item.process_item({"image": [], "conversations": conversations})
    header = [item.token2id(item.image_start_token), item.token2id(item.get_n_grids_token(height // 32)),
              item.token2id(item.get_n_grids_token(width // 32))]
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    processors = solver.create_logits_processor(cfg=cfg, image_top_k=TOP_K)
    recorder = _Recorder()
    processors.append(recorder)
    start = torch.tensor([ids + header])
    config = GenerationConfig(max_new_tokens=rows * (cols + 1) + 1, max_length=model.config.max_position_embeddings,
                              do_sample=False, eos_token_id=[item.token2id(item.image_end_token)])
    out = model.generate(start, config, logits_processor=processors)[0, start.shape[1]:].tolist()
    hook.remove()
    eol = item.token2id(item.new_line_token)
    grid = [t for t in out if IMAGE_TOKEN_BASE <= t < IMAGE_TOKEN_BASE + CODEBOOK]
    image_steps = [k for k in range(rows * (cols + 1)) if k % (cols + 1) < cols]  # steps predicting image tokens
    with torch.no_grad():
        seq = torch.tensor([ids + header + out[:-1]])  # everything but <eoss>
        cond = model(seq).logits[0, len(ids) + len(header) - 1:].float()
        uncond = model(torch.tensor([header + out[:-1]])).logits[0, len(header) - 1:].float()
        codes = torch.tensor(grid) - IMAGE_TOKEN_BASE
        pixels = item.vqgan.decode_code(codes, rows, cols)[0]
    sl = slice(IMAGE_TOKEN_BASE, IMAGE_TOKEN_BASE + CODEBOOK)
    return {"prompt_ids": ids, "header": header, "generated": out, "eol": eol,
            "layout_ok": len(grid) == rows * cols and out[-1] == item.token2id(item.image_end_token)
            and all(out[k] == eol for k in range(cols, rows * (cols + 1), cols + 1)),
            "codes": codes.view(rows, cols), "cond_logits": cond[image_steps][:, sl],
            "uncond_logits": uncond[image_steps][:, sl],
            "guided_scores": torch.stack([recorder.scores[k][sl] for k in image_steps]),
            "pixels": pixels, "forward_calls": len(calls), "generated_tokens": len(out)}


def _timed(what: str, t0: list):
    import time

    now = time.perf_counter()
    print(f"theirs: {what} ({now - t0[0]:.1f} s)", file=sys.stderr)
    t0[0] = now


def run_theirs(root: str, work: str, out_path: str) -> None:
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=os.path.join(work, "hub"), TRANSFORMERS_VERBOSITY="error")
    os.chdir(work)  # their MoVQGAN loader reads ./movqgan/270M/movqgan_270M.ckpt
    import contextlib
    import io
    import time

    import torch

    torch.set_num_threads(1)
    t0 = [time.perf_counter()]
    inference_solver, movqgan, FlexARItemProcessor = _import_theirs(root)
    _timed("imported their code", t0)
    with open(os.path.join(work, MODEL_DIR, "tokenizer.json"), encoding="utf-8") as f:
        vocab = {**json.load(f)["model"]["vocab"]}
    model = _their_model(work, vocab)
    _their_movqgan(work, movqgan)
    _hub_cache(work)
    _timed("built, saved and loaded the tiny model and MoVQGAN with their classes", t0)
    results = {}
    with contextlib.redirect_stdout(io.StringIO()):  # their processors print
        item = FlexARItemProcessor(tokenizer=os.path.join(work, MODEL_DIR), target_size=768, device="cpu")
        solver = object.__new__(inference_solver.FlexARInferenceSolver)  # its __init__ loads from the hub onto CUDA
        solver.model, solver.item_processor, solver.target_size = model, item, 512  # 512: its constructor's default
        for name, task, prompt, width, height, cfg in CASES:
            results[name] = _their_case(solver, item, model, task, prompt, width, height, cfg)
    _timed("ran the cases", t0)
    torch.save(results, out_path)


# ----------------------------------------------------------------------------------------------------
# Stage 2: ZipAR (this Python)


class _PassRecorder:
    """The adapter with every pass's logits kept by slot, per model row."""

    def __init__(self, adapter):
        self.adapter, self.by_slot = adapter, {}

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def prefill(self, cond, cache, visible):
        logits = self.adapter.prefill(cond, cache, visible)
        for row in range(logits.shape[0]):
            self.by_slot[(row, cond.layout.prefix - 1)] = logits[row]
        return logits

    def forward(self, cond, tokens, slots, visible, cache):
        logits = self.adapter.forward(cond, tokens, slots, visible, cache)
        for row in range(logits.shape[0]):
            for q in range(slots.shape[1]):
                self.by_slot[(row, int(slots[row, q]))] = logits[row, q]
        return logits


def our_case(adapter, theirs: dict, task, prompt, width, height, cfg) -> dict:
    import torch
    from zipar.zipar_core.config import ZipARConfig
    from zipar.zipar_core.models.lumina2 import guidance_schedule
    from zipar.zipar_core.sampler import generate
    from zipar.zipar_core.sampling import apply_guidance

    text = f"<{task}> {prompt}" if task else prompt
    cond = adapter.prepare(prompt=text, height=height, width=width, guidance_scale=cfg)
    rows, cols, P = cond.layout.rows, cond.layout.cols, cond.layout.prefix
    ids = cond.payload.ids[0][cond.prefix_valid[0]].tolist()
    recorder = _PassRecorder(adapter)
    greedy = dict(temperature=0, guidance_scale=cfg, top_k=TOP_K)
    ntp = generate(recorder, cond, ZipARConfig(mode="ntp", **greedy))
    fixed = generate(adapter, cond, ZipARConfig(mode="fixed", window=cols, **greedy))
    # the query at slot s predicts the token at slot s + 1: the image slots' predecessors, in raster order
    preds = [P - 1 + r * (cols + 1) + c for r in range(rows) for c in range(cols)]
    cond_logits = torch.stack([recorder.by_slot[(0, s)] for s in preds])
    out = {"prompt_ids_equal": ids[:-3] == theirs["prompt_ids"] and ids[-3:] == theirs["header"],
           "codes_ntp_equal": ntp.codes[0].tolist() == theirs["codes"].tolist(),
           "codes_fixed_window_cols_equal": fixed.codes[0].tolist() == theirs["codes"].tolist(),
           "their_layout_ok": theirs["layout_ok"], "passes_ntp": ntp.stats.passes, "passes_fixed": fixed.stats.passes,
           "their_generated_tokens": theirs["generated_tokens"], "their_forward_calls": theirs["forward_calls"],
           "max_abs_diff_cond_logits": max_diff(cond_logits, theirs["cond_logits"])}
    if cond.guidance:
        pad = int(cond.payload.pad[1])
        uncond_logits = torch.stack([recorder.by_slot[(1, s)] for s in preds])
        scales = guidance_schedule(cfg, rows, cols)[:, None]
        guided = apply_guidance(torch.stack([cond_logits, uncond_logits]), 1, scales)[0]
        out.update(uncond_pad=pad, max_abs_diff_uncond_logits=max_diff(uncond_logits, theirs["uncond_logits"]),
                   max_abs_diff_guided_logits=max_diff(guided, theirs["guided_scores"]),
                   guidance_scale_first_last=[float(scales[0]), float(scales[-1])])
    else:
        out.update(max_abs_diff_guided_logits=max_diff(cond_logits, theirs["guided_scores"]))
    ours_pixels = adapter.decode(theirs["codes"][None])[0]
    out["max_abs_diff_decode"] = max_diff(ours_pixels, theirs["pixels"].clamp(-1, 1))
    to_u8 = lambda x: ((x + 1) * 127.5).round().clamp(0, 255)  # noqa: E731 -- their show_images
    out["max_abs_diff_decode_uint8"] = max_diff(to_u8(ours_pixels), to_u8(theirs["pixels"]))
    out["decode_uint8_values_differing"] = int((to_u8(ours_pixels) != to_u8(theirs["pixels"])).sum())
    out["decode_uint8_values"] = ours_pixels.numel()
    out["distinct_codes"] = len(set(theirs["codes"].flatten().tolist()))
    return out


def run_ours(work: str, theirs_path: str) -> dict:
    import torch
    from zipar.zipar_core.models import load_model, registry

    torch.set_num_threads(1)
    folder = os.path.join(work, MODEL_DIR)
    theirs = torch.load(theirs_path, weights_only=True)
    adapter = load_model(folder, device="cpu")
    assert registry.detect(folder).name == "lumina2" and adapter.family == "lumina2"
    adapter.target_size = None  # the tiny sizes are not the 768 px training sizes
    return {name: our_case(adapter, theirs[name], task, prompt, width, height, cfg)
            for name, task, prompt, width, height, cfg in CASES}


def _file_hashes(root: str) -> dict:
    """sha256 of the files of their checkout this comparison runs (a copy without git history has no commit)."""
    import hashlib

    files = (*THEIR_FILES, "lumina_mgpt/model/chameleon/modeling_chameleon.py", "lumina_mgpt/movqgan/models/vqgan.py",
             "lumina_mgpt/movqgan/modules/vqvae/movq_modules.py", "lumina_mgpt/data/convertsation.py",
             "xllmx/model/tokenizer.py")
    out = {}
    for f in files:
        with open(os.path.join(root, f), "rb") as fh:
            out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _git_commit(root: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


COLUMNS = (("prompt ids", "prompt_ids_equal"), ("greedy ntp", "codes_ntp_equal"),
           ("greedy fixed s=cols", "codes_fixed_window_cols_equal"), ("cond logits", "max_abs_diff_cond_logits"),
           ("uncond logits", "max_abs_diff_uncond_logits"), ("guided logits", "max_abs_diff_guided_logits"),
           ("decode", "max_abs_diff_decode"))


def table(results: dict) -> str:
    """One row per case: equal or not, max |difference|; the 8-bit decode as max difference (values differing)."""
    lines = ["| case | " + " | ".join(c for c, _ in COLUMNS) + " | decode, 8-bit |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in results.items():
        cells = [("equal" if r[k] else "DIFFERENT") if isinstance(r.get(k), bool) else
                 ("-" if k not in r else f"{r[k]:.1e}") for _, k in COLUMNS]
        cells.append(f"{r['max_abs_diff_decode_uint8']:g} ({r['decode_uint8_values_differing']} of "
                     f"{r['decode_uint8_values']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lumina2-path", help="checkout of Alpha-VLLM/Lumina-mGPT-2.0 (or ZIPAR_LUMINA2_PATH)")
    p.add_argument("--original-python", help="a Python with transformers 4.46 for their code (or ZIPAR_LUMINA2_PYTHON)")
    p.add_argument("--work", help="folder for the tiny model and their outputs (default: a temporary one)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--stage", choices=("both", "theirs"), default="both", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    root = resolve_checkout(args.lumina2_path)
    if args.stage == "theirs":
        run_theirs(root, os.path.abspath(args.work), os.path.join(os.path.abspath(args.work), "theirs.pt"))
        return None
    from zipar.zipar_core.models.tiny import write_lumina2_tokenizer

    python = args.original_python or os.environ.get("ZIPAR_LUMINA2_PYTHON") or sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        work = os.path.abspath(args.work or scratch)
        write_lumina2_tokenizer(os.path.join(work, MODEL_DIR))
        subprocess.run([python, os.path.abspath(__file__), "--stage", "theirs", "--lumina2-path", root, "--work", work],
                       check=True)
        results = run_ours(work, os.path.join(work, "theirs.pt"))
    report = {"meta": {"their_commit": _git_commit(root), "their_files_sha256": _file_hashes(root),
                       "their_python": python, "codebook": CODEBOOK, "text": TEXT,
                       "model_parallel_shards": PARALLEL, "movqgan": MOVQ, "top_k": TOP_K, "device": "cpu",
                       "dtype": "float32"}, "results": results}
    print(table(results))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
