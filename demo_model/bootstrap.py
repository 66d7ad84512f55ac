"""Bootstrap confidence intervals for the evaluation's class accuracy and Frechet distance (FD).

Every row of the evaluation draws the same n images: image i asks for class i % 10 and uses generator
seed ``seed + i`` in every decoding mode. The bootstrap therefore resamples *image indices*, stratified by
class (each resample keeps 100 images of each class, like the design), and uses the same index resample
for every row, so rows are paired: a difference between two rows is computed resample by resample and
its interval is much narrower than the two intervals side by side would suggest. The real reference
images (their features are the other side of the FD) are resampled too, also once per resample and
shared by all rows, so an FD interval includes the noise of the reference set.

Intervals: 95%, 1000 resamples, fixed seed. Accuracy: the percentile interval. FD: the *basic*
(reverse percentile) interval. The FD of a finite sample is biased upward by the estimation noise of
the covariances (about tr-size / n: with 128-d features and 1000 samples a few units, which is all of the
FD of real images against real images); a resample with replacement has fewer distinct images and adds
about the same bias again, so percentile intervals of FD sit above the estimate and can miss it and the
true value. The basic interval reflects the resampled values around the estimate, which removes that
bias to first order: it is an interval for the FD of the distributions, and it may lie below the
(biased) point estimate. Differences between rows use the basic interval too (their bias mostly cancels).
"""
from __future__ import annotations

import numpy as np
import torch

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0


def stratified_indices(labels: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) indices into 0..n-1: each row a resample with replacement within every class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(labels)), dtype=np.int64)
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        out[:, pos] = rng.choice(pos, size=(resamples, len(pos)), replace=True)
    return out


