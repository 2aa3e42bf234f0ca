"""The tiny one-stage shapes detector: fabric-friendly ops only, ~4.6 M MACs per 64x64 frame.

Conv 3x3 (strides 1 and 2) with BatchNorm and ReLU or LeakyReLU(1/8), max pooling, a depthwise conv,
a residual add, a nearest 2x upsampling with a concatenation, and a 1x1 head giving the raw
``[5 + classes, 8, 8]`` map that ``shiftpu.sw.detection.decode`` turns into boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GRID = 8
LEAKY_SLOPE = 0.125


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ShapesDetector(nn.Module):
    """64x64 RGB -> [5 + num_classes, 8, 8] raw head values."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.c1 = conv_bn(3, 8)  # 64x64
        self.c2 = conv_bn(8, 16)  # 32x32
        self.dw3 = conv_bn(16, 16, groups=16)  # 16x16 depthwise
        self.pw3 = conv_bn(16, 32, k=1)
        self.c4 = conv_bn(32, 32, stride=2)  # 8x8
        self.c5 = conv_bn(32, 32)
        self.c6 = conv_bn(64, 32, stride=2)  # 16x16 -> 8x8
        self.head = nn.Conv2d(32, 5 + num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.leaky_relu(self.c1(x), LEAKY_SLOPE), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.relu(self.dw3(x))
        skip = F.relu(self.pw3(x))
        y = F.relu(self.c4(skip))
        y = F.relu(y + self.c5(y))
        y = torch.cat([F.interpolate(y, scale_factor=2, mode="nearest"), skip], 1)
        y = F.relu(self.c6(y))
        return self.head(y)


def macs(model: nn.Module, size: int = 64) -> int:
    """Multiply-accumulates of one frame (convolutions only), computed from the layer shapes."""
    total = 0
    hooks = []

    def count(mod: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total += out.shape[1] * out.shape[2] * out.shape[3] * k

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(count))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total
