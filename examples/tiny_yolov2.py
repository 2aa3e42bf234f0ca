"""Tiny-YOLOv2 for speed benchmarks: darknet's yolov2-tiny-voc layout at 512x512 RGB in, 20 classes (VOC) out.

Six Conv3x3-BN-ReLU (16, 32, 64, 128, 256, 512 channels), each followed by a 2x2 max pool: stride 2 after the
first five, after the sixth darknet's size-2 stride-1 pool (the map repeated one pixel to the right and below,
then a 2x2 stride-1 max pool, so the 16x16 map keeps its size); two Conv3x3-BN-ReLU of 1,024 channels; a 1x1
Conv with bias to 5 anchors x (5 + 20) = 125 raw values per cell of the ``[125, 16, 16]`` grid (stride 32).
About 5.3 GMAC per 512x512 frame (``macs``). ReLU stands in for darknet's LeakyReLU(0.1).

The shift QAT export (``prepare_qat``/``export_qdq``) has no Pad, so the stride-1 pool is a plain
``nn.MaxPool2d(2, 1)`` whose edge padding is a forward pre-hook (torch.fx keeps the pool one MaxPool node): the
PyTorch model, float and quantization-aware, computes darknet's pool, and ``write_tiny_yolov2`` puts the same
padding into the written ONNX as an edge ``Pad`` before that MaxPool, darknet's own ONNX form, which the compiler
folds into the POOL's padding on the fabric.

The weights are random (seeded) and the activation scales are calibrated on a few random images: the model is
for timing the accelerator, not for accuracy. Nothing large is committed: call ``write_tiny_yolov2`` to generate
the ONNX file.

    .venv/bin/python -m examples.tiny_yolov2 build/tiny_yolov2.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

NUM_CLASSES = 20
ANCHORS = 5
INPUT_SIZE = 512
#: Output channels of the six conv + pool stages.
STAGES = (16, 32, 64, 128, 256, 512)


def _cbr(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _replicate_right_bottom(module: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
    return (F.pad(args[0], (0, 1, 0, 1), mode="replicate"),)


def darknet_pool() -> nn.MaxPool2d:
    """darknet's size-2 stride-1 max pool: the output keeps the input's size (edge padding right and below)."""
    pool = nn.MaxPool2d(2, stride=1)
    pool.register_forward_pre_hook(_replicate_right_bottom)
    return pool


class TinyYolov2(nn.Sequential):
    """RGB ``[N, 3, S, S]`` (S divisible by 32) -> ``[N, anchors x (5 + num_classes), S / 32, S / 32]`` raw head
    values."""

    def __init__(self, num_classes: int = NUM_CLASSES, anchors: int = ANCHORS) -> None:
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(STAGES):
            layers += [*_cbr(cin, cout), nn.MaxPool2d(2, 2) if i < len(STAGES) - 1 else darknet_pool()]
            cin = cout
        layers += [*_cbr(512, 1024), *_cbr(1024, 1024), nn.Conv2d(1024, anchors * (5 + num_classes), 1)]
        super().__init__(*layers)


def macs(model: nn.Module, size: int = INPUT_SIZE) -> int:
    """Multiply-accumulates of the model's convolutions on one ``size`` x ``size`` frame."""
    total = 0

    def count(conv: nn.Conv2d, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += out.numel() * kh * kw * conv.in_channels // conv.groups

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return total


def _pad_stride1_pools(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with an edge Pad (one pixel right and below) before every stride-1 MaxPool, the written form of
    the pre-hook that ``torch.fx`` and the QAT export do not see, and its shapes inferred again."""
    graph = model.graph
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MaxPool" and list(attrs.get("strides", [1, 1])) == [1, 1]:
            pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), f"{node.name}_edge_pads")
            graph.initializer.append(pads)
            padded = f"{node.input[0]}_edge_padded"
            nodes.append(helper.make_node("Pad", [node.input[0], pads.name], [padded], f"{node.name}_edge_pad",
                                          mode="edge"))
            node.input[0] = padded
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def write_tiny_yolov2(path: str | Path, seed: int = 0, calibration_images: int = 2,
                      size: int = INPUT_SIZE) -> onnx.ModelProto:
    """Build Tiny-YOLOv2 with seeded random weights, calibrate on random ``size`` x ``size`` images, write the
    shift QDQ ONNX."""
    from examples.detector512 import calibrated_random_qat
    from shiftpu.compiler.quant.export import export_qdq

    torch.manual_seed(seed)
    qat = calibrated_random_qat(TinyYolov2(), size, seed, calibration_images)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    exported = _pad_stride1_pools(export_qdq(qat, [1, 3, size, size]))
    onnx.save(exported, str(path))
    return exported


def main() -> None:
    ap = argparse.ArgumentParser(description="Write the 512x512 Tiny-YOLOv2 benchmark model as shift-quantized QDQ "
                                 "ONNX.")
    ap.add_argument("output", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_tiny_yolov2(args.output, args.seed)
    print(f"wrote {args.output}; {macs(TinyYolov2()) / 1e9:.3f} GMAC per {INPUT_SIZE}x{INPUT_SIZE} frame")


if __name__ == "__main__":
    main()
