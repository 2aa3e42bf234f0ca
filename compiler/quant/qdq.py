"""Builder of the quantized ONNX form (docs/quantized-onnx.md): QDQ nodes, opset 19, default domain.

The QAT exporter and the post-training quantizer both emit their graphs through this builder, so the
two produce the same canonical patterns: per-tensor power-of-two activation scales with zero point 0,
int8 shift-representable weights with per-output-channel power-of-two scales (axis 0), int32 bias at
the accumulator scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shiftpu.arch.numerics import ActFormat, Activation
from shiftpu.compiler.quant.weights import ShiftWeights

#: The opset the quantized form is written in.
OPSET = 19


@dataclass(frozen=True)
class QTensor:
    """A quantized activation: ``name`` is its dequantized (float) value, ``q_name`` the integer one."""

    name: str
    q_name: str
    exponent: int
    fmt: ActFormat

    @property
    def scale(self) -> float:
        return float(np.ldexp(1.0, self.exponent))


def _pow2_array(exponents: np.ndarray) -> np.ndarray:
    return np.ldexp(np.float32(1.0), np.asarray(exponents, dtype=np.int32)).astype(np.float32)


@dataclass
class QdqBuilder:
    """Collects nodes and initializers of one QDQ graph; names are made unique with a counter."""

    graph_name: str = "shiftpu_quantized"
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    def unique(self, hint: str) -> str:
        """A tensor or node name not used yet, based on ``hint``."""
        base = hint.replace("/", "_").replace(".", "_") or "t"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def reserve(self, names: list[str]) -> None:
        """Keep names (e.g. the graph outputs') from being given to intermediate tensors."""
        self._used.update(names)

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.unique(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], hint: str, n_outputs: int = 1, **attrs: object) -> list[str]:
        """Append one node; returns its output names."""
        outs = [self.unique(f"{hint}_out{i}" if n_outputs > 1 else hint) for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.unique(f"{hint}_{op_type}"), **attrs))
        return outs

    def float_input(self, name: str, shape: list[int | str]) -> str:
        self._used.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return name

    def quantize(self, x: str, exponent: int, fmt: ActFormat, hint: str) -> QTensor:
        """QuantizeLinear (with a Clip first for 4-bit formats) and its DequantizeLinear."""
        scale = self.constant(f"{hint}_scale", np.float32(np.ldexp(1.0, exponent)))
        zero = self.constant(f"{hint}_zero", np.zeros((), dtype=fmt.numpy_dtype))
        if fmt.bits < 8:
            lo = self.constant(f"{hint}_clip_lo", np.float32(np.ldexp(float(fmt.qmin), exponent)))
            hi = self.constant(f"{hint}_clip_hi", np.float32(np.ldexp(float(fmt.qmax), exponent)))
            (x,) = self.node("Clip", [x, lo, hi], f"{hint}_clip")
        (q,) = self.node("QuantizeLinear", [x, scale, zero], f"{hint}_q")
        (dq,) = self.node("DequantizeLinear", [q, scale, zero], f"{hint}_dq")
        return QTensor(dq, q, exponent, fmt)

    def requantize_like(self, x: str, like: QTensor, hint: str) -> QTensor:
        """Quantize a value that keeps the scale and format of ``like`` (pooling, flatten, upsampling)."""
        return self.quantize(x, like.exponent, like.fmt, hint)

    def _weights(self, w: ShiftWeights, hint: str) -> str:
        values = self.constant(f"{hint}_w_q", w.values.astype(np.int8))
        scale = self.constant(f"{hint}_w_scale", _pow2_array(w.exponents))
        zero = self.constant(f"{hint}_w_zero", np.zeros(w.exponents.shape, dtype=np.int8))
        (dq,) = self.node("DequantizeLinear", [values, scale, zero], f"{hint}_w_dq", axis=0)
        return dq

    def _bias(self, bias: np.ndarray, x: QTensor, w: ShiftWeights, hint: str) -> str:
        values = self.constant(f"{hint}_b_q", np.asarray(bias, dtype=np.int32))
        scale = self.constant(f"{hint}_b_scale", _pow2_array(w.exponents + x.exponent))
        zero = self.constant(f"{hint}_b_zero", np.zeros(w.exponents.shape, dtype=np.int32))
        (dq,) = self.node("DequantizeLinear", [values, scale, zero], f"{hint}_b_dq", axis=0)
        return dq

    def conv(self, x: QTensor, w: ShiftWeights, bias: np.ndarray, hint: str, *, strides: list[int],
             pads: list[int], dilations: list[int], group: int) -> str:
        """DQ(x), DQ(w), DQ(b) -> Conv; returns the float output."""
        wd, bd = self._weights(w, hint), self._bias(bias, x, w, hint)
        (y,) = self.node("Conv", [x.name, wd, bd], hint, kernel_shape=list(w.values.shape[2:]), strides=strides,
                         pads=pads, dilations=dilations, group=group)
        return y

    def gemm(self, x: QTensor, w: ShiftWeights, bias: np.ndarray, hint: str) -> str:
        """DQ(x), DQ(w [out, in]), DQ(b) -> Gemm(transB=1); returns the float output."""
        wd, bd = self._weights(w, hint), self._bias(bias, x, w, hint)
        (y,) = self.node("Gemm", [x.name, wd, bd], hint, transB=1)
        return y

    def activation(self, x: str, act: Activation, leaky_shift: int, hint: str) -> str:
        """The float activation node fused into requantisation by the compiler (none: x itself)."""
        if act is Activation.RELU:
            return self.node("Relu", [x], f"{hint}_relu")[0]
        if act is Activation.LEAKY:
            return self.node("LeakyRelu", [x], f"{hint}_leaky", alpha=float(np.ldexp(1.0, -leaky_shift)))[0]
        return x

    def clip(self, x: str, top: float, hint: str) -> str:
        """``Clip(x, 0, top)`` (e.g. ReLU6): the compiler runs it as a ReLU whose output it bounds by ``top``."""
        lo = self.constant(f"{hint}_clip_min", np.float32(0.0))
        hi = self.constant(f"{hint}_clip_max", np.float32(top))
        return self.node("Clip", [x, lo, hi], f"{hint}_clip")[0]

    def output(self, value: str, name: str, shape: list[int | str] | None = None) -> None:
        """Expose ``value`` as a float graph output called ``name`` (the tensor is renamed)."""
        if value != name:
            for n in self.nodes:
                n.input[:] = [name if v == value else v for v in n.input]
                n.output[:] = [name if v == value else v for v in n.output]
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))

    def partial(self, outputs: list[str]) -> onnx.ModelProto:
        """The graph built so far with the named tensors as float outputs (unchecked: for calibration runs)."""
        values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
        graph = helper.make_graph(list(self.nodes), self.graph_name, self.inputs, values, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        return model

    def build(self, producer: str = "shiftpu") -> onnx.ModelProto:
        """The finished, shape-inferred and checked model."""
        graph = helper.make_graph(self.nodes, self.graph_name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
        model.ir_version = 9
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        return model
