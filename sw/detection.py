"""One-stage detector post-processing in numpy: head decode, class-wise NMS, and mAP@0.5.

The head is a ``[5 + num_classes, S, S]`` map of raw values per grid cell (batch axis optional):
channels ``tx, ty, tw, th, objectness, class logits...``. A cell (row i, column j) predicts a box centred
at ``((j + sigmoid(tx)) / S, (i + sigmoid(ty)) / S)`` of size ``(sigmoid(tw), sigmoid(th))``, all relative
to the image; its score is ``sigmoid(objectness) * softmax(class logits)[class]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shiftpu.errors import ShiftpuError

#: Channels before the class logits in a head cell.
BOX_CHANNELS = 5


class DetectionError(ShiftpuError, ValueError):
    """A detector head or its description does not have the expected layout."""


@dataclass(frozen=True)
class DecodeParams:
    """How to turn a head map into boxes (stored in a model's sidecar JSON)."""

    num_classes: int
    grid: int  #: S: the head is S x S cells
    image_size: tuple[int, int]  #: (height, width) in pixels the boxes are scaled to
    score_threshold: float = 0.3
    nms_iou: float = 0.45
    max_detections: int = 20

    @classmethod
    def from_json(cls, path: str | Path) -> DecodeParams:
        """Read the ``decode`` section of a detector sidecar file."""
        meta = json.loads(Path(path).read_text())
        d = meta["decode"]
        return cls(num_classes=len(meta["classes"]), grid=int(d["grid"]), image_size=tuple(meta["input"]["shape"][2:]),
                   score_threshold=float(d["score_threshold"]), nms_iou=float(d["nms_iou"]),
                   max_detections=int(d["max_detections"]))


@dataclass
class Detections:
    """Boxes of one image: ``boxes`` [N, 4] as x0, y0, x1, y1 in pixels, ``scores`` [N], ``labels`` [N]."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def decode(head: np.ndarray, params: DecodeParams) -> Detections:
    """All cells' boxes with their best class and score above the threshold, after class-wise NMS."""
    h = np.asarray(head)
    if h.ndim == 4 and h.shape[0] == 1:
        h = h[0]
    want = (BOX_CHANNELS + params.num_classes, params.grid, params.grid)
    if h.shape != want:
        raise DetectionError(f"detector head has shape {list(h.shape)}, expected {list(want)}")
    s = params.grid
    rows, cols = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    cx = (cols + sigmoid(h[0])) / s
    cy = (rows + sigmoid(h[1])) / s
    bw, bh = sigmoid(h[2]), sigmoid(h[3])
    cls_prob = softmax(h[BOX_CHANNELS:], axis=0)
    labels = cls_prob.argmax(axis=0)
    scores = sigmoid(h[4]) * cls_prob.max(axis=0)
    img_h, img_w = params.image_size
    boxes = np.stack([(cx - bw / 2) * img_w, (cy - bh / 2) * img_h, (cx + bw / 2) * img_w, (cy + bh / 2) * img_h], -1)
    keep = scores.ravel() >= params.score_threshold
    det = Detections(boxes.reshape(-1, 4)[keep].astype(np.float32), scores.ravel()[keep].astype(np.float32),
                     labels.ravel()[keep].astype(np.int64))
    kept = classwise_nms(det, params.nms_iou)[: params.max_detections]
    return Detections(det.boxes[kept], det.scores[kept], det.labels[kept])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x0, y0, x1, y1 boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first (ties: lower index first)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest])[0] <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def classwise_nms(det: Detections, iou_threshold: float) -> np.ndarray:
    """NMS within each class; indices into ``det`` sorted by descending score."""
    keep = [np.flatnonzero(det.labels == c)[nms(det.boxes[det.labels == c], det.scores[det.labels == c], iou_threshold)]
            for c in np.unique(det.labels)]
    if not keep:
        return np.zeros(0, dtype=np.int64)
    idx = np.concatenate(keep)
    return idx[np.argsort(-det.scores[idx], kind="stable")]


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC 2010+ all-point interpolation)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


def mean_average_precision(detections: list[Detections], truths: list[Detections], num_classes: int,
                           iou_threshold: float = 0.5) -> tuple[float, list[float]]:
    """mAP over classes (classes without ground truth are skipped) and the AP of each class (nan if skipped).

    ``truths`` hold the ground-truth boxes and labels (scores unused). A detection is a true positive when it
    overlaps a not yet matched ground truth of its class by at least ``iou_threshold``, in descending score order.
    """
    if len(detections) != len(truths):
        raise DetectionError(f"{len(detections)} detection sets for {len(truths)} images")
    aps: list[float] = []
    for c in range(num_classes):
        n_truth = sum(int((t.labels == c).sum()) for t in truths)
        records: list[tuple[float, bool]] = []
        for det, gt in zip(detections, truths, strict=True):
            gt_boxes = gt.boxes[gt.labels == c]
            matched = np.zeros(len(gt_boxes), dtype=bool)
            mask = det.labels == c
            d_boxes, d_scores = det.boxes[mask], det.scores[mask]
            for k in np.argsort(-d_scores, kind="stable"):
                tp = False
                if len(gt_boxes):
                    ious = box_iou(d_boxes[k], gt_boxes)[0]
                    ious[matched] = -1.0
                    j = int(ious.argmax())
                    if ious[j] >= iou_threshold:
                        matched[j] = tp = True
                records.append((float(d_scores[k]), tp))
        if n_truth == 0:
            aps.append(float("nan"))
            continue
        records.sort(key=lambda r: -r[0])
        tps = np.cumsum([r[1] for r in records], dtype=np.float64)
        fps = np.cumsum([not r[1] for r in records], dtype=np.float64)
        recall = tps / n_truth
        precision = tps / np.maximum(tps + fps, 1e-12)
        aps.append(average_precision(recall, precision))
    valid = [a for a in aps if not np.isnan(a)]
    return (float(np.mean(valid)) if valid else 0.0), aps
