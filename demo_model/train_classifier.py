"""Train the evaluation classifier on the procedural dataset.

    python -m zipar.demo_model.train_classifier --out demo_model/classifier.safetensors

Fresh training images every step (seed 0 of the dataset, the same split the VQ and GPT train on), light
augmentation (pixel noise and blur, so that tokenizer artefacts do not fool it); reports accuracy on
held-out images of the held-out seed.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .classifier import DemoClassifier
from .dataset import HELDOUT_SEED, TRAIN_SEED, make_images, to_tensor

# Training images for the classifier start after those the VQ and GPT scripts use by default, so its
# batches are new images; any index range of the training seed would do.
START = 1_000_000


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_model/classifier.safetensors")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = DemoClassifier().train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    t0 = time.time()
    for step in range(args.steps):
        images, labels = make_images(args.batch, TRAIN_SEED, start=START + step * args.batch)
        x = augment(to_tensor(images), gen)
        loss = F.cross_entropy(model(x), torch.from_numpy(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(json.dumps({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - t0, 1)}),
                  flush=True)
    model.eval()
    images, labels = make_images(2000, HELDOUT_SEED)
    with torch.no_grad():
        acc = float((model(to_tensor(images)).argmax(1).numpy() == labels).mean())
    print(f"held-out accuracy {acc:.4f} on 2000 images")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out,
              metadata={"what": "zipar demo classifier", "heldout_accuracy": f"{acc:.4f}", "train": json.dumps(vars(args))})
    print(f"saved {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB) after {time.time() - t0:.0f} s")


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half the batch blurred (3x3 box), all with a little Gaussian pixel noise."""
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5).float()
    x = pick * blur + (1 - pick) * x
    return x + 0.05 * torch.randn(x.shape, generator=gen)


if __name__ == "__main__":
    main()