def percentile_ci(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval: the central ``level`` of the resampled values."""
    a = (1 - level) / 2
    lo, hi = np.percentile(np.asarray(values, dtype=float), [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def basic_ci(values: np.ndarray, estimate: float, level: float = LEVEL) -> tuple[float, float]:
    """The basic (reverse percentile) interval 2 * estimate - (upper, lower percentile): corrects for the
    bias that resampling shows (the resampled values sit above or below the estimate by about the bias of
    the estimate itself)."""
    lo, hi = percentile_ci(values, level)
    return float(2 * estimate - hi), float(2 * estimate - lo)


def _weighted_stats(x: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (ddof=1) covariance of the rows of x (n, d) repeated ``counts`` (R, n) times: one
    resample per row of counts, no copies of x. Returns (R, d), (R, d, d)."""
    n = counts.sum(1, keepdim=True)  # (R, 1)
    mu = counts @ x / n
    cov = torch.empty(len(counts), x.shape[1], x.shape[1], dtype=x.dtype)
    for c in range(0, len(counts), 25):  # (25, d, n) at a time
        xc = x[None] - mu[c: c + 25, None, :]
        cov[c: c + 25] = (xc * counts[c: c + 25, :, None]).transpose(1, 2) @ xc
    return mu, cov / (n[:, :, None] - 1)


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


def _fd(mu1, s1, mu2, s2, sqrt2) -> torch.Tensor:
    """FD between N(mu1, s1) and N(mu2, s2) (batched over leading dims), given sqrt2 = s2^(1/2): the
    trace of sqrt(s1 s2) is that of sqrt(s2^1/2 s1 s2^1/2), a symmetric PSD matrix."""
    m = sqrt2 @ s1 @ sqrt2
    tr_covmean = torch.linalg.eigvalsh((m + m.transpose(-1, -2)) / 2).clamp(min=0).sqrt().sum(-1)
    tr = lambda a: a.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    return ((mu1 - mu2) ** 2).sum(-1) + tr(s1) + tr(s2) - 2 * tr_covmean


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Same value as ``classifier.frechet_distance`` (computed in torch float64 with b's square root)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    mu2, s2 = _stats(b)
    return float(_fd(*_stats(a), mu2, s2, _sqrtm_psd(s2)))


class Bootstrap:
    """Shared resamples for a set of evaluation rows of the same n and labels.

    ``Bootstrap(labels, real_feats, real_labels)``; then ``accuracy(correct)`` and ``fd(feats)`` return the
    point estimate, the interval and the per-resample values (keep these to compare rows with ``diff``).
    Linear algebra runs in torch float64 (it follows ``torch.set_num_threads``; numpy's threaded BLAS was
    10x slower on a busy 2-core machine).
    """

    def __init__(self, labels: np.ndarray, real_feats: np.ndarray, real_labels: np.ndarray | None = None,
                 resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL, chunk: int = 250):
        self.labels = np.asarray(labels)
        self.level, self.resamples, self.seed, self.chunk = level, resamples, seed, chunk
        self.idx = stratified_indices(self.labels, resamples, seed)
        n = len(self.labels)
        self.counts = torch.from_numpy(np.stack([np.bincount(r, minlength=n) for r in self.idx])).double()
        real = torch.as_tensor(np.asarray(real_feats), dtype=torch.float64)
        real_labels = np.zeros(len(real), int) if real_labels is None else np.asarray(real_labels)
        ridx = stratified_indices(real_labels, resamples, seed + 1)
        rcounts = torch.from_numpy(np.stack([np.bincount(r, minlength=len(real)) for r in ridx])).double()
        self._real_full = _stats(real)
        self._real_full_sqrt = _sqrtm_psd(self._real_full[1])
        self._real = []  # per chunk of resamples: mean, covariance, its square root
        for c in range(0, resamples, chunk):
            mu, cov = _weighted_stats(real, rcounts[c: c + chunk])
            self._real.append((mu, cov, _sqrtm_psd(cov)))

    def accuracy(self, correct: np.ndarray) -> dict:
        correct = np.asarray(correct, dtype=float)
        if correct.shape != self.labels.shape:
            raise ValueError(f"{correct.shape[0]} results for a bootstrap over {self.labels.shape[0]} samples")
        values = self.counts.numpy() @ correct / len(correct)
        return {"value": float(correct.mean()), "ci": percentile_ci(values, self.level), "resampled": values}

    def fd(self, feats: np.ndarray) -> dict:
        x = torch.as_tensor(np.asarray(feats), dtype=torch.float64)
        if len(x) != len(self.labels):
            raise ValueError(f"{len(x)} feature rows for a bootstrap over {len(self.labels)} samples")
        mu_r, s_r = self._real_full
        value = float(_fd(*_stats(x), mu_r, s_r, self._real_full_sqrt))
        values = []
        for c, (mu2, s2, sq2) in zip(range(0, self.resamples, self.chunk), self._real):
            mu1, s1 = _weighted_stats(x, self.counts[c: c + self.chunk])
            values.append(_fd(mu1, s1, mu2, s2, sq2))
        values = torch.cat(values).numpy()
        lo, hi = basic_ci(values, value, self.level)
        return {"value": value, "ci": (max(lo, 0.0), hi), "bias": float(values.mean() - value), "resampled": values}

    def diff(self, a: dict, b: dict, weight_b2: tuple[float, dict] | None = None) -> dict:
        """a - b for two results of this bootstrap (``accuracy`` or ``fd``), paired resample by resample.

        ``weight_b2=(t, b2)``: compare a against the interpolation (1 - t) * b + t * b2 (two neighbours of
        a in passes: b at fewer passes, b2 at more)."""
        vb, value_b = b["resampled"], b["value"]
        if weight_b2 is not None:
            t, b2 = weight_b2
            vb = (1 - t) * vb + t * b2["resampled"]
            value_b = (1 - t) * value_b + t * b2["value"]
        values = a["resampled"] - vb
        value = float(a["value"] - value_b)
        ci = basic_ci(values, value, self.level) if "bias" in a else percentile_ci(values, self.level)
        return {"value": value, "ci": ci, "resampled": values}


def strip(result: dict) -> dict:
    """A result without its per-resample values (for JSON)."""
    return {k: v for k, v in result.items() if k != "resampled"}
