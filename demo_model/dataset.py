"""A procedural image dataset: 10 classes of shapes and textures, deterministic from a seed.

Each image is drawn from its own random generator, seeded by ``(seed, index)``, so image ``i`` of a seed
is the same whatever ``n`` is and in whatever order images are made. Colours, positions, sizes,
orientations and frequencies are random; the class decides what is drawn. Labels are ``index % 10``
unless given, so any ``n`` that is a multiple of 10 is balanced.

No downloads: the demo model, its tokenizer and the evaluation classifier are trained on these images,
and the evaluation compares samples with held-out images of a seed the training never saw.
"""
from __future__ import annotations

import numpy as np

CLASSES = ("circle", "square", "triangle", "horizontal stripes", "vertical stripes", "checkerboard",
           "linear gradient", "radial gradient", "cross", "blob texture")
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 32

# Seeds of the splits used by the training and evaluation scripts (any seed works for make_images).
TRAIN_SEED = 0
HELDOUT_SEED = 1


# Colours are drawn from a palette (two different entries per image): crisp colours keep the small
# tokenizer and model that are trained on a CPU in minutes accurate.
PALETTE = np.array([
    (0, 0, 0), (255, 255, 255), (128, 128, 128), (220, 40, 40), (40, 170, 60), (40, 80, 220),
    (250, 210, 40), (240, 120, 20), (150, 60, 200), (30, 200, 210), (240, 110, 180), (120, 70, 30),
    (20, 40, 110), (170, 230, 80), (110, 10, 40), (210, 200, 170)], dtype=float) / 255.0


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground: two different random palette colours."""
    a, b = rng.choice(len(PALETTE), size=2, replace=False)
    return PALETTE[a], PALETTE[b]


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [0, 1): y (size, 1), x (1, size)."""
    t = (np.arange(size) + 0.5) / size
    return t[:, None], t[None, :]


def _mask(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """(size, size) float weight of the second colour, in [0, 1]."""
    y, x = _coords(size)
    if label == 0:  # circle
        r = rng.uniform(0.15, 0.35)
        cy, cx = rng.uniform(r, 1 - r, 2)
        return ((y - cy) ** 2 + (x - cx) ** 2 < r * r).astype(float)
    if label == 1:  # square, axis-aligned
        h = rng.uniform(0.15, 0.32)  # half side
        cy, cx = rng.uniform(h, 1 - h, 2)
        return ((np.abs(y - cy) < h) & (np.abs(x - cx) < h)).astype(float)
    if label == 2:  # triangle, pointing up or down
        h = rng.uniform(0.2, 0.35)
        cy, cx = rng.uniform(h, 1 - h, 2)
        t = (y - (cy - h)) / (2 * h)  # 0 at the top, 1 at the bottom of the box
        if rng.random() < 0.5:
            t = 1 - t
        inside = (t >= 0) & (t <= 1) & (np.abs(x - cx) <= h * t)
        return inside.astype(float)
    if label in (3, 4):  # stripes (horizontal / vertical)
        period = rng.uniform(0.18, 0.35)
        phase = rng.uniform(0, period)
        u = y if label == 3 else x
        return (((u + phase) % period) < period / 2).astype(float) * np.ones((size, size))
    if label == 5:  # checkerboard
        period = rng.uniform(0.25, 0.5)
        py, px = rng.uniform(0, period, 2)
        return ((((y + py) // (period / 2)) + ((x + px) // (period / 2))) % 2).astype(float)
    if label == 6:  # linear gradient, random direction
        ang = rng.uniform(0, 2 * np.pi)
        u = (y - 0.5) * np.sin(ang) + (x - 0.5) * np.cos(ang)
        return np.clip(u / 0.71 + 0.5, 0, 1)
    if label == 7:  # radial gradient
        cy, cx = rng.uniform(0.25, 0.75, 2)
        r = rng.uniform(0.4, 0.7)
        return np.clip(np.sqrt((y - cy) ** 2 + (x - cx) ** 2) / r, 0, 1)
    if label == 8:  # cross (plus sign)
        h = rng.uniform(0.2, 0.35)  # half arm length
        w = rng.uniform(0.07, 0.12)  # half arm width
        cy, cx = rng.uniform(h, 1 - h, 2)
        dy, dx = np.abs(y - cy), np.abs(x - cx)
        return (((dy < w) & (dx < h)) | ((dx < w) & (dy < h))).astype(float)
    if label == 9:  # blob texture: thresholded smooth noise
        g = rng.integers(3, 6)
        coarse = rng.random((g + 1, g + 1))
        yi, xi = y[:, 0] * g, x[0] * g
        y0, x0 = np.minimum(yi.astype(int), g - 1), np.minimum(xi.astype(int), g - 1)
        fy, fx = (yi - y0)[:, None], (xi - x0)[None, :]
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep
        c = coarse
        v = (c[y0][:, x0] * (1 - fy) * (1 - fx) + c[y0 + 1][:, x0] * fy * (1 - fx)
             + c[y0][:, x0 + 1] * (1 - fy) * fx + c[y0 + 1][:, x0 + 1] * fy * fx)
        return (v > np.median(v)).astype(float)
    raise ValueError(f"label must be 0..{NUM_CLASSES - 1}, got {label}")


def make_image(seed: int, index: int, label: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``label``, fixed by (seed, index, label)."""
    rng = np.random.default_rng([seed, index, label])
    bg, fg = _colour_pair(rng)
    m = _mask(rng, int(label), size)[..., None]
    img = bg * (1 - m) + fg * m
    return np.round(img * 255).astype(np.uint8)


def make_images(n: int, seed: int = TRAIN_SEED, size: int = IMAGE_SIZE, labels=None,
                start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start+n-1`` of ``seed``: (uint8 (n, size, size, 3), int64 labels (n,)).

    labels: None (``index % 10``) or n class ids.
    """
    idx = np.arange(start, start + n)
    labels = idx % NUM_CLASSES if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"got {labels.shape[0]} labels for {n} images")
    images = np.stack([make_image(seed, int(i), int(c), size) for i, c in zip(idx, labels)]) if n else \
        np.zeros((0, size, size, 3), np.uint8)
    return images, labels.astype(np.int64)


def to_tensor(images: np.ndarray):
    """uint8 (n, H, W, 3) -> float32 torch (n, 3, H, W) in [-1, 1] (the VQ's input range)."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images) -> np.ndarray:
    """torch (n, 3, H, W) in about [-1, 1] -> uint8 (n, H, W, 3)."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_image(images: np.ndarray, cols: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """uint8 (n, H, W, 3) -> one uint8 mosaic, ``cols`` images per row, white padding, upscaled x scale."""
    n, h, w, _ = images.shape
    if scale > 1:
        images = images.repeat(scale, 1).repeat(scale, 2)
        h, w = h * scale, w * scale
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i]
    return out
