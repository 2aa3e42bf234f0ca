"""CONV operations from quantized constants: shift-code weights, the bias at the accumulator scale, the
requantisation shifts, and the checks that the accumulator neither overflows nor leaves onnxruntime's exact range.

The Conv, Gemm/MatMul, mean and space-to-depth matchers of ``compiler/qdq_patterns.py`` build their CONVs here.
"""

from __future__ import annotations

import numpy as np
import onnx

from shiftpu.arch.numerics import Activation, WeightCode, shift_representable
from shiftpu.compiler.ir import CompileError, ConvOp, QTensor
from shiftpu.compiler.padding import MAX_PAD
from shiftpu.compiler.qdq_graph import QdqGraph

#: Integers up to this magnitude are exact in float32 (24-bit significand): onnxruntime's sums stay exact below it.
FLOAT32_EXACT = 1 << 24


def weights(g: QdqGraph, name: str, node: onnx.NodeProto, c_out: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The int8 shift-code weights ``name`` of ``node`` and their exponent per output channel (``axis``)."""
    if name not in g.dq_const:
        raise CompileError(f"node '{node.name}': weights '{name}' are not a DequantizeLinear of an int8 constant")
    d = g.dq_const[name]
    if d.values.dtype != np.int8:
        raise CompileError(f"node '{node.name}': weights are {d.values.dtype}, expected int8")
    if d.exps.size not in (1, c_out) or (d.exps.size > 1 and d.axis % d.values.ndim != axis):
        raise CompileError(f"node '{node.name}': weight scale must be per output channel")
    code = g.cfg.weight_code
    bad = ~shift_representable(d.values, code)
    if bad.any():
        why = ""
        if code is WeightCode.SHIFT4 and shift_representable(d.values, WeightCode.SHIFT8_TWO_TERM).all():
            # a mixed-precision model's two-term layer on a one-term accelerator
            why = (": the layer has two-term weights (+-2^e1 +- 2^e2) and this accelerator one-term codes "
                   "(weight_code SHIFT4); compile for one whose weight_code is SHIFT8_TWO_TERM (it runs one-term "
                   "layers too), or quantize the layer with one-term codes")
        raise CompileError(
            f"node '{node.name}': weight {int(d.values[bad].reshape(-1)[0])} is not representable as "
            f"{code.name} shift code{why}")
    return d.values, np.broadcast_to(d.exps.reshape(-1), (c_out,)).astype(np.int64)


def bias(g: QdqGraph, name: str | None, node: onnx.NodeProto, acc_exp: np.ndarray) -> np.ndarray:
    """The bias ``name`` (a quantized or float constant) as integers at the accumulator scale 2^acc_exp."""
    c_out = len(acc_exp)
    if not name:
        return np.zeros(c_out, np.int64)
    if name in g.dq_const:
        d = g.dq_const[name]
        vals = d.values.astype(np.int64).reshape(-1)
        rel = np.broadcast_to(d.exps.reshape(-1), (c_out,)) - acc_exp
        out = np.where(rel >= 0, vals << np.maximum(rel, 0), vals >> np.maximum(-rel, 0))
        exact = np.where(rel >= 0, True, (out << np.maximum(-rel, 0)) == vals)
    elif name in g.consts:
        f = g.consts[name].astype(np.float64).reshape(-1)
        scaled = np.ldexp(f, -acc_exp)
        out = np.round(scaled).astype(np.int64)
        exact = scaled == out
    else:
        raise CompileError(f"node '{node.name}': bias '{name}' is not a constant")
    if not np.all(exact):
        raise CompileError(f"node '{node.name}': bias is not an integer at the accumulator scale")
    return out


def conv_op(g: QdqGraph, name: str, node: onnx.NodeProto, x: QTensor, out: QTensor, w: np.ndarray,
            w_exp: np.ndarray, bias_name: str | None, act: Activation, leaky: int, stride: int,
            pads: tuple[int, int, int, int], depthwise: bool, sources: list[str]) -> ConvOp:
    """The CONV computing ``out`` from ``x``; refused (``CompileError``) where the accelerator cannot run it."""
    cfg = g.cfg
    kh, kw = w.shape[2], w.shape[3]
    if max(kh, kw) > cfg.max_kernel:
        raise CompileError(f"node '{node.name}': kernel {kh}x{kw} exceeds the accelerator's max_kernel {cfg.max_kernel}")
    if stride not in (1, 2):
        raise CompileError(f"node '{node.name}': stride {stride} not supported (1 or 2)")
    if max(pads) > MAX_PAD:
        raise CompileError(f"node '{node.name}': padding {max(pads)} exceeds {MAX_PAD}")
    acc_exp = x.exp + w_exp
    b = bias(g, bias_name, node, acc_exp)
    shifts = out.exp - acc_exp
    for s in shifts:
        g.shift(int(s), node)
    op = ConvOp(name, [x.name], out.name, sources, act, leaky, weights=w.astype(np.int8), bias=b,
                shift=shifts.astype(np.int64), stride=stride, pads=pads, depthwise=depthwise)
    check_accumulator(g, op, x, node)
    return op


def check_accumulator(g: QdqGraph, op: ConvOp, x: QTensor, node: onnx.NodeProto) -> None:
    """Refuse a CONV whose accumulator could overflow; warn where onnxruntime's float32 sum may round."""
    cfg = g.cfg
    in_max = max(-x.fmt.qmin, x.fmt.qmax)
    w = op.weights
    worst = np.abs(op.bias) + np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1) * in_max
    limit = (1 << (cfg.acc_bits - 1)) - 1
    if worst.max() > limit:
        o = int(worst.argmax())
        raise CompileError(
            f"node '{node.name}': accumulator of output channel {o} could reach {int(worst[o])}, "
            f"beyond the {cfg.acc_bits}-bit accumulator ({limit})")
    if worst.max() >= FLOAT32_EXACT:
        o = int(worst.argmax())
        g.warnings.append(
            f"node '{node.name}': accumulator of output channel {o} could reach {int(worst[o])} >= 2^24: exact on "
            f"the accelerator and the golden model, but onnxruntime's float32 sum may round (docs/numerics.md)")
