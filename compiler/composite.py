"""Operations the ISA has no instruction for, built exactly from the instructions it has.

* **A Clip whose maximum lies inside the output range** (ReLU6 quantized with the scale 2^-5, range 0..7.97).
  The requantiser saturates only at the ends of the output format, and no power-of-two scale puts 6 there
  (255 x 2^-5 = 7.97, 255 x 2^-6 = 3.98). But rounding and saturation commute with a minimum, so the quantized
  ``Clip(v, 0, top)`` is ``min(r, n)`` with r the quantized ReLU of v and ``n = round_half_even(top / scale)``
  (192 for 6 at 2^-5), and ``min(r, n) = n - relu(n - r)``: two depthwise 1x1 CONVs with weight -1 and bias n.
  When r is a CONV's output and n is even, the first of the two is folded into that CONV: with its weights and
  bias negated and n added to its bias it gives ``relu(n - r)`` itself, since rounding half to even is symmetric
  about an even integer. One extra instruction (or two) per bounded activation, bit-exact.
* **A mean over H x W** (GlobalAveragePool, ReduceMean over H and W): a depthwise CONV whose kernel is the whole
  map, with weights 1; the division by H W is the requantisation's right shift, so it is exact only when H W is
  a power of two (the CONV kernel also limits the map to max_kernel x max_kernel).
* **Space-to-depth** (SpaceToDepth, and any Reshape/Transpose chain that moves every value of a map to another
  channel of a map 2x smaller, as darknet's reorg does): a CONV with stride 2 whose 2x2 kernel holds one weight 1
  per output channel. A MOVE cannot do it: it copies (or upsamples) a tensor to one of the same channel count and
  has no stride, so it cannot pick every second pixel.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shiftpu.arch.numerics import UINT8, ActFormat, Activation, WeightCode, shift_representable
from shiftpu.compiler.ir import ConvOp, FabricOp, MoveOp, QTensor


def _minus_plus(name: str, src: str, dst: str, sources: list[str], channels: int, n: int, act: Activation) -> ConvOp:
    """``dst = act(n - src)``, element by element: a depthwise 1x1 CONV with weight -1, bias n, shift 0."""
    return ConvOp(name, [src], dst, sources, act, 0, weights=np.full((channels, 1, 1, 1), -1, np.int8),
                  bias=np.full(channels, n, np.int64), shift=np.zeros(channels, np.int64), depthwise=True)


def negated_conv(op: ConvOp, n: int, code: WeightCode) -> ConvOp | None:
    """The CONV computing ``relu(n - y)`` with y what ``op`` computes before its activation (rounded, then
    saturated to uint8); None when n is odd, a negated weight is not representable in ``code`` or n is not a
    whole number of accumulator units."""
    if n % 2:
        return None
    w = -op.weights.astype(np.int64)
    if w.max(initial=0) > 127 or not shift_representable(w, code).all():
        return None
    shift = op.shift.astype(np.int64)
    left = np.maximum(-shift, 0)
    if np.any(n % (np.int64(1) << left)):
        return None
    added = np.where(shift >= 0, np.int64(n) << np.maximum(shift, 0), np.int64(n) >> left)
    return replace(op, act=Activation.RELU, leaky_shift=0, weights=w.astype(np.int8),
                   bias=-op.bias.astype(np.int64) + added)


def bounded(op: FabricOp, out: QTensor, n: int, tensors: dict[str, QTensor], code: WeightCode,
            sources: list[str], negated: ConvOp | None = None) -> list[FabricOp]:
    """``op`` (writing ``out``, with ReLU or no activation) followed by the bound of ``out`` at n: the operations
    that compute ``min(op's result, n)`` into ``out``. The intermediate tensors are added to ``tensors``.
    ``negated``: ``op``'s negated form (``negated_conv``), after the caller's accumulator checks; None for the
    two-CONV form."""
    c = out.chw[0]
    t = QTensor(f"{out.name}/clip_neg", out.onnx_shape, UINT8, out.exp)  # n - r, 0..255
    tensors[t.name] = t
    last = _minus_plus(f"{op.name}/clip", t.name, out.name, sources, c, n, op.act)
    if negated is not None:
        return [replace(negated, name=f"{op.name}/negated", output=t.name), last]
    r = QTensor(f"{out.name}/clip_in", out.onnx_shape, ActFormat(8, out.fmt.signed), out.exp)
    tensors[r.name] = r
    first = replace(op, output=r.name)
    return [first, _minus_plus(f"{op.name}/clip_neg", r.name, t.name, sources, c, n, Activation.RELU), last]


def mean_conv(name: str, x: QTensor, out: QTensor, sources: list[str], shift: int) -> ConvOp:
    """The mean of each channel of x over its H x W map (a power of two of values): a depthwise CONV with the map as
    kernel and weights 1; ``shift`` is the requantisation shift (out.exp - x.exp + log2(H W))."""
    c, h, w = x.chw
    return ConvOp(name, [x.name], out.name, sources, weights=np.ones((c, 1, h, w), np.int8),
                  bias=np.zeros(c, np.int64), shift=np.full(c, shift, np.int64), depthwise=True)


def rearrangement(name: str, x: QTensor, out: QTensor, sources: list[str], source: np.ndarray,
                  shift: int) -> FabricOp | None:
    """The operation that moves every value of x to its place in out: ``source[o, y, x]`` is the flat index
    ``(c * H + y) * W + x`` of the input value that lands at (o, y, x). A MOVE when nothing moves; a CONV with
    stride b in {1, 2} and a b x b kernel holding one 1 per output channel when each output channel takes one
    input channel at one offset of each b x b block; None otherwise."""
    c, h, w = x.chw
    co, ho, wo = out.chw
    if source.shape != (co, ho, wo) or co * ho * wo != c * h * w:
        return None
    if np.array_equal(source.ravel(), np.arange(source.size)) and (co, ho, wo) == (c, h, w):
        return MoveOp(name, [x.name], out.name, sources, out_shift=shift)
    for b in (1, 2):
        if (ho * b, wo * b) != (h, w):
            continue
        src_c, src_y, src_x = source // (h * w), source // w % h, source % w
        dy = src_y - b * np.arange(ho)[None, :, None]
        dx = src_x - b * np.arange(wo)[None, None, :]
        first = (src_c[:, :1, :1], dy[:, :1, :1], dx[:, :1, :1])
        if not all(np.array_equal(a, np.broadcast_to(f, a.shape)) for a, f in zip((src_c, dy, dx), first, strict=True)):
            return None
        weights = np.zeros((co, c, b, b), np.int8)
        weights[np.arange(co), first[0].ravel(), first[1].ravel(), first[2].ravel()] = 1
        return ConvOp(name, [x.name], out.name, sources, weights=weights, bias=np.zeros(co, np.int64),
                      shift=np.full(co, shift, np.int64), stride=b)
    return None
