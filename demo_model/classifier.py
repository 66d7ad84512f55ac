"""A small CNN classifier of the procedural dataset: class accuracy and a feature space for a Frechet
distance (the evaluation's stand-in for Inception features, which would need a download)."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .dataset import NUM_CLASSES

# Not in weights/: that folder is a LlamaGen model folder (one GPT file, one VQ file) for load_model.
WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classifier.safetensors")
FEATURES = 128


class DemoClassifier(nn.Module):
    """32x32 RGB in [-1, 1] -> logits over the 10 classes; ``features`` gives the 128-d penultimate layer."""

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES):
        super().__init__()
        w = width

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(block(3, w), block(w, 2 * w), block(2 * w, 4 * w))  # 32 -> 4
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, FEATURES), nn.ReLU())
        self.fc = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def load_classifier(path: str = WEIGHTS, device="cpu") -> DemoClassifier:
    from safetensors.torch import load_file

    model = DemoClassifier()
    model.load_state_dict(load_file(path), strict=True)
    return model.to(device).eval()


@torch.no_grad()
def classify(model: DemoClassifier, images: np.ndarray, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 32, 32, 3) -> (predicted labels (n,), float64 features (n, 128))."""
    from .dataset import to_tensor

    dev = next(model.parameters()).device
    preds, feats = [], []
    for i in range(0, len(images), batch):
        f = model.features(to_tensor(images[i: i + batch]).to(dev))
        preds.append(model.fc(f).argmax(1).cpu())
        feats.append(f.double().cpu())
    return torch.cat(preds).numpy(), torch.cat(feats).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n, d) (the FID formula).

    tr sqrt(S1 S2) is computed as the trace of sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix, which stays
    exact when the covariances are singular (ReLU features that are always zero)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
