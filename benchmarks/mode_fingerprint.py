"""What every decoding mode produces on the embedded demo model, as digests: run it on two versions of the code to
show that a change kept every mode's tokens and pass counts (the refactor of issue 24 was checked this way).

    python benchmarks/mode_fingerprint.py --json before.json     # on the old checkout
    python benchmarks/mode_fingerprint.py --compare before.json  # on the new one: exit 1 if anything differs

A batch of 10 images (classes 0..9, one generator per image, seeds 0..9), sampled and greedy, with guidance, in
every mode and a few settings of each; per configuration the forward passes, the passes of each image, the
drafts proposed / accepted and a sha256 of the codes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch

CONFIGS = {
    "ntp": dict(mode="ntp"),
    "fixed s=2": dict(mode="fixed", window=2),
    "fixed s=4": dict(mode="fixed", window=4),
    "fixed s=4 paper": dict(mode="fixed", window=4, paper_first_row=True),
    "adaptive s=1": dict(mode="adaptive", window=1),
    "adaptive s=3": dict(mode="adaptive", window=3),
    "sjd L=4 random": dict(mode="sjd", draft_length=4, draft_init="random"),
    "sjd L=8": dict(mode="sjd", draft_length=8),
    "zipar_sjd s=2 L=8": dict(mode="zipar_sjd", window=2, draft_length=8),
    "zipar_sjd s=4 L=4 random": dict(mode="zipar_sjd", window=4, draft_length=4, draft_init="random"),
    "fixed s=3 top_k=50 top_p=0.9": dict(mode="fixed", window=3, top_k=50, top_p=0.9),
    "sjd L=6 guidance_interval=100": dict(mode="sjd", draft_length=6, guidance_interval=100),
}


def fingerprints() -> dict:
    from zipar.demo_model import load_demo_model
    from zipar.zipar_core import ZipARConfig, generate

    torch.set_num_threads(2)
    model = load_demo_model()
    cond = model.prepare(class_labels=list(range(10)), guidance_scale=2.0)
    out = {}
    for temperature in (1.0, 0.0):
        for name, cfg in CONFIGS.items():
            config = ZipARConfig(**cfg, guidance_scale=2.0, temperature=temperature)
            r = generate(model, cond, config, generator=[torch.Generator().manual_seed(s) for s in range(10)])
            out[f"{name}{' greedy' if temperature == 0 else ''}"] = {
                "passes": r.stats.passes, "sample_passes": list(r.stats.sample_passes),
                "drafts": [r.stats.drafts_proposed, r.stats.drafts_accepted],
                "codes_sha256": hashlib.sha256(r.codes.cpu().numpy().tobytes()).hexdigest()[:16]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the fingerprints here")
    p.add_argument("--compare", help="compare with fingerprints written by an earlier run")
    args = p.parse_args(argv)
    with torch.no_grad():
        now = fingerprints()
    for name, f in now.items():
        print(f"{name:<36} passes {f['passes']:>4}  drafts {f['drafts'][1]:>4}/{f['drafts'][0]:<5} {f['codes_sha256']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(now, fh, indent=1)
    if args.compare:
        with open(args.compare) as fh:
            before = json.load(fh)
        differ = [k for k in before if before[k] != now.get(k)]
        print(f"\n{len(before) - len(differ)} of {len(before)} configurations identical" +
              (f"; differ: {', '.join(differ)}" if differ else ""))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
