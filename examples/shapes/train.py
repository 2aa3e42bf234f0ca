"""Train the shapes detector (float, then shift QAT), export it, and ship it as the demo model.

    .venv/bin/python -m examples.shapes.train [--out shiftpu/models] [--epochs 8] [--qat-epochs 3]

Prints the float and shift-QAT mAP@0.5 on the test split (measured), checks that onnxruntime on the
exported QDQ model equals the PyTorch quantized model bit for bit, and writes ``shapes_detector.onnx``
with its ``shapes_detector.json`` sidecar.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from examples.shapes.model import GRID, ShapesDetector, macs
from shiftpu.compiler.quant.export import export_qdq
from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat
from shiftpu.compiler.quant.qat import freeze_activation_scales
from shiftpu.shapes_dataset import CLASSES, IMAGE_SIZE, SPLIT_SEEDS, ShapesSplit, make_split
from shiftpu.sw.detection import BOX_CHANNELS, DecodeParams, Detections, decode, mean_average_precision

#: Score threshold for mAP (low, so the precision-recall curve is complete) and for display.
MAP_SCORE_THRESHOLD = 0.01
DISPLAY_SCORE_THRESHOLD = 0.3
#: Learning rate of the QAT fine-tuning (the first epoch calibrates the activation scales, later ones keep them).
QAT_LR = 2e-4


def build_targets(split: ShapesSplit, grid: int = GRID, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the head target [5, S, S] (tx, ty, tw, th in (0, 1), objectness) and class map [S, S] (-1: none)."""
    n = len(split.boxes)
    box_t = torch.zeros(n, 5, grid, grid)
    cls_t = torch.full((n, grid, grid), -1, dtype=torch.long)
    for k, (boxes, labels) in enumerate(zip(split.boxes, split.labels, strict=True)):
        for (x0, y0, x1, y1), c in zip(boxes, labels, strict=True):
            cx, cy = (x0 + x1) / 2 / size * grid, (y0 + y1) / 2 / size * grid
            j, i = min(int(cx), grid - 1), min(int(cy), grid - 1)
            box_t[k, :, i, j] = torch.tensor([cx - j, cy - i, (x1 - x0) / size, (y1 - y0) / size, 1.0])
            cls_t[k, i, j] = int(c)
    return box_t, cls_t


def detection_loss(head: torch.Tensor, box_t: torch.Tensor, cls_t: torch.Tensor) -> torch.Tensor:
    """Objectness BCE on all cells, box BCE (on sigmoid outputs) and class cross-entropy on object cells."""
    obj = box_t[:, 4]
    loss = F.binary_cross_entropy_with_logits(head[:, 4], obj, pos_weight=torch.tensor(4.0))
    pos = obj > 0
    if pos.any():
        pred_box = head[:, :4].permute(0, 2, 3, 1)[pos]
        loss = loss + 5.0 * F.binary_cross_entropy_with_logits(pred_box, box_t[:, :4].permute(0, 2, 3, 1)[pos])
        pred_cls = head[:, BOX_CHANNELS:].permute(0, 2, 3, 1)[pos]
        loss = loss + F.cross_entropy(pred_cls, cls_t[pos])
    return loss


