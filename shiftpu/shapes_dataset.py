"""The shapes data set of the shipped demo detector: 1-3 circles, squares and triangles on a noisy background.

It ships in the package because `shiftpu demo` generates its test images from it (examples/shapes/train.py
trains the detector on its train split).

Every image is a deterministic function of its split seed and index, so the train and test splits are
the same on every machine. Images are float32 RGB in [0, 1], NCHW; boxes are x0, y0, x1, y1 in pixels
(the tight box of the shape's pixels, x1/y1 exclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = 64
#: Seeds of the splits (a split's image k uses the generator seeded with (seed, k)).
SPLIT_SEEDS = {"train": 20261, "test": 20262}
MIN_SIZE, MAX_SIZE = 12, 28
MAX_OBJECTS = 3


@dataclass
class ShapesSplit:
    """Images [N, 3, H, W] float32 and, per image, boxes [n, 4] float32 and labels [n] int64."""

    images: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]


def _mask(cls: int, cx: float, cy: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if cls == 0:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if cls == 1:
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    top = cy - r
    half = r * (yy - top) / (2 * r)
    return (yy >= top) & (yy <= cy + r) & (np.abs(xx - cx) <= half)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max(1e-9, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def make_image(seed: int, index: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image [3, size, size], its boxes [n, 4] and labels [n]."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    base = rng.uniform(0.0, 0.45, size=3)
    img = base[:, None, None] + rng.normal(0.0, 0.08, size=(3, size, size))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(30):
            cls = int(rng.integers(len(CLASSES)))
            r = rng.uniform(MIN_SIZE, MAX_SIZE) / 2
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            m = _mask(cls, cx, cy, r, yy, xx)
            if m.sum() < 16:
                continue
            ys, xs = np.nonzero(m)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
            if all(_overlap(box, b) < 0.15 for b in boxes):
                break
        else:
            continue
        color = rng.uniform(0.55, 1.0, size=3)
        color[rng.integers(3)] *= rng.uniform(0.2, 0.8)
        img[:, m] = color[:, None] + rng.normal(0.0, 0.04, size=(3, int(m.sum())))
        boxes.append(box)
        labels.append(cls)
    return (np.clip(img, 0.0, 1.0).astype(np.float32), np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array(labels, dtype=np.int64))


def make_split(split: str, n: int) -> ShapesSplit:
    """The first ``n`` images of the "train" or "test" split."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    items = [make_image(SPLIT_SEEDS[split], k) for k in range(n)]
    return ShapesSplit(np.stack([i[0] for i in items]), [i[1] for i in items], [i[2] for i in items])
