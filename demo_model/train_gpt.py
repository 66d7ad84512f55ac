"""Train the demo GPT: a small class-conditional LlamaGen on the VQ codes of the procedural dataset.

    python -m zipar.demo_model.train_gpt --vq demo_model/weights/vq_demo.safetensors \
        --out demo_model/weights/c2i_demo_32.safetensors

Architecture: the official LlamaGen GPT (``LlamaGenTransformer``: 2-D RoPE, SwiGLU, RMSNorm, one class
token), small: dim 256, 4 layers, 8 heads, vocabulary = the VQ codebook (512), 10 classes plus the null
class. Next-token prediction on the 16x16 code grids of ``--images`` training images (encoded once and
cached), labels dropped to the null class with probability 0.1 so that classifier-free guidance works.
AdamW, linear warm-up then cosine decay, bfloat16 autocast. The file keeps the official key names and
carries ``n_head``, ``image_size`` and ``pixels_per_token`` in its safetensors metadata, so the standard
LlamaGen loader (``load_llamagen`` / ``load_model``) reads it without extra arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..zipar_core.models.llamagen import LlamaGenConfig, LlamaGenTransformer, load_llamagen_vq
from .dataset import IMAGE_SIZE, NUM_CLASSES, TRAIN_SEED, make_images, to_tensor

GPT_CONFIG = dict(dim=256, n_layer=4, n_head=8, num_classes=NUM_CLASSES, class_dropout_prob=0.1,
                  block_size=256, multiple_of=64)


@torch.no_grad()
def encode_dataset(vq_path: str, n: int, batch: int = 250, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (n, 16, 16) int16 and labels (n,) of training images 0..n-1."""
    vq = load_llamagen_vq(vq_path, device=device)
    codes, labels = [], []
    for i in range(0, n, batch):
        images, lab = make_images(min(batch, n - i), TRAIN_SEED, IMAGE_SIZE, start=i)
        x = to_tensor(images).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            z = vq.quant_conv(vq.encoder(x))
        codes.append(vq.quantize(z.float())[1].short().cpu())
        labels.append(torch.from_numpy(lab))
    return torch.cat(codes), torch.cat(labels)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vq", default="demo_model/weights/vq_demo.safetensors")
    p.add_argument("--out", default="demo_model/weights/c2i_demo_32.safetensors")
    p.add_argument("--images", type=int, default=20000, help="training images (encoded once, then cached)")
    p.add_argument("--cache", default=None, help="where to cache the codes (default: the temp folder)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="dtype of the saved weights")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    t0 = time.time()
    cache = args.cache or os.path.join(tempfile.gettempdir(), f"zipar_demo_codes_{args.images}.pt")
    if os.path.isfile(cache):
        codes, labels = torch.load(cache, weights_only=True)
    else:
        codes, labels = encode_dataset(args.vq, args.images, device=args.device)
        torch.save((codes, labels), cache)
    print(f"{len(codes)} code grids {tuple(codes.shape[1:])} ready after {time.time() - t0:.0f} s; "
          f"{codes.unique().numel()} distinct codes used", flush=True)
    codes = codes.long().flatten(1).to(dev)  # (n, 256)
    labels = labels.long().to(dev)

    torch.manual_seed(args.seed)
    vocab = load_llamagen_vq(args.vq).config.codebook_size
    cfg = LlamaGenConfig(vocab_size=vocab, **GPT_CONFIG)
    model = LlamaGenTransformer(cfg).to(dev).train()
    _init_weights(model)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa: E731
    gen = torch.Generator().manual_seed(args.seed)
    side = round(math.sqrt(codes.shape[1]))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"GPT {cfg.n_layer} layers, dim {cfg.dim}, {cfg.n_head} heads, vocab {vocab}: {n_params / 1e6:.2f} M params",
          flush=True)
    log, t1, ema = [], time.time(), None
    for step in range(args.steps):
        idx = torch.randint(len(codes), (args.batch,), generator=gen).to(dev)
        x, y = codes[idx], labels[idx]
        drop = torch.rand(args.batch, generator=gen).to(dev) < cfg.class_dropout_prob
        y = torch.where(drop, torch.full_like(y, cfg.num_classes), y)  # null class: unconditional
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = model(model.embed_labels(y), x[:, :-1], side)  # (B, 1 + 255, V): position t predicts x[t]
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 25 == 0 or step == args.steps - 1:
            row = {"step": step, "loss": round(loss.item(), 4), "loss_ema": round(ema, 4), "lr": round(lr_at(step), 6),
                   "seconds": round(time.time() - t1, 1)}
            log.append(row)
            print(json.dumps(row), flush=True)

    model.eval()
    dtype = getattr(torch, args.dtype)
    sd = {k: v.detach().to(dtype).cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"what": "zipar demo c2i GPT (LlamaGen architecture)", "n_head": str(cfg.n_head),
            "image_size": str(IMAGE_SIZE), "pixels_per_token": str(IMAGE_SIZE // side),
            "config": json.dumps(GPT_CONFIG), "train": json.dumps(vars(args)), "final": json.dumps(log[-1])}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(sd, args.out, metadata=meta)
    print(f"saved {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB); training {time.time() - t1:.0f} s, "
          f"total {time.time() - t0:.0f} s")


def _init_weights(model: LlamaGenTransformer, std: float = 0.02) -> None:
    """LlamaGen's initialisation: normal(0, 0.02) for linear and embedding weights."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=std)
    torch.nn.init.zeros_(model.output.weight)


if __name__ == "__main__":
    main()
