"""Pad nodes that fold into the padding of the Conv or MaxPool they feed.

The fabric pads by itself: a CONV reads zeros outside its input, a POOL skips the positions outside it (as an
ONNX MaxPool's own padding, with -inf, does). So a zero Pad before a Conv is that Conv's padding. Before a
MaxPool, a Pad that repeats the edge (mode ``edge``: darknet's size-2 stride-1 maxpool exports as such a Pad
and a MaxPool) or pads with a value no input can be below changes no window's maximum as long as every window
still holds a position of the image: a window is contiguous, so one that holds an image position and a padded
one holds the edge position that the padding repeats (or a value at least as large as the padding). Both
quantizer (on the float model) and compiler (on the quantized one) fold with these rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

#: Widest padding an instruction encodes (its 3-bit pad fields).
MAX_PAD = 7


@dataclass(frozen=True)
class SpatialPad:
    """What a Pad of an N x C x H x W tensor does, on H and W only."""

    pads: tuple[int, int, int, int]  #: top, left, bottom, right
    mode: str  #: "constant", "edge", "reflect" or "wrap"
    value: float  #: the constant of mode "constant"


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def spatial_pad(node: onnx.NodeProto, const: Callable[[str], np.ndarray | None]) -> SpatialPad | None:
    """The padding of a Pad node of a 4-D tensor; None when it pads the batch or channels, crops, or its pads,
    value or axes are not constants."""
    if node.op_type != "Pad":
        return None
    if len(node.input) > 1 and node.input[1]:
        raw = const(node.input[1])
        if raw is None:
            return None
        pads = [int(v) for v in np.asarray(raw).ravel()]
    else:
        pads = [int(v) for v in _attr(node, "pads", [])]
    value = float(_attr(node, "value", 0.0))
    if len(node.input) > 2 and node.input[2]:
        v = const(node.input[2])
        if v is None or np.asarray(v).size != 1:
            return None
        value = float(np.asarray(v).ravel()[0])
    axes = list(range(len(pads) // 2))
    if len(node.input) > 3 and node.input[3]:
        a = const(node.input[3])
        if a is None:
            return None
        axes = [int(v) % 4 for v in np.asarray(a).ravel()]
    if len(pads) != 2 * len(axes):
        return None
    begin, end = dict(zip(axes, pads[: len(axes)], strict=True)), dict(zip(axes, pads[len(axes):], strict=True))
    if any(begin.get(d, 0) or end.get(d, 0) for d in (0, 1)) or min(pads, default=0) < 0 or max(axes, default=0) > 3:
        return None
    return SpatialPad((begin.get(2, 0), begin.get(3, 0), end.get(2, 0), end.get(3, 0)),
                      str(_attr(node, "mode", "constant")), value)


def _windows_meet_image(size: int, kernel: int, stride: int, before: int, after: int) -> bool:
    """Whether every window of a max pooling along one axis holds at least one position of the image."""
    out = (size + before + after - kernel) // stride + 1
    return out >= 1 and before <= kernel - 1 and (out - 1) * stride - before <= size - 1


def conv_pads(pad: SpatialPad, conv_pads: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The Conv's padding with a zero Pad before it folded in; None when the Pad does not fold (another value
    or mode, or more than an instruction encodes)."""
    if pad.mode != "constant" or pad.value != 0.0:
        return None
    total = tuple(a + b for a, b in zip(pad.pads, conv_pads, strict=True))
    return total if max(total) <= MAX_PAD else None  # type: ignore[return-value]


def maxpool_pads(pad: SpatialPad, hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                 pool_pads: tuple[int, int, int, int], lowest: float) -> tuple[int, int, int, int] | None:
    """The MaxPool's padding with the Pad before it folded in, for an input of ``hw`` (unpadded) whose values
    are never below ``lowest``; None when the Pad changes a window's maximum or the result does not fit."""
    if not (pad.mode == "edge" or (pad.mode == "constant" and pad.value <= lowest)):
        return None
    t, left, b, r = (a + c for a, c in zip(pad.pads, pool_pads, strict=True))
    if max(t, left, b, r) > MAX_PAD:
        return None
    if not (_windows_meet_image(hw[0], kernel[0], strides[0], t, b) and
            _windows_meet_image(hw[1], kernel[1], strides[1], left, r)):
        return None
    return t, left, b, r
