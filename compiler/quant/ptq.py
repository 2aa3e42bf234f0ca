"""Post-training shift quantization of a float ONNX model to the quantized ONNX form.

The float model is normalised (``fold``), run on calibration data to choose a power-of-two scale per
activation tensor (minimising the squared error), its Conv/Gemm weights are quantized to shift levels
with per-output-channel power-of-two scales (minimising the squared error), and the QDQ graph is written
with the same builder as the QAT exporter. Operations the fabric does not run stay float, between a
DequantizeLinear and a QuantizeLinear, and the report says which and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

import numpy as np
import onnx

from shiftpu.arch.numerics import ActFormat, Activation, WeightCode
from shiftpu.compiler.quant.activations import choose_exponent
from shiftpu.compiler.quant.calibrate import batches, collect_stats, input_spec, session, validate_calibration
from shiftpu.compiler.quant.fold import LAYER_OPS, fold_float_model
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, attr, node_label
from shiftpu.compiler.quant.qdq import QdqBuilder, QTensor
from shiftpu.compiler.quant.report import FloatNode, LayerReport, PtqReport
from shiftpu.compiler.quant.weights import quantize_bias, quantize_weights, sqnr_db

#: Calibration samples used to measure the per-layer SQNR of the report.
REPORT_SAMPLES = 32


@dataclass(frozen=True)
class PtqOptions:
    """How a float model is shift-quantized after training."""

    #: One-term shift codes (0, +-2^e) or two-term codes (+-2^e1 +- 2^e2).
    weight_code: WeightCode = WeightCode.SHIFT4
    #: Activation width in bits: 8, or 4 for the narrow option.
    act_bits: int = 8


class Role(Enum):
    """What a node of the folded float model becomes."""

    LAYER = auto()  #: Conv/Gemm with constant weights: shift weights, int32 bias, requantisation
    COMBINE = auto()  #: Add of two tensors, Concat along channels: new values, new scale
    PASS = auto()  #: MaxPool, Flatten, Identity, nearest 2x Resize: keeps the input's scale
    ACT = auto()  #: ReLU/LeakyReLU not fused into a layer
    FLOAT = auto()  #: stays float on the CPU


def _leaky_k(node: onnx.NodeProto) -> int | None:
    alpha = float(attr(node, "alpha", 0.01))
    k = -np.log2(alpha) if alpha > 0 else np.inf
    return int(k) if k == int(k) and 1 <= k <= 15 else None


def _role(node: onnx.NodeProto, g: GraphIndex) -> tuple[Role, str]:
    """A node's role, and for FLOAT the reason."""
    op = node.op_type
    if op in LAYER_OPS:
        w = g.const(node.input[1])
        if w is None:
            return Role.FLOAT, "its weights are not constant"
        if op == "Conv" and w.ndim != 4:
            return Role.FLOAT, f"{w.ndim - 2}-d convolution (only 2-d)"
        return Role.LAYER, ""
    if op == "Add":
        if any(g.const(i) is not None for i in node.input):
            return Role.FLOAT, "adds a constant (only tensor + tensor runs on the fabric)"
        return Role.COMBINE, ""
    if op == "Concat":
        return (Role.COMBINE, "") if int(attr(node, "axis", 0)) == 1 else (Role.FLOAT, "concatenation not along channels")
    if op == "MaxPool":
        if int(attr(node, "ceil_mode", 0)) or len(node.output) > 1:
            return Role.FLOAT, "ceil_mode or indices output"
        return Role.PASS, ""
    if op in ("Flatten", "Identity"):
        return (Role.PASS, "") if op == "Identity" or int(attr(node, "axis", 1)) == 1 else (Role.FLOAT, "flatten axis != 1")
    if op == "Resize":
        scales = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        mode = attr(node, "mode", b"nearest")
        if mode in (b"nearest", "nearest") and scales is not None and list(scales.ravel()) == [1, 1, 2, 2]:
            return Role.PASS, ""
        return Role.FLOAT, "only nearest upsampling by 2 runs on the fabric"
    if op == "Relu" or (op == "LeakyRelu" and _leaky_k(node) is not None):
        return Role.ACT, ""
    if op == "LeakyRelu":
        return Role.FLOAT, f"slope {attr(node, 'alpha', 0.01)} is not 2^-k"
    if op == "BatchNormalization":
        return Role.FLOAT, "BatchNormalization not after a Conv cannot be folded"
    return Role.FLOAT, f"{op} has no fabric operation"