def train(model: nn.Module, split: ShapesSplit, epochs: int, lr: float, batch: int = 32, seed: int = 0,
          log: Callable[[str], None] = print) -> None:
    """Adam with cosine decay over the split (fixed shuffling seed)."""
    box_t, cls_t = build_targets(split)
    images = torch.from_numpy(split.images)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * ((len(images) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        for s in range(0, len(images), batch):
            idx = order[s : s + batch]
            loss = detection_loss(model(images[idx]), box_t[idx], cls_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log(f"  epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f}")


def predict(model: nn.Module, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Raw head maps [N, 5 + C, S, S] of the model in eval mode."""
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[s : s + batch])).numpy()
                               for s in range(0, len(images), batch)])


def decode_params(score_threshold: float) -> DecodeParams:
    return DecodeParams(num_classes=len(CLASSES), grid=GRID, image_size=(IMAGE_SIZE, IMAGE_SIZE),
                        score_threshold=score_threshold)


def map50(heads: np.ndarray, split: ShapesSplit) -> float:
    """mAP@0.5 of the head maps against the split's ground truth."""
    params = decode_params(MAP_SCORE_THRESHOLD)
    dets = [decode(h, params) for h in heads]
    truths = [Detections(b, np.ones(len(b), np.float32), lab) for b, lab in zip(split.boxes, split.labels, strict=True)]
    return mean_average_precision(dets, truths, len(CLASSES))[0]


def sidecar(args: argparse.Namespace, float_map: float, qat_map: float, onnx_equal: bool, wall_s: float) -> dict:
    """The description of the shipped model that the runtime and the demo read."""
    n_train, n_test = args.train_images, args.test_images
    return {
        "model": "shapes_detector.onnx",
        "input": {"name": "input", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32", "layout": "NCHW",
                  "preprocessing": "RGB, float32 in [0, 1] (uint8 pixel / 255); no mean or std normalisation"},
        "classes": list(CLASSES),
        "head": {"output": "output", "shape": [1, BOX_CHANNELS + len(CLASSES), GRID, GRID],
                 "channels": ["tx", "ty", "tw", "th", "objectness"] + [f"class:{c}" for c in CLASSES],
                 "box": "centre ((col + sigmoid(tx)) / S, (row + sigmoid(ty)) / S), size (sigmoid(tw), sigmoid(th)), "
                        "relative to the image; score sigmoid(objectness) * softmax(class logits)"},
        "decode": {"function": "shiftpu.sw.detection.decode", "grid": GRID, "score_threshold": DISPLAY_SCORE_THRESHOLD,
                   "nms_iou": 0.45, "max_detections": 20},
        "dataset": {"generator": "shiftpu.shapes_dataset.make_split", "image_size": IMAGE_SIZE,
                    "train": {"seed": SPLIT_SEEDS["train"], "images": n_train},
                    "test": {"seed": SPLIT_SEEDS["test"], "images": n_test}},
        "quantization": {"weights": "shift4, per-output-channel power-of-two scale", "activations": "8-bit, power-of-two",
                         "method": "QAT (examples/shapes/train.py)"},
        "training": {"script": "examples/shapes/train.py", "float_epochs": args.epochs, "qat_epochs": args.qat_epochs,
                     "threads": args.threads, "wall_time_s_measured": round(wall_s)},
        "macs_per_frame": macs(ShapesDetector()),
        "measured": {"map50_float_test": round(float_map, 4), "map50_qat_test": round(float(qat_map), 4),
                     "onnxruntime_equals_pytorch_qat": onnx_equal},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("shiftpu/models"), help="folder for the ONNX file and sidecar")
    ap.add_argument("--train-images", type=int, default=3000)
    ap.add_argument("--test-images", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=8, help="float training epochs")
    ap.add_argument("--qat-epochs", type=int, default=3, help="shift QAT fine-tuning epochs (the first calibrates the activation scales)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--float-weights", type=Path, default=None,
                    help="cache of the float weights: loaded if the file exists, else written after float training")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    train_split, test_split = make_split("train", args.train_images), make_split("test", args.test_images)
    model = ShapesDetector(len(CLASSES))
    if args.float_weights is not None and args.float_weights.is_file():
        print(f"float weights from {args.float_weights}")
        model.load_state_dict(torch.load(args.float_weights))
    else:
        print(f"float training: {args.train_images} images, {args.epochs} epochs")
        train(model, train_split, args.epochs, lr=3e-3)
        if args.float_weights is not None:
            torch.save(model.state_dict(), args.float_weights)
    float_map = map50(predict(model, test_split.images), test_split)
    print(f"float mAP@0.5 (measured, test split of {args.test_images}): {100 * float_map:.2f}")
    qat = prepare_qat(model, QatOptions(input_signed=False))
    print(f"shift QAT: {args.qat_epochs} epochs")
    train(qat, train_split, 1, lr=QAT_LR, seed=1)
    freeze_activation_scales(qat)
    train(qat, train_split, args.qat_epochs - 1, lr=QAT_LR, seed=2)
    qat_heads = predict(qat, test_split.images)
    qat_map = map50(qat_heads, test_split)
    print(f"shift-QAT mAP@0.5 (measured, test split): {100 * qat_map:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "shapes_detector.onnx"
    export_qdq(qat, [1, 3, IMAGE_SIZE, IMAGE_SIZE], onnx_path)
    equal = onnx_equals_torch(onnx_path, test_split.images, qat_heads)
    print(f"onnxruntime on {onnx_path} equals the PyTorch QAT model on all test images: {equal}")
    meta = sidecar(args, float_map, qat_map, equal, time.time() - t0)
    (args.out / "shapes_detector.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {onnx_path} and shapes_detector.json in {time.time() - t0:.0f} s (measured wall time)")


def onnx_equals_torch(path: Path, images: np.ndarray, expected: np.ndarray) -> bool:
    """Whether onnxruntime on the file reproduces ``expected`` exactly."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": images[k : k + 1]})[0] for k in range(len(images))])
    return bool(np.array_equal(got, expected))


if __name__ == "__main__":
    main()
