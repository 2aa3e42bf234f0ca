"""Numpy CPU operators: the fallback that runs CPU regions where onnxruntime is not installed.

The CPU side of a compiled model normally runs on onnxruntime (:mod:`shiftpu.compiled.cpu_regions`); these kernels
cover the usual boundary operators so that a board without onnxruntime still runs most models. Each takes the
node's attributes and input arrays and returns its outputs, computing in float32 exactly as onnxruntime's CPU
kernels do for the values a QDQ model produces (quantisation with power-of-two scales, element-wise
arithmetic, pooling, shape operations; Sigmoid follows onnxruntime's rational approximation).
:data:`CPU_OPERATORS` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from shiftpu.errors import ShiftpuError


class CpuOpError(ShiftpuError):
    """A CPU node cannot be executed."""


Kernel = Callable[[dict, list[np.ndarray]], list[np.ndarray]]


def _axis_shape(v: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * x.ndim
    shape[axis % x.ndim] = v.size
    return v.reshape(shape)


def quantize_linear(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    x = ins[0].astype(np.float32)
    scale = _axis_shape(ins[1].astype(np.float32), x, a.get("axis", 1))
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), np.uint8)
    info = np.iinfo(zp.dtype)
    q = np.rint(x / scale) + _axis_shape(zp.astype(np.float32), x, a.get("axis", 1))
    return [np.clip(q, info.min, info.max).astype(zp.dtype)]


def dequantize_linear(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    x = ins[0]
    scale = _axis_shape(ins[1].astype(np.float32), x, a.get("axis", 1))
    zp = _axis_shape(ins[2].astype(np.int64), x, a.get("axis", 1)) if len(ins) > 2 and ins[2] is not None else 0
    return [((x.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)]


# Constants of onnxruntime's MLAS logistic kernel (a rational approximation, evaluated with fused multiply-add).
_LOGISTIC_ALPHA = np.array([4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                            8.51377133304701e-03, 2.48287947061529e-01], np.float32)
_LOGISTIC_BETA = np.array([6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                           1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01], np.float32)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray | np.float32) -> np.ndarray:
    """float32 a*b + c with one rounding (the product of two float32 is exact in float64)."""
    return (a.astype(np.float64) * b.astype(np.float64) + np.float64(c)).astype(np.float32)


def sigmoid(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    v = np.clip(ins[0].astype(np.float32), np.float32(-18.0), np.float32(18.0))
    v2 = (v * v).astype(np.float32)
    p = _fma(v2, np.full_like(v2, _LOGISTIC_ALPHA[0]), _LOGISTIC_ALPHA[1])
    for c in _LOGISTIC_ALPHA[2:]:
        p = _fma(p, v2, c)
    p = (p * v).astype(np.float32)
    q = _fma(v2, np.full_like(v2, _LOGISTIC_BETA[0]), _LOGISTIC_BETA[1])
    for c in _LOGISTIC_BETA[2:]:
        q = _fma(q, v2, c)
    r = (p / q).astype(np.float32) + np.float32(0.5)
    return [np.clip(r, np.float32(0.0), np.float32(1.0)).astype(np.float32)]


def _pool(x: np.ndarray, a: dict, reducer: str) -> np.ndarray:
    k = list(a["kernel_shape"])
    s = list(a.get("strides", [1] * len(k)))
    p = list(a.get("pads", [0] * 2 * len(k)))
    if len(k) != 2 or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise CpuOpError(f"{reducer} pooling: only 2-D, ceil_mode=0, dilation 1 is implemented")
    fill = -np.inf if reducer == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=fill)
    oh = (xp.shape[2] - k[0]) // s[0] + 1
    ow = (xp.shape[3] - k[1]) // s[1] + 1
    out = np.full(x.shape[:2] + (oh, ow), fill, np.float32)
    for ky in range(k[0]):
        for kx in range(k[1]):
            win = xp[:, :, ky: ky + s[0] * (oh - 1) + 1: s[0], kx: kx + s[1] * (ow - 1) + 1: s[1]]
            out = np.maximum(out, win)
    return out.astype(np.float32)


def _reshape(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    x, shape = ins[0], [int(v) for v in ins[1]]
    shape = [x.shape[i] if v == 0 and not a.get("allowzero", 0) else v for i, v in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    x = ins[0]
    axis = a.get("axis", 1) % max(x.ndim, 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


def _clip(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    x = ins[0]
    lo = ins[1] if len(ins) > 1 and ins[1] is not None and ins[1].size else None
    hi = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].size else None
    if lo is not None:
        x = np.maximum(x, lo.astype(x.dtype))
    if hi is not None:
        x = np.minimum(x, hi.astype(x.dtype))
    return [x]


def _squeeze(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    axes = tuple(int(v) for v in ins[1]) if len(ins) > 1 else None
    return [np.squeeze(ins[0], axis=axes)]


def _unsqueeze(a: dict, ins: list[np.ndarray]) -> list[np.ndarray]:
    x = ins[0]
    for ax in sorted(int(v) % (x.ndim + len(ins[1])) for v in ins[1]):
        x = np.expand_dims(x, ax)
    return [x]


def _f32(fn: Callable[..., np.ndarray]) -> Kernel:
    return lambda a, ins: [np.asarray(fn(*ins)).astype(np.float32)]


#: op_type -> kernel(attributes, inputs) -> outputs
CPU_OPERATORS: dict[str, Kernel] = {
    "QuantizeLinear": quantize_linear,
    "DequantizeLinear": dequantize_linear,
    "Sigmoid": sigmoid,
    "Relu": lambda a, ins: [np.maximum(ins[0], np.float32(0)).astype(ins[0].dtype)],
    "LeakyRelu": lambda a, ins: [np.where(ins[0] >= 0, ins[0], ins[0] * np.float32(a.get("alpha", 0.01))
                                          ).astype(np.float32)],
    "Clip": _clip,
    "Add": _f32(np.add),
    "Sub": _f32(np.subtract),
    "Mul": _f32(np.multiply),
    "Div": _f32(np.divide),
    "MaxPool": lambda a, ins: [_pool(ins[0], a, "max")],
    "GlobalMaxPool": lambda a, ins: [ins[0].max(axis=(2, 3), keepdims=True)],
    "GlobalAveragePool": lambda a, ins: [
        (ins[0].sum(axis=(2, 3), keepdims=True, dtype=np.float32) / np.float32(ins[0].shape[2] * ins[0].shape[3])
         ).astype(np.float32)],
    "Concat": lambda a, ins: [np.concatenate(ins, axis=a["axis"])],
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": lambda a, ins: [np.transpose(ins[0], a.get("perm"))],
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": lambda a, ins: [ins[0]],
}


def has_kernel(node: onnx.NodeProto) -> bool:
    """Whether :func:`run_node` can execute ``node``."""
    return node.op_type in CPU_OPERATORS and node.domain in ("", "ai.onnx")


def run_node(node: onnx.NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Execute one ONNX node with numpy (``None`` for an omitted optional input)."""
    if not has_kernel(node):
        raise CpuOpError(f"node '{node.name}': no numpy CPU operator for {node.op_type}")
    kernel = CPU_OPERATORS[node.op_type]
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    return kernel(a, inputs)
