"""Train the demo GPT: a small class-conditional LlamaGen on the VQ codes of the procedural dataset.

    python -m zipar.demo_model.train_gpt --vq demo_model/weights/vq_demo.safetensors \
        --run-dir demo_model/runs/gpt --out demo_model/weights/c2i_demo_32.safetensors --threads 1
    # stopped (Ctrl-C, kill, reboot)? the same command with --resume continues from the last checkpoint:
    python -m zipar.demo_model.train_gpt ... --resume
    # export the weights of the latest checkpoint at any time (EMA weights unless --export-weights raw):
    python -m zipar.demo_model.train_gpt --run-dir demo_model/runs/gpt --out some.safetensors --export-only

Architecture: the official LlamaGen GPT (``LlamaGenTransformer``: 2-D RoPE, SwiGLU, RMSNorm, one class
token), small (``--dim``, ``--layers``, ``--heads``), vocabulary = the VQ codebook, 10 classes plus the null
class. Next-token prediction on the 16x16 code grids of *fresh* training images: the batch of step ``s``
is images ``s * batch .. s * batch + batch - 1`` of the training seed, drawn and VQ-encoded on the fly, so
no image is seen twice and the data needs no state. Labels are dropped to the null class with probability
0.1 (for classifier-free guidance) by a generator seeded with (seed, step). AdamW, linear warm-up,
constant, then a cosine cool-down over the last ``--decay`` of the steps to ``--final-lr`` x lr
(warmup-stable-decay: before the cool-down, ``--resume`` may change ``--steps`` and ``--decay``),
gradient clipping, an exponential moving average of the weights (``--ema``), float32 (bfloat16 autocast is far slower than float32 on CPUs without bf16 hardware; see
docs/demo_model.md; ``--amp`` turns it on for a GPU).

Checkpoints (``--run-dir``/ckpt.pt, every ``--ckpt-every`` steps, at the end, and on SIGINT/SIGTERM) hold
the model, its EMA, the optimiser, the RNG state, the step, the loss log and the training seconds so far;
they are written to a temporary file and renamed, so a crash leaves the previous one intact. ``--resume``
continues bit for bit where the checkpoint stopped (same numbers as an uninterrupted run on the same
machine and thread count); it refuses a checkpoint whose run-defining arguments differ. ``--keep-every``
keeps a copy of the checkpoint every that many steps (for evaluating the run as it goes).

The exported file keeps the official key names and carries ``n_head``, ``image_size`` and
``pixels_per_token`` in its safetensors metadata, so the standard LlamaGen loader (``load_llamagen`` /
``load_model``) reads it without extra arguments; the training summary (steps, wall time, final loss) is
in its metadata too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..zipar_core.files import atomic_write
from ..zipar_core.model_files import file_sha256
from ..zipar_core.models.llamagen import LlamaGenConfig, LlamaGenTransformer, load_llamagen_vq
from .dataset import IMAGE_SIZE, NUM_CLASSES, TRAIN_SEED, make_images, to_tensor

CKPT_NAME = "ckpt.pt"
# Arguments that define the run: a checkpoint is resumed only under the same values.
RUN_ARGS = ("dim", "layers", "heads", "multiple_of", "steps", "batch", "lr", "final_lr", "decay", "warmup", "weight_decay",
            "grad_clip", "ema", "class_dropout", "seed", "data_start", "amp")


def gpt_config(args, vocab: int) -> LlamaGenConfig:
    return LlamaGenConfig(dim=args.dim, n_layer=args.layers, n_head=args.heads, vocab_size=vocab,
                          num_classes=NUM_CLASSES, class_dropout_prob=args.class_dropout,
                          block_size=(IMAGE_SIZE // 2) ** 2, multiple_of=args.multiple_of)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vq", default="demo_model/weights/vq_demo.safetensors")
    p.add_argument("--out", default="demo_model/weights/c2i_demo_32.safetensors", help="exported weights")
    p.add_argument("--run-dir", default="demo_model/runs/gpt", help="checkpoints and log (git-ignored)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/ckpt.pt")
    p.add_argument("--export-only", action="store_true", help="write --out from the checkpoint and stop")
    p.add_argument("--ckpt", help="with --export-only: this checkpoint file instead of RUN_DIR/ckpt.pt")
    p.add_argument("--export-weights", default="ema", choices=["ema", "raw"])
    # model
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--multiple-of", type=int, default=64, help="SwiGLU width rounding")
    # optimisation
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--final-lr", type=float, default=0.05, help="lr at the end, as a fraction of --lr")
    p.add_argument("--decay", type=float, default=0.25, help="fraction of the steps in the final cool-down")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights (0: none)")
    p.add_argument("--class-dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-start", type=int, default=0, help="index of the first training image")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (for GPUs; slow on most CPUs)")
    # bookkeeping
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--keep-every", type=int, default=0, help="also keep ckpt_<step>.pt every this many steps")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--stop-after", type=int, default=0, help="stop (with a checkpoint) after this many steps "
                   "of this sitting; 0: run to --steps")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="dtype of the exported weights")
    return p


@torch.no_grad()
def encode(vq, images: np.ndarray, device, amp: bool = False) -> torch.Tensor:
    """uint8 images (n, H, W, 3) -> codes (n, h*w) long (float32 unless ``amp``)."""
    x = to_tensor(images).to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        z = vq.quant_conv(vq.encoder(x))
    return vq.quantize(z.float())[1].reshape(len(images), -1).long()


def batch_at(step: int, args, vq, device, null_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of ``step``: fresh images, their codes, labels with dropout. Stateless."""
    images, labels = make_images(args.batch, TRAIN_SEED, IMAGE_SIZE, start=args.data_start + step * args.batch)
    codes = encode(vq, images, device, args.amp)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    drop = torch.rand(args.batch, generator=gen) < args.class_dropout
    y = torch.where(drop, torch.full((args.batch,), null_class), torch.from_numpy(labels))
    return codes, y.to(device)


