"""Train the demo VQ tokenizer (LlamaGen's VQModel, small) on the procedural dataset.

    python -m zipar.demo_model.train_vq --out demo_model/weights/vq_demo.safetensors

32x32 images -> 16x16 codes (downsample 2), codebook 512 x 8 with L2-normalised entries. The first
``--ae-steps`` train a plain autoencoder (the L2-normalised latents go to the decoder unquantised); then
the codebook starts as k-means centres of the encoder's latents and training goes on with quantisation.
Loss: MSE + L1 reconstruction plus the quantizer's codebook and commitment losses; codes unused for a
while are restarted on latents of the current batch. Every batch is fresh images of the training seed
(image index = step * batch + i), so a run is reproducible from ``--seed`` alone. On a CPU it runs under
bfloat16 autocast with channels-last tensors (several times faster than float32 there).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..zipar_core.models.llamagen.vq import VQConfig, VQModel
from .dataset import IMAGE_SIZE, TRAIN_SEED, make_images, to_tensor

VQ_CONFIG = dict(codebook_size=512, codebook_embed_dim=8, z_channels=64, ch=32, ch_mult=(1, 2), num_res_blocks=1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_model/weights/vq_demo.safetensors")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--ae-steps", type=int, default=150, help="autoencoder warm-up steps before quantising")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart-every", type=int, default=50, help="restart codes unused for this many steps")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preview", help="save originals over reconstructions of held-out images to this PNG")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    model = VQModel(VQConfig(**VQ_CONFIG)).to(dev).train()
    if dev.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    amp = torch.bfloat16
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    n_codes = VQ_CONFIG["codebook_size"]
    last_used = torch.zeros(n_codes, dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    t0, log = time.time(), []
    for step in range(args.steps):
        images, _ = make_images(args.batch, TRAIN_SEED, IMAGE_SIZE, start=step * args.batch)
        x = to_tensor(images).to(dev)
        if dev.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp):
            z = model.quant_conv(model.encoder(x))
        if step == args.ae_steps:
            kmeans_init(model, args.batch, step, gen)
        if step < args.ae_steps:  # warm-up: no quantisation
            zq = F.normalize(z.float(), dim=1)
            codes = torch.zeros(1, dtype=torch.long)
            losses = {"vq": torch.zeros(()), "commit": torch.zeros(())}
        else:
            zq, codes, losses = model.quantize(z.float())  # nearest-code search in float32
        with torch.autocast(dev.type, dtype=amp):
            rec = model.decode_latents(zq)
        rec = rec.float()
        mse, l1 = F.mse_loss(rec, x), F.l1_loss(rec, x)
        loss = mse + l1 + losses["vq"] + losses["commit"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

        used = codes.flatten().unique().cpu()
        last_used[used] = step
        restarted = 0
        if args.restart_every and step >= args.ae_steps + args.restart_every and step % args.restart_every == 0:
            dead = (last_used < step - args.restart_every).nonzero().flatten()
            if len(dead):
                zf = F.normalize(z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=-1)
                pick = torch.randint(len(zf), (len(dead),), generator=gen)
                with torch.no_grad():
                    model.quantize.embedding.weight[dead.to(dev)] = zf[pick.to(dev)] + 0.01 * torch.randn(
                        len(dead), zf.shape[1], generator=gen).to(dev)
                last_used[dead] = step
                restarted = len(dead)
        if step % 25 == 0 or step == args.steps - 1:
            row = {"step": step, "mse": mse.item(), "l1": l1.item(), "vq": losses["vq"].item(),
                   "commit": losses["commit"].item(), "codes_in_batch": len(used), "restarted": restarted,
                   "seconds": round(time.time() - t0, 1)}
            log.append(row)
            print(json.dumps(row), flush=True)

    model.eval()
    sd = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
          if k != "quantize.codebook_used"}  # a training statistic; the loader fills it
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(sd, args.out, metadata={"what": "zipar demo VQ tokenizer", "config": json.dumps(VQ_CONFIG),
                                      "train": json.dumps(vars(args)), "final": json.dumps(log[-1])})
    print(f"saved {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB) after {time.time() - t0:.0f} s")
    if args.preview:
        save_preview(model, args.preview)


@torch.no_grad()
def kmeans_init(model: VQModel, batch: int, step: int, gen: torch.Generator, batches: int = 8, iters: int = 15) -> None:
    """Codebook <- k-means centres (cosine) of the encoder's L2-normalised latents of fresh images."""
    dev = model.quantize.embedding.weight.device
    zs = []
    for b in range(batches):
        images, _ = make_images(batch, TRAIN_SEED, IMAGE_SIZE, start=10_000_000 + (step + b) * batch)
        z = model.quant_conv(model.encoder(to_tensor(images).to(dev))).float()
        zs.append(F.normalize(z, dim=1).permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    z = torch.cat(zs)
    k = model.quantize.embedding.weight.shape[0]
    centres = z[torch.randperm(len(z), generator=gen)[:k].to(dev)].clone()
    for _ in range(iters):
        assign = (z @ centres.t()).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, z)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        centres = torch.where(empty[:, None], z[torch.randint(len(z), (k,), generator=gen).to(dev)],
                              F.normalize(sums, dim=1))
    model.quantize.embedding.weight.copy_(centres)
    print(f"k-means codebook from {len(z)} latents: {int((~empty).sum())} of {k} centres used", flush=True)


@torch.no_grad()
def save_preview(model: VQModel, path: str, n: int = 20) -> float:
    """Held-out originals (top) over their reconstructions (bottom); returns the reconstruction MSE."""
    import numpy as np
    from PIL import Image

    from .dataset import HELDOUT_SEED, grid_image, to_uint8

    images, _ = make_images(n, HELDOUT_SEED)
    x = to_tensor(images).to(next(model.parameters()).device)
    rec = model.decode_codes(model.encode(x.contiguous()))
    out = to_uint8(rec)
    Image.fromarray(grid_image(np.concatenate([images[:10], out[:10], images[10:], out[10:]]), 10, scale=2)).save(path)
    mse = float(((rec.float().clamp(-1, 1) - x) ** 2).mean())
    print(f"preview {path}: held-out reconstruction MSE {mse:.4f} (images in [-1, 1])")
    return mse


if __name__ == "__main__":
    main()
