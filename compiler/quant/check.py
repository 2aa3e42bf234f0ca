"""``shiftpu check``: does a quantized ONNX model fit the accelerator whole?

Names every node whose weights are not shift-representable, every scale that is not a power of two,
every zero point that is not 0, and every operation the fabric will not run (with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import onnx

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTRUCTION_LAYOUT
from shiftpu.arch.numerics import is_pow2, pow2_exponent, shift_representable
from shiftpu.compiler.padding import conv_pads, maxpool_pads, spatial_pad
from shiftpu.compiler.quant.onnxio import GraphIndex, attr, node_label


class Problem(Enum):
    """Why a node keeps a model from running whole on the accelerator."""

    WEIGHT_NOT_SHIFT = "weights not shift-representable"
    FLOAT_WEIGHT = "weights not quantized"
    SCALE_NOT_POW2 = "scale not a power of two"
    ZERO_POINT = "zero point not 0"
    NOT_PER_TENSOR = "activation scale not per tensor"
    BAD_TYPE = "quantized type not supported"
    BIAS = "bias not int32 at the accumulator scale"
    NOT_QUANTIZED = "input not quantized"
    ATTRIBUTE = "attributes the fabric does not support"
    CPU_OP = "operation not run by the fabric"


@dataclass(frozen=True)
class Finding:
    """One problem at one node."""

    node: str
    op_type: str
    problem: Problem
    detail: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.problem.value}: {self.detail}"


@dataclass
class CheckReport:
    """All findings for one model; ``ok`` when the accelerator can take the model whole."""

    n_nodes: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def lines(self) -> list[str]:
        if self.ok:
            return [f"ok: all {self.n_nodes} nodes fit the accelerator (shift weights, power-of-two scales, zero points 0)"]
        return [str(f) for f in self.findings] + [f"{len(self.findings)} problem(s) in {self.n_nodes} nodes"]


#: Operations that only change the view of a tensor (no fabric instruction needed).
LAYOUT_OPS = frozenset({"Flatten", "Identity"})
_ACT_TYPES = (np.int8, np.uint8)


def _squeeze_single(a: np.ndarray) -> np.ndarray:
    """A one-element array as a scalar array (per-tensor scales come as () or (1,))."""
    return a.reshape(()) if a.size == 1 else a


def _field_max(name: str) -> int:
    return INSTRUCTION_LAYOUT.by_name[name].max


class _Checker:
    def __init__(self, model: onnx.ModelProto, config: AccelConfig) -> None:
        self.g = GraphIndex(model)
        self.config = config
        self.report = CheckReport(len(model.graph.node))
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a model shape inference rejects is reported by the compiler
            inferred = model
        self.shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
                       for vi in list(inferred.graph.input) + list(inferred.graph.value_info)}

    def add(self, node: onnx.NodeProto, problem: Problem, detail: str) -> None:
        self.report.findings.append(Finding(node_label(node), node.op_type, problem, detail))

    def run(self) -> CheckReport:
        for node in self.g.model.graph.node:
            handler = getattr(self, f"_{node.op_type.lower()}", None)
            if node.op_type in LAYOUT_OPS or node.op_type == "Constant":
                continue
            if handler is None:
                self.add(node, Problem.CPU_OP, f"{node.op_type} runs on the CPU")
            else:
                handler(node)
        return self.report

    # -- quantizers -------------------------------------------------------------------------------

    def _scale_zero(self, node: onnx.NodeProto) -> tuple[np.ndarray | None, np.ndarray | None]:
        scale = self.g.const(node.input[1]) if len(node.input) > 1 else None
        zero = self.g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            self.add(node, Problem.SCALE_NOT_POW2, "the scale is not a constant")
        elif not is_pow2(scale).all():
            bad = np.asarray(scale).ravel()[~is_pow2(scale).ravel()][0]
            self.add(node, Problem.SCALE_NOT_POW2, f"scale {float(bad)!r}")
        if zero is not None and np.any(zero != 0):
            self.add(node, Problem.ZERO_POINT, f"zero point {int(np.asarray(zero).ravel()[np.asarray(zero).ravel() != 0][0])}")
        return scale, zero

    def _quantizelinear(self, node: onnx.NodeProto) -> None:
        scale, zero = self._scale_zero(node)
        if scale is not None and np.asarray(scale).size != 1:
            self.add(node, Problem.NOT_PER_TENSOR, f"{np.asarray(scale).size} scales")
        dtype = zero.dtype if zero is not None else np.dtype(np.uint8)
        if dtype not in _ACT_TYPES:
            self.add(node, Problem.BAD_TYPE, f"activations must be int8 or uint8, not {dtype}")

    def _dequantizelinear(self, node: onnx.NodeProto) -> None:
        scale, zero = self._scale_zero(node)
        data = self.g.const(node.input[0])
        if data is None and scale is not None and np.asarray(scale).size != 1:
            self.add(node, Problem.NOT_PER_TENSOR, f"{np.asarray(scale).size} scales")

    # -- layers with weights ----------------------------------------------------------------------

    def _dq_of(self, name: str) -> onnx.NodeProto | None:
        p = self.g.producer.get(name)
        return p if p is not None and p.op_type == "DequantizeLinear" else None

    def _activation_input(self, node: onnx.NodeProto, name: str) -> np.ndarray | None:
        """The scale of a quantized activation input (None, with a finding, when it is not quantized); a Pad between
        is looked through (``_pad`` says whether it folds)."""
        dq = self._dq_of(name)
        pad = self.g.producer.get(name)
        if dq is None and pad is not None and pad.op_type == "Pad":
            dq = self._dq_of(pad.input[0])
        if dq is None or self.g.const(dq.input[0]) is not None:
            self.add(node, Problem.NOT_QUANTIZED, f"input {name!r} does not come from a DequantizeLinear")
            return None
        return self.g.const(dq.input[1])

    def _weights(self, node: onnx.NodeProto) -> np.ndarray | None:
        dq = self._dq_of(node.input[1])
        if dq is None:
            kind = "float initializer" if self.g.const(node.input[1]) is not None else "computed tensor"
            self.add(node, Problem.FLOAT_WEIGHT, f"weights {node.input[1]!r} are a {kind}, not DequantizeLinear(int8)")
            return None
        w = self.g.const(dq.input[0])
        if w is None or w.dtype != np.int8:
            self.add(node, Problem.FLOAT_WEIGHT, "weights are not an int8 initializer")
            return None
        ok = shift_representable(w, self.config.weight_code)
        if not ok.all():
            self.add(node, Problem.WEIGHT_NOT_SHIFT,
                     f"{int((~ok).sum())} of {w.size} weights, e.g. {int(w[~ok].ravel()[0])} "
                     f"({self.config.weight_code.name} codes)")
        return self.g.const(dq.input[1])

    def _bias(self, node: onnx.NodeProto, x_scale: np.ndarray | None, w_scale: np.ndarray | None) -> None:
        if len(node.input) < 3 or not node.input[2]:
            return
        dq = self._dq_of(node.input[2])
        b = self.g.const(dq.input[0]) if dq is not None else None
        if b is None or b.dtype != np.int32:
            self.add(node, Problem.BIAS, "bias is not DequantizeLinear of an int32 initializer")
            return
        if x_scale is not None and w_scale is not None:
            # a per-tensor scale may be a scalar or of shape (1,)
            expected = _squeeze_single(np.asarray(x_scale, np.float64) * np.asarray(w_scale, np.float64))
            got = _squeeze_single(np.asarray(self.g.const(dq.input[1]), np.float64))
            if got.shape != np.broadcast(got, expected).shape or not np.array_equal(np.broadcast_to(got, expected.shape), expected):
                self.add(node, Problem.BIAS, "bias scale differs from input scale x weight scale")

    def _layer(self, node: onnx.NodeProto) -> None:
        x_scale = self._activation_input(node, node.input[0])
        w_scale = self._weights(node)
        self._bias(node, x_scale, w_scale)

    def _conv(self, node: onnx.NodeProto) -> None:
        self._layer(node)
        k = list(attr(node, "kernel_shape", []) or [])
        w = self._weight_array(node)
        if not k and w is not None:
            k = list(w.shape[2:])
        strides = list(attr(node, "strides", [1, 1]))
        pads = list(attr(node, "pads", [0, 0, 0, 0]))
        dil = list(attr(node, "dilations", [1, 1]))
        group = int(attr(node, "group", 1))
        if any(v > self.config.max_kernel for v in k):
            self.add(node, Problem.ATTRIBUTE, f"kernel {k} larger than {self.config.max_kernel}")
        if any(s not in (1, 2) for s in strides):
            self.add(node, Problem.ATTRIBUTE, f"stride {strides} (1 or 2 supported)")
        if any(d != 1 for d in dil):
            self.add(node, Problem.ATTRIBUTE, f"dilation {dil}")
        if any(p > _field_max("pad_t") for p in pads):
            self.add(node, Problem.ATTRIBUTE, f"padding {pads} exceeds {_field_max('pad_t')}")
        if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.add(node, Problem.ATTRIBUTE, "auto_pad (explicit pads needed)")
        if group != 1 and w is not None and not (w.shape[1] == 1 and w.shape[0] == group):
            self.add(node, Problem.ATTRIBUTE, f"grouped convolution with {group} groups (only dense or depthwise)")

    def _weight_array(self, node: onnx.NodeProto) -> np.ndarray | None:
        dq = self._dq_of(node.input[1])
        return self.g.const(dq.input[0]) if dq is not None else self.g.const(node.input[1])

    def _gemm(self, node: onnx.NodeProto) -> None:
        self._layer(node)
        if int(attr(node, "transB", 0)) != 1 or int(attr(node, "transA", 0)) != 0:
            self.add(node, Problem.ATTRIBUTE, "Gemm needs transA=0, transB=1 (weights [out, in])")
        if float(attr(node, "alpha", 1.0)) != 1.0 or float(attr(node, "beta", 1.0)) != 1.0:
            self.add(node, Problem.ATTRIBUTE, "Gemm alpha and beta must be 1")

    def _matmul(self, node: onnx.NodeProto) -> None:
        self._activation_input(node, node.input[0])
        self._weights(node)

    # -- activation-only operations ---------------------------------------------------------------

    def _maxpool(self, node: onnx.NodeProto) -> None:
        self._activation_input(node, node.input[0])
        k = list(attr(node, "kernel_shape", []))
        strides = list(attr(node, "strides", [1] * len(k)))
        if any(v > self.config.max_kernel for v in k) or any(s not in (1, 2) for s in strides):
            self.add(node, Problem.ATTRIBUTE, f"kernel {k}, stride {strides}")
        if int(attr(node, "ceil_mode", 0)) or any(d != 1 for d in attr(node, "dilations", [1])):
            self.add(node, Problem.ATTRIBUTE, "ceil_mode or dilation")

    def _add(self, node: onnx.NodeProto) -> None:
        for name in node.input:
            if self._dq_of(name) is None and self.g.op_of(name) in ("Conv", "Gemm", "MatMul"):
                continue  # the bias Add of a MatMul layer
            self._activation_input(node, name)

    def _concat(self, node: onnx.NodeProto) -> None:
        for name in node.input:
            self._activation_input(node, name)
        if int(attr(node, "axis", 0)) != 1:
            self.add(node, Problem.ATTRIBUTE, f"axis {attr(node, 'axis', 0)} (only channels, axis 1)")

    def _resize(self, node: onnx.NodeProto) -> None:
        self._activation_input(node, node.input[0])
        scales = self.g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        mode = attr(node, "mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "nearest" or scales is None or list(np.asarray(scales).ravel()) != [1.0, 1.0, 2.0, 2.0]:
            self.add(node, Problem.ATTRIBUTE, "only nearest upsampling by 2 (scales 1, 1, 2, 2)")

    def _relu(self, node: onnx.NodeProto) -> None:
        return None

    def _leakyrelu(self, node: onnx.NodeProto) -> None:
        alpha = float(attr(node, "alpha", 0.01))
        k = -np.log2(alpha) if alpha > 0 else np.inf
        if not (k == int(k) and 1 <= k <= _field_max("leaky_shift")):
            self.add(node, Problem.ATTRIBUTE, f"slope {alpha} is not 2^-k, 1 <= k <= {_field_max('leaky_shift')}")

    def _clip(self, node: onnx.NodeProto) -> None:
        bounds = [node.input[i] if len(node.input) > i else "" for i in (1, 2)]
        if any(b and self.g.const(b) is None for b in bounds):
            self.add(node, Problem.ATTRIBUTE, "Clip bounds are not constants")
            return
        lo = self.g.const(bounds[0]) if bounds[0] else None
        users = self.g.consumers.get(node.output[0], [])
        before_q = len(users) == 1 and users[0].op_type == "QuantizeLinear"
        if lo is not None and float(lo) != 0.0 and not before_q:
            self.add(node, Problem.ATTRIBUTE, "only Clip(0, max) (or without a lower bound) runs on the fabric, or the "
                     "range clip of a 4-bit quantizer")

    def _mean_input(self, node: onnx.NodeProto) -> None:
        self._activation_input(node, node.input[0])
        shape = self.shapes.get(node.input[0], [])
        if len(shape) != 4 or 0 in shape:
            return
        h, w = shape[2], shape[3]
        if h * w & (h * w - 1) or max(h, w) > self.config.max_kernel:
            self.add(node, Problem.ATTRIBUTE, f"mean of a {h}x{w} map: the fabric averages maps of a power-of-two "
                     f"number of values, at most {self.config.max_kernel}x{self.config.max_kernel} (one CONV, weights 1)")

    def _globalaveragepool(self, node: onnx.NodeProto) -> None:
        self._mean_input(node)

    def _reducemean(self, node: onnx.NodeProto) -> None:
        axes = attr(node, "axes", None)
        if len(node.input) > 1 and node.input[1]:
            axes = self.g.const(node.input[1])
        if axes is None or sorted(int(a) % 4 for a in np.asarray(axes).ravel()) != [2, 3]:
            self.add(node, Problem.ATTRIBUTE, "only a mean over H and W (axes 2, 3) runs on the fabric")
        self._mean_input(node)

    def _spacetodepth(self, node: onnx.NodeProto) -> None:
        self._activation_input(node, node.input[0])
        if int(attr(node, "blocksize", 0)) != 2:
            self.add(node, Problem.ATTRIBUTE, f"blocksize {attr(node, 'blocksize', 0)} (only 2: a stride-2 CONV)")

    def _pad(self, node: onnx.NodeProto) -> None:
        p = spatial_pad(node, self.g.const)
        users = self.g.consumers.get(node.output[0], [])
        user = users[0] if len(users) == 1 and node.output[0] not in self.g.graph_outputs else None
        dq = self._dq_of(node.input[0])
        folds = False
        if p is not None and user is not None and dq is not None:
            own = tuple(int(v) for v in attr(user, "pads", [0, 0, 0, 0]))
            if user.op_type == "Conv" and len(own) == 4:
                folds = conv_pads(p, own) is not None
            elif user.op_type == "MaxPool" and len(own) == 4:
                shape = self.shapes.get(node.input[0], [])
                k = tuple(int(v) for v in attr(user, "kernel_shape", []))
                s = tuple(int(v) for v in attr(user, "strides", [1, 1]))
                scale, zero = self.g.const(dq.input[1]), self.g.const(dq.input[2]) if len(dq.input) > 2 else None
                if len(shape) == 4 and 0 not in shape and len(k) == len(s) == 2 and scale is not None \
                        and is_pow2(scale).all() and np.asarray(scale).size == 1:
                    signed = zero is not None and zero.dtype == np.int8
                    lowest = (-128.0 if signed else 0.0) * 2.0 ** int(pow2_exponent(scale).ravel()[0])
                    folds = maxpool_pads(p, (shape[2], shape[3]), k, s, own, lowest) is not None
        if not folds:
            self.add(node, Problem.CPU_OP, "Pad runs on the CPU: only a zero Pad before a Conv, or an edge Pad before a "
                     "MaxPool whose windows all keep a position of the image, fold into their padding")


def check_model(model: onnx.ModelProto, config: AccelConfig | None = None) -> CheckReport:
    """Every reason the accelerator (of ``config``) cannot run ``model`` whole; empty when it can."""
    return _Checker(model, config or AccelConfig()).run()
