"""Detector post-processing (shiftpu.sw.detection), the shapes data set, and the shipped demo detector."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftpu.sw.detection import (
    DecodeParams,
    DetectionError,
    Detections,
    average_precision,
    box_iou,
    classwise_nms,
    decode,
    mean_average_precision,
    nms,
)

MODELS = Path(__file__).resolve().parents[1] / "shiftpu" / "models"
P = DecodeParams(num_classes=2, grid=2, image_size=(32, 32), score_threshold=0.5, nms_iou=0.45)


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_decode_one_cell():
    head = np.full((7, 2, 2), -20.0)
    # cell row 1, col 0: centre offset (0.5, 0.25), size (0.5, 0.25), objectness 0.9, class 1
    head[:, 1, 0] = [0.0, _logit(0.25), 0.0, _logit(0.25), _logit(0.9), 0.0, 10.0]
    det = decode(head[None], P)
    assert len(det) == 1 and det.labels.tolist() == [1]
    cx, cy, w, h = 0.5 / 2 * 32, 1.25 / 2 * 32, 0.5 * 32, 0.25 * 32
    np.testing.assert_allclose(det.boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5)
    assert det.scores[0] == pytest.approx(0.9 / (1 + np.exp(-10.0)), rel=1e-6)


def test_decode_rejects_a_wrong_head():
    with pytest.raises(DetectionError, match=r"shape \[8, 2, 2\], expected \[7, 2, 2\]"):
        decode(np.zeros((8, 2, 2)), P)


def test_iou_and_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    assert box_iou(boxes[0], boxes[1])[0, 0] == pytest.approx(81 / 119)
    assert box_iou(boxes[0], boxes[2])[0, 0] == 0.0
    assert nms(boxes, np.array([0.9, 0.8, 0.7, 0.95]), 0.5).tolist() == [3, 2]
    det = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.95], np.float32), np.array([0, 1, 0, 1]))
    # class-wise: box 0 (class 0) survives box 3 (class 1); box 1 is suppressed by box 3
    assert classwise_nms(det, 0.5).tolist() == [3, 0, 2]


def test_average_precision_known_curve():
    # detections: TP, FP, TP with 2 ground truths -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(
        0.5 * 1.0 + 0.5 * 2 / 3)


def test_map_hand_computed():
    gt = [Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.ones(2, np.float32), np.array([0, 0]))]
    det = [Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30]], np.float32),
                      np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 0]))]
    m, aps = mean_average_precision(det, gt, num_classes=2)
    assert aps[0] == pytest.approx(0.5 + 0.5 * 2 / 3) and np.isnan(aps[1])
    assert m == pytest.approx(aps[0])
    # a duplicate of a matched box is a false positive
    dup = [Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32), np.array([0.9, 0.8], np.float32),
                      np.array([0, 0]))]
    assert mean_average_precision(dup, gt[:1], 1)[0] == pytest.approx(0.5)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_perfect_detections_have_map_one(seed):
    print("seed", seed)
    rng = np.random.default_rng(seed)
    truths = []
    for _ in range(3):
        xy = rng.uniform(0, 50, size=(4, 2))
        wh = rng.uniform(2, 10, size=(4, 2))
        truths.append(Detections(np.hstack([xy, xy + wh]).astype(np.float32), np.ones(4, np.float32),
                                 rng.integers(0, 3, 4)))
    dets = [Detections(t.boxes, rng.uniform(0.1, 1, len(t)).astype(np.float32), t.labels) for t in truths]
    assert mean_average_precision(dets, truths, 3)[0] == pytest.approx(1.0)


def test_sidecar_decode_params():
    p = DecodeParams.from_json(MODELS / "shapes_detector.json")
    meta = json.loads((MODELS / "shapes_detector.json").read_text())
    assert p.num_classes == len(meta["classes"]) == meta["head"]["shape"][1] - 5
    assert p.grid == meta["head"]["shape"][2] == meta["head"]["shape"][3]
    assert p.image_size == (64, 64)