def decay_start(args) -> int:
    """First step of the learning-rate decay (the cool-down): the last ``--decay`` fraction of the steps."""
    return int(round(args.steps * (1 - args.decay)))


def lr_at(step: int, args) -> float:
    """Warm-up (linear), constant, then a cosine cool-down over the last ``--decay`` of the steps to
    ``--final-lr`` x lr ("warmup-stable-decay"; ``--decay 1`` is a plain cosine schedule). Before the
    cool-down the schedule does not depend on ``--steps``, so a run can be extended while it is there."""
    warm = min(1.0, (step + 1) / max(1, args.warmup))
    d0 = decay_start(args)
    if step < d0:
        return args.lr * warm
    t = (step - d0) / max(1, args.steps - d0)
    return args.lr * warm * (args.final_lr + (1 - args.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))


def _init_weights(model: LlamaGenTransformer, std: float = 0.02) -> None:
    """LlamaGen's initialisation: normal(0, 0.02) for linear and embedding weights, zero output layer."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=std)
    torch.nn.init.zeros_(model.output.weight)


def make_optimizer(model, args):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename over ``path`` (``atomic_write``)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def run_args(args) -> dict:
    return {k: getattr(args, k) for k in RUN_ARGS}


def export(ckpt: dict, out: str, which: str = "ema", dtype: str = "float32") -> str:
    """Write the GPT weights of a checkpoint as a LlamaGen safetensors file with a training summary."""
    a = ckpt["run_args"]
    sd = ckpt["ema"] if which == "ema" and ckpt.get("ema") is not None else ckpt["model"]
    sd = {k: v.detach().to(getattr(torch, dtype)).cpu().contiguous() for k, v in sd.items()}
    cfg = ckpt["gpt_config"]
    side = round(math.sqrt(cfg["block_size"]))
    last = ckpt["log"][-1] if ckpt["log"] else {}
    summary = {"steps_done": ckpt["step"], "steps_planned": a["steps"], "train_seconds": round(ckpt["train_seconds"], 1),
               "final_loss_ema": last.get("loss_ema"), "weights": which if ckpt.get("ema") is not None else "raw",
               "sittings": ckpt.get("sittings", 1)}
    meta = {"what": "zipar demo c2i GPT (LlamaGen architecture)", "variant": "demo",  # registry defaults
            "n_head": str(cfg["n_head"]),
            "image_size": str(IMAGE_SIZE), "pixels_per_token": str(IMAGE_SIZE // side),
            "config": json.dumps(cfg), "train": json.dumps(a), "summary": json.dumps(summary),
            "final": json.dumps(last), "vq_sha256": ckpt.get("vq_sha256", "")}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write(out, lambda tmp: save_file(sd, tmp, metadata=meta))
    return out


class _Stop:
    """SIGINT / SIGTERM ask the loop to write a checkpoint and stop after the current step."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True
        print(f"signal {signum}: checkpointing and stopping after this step", flush=True)


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt_path = os.path.join(args.run_dir, CKPT_NAME)

    if args.export_only:
        ckpt = torch.load(args.ckpt or ckpt_path, map_location="cpu", weights_only=False)
        export(ckpt, args.out, args.export_weights, args.dtype)
        print(f"exported step {ckpt['step']} ({args.export_weights}) to {args.out}")
        return ckpt

    dev = torch.device(args.device)
    t_start = time.time()
    vq = load_llamagen_vq(args.vq, device=dev)
    if dev.type == "cpu":
        vq = vq.to(memory_format=torch.channels_last)
    vq_sha = file_sha256(args.vq)
    vocab = vq.config.codebook_size
    cfg = gpt_config(args, vocab)

    torch.manual_seed(args.seed)
    model = LlamaGenTransformer(cfg).to(dev).train()
    _init_weights(model)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if args.ema else None
    opt = make_optimizer(model, args)
    step, log, loss_ema, train_seconds, sittings = 0, [], None, 0.0, 1

    if args.resume:
        if not os.path.isfile(ckpt_path):
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        diff = {k: (ckpt["run_args"].get(k), v) for k, v in run_args(args).items() if ckpt["run_args"].get(k) != v}
        if diff and set(diff) <= {"steps", "decay"} and ckpt["step"] <= min(decay_start(args), decay_start(
                argparse.Namespace(**ckpt["run_args"]))):
            # Still before the cool-down of both schedules: the steps so far are those of a run of the new
            # length / cool-down, so the run can be extended (or shortened) and stays reproducible.
            print(f"--resume: {', '.join(f'{k} {a} -> {b}' for k, (a, b) in diff.items())} (at step "
                  f"{ckpt['step']}, before the cool-down of both schedules)", flush=True)
        elif diff:
            raise SystemExit(f"--resume: {ckpt_path} was made with other run arguments (checkpoint, now): {diff}")
        if ckpt["vq_sha256"] != vq_sha:
            raise SystemExit(f"--resume: {ckpt_path} was trained on the codes of another VQ file than {args.vq}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        ema = ckpt["ema"]
        torch.set_rng_state(ckpt["torch_rng"])
        step, log, loss_ema, train_seconds = ckpt["step"], ckpt["log"], ckpt["loss_ema"], ckpt["train_seconds"]
        sittings = ckpt.get("sittings", 1) + 1
        print(f"resumed {ckpt_path} at step {step} ({train_seconds:.0f} s of training so far)", flush=True)
    elif os.path.isfile(ckpt_path):
        raise SystemExit(f"{ckpt_path} exists: pass --resume to continue it, or choose another --run-dir")
    os.makedirs(args.run_dir, exist_ok=True)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"GPT {cfg.n_layer} layers, dim {cfg.dim}, {cfg.n_head} heads, FFN {cfg.hidden_dim}, vocab {vocab}: "
          f"{n_params / 1e6:.2f} M params; {args.steps} steps of {args.batch} fresh images; threads "
          f"{torch.get_num_threads()}", flush=True)

    def checkpoint(path: str) -> None:
        atomic_save({"model": model.state_dict(), "ema": ema, "optimizer": opt.state_dict(),
                     "torch_rng": torch.get_rng_state(), "step": step, "log": log, "loss_ema": loss_ema,
                     "train_seconds": train_seconds, "sittings": sittings, "run_args": run_args(args),
                     "gpt_config": {k: v for k, v in vars(cfg).items()}, "vq_sha256": vq_sha,
                     "argv": list(argv) if argv is not None else sys.argv[1:]}, path)
        def write_log(tmp):
            with open(tmp, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in log)
        atomic_write(os.path.join(args.run_dir, "log.jsonl"), write_log)

    stop = _Stop()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    t_sitting, first = time.time(), step
    try:
        while step < args.steps:
            t_step = time.time()
            x, y = batch_at(step, args, vq, dev, cfg.num_classes)
            lr = lr_at(step, args)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
                logits = model(model.embed_labels(y), x[:, :-1], IMAGE_SIZE // 2)  # position t predicts x[t]
            loss = F.cross_entropy(logits.float().reshape(-1, vocab), x.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            if ema is not None:
                d = min(args.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
            step += 1
            train_seconds += time.time() - t_step
            lv = loss.item()
            loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
            if step % args.log_every == 0 or step == args.steps or step == 1:
                row = {"step": step, "loss": round(lv, 4), "loss_ema": round(loss_ema, 4), "lr": round(lr, 6),
                       "grad_norm": round(float(gnorm), 3), "train_seconds": round(train_seconds, 1)}
                log.append(row)
                print(json.dumps(row), flush=True)
            done = step == args.steps or stop.requested or (args.stop_after and step - first >= args.stop_after)
            if step % args.ckpt_every == 0 or done:
                checkpoint(ckpt_path)
            if args.keep_every and step % args.keep_every == 0:
                checkpoint(os.path.join(args.run_dir, f"ckpt_{step:06d}.pt"))
            if done:
                break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)

    print(f"stopped at step {step} of {args.steps}: this sitting {time.time() - t_sitting:.0f} s "
          f"({step - first} steps), training so far {train_seconds:.0f} s, loss (moving average) "
          f"{loss_ema if loss_ema is not None else float('nan'):.4f}", flush=True)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if step == args.steps and args.out:
        export(ckpt, args.out, args.export_weights, args.dtype)
        print(f"saved {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB; {args.export_weights} weights); "
              f"total {time.time() - t_start:.0f} s", flush=True)
    return ckpt


if __name__ == "__main__":
    main()
