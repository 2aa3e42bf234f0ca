"""A paper-scale one-stage detector for speed benchmarks: 512x512 RGB in, 20 classes (VOC-like) out.

A SkyNet-style backbone of depthwise-separable bundles (depthwise 3x3 + pointwise 1x1 + BN + ReLU) with max
pooling, a bypass from the stride-16 map (a stride-2 3x3 conv) concatenated with the deep features, a residual
pointwise pair, and a 1x1 head giving ``[5 + 20, 16, 16]`` raw values (grid stride 32). Only operations the
fabric runs. The weights are random (seeded) and the activation scales are calibrated on a few random
images: the model is for timing the accelerator, not for accuracy. Nothing large is committed: call
``write_detector512`` to generate the ONNX file.

    .venv/bin/python -m examples.detector512 build/detector512.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 20
INPUT_SIZE = 512


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


def _bundle(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BN and ReLU."""
    return nn.Sequential(_cbr(cin, cin, 3, groups=cin), _cbr(cin, cout))


class Detector512(nn.Module):
    """512x512 RGB -> [5 + num_classes, 16, 16] raw head values."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = _cbr(3, 24, 3, stride=2)  # 256
        self.b1 = _bundle(24, 48)  # 256 -> pool 128
        self.b2 = _bundle(48, 96)  # 128 -> pool 64
        self.b3 = _bundle(96, 192)  # 64 -> pool 32
        self.b4 = _bundle(192, 384)  # 32 (bypass) -> pool 16
        self.b5 = _bundle(384, 512)  # 16
        self.bypass = _cbr(384, 64, 3, stride=2)  # 32 -> 16
        self.b6 = _bundle(576, 256)
        self.res1 = _cbr(256, 256, 3, groups=256)
        self.res2 = nn.Sequential(nn.Conv2d(256, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.head = nn.Conv2d(256, 5 + num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.b1(self.stem(x)), 2)
        x = F.max_pool2d(self.b2(x), 2)
        x = F.max_pool2d(self.b3(x), 2)
        skip = self.b4(x)
        x = self.b5(F.max_pool2d(skip, 2))
        x = self.b6(torch.cat([x, self.bypass(skip)], 1))
        x = F.relu(x + self.res2(self.res1(x)))
        return self.head(x)


def calibrated_random_qat(model: nn.Module, size: int, seed: int, calibration_images: int) -> nn.Module:
    """``model`` (built with random weights) with seeded random BatchNorm statistics, prepared for shift QAT and
    its activation scales calibrated on ``calibration_images`` random ``size`` x ``size`` images: a model to time
    the accelerator with, not to use."""
    from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    qat = prepare_qat(model.eval(), QatOptions(input_signed=False))
    qat.train()
    with torch.no_grad():
        for _ in range(calibration_images):
            qat(torch.rand(1, 3, size, size, generator=gen))
    return qat


def write_detector512(path: str | Path, seed: int = 0, calibration_images: int = 2) -> onnx.ModelProto:
    """Build the detector with seeded random weights, calibrate on random images, write the shift QDQ ONNX."""
    from shiftpu.compiler.quant.export import export_qdq

    torch.manual_seed(seed)
    qat = calibrated_random_qat(Detector512(), INPUT_SIZE, seed, calibration_images)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return export_qdq(qat, [1, 3, INPUT_SIZE, INPUT_SIZE], path)


def main() -> None:
    ap = argparse.ArgumentParser(description="Write the 512x512 benchmark detector as shift-quantized QDQ ONNX.")
    ap.add_argument("output", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_detector512(args.output, args.seed)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