class _Quantizer:
    def __init__(self, folded: onnx.ModelProto, data: np.ndarray, options: PtqOptions) -> None:
        self.model = folded
        self.g = GraphIndex(folded)
        self.data = data
        self.options = options
        self.b = QdqBuilder(graph_name=folded.graph.name or "shiftpu_ptq")
        self.env: dict[str, QTensor | str] = {}
        self.report = PtqReport(n_calibration=len(data))
        self.layer_tensors: dict[str, tuple[str, str]] = {}  # layer name -> (float tensor, quantized dq name)
        self.roles = {id(n): _role(n, self.g) for n in folded.graph.node}
        self.fused: dict[int, onnx.NodeProto] = {}
        for n in folded.graph.node:
            if self.roles[id(n)][0] in (Role.LAYER, Role.COMBINE) and n.op_type != "Concat":
                users = self.g.consumers.get(n.output[0], [])
                if len(users) == 1 and self.roles[id(users[0])][0] is Role.ACT and n.output[0] not in self.g.graph_outputs:
                    self.fused[id(n)] = users[0]
        self.fused_acts = {id(a) for a in self.fused.values()}

    def calibrate(self) -> None:
        names = set(self.g.graph_inputs)
        for n in self.model.graph.node:
            role = self.roles[id(n)][0]
            if id(n) in self.fused_acts:
                continue
            out = self.fused[id(n)].output[0] if id(n) in self.fused else n.output[0]
            if role in (Role.LAYER, Role.COMBINE, Role.ACT):
                names.add(out)
            if role is not Role.FLOAT:
                names.update(i for i in n.input[:1] if self.g.const(i) is None)
            if role is Role.COMBINE:
                names.update(i for i in n.input if self.g.const(i) is None)
        self.stats = collect_stats(self.model, self.data, sorted(names))

    def fmt(self, signed: bool) -> ActFormat:
        return ActFormat(self.options.act_bits, signed)

    def quantized(self, name: str) -> QTensor:
        """The quantized form of a tensor, quantizing a float one (from the input or a CPU op) on first use."""
        v = self.env[name]
        if isinstance(v, QTensor):
            return v
        st = self.stats[name]
        fmt = self.fmt(signed=st.min < 0)
        q = self.b.quantize(v, choose_exponent(st.values, fmt), fmt, name)
        self.env[name] = q
        return q

    def float_value(self, name: str) -> str:
        v = self.env[name]
        return v.name if isinstance(v, QTensor) else v

    def requantize(self, y: str, out: str, signed: bool) -> QTensor:
        fmt = self.fmt(signed)
        q = self.b.quantize(y, choose_exponent(self.stats[out].values, fmt), fmt, out)
        self.env[out] = q
        return q

    def activation(self, node: onnx.NodeProto, y: str) -> tuple[str, str, Activation]:
        """Apply the fused activation of ``node`` (if any) to ``y``: (value, output tensor name, activation)."""
        act_node = self.fused.get(id(node))
        if act_node is None:
            return y, node.output[0], Activation.NONE
        act = Activation.RELU if act_node.op_type == "Relu" else Activation.LEAKY
        k = _leaky_k(act_node) if act is Activation.LEAKY else 0
        return self.b.activation(y, act, k or 0, node_label(node)), act_node.output[0], act

    def layer(self, node: onnx.NodeProto) -> None:
        x = self.quantized(node.input[0])
        w_float = self.g.const(node.input[1])
        w = quantize_weights(w_float, self.options.weight_code)
        b_float = self.g.const(node.input[2]) if len(node.input) > 2 else np.zeros(w_float.shape[0], np.float32)
        bias = quantize_bias(b_float, w.exponents + x.exponent)
        name = node_label(node)
        if node.op_type == "Conv":
            k = list(w.values.shape[2:])
            y = self.b.conv(x, w, bias, name, strides=list(attr(node, "strides", [1, 1])),
                            pads=list(attr(node, "pads", [0] * 2 * len(k))),
                            dilations=list(attr(node, "dilations", [1, 1])), group=int(attr(node, "group", 1)))
        else:
            y = self.b.gemm(x, w, bias, name)
        y, out, act = self.activation(node, y)
        q = self.requantize(y, out, signed=act is not Activation.RELU)
        self.layer_tensors[name] = (out, q.name)
        self.report.layers.append(LayerReport(name, node.op_type, sqnr_db(w_float, w.dequantize()), float("nan"),
                                              q.exponent, q.fmt, act.name.lower()))

    def combine(self, node: onnx.NodeProto) -> None:
        parts = [self.quantized(i) for i in node.input]
        if node.op_type == "Concat":
            (y,) = self.b.node("Concat", [p.name for p in parts], node_label(node), axis=1)
            self.requantize(y, node.output[0], signed=any(p.fmt.signed for p in parts))
            return
        (y,) = self.b.node("Add", [p.name for p in parts], node_label(node))
        y, out, act = self.activation(node, y)
        self.requantize(y, out, signed=act is not Activation.RELU)

    def copy_node(self, node: onnx.NodeProto, inputs: list[str]) -> list[str]:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return self.b.node(node.op_type, inputs, node_label(node), n_outputs=len(node.output), **attrs)

    def const_or(self, name: str, value_of) -> str:
        c = self.g.const(name)
        if not name:
            return ""
        return self.b.constant(name, c) if c is not None else value_of(name)

    def pass_through(self, node: onnx.NodeProto) -> None:
        x = self.quantized(node.input[0])
        rest = [self.const_or(i, self.float_value) for i in node.input[1:]]
        (y,) = self.copy_node(node, [x.name, *rest])
        self.env[node.output[0]] = self.b.requantize_like(y, x, node.output[0])

    def standalone_act(self, node: onnx.NodeProto) -> None:
        x = self.quantized(node.input[0])
        act = Activation.RELU if node.op_type == "Relu" else Activation.LEAKY
        y = self.b.activation(x.name, act, _leaky_k(node) or 0, node_label(node))
        self.requantize(y, node.output[0], signed=act is not Activation.RELU)

    def float_node(self, node: onnx.NodeProto, reason: str) -> None:
        outs = self.copy_node(node, [self.const_or(i, self.float_value) for i in node.input])
        for orig, new in zip(node.output, outs, strict=True):
            self.env[orig] = new
        self.report.float_nodes.append(FloatNode(node_label(node), node.op_type, reason))

    def run(self) -> tuple[onnx.ModelProto, PtqReport]:
        input_name, shape = input_spec(self.model)
        self.b.reserve(list(self.g.graph_outputs))
        self.env[input_name] = self.b.float_input(input_name, shape)
        self.calibrate()
        handlers = {Role.LAYER: self.layer, Role.COMBINE: self.combine, Role.PASS: self.pass_through,
                    Role.ACT: self.standalone_act}
        for node in self.model.graph.node:
            if id(node) in self.fused_acts:
                continue
            role, reason = self.roles[id(node)]
            if role is Role.FLOAT:
                self.float_node(node, reason)
            else:
                handlers[role](node)
        renamed: dict[str, str] = {}
        for out in self.model.graph.output:
            value = self.float_value(out.name)
            self.b.output(value, out.name)
            renamed[value] = out.name
        model = self.b.build(producer="shiftpu.compiler.quant.ptq")
        self.measure(model, renamed)
        return model, self.report

    def measure(self, model: onnx.ModelProto, renamed: dict[str, str]) -> None:
        """Fill in the output SQNR of every layer and of the model outputs (first REPORT_SAMPLES samples)."""
        input_name, _ = input_spec(model)
        data = self.data[:REPORT_SAMPLES]
        float_names = [f for f, _ in self.layer_tensors.values()] + list(self.g.graph_outputs)
        quant_names = [renamed.get(q, q) for _, q in self.layer_tensors.values()] + list(self.g.graph_outputs)
        ref = _run(self.model, input_name, data, float_names)
        got = _run(model, input_name, data, quant_names)
        for i, r in enumerate(self.report.layers):
            self.report.layers[i] = LayerReport(r.name, r.op_type, r.weight_sqnr_db,
                                                sqnr_db(ref[float_names[i]], got[quant_names[i]]),
                                                r.out_exponent, r.out_fmt, r.activation)
        for name in self.g.graph_outputs:
            self.report.output_sqnr_db[name] = sqnr_db(ref[name], got[name])


