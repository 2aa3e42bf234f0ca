"""Float vs shift-QAT vs PTQ on the handwritten digits shipped with scikit-learn (8x8 images, 10 classes).

    .venv/bin/python -m examples.digits.train [--epochs 20] [--qat-epochs 10] [--out build/digits]

Trains a small CNN in float, fine-tunes it with shift quantization-aware training and exports the QDQ
model, and post-training-quantizes the float ONNX model with ``shiftpu.compiler.quant.ptq``. Prints the
test accuracy of all three (measured) and whether onnxruntime on each exported QDQ model equals the
PyTorch quantized model exactly.
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftpu.compiler.quant.export import export_qdq
from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat
from shiftpu.compiler.quant.ptq import quantize_model

#: Seed of the train/test split (stratified, 25 % test).
SPLIT_SEED = 0


@dataclass
class Digits:
    """Images [N, 1, 8, 8] float32 in [0, 1] and labels [N] int64 of one split."""

    images: np.ndarray
    labels: np.ndarray


def load_digits_splits(test_fraction: float = 0.25) -> tuple[Digits, Digits]:
    """The scikit-learn digits, scaled to [0, 1], split stratified with SPLIT_SEED (``test_fraction`` held out)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=test_fraction,
                                          random_state=SPLIT_SEED, stratify=d.target)
    return Digits(xtr, ytr), Digits(xte, yte)


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))


class DigitsNet(nn.Module):
    """8x8 grey -> 10 logits: three 3x3 conv layers, two max pools, one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = conv_bn(1, 16), conv_bn(16, 32), conv_bn(32, 32)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.max_pool2d(F.relu(self.c3(x)), 2)
        return self.fc(torch.flatten(x, 1))


def train(model: nn.Module, data: Digits, epochs: int, lr: float, batch: int = 64, seed: int = 0) -> None:
    """Adam with cosine decay, cross-entropy, fixed shuffling seed."""
    x, y = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((scores.argmax(axis=1) == labels).mean())


def run_onnx(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    """onnxruntime (CPU) on every image, one at a time when the model's batch is fixed to 1."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    batch = sess.get_inputs()[0].shape[0]
    step = batch if isinstance(batch, int) else len(images)
    return np.concatenate([sess.run(None, {name: images[s : s + step]})[0] for s in range(0, len(images), step)])


def export_float(model: nn.Module, path: Path) -> None:
    """The float model as ordinary ONNX (the input of post-training quantization): a fixed input shape
    (1, 1, 8, 8), as `shiftpu compile` takes it, and its BatchNormalization nodes kept (no constant folding),
    so that `shiftpu quantize --data-free` can synthesise calibration inputs from their statistics."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"], output_names=["logits"])


def main(argv: list[str] | None = None) -> dict[str, float | bool]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="float training epochs")
    ap.add_argument("--qat-epochs", type=int, default=10, help="shift QAT fine-tuning epochs")
    ap.add_argument("--calib", type=int, default=256, help="calibration images for PTQ (from the training split)")
    ap.add_argument("--out", type=Path, default=Path("build/digits"), help="folder for the ONNX files")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    train_set, test_set = load_digits_splits()
    args.out.mkdir(parents=True, exist_ok=True)

    model = DigitsNet()
    train(model, train_set, args.epochs, lr=3e-3)
    acc_float = accuracy(logits(model, test_set.images), test_set.labels)
    export_float(model, args.out / "digits_float.onnx")

    import onnx

    ptq_model, report = quantize_model(onnx.load(str(args.out / "digits_float.onnx")), train_set.images[: args.calib])
    onnx.save(ptq_model, str(args.out / "digits_ptq.onnx"))
    acc_ptq = accuracy(run_onnx(ptq_model.SerializeToString(), test_set.images), test_set.labels)
    for line in report.lines():
        print(line)

    qat = prepare_qat(model, QatOptions(input_signed=False))
    train(qat, train_set, args.qat_epochs, lr=1e-3, seed=1)
    qat_scores = logits(qat, test_set.images)
    acc_qat = accuracy(qat_scores, test_set.labels)
    qat_onnx = export_qdq(qat, [1, 1, 8, 8], args.out / "digits_qat.onnx")
    qat_equal = bool(np.array_equal(run_onnx(qat_onnx.SerializeToString(), test_set.images), qat_scores))

    n = len(test_set.labels)
    print(f"test accuracy on {n} scikit-learn digits (measured): float {acc_float:.2f} %, "
          f"shift QAT {acc_qat:.2f} %, shift PTQ {acc_ptq:.2f} %")
    print(f"onnxruntime on digits_qat.onnx equals the PyTorch QAT model exactly: {qat_equal}")
    print(f"wall time {time.time() - t0:.0f} s (measured)")
    return {"float": acc_float, "qat": acc_qat, "ptq": acc_ptq, "qat_onnx_equal": qat_equal}


if __name__ == "__main__":
    main()