def _run(model: onnx.ModelProto, input_name: str, data: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    _, shape = input_spec(model)
    sess = session(model, names)
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in batches(data, shape):
        for n, v in zip(names, sess.run(names, {input_name: batch}), strict=True):
            results[n].append(np.asarray(v))
    return {n: np.concatenate(v) for n, v in results.items()}


def quantize_model(model: onnx.ModelProto, calibration: np.ndarray,
                   options: PtqOptions | None = None) -> tuple[onnx.ModelProto, PtqReport]:
    """The shift-quantized QDQ form of a float model, and the report of what was quantized and how well."""
    options = options or PtqOptions()
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Quant")})
    if quantized:
        raise ModelError(f"the model is already quantized ({', '.join(quantized)} nodes): post-training quantization "
                         "takes a float model (use `shiftpu check`, or `shiftpu import-qonnx` for QONNX/QCDQ graphs)")
    folded = fold_float_model(model)
    g = GraphIndex(folded)
    if not any(_role(n, g)[0] is Role.LAYER for n in folded.graph.node):
        raise ModelError("the model has no quantizable layer (Conv, Gemm or MatMul with constant weights)")
    _, shape = input_spec(folded)
    data = validate_calibration(calibration, shape)
    return _Quantizer(folded, data, options).run()
