"""Post-training shift quantization of a float ONNX model to the quantized ONNX form.

The float model is normalised (``fold``), optionally equalised across layer pairs (``equalize``, kept only
where it raises the quantized model's output SQNR on the calibration data), run on calibration data to choose
a power-of-two scale per activation tensor (minimising the squared error), and its Conv/Gemm weights are
quantized to shift levels with per-output-channel power-of-two scales (each layer in its own weight code and
output width where ``PtqOptions.layer_formats`` says so: mixed precision, ``mixed``). The layers are quantized
in graph order; each one sees the output of the layers already quantized, so its weights, scales and bias are chosen
to minimise its output error on the calibration data given the errors before it (``layeropt``: bias
correction, scale search, rounding). A BatchNormalization that stays float is re-estimated so that its output
statistics on the quantized model match the float model's. The QDQ graph is written with the same builder as
the QAT exporter. LeakyReLU slopes that are not powers of two are rounded to the nearest one (``slopes``, the
change reported) unless they are to stay float. Operations the fabric does not run stay float, between a
DequantizeLinear and a QuantizeLinear, and the report says which and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, auto

import numpy as np
import onnx

from shiftpu.arch.numerics import ActFormat, Activation, WeightCode
from shiftpu.compiler.quant.activations import LeakySlope, choose_exponent, leaky_shift_of
from shiftpu.compiler.quant.calibrate import (
    TensorStats,
    batches,
    collect,
    collect_stats,
    input_spec,
    session,
    validate_calibration,
)
from shiftpu.compiler.quant.equalize import EqualisationPair, apply_equalisation, equalisation_factors, find_pairs
from shiftpu.compiler.quant.fold import LAYER_OPS, fold_float_model
from shiftpu.compiler.quant.layeropt import LayerMethods, optimise_layer
from shiftpu.compiler.quant.layerstats import ConvGeometry, LayerStats
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, attr, node_label
from shiftpu.compiler.quant.qdq import QdqBuilder, QTensor
from shiftpu.compiler.quant.report import FloatNode, LayerReport, MethodStep, PtqReport
from shiftpu.compiler.quant.slopes import round_leaky_slopes
from shiftpu.compiler.quant.weights import ShiftWeights, quantize_bias, quantize_weights, sqnr_db

#: Calibration samples used to measure the per-layer SQNR of the report.
REPORT_SAMPLES = 32
#: Values of one tensor kept from the calibration run for the calibration-driven methods (fewer samples
#: are used for a layer whose input is larger than this per sample times the calibration set).
LAYER_INPUT_VALUES = 1 << 22
#: Calibration samples on which equalisation candidates are compared.
EQUALISATION_SAMPLES = 128
#: dB of model output SQNR an equalisation must gain to be kept.
EQUALISATION_MIN_GAIN_DB = 0.05


@dataclass(frozen=True)
class LayerFormat:
    """The formats of one Conv/Gemm layer: its weight code and the width of the activation it outputs."""

    weight_code: WeightCode = WeightCode.SHIFT4
    act_bits: int = 8

    def __post_init__(self) -> None:
        ActFormat(self.act_bits)  # refuses widths other than 4 and 8

    @property
    def label(self) -> str:
        """``one-term/8``, ``two-term/4``, ..."""
        return f"{'one' if self.weight_code is WeightCode.SHIFT4 else 'two'}-term/{self.act_bits}"


@dataclass(frozen=True)
class PtqOptions:
    """How a float model is shift-quantized after training."""

    #: One-term shift codes (0, +-2^e) or two-term codes (+-2^e1 +- 2^e2).
    weight_code: WeightCode = WeightCode.SHIFT4
    #: Activation width in bits: 8, or 4 for the narrow option.
    act_bits: int = 8
    #: Each weight rounded down, up or to zero by the layer output error on calibration data (the slow part).
    adaround: bool = True
    #: Per-output-channel weight scales chosen by the layer output error instead of the weight error.
    scale_search: bool = True
    #: The mean layer output error from weight quantization removed through the bias.
    bias_correction: bool = True
    #: Cross-layer equalisation with power-of-two factors, kept where it raises the output SQNR.
    equalize: bool = True
    #: BatchNormalization nodes that stay float re-estimated on the quantized model's activations.
    bn_reestimate: bool = True
    #: Seed of every random choice (calibration rows sampled, order of the rounding sweeps).
    seed: int = 0
    #: LeakyReLU slopes that are not 2^-k: rounded to the nearest (on the fabric, the change reported) or kept
    #: (float, on the CPU).
    leaky_slope: LeakySlope = LeakySlope.ROUND
    #: Per-layer formats (mixed precision, ``mixed``), by layer name as the report gives it; a layer not named
    #: takes ``weight_code`` and ``act_bits``, as does every activation that is not a layer's output.
    layer_formats: Mapping[str, LayerFormat] = field(default_factory=dict)

    @classmethod
    def fast(cls, weight_code: WeightCode = WeightCode.SHIFT4, act_bits: int = 8,
             leaky_slope: LeakySlope = LeakySlope.ROUND) -> PtqOptions:
        """No calibration-driven weight method: nearest rounding and weight-error scales (the quickest)."""
        return cls(weight_code, act_bits, adaround=False, scale_search=False, bias_correction=False,
                   equalize=False, bn_reestimate=False, leaky_slope=leaky_slope)

    def layer_format(self, layer: str) -> LayerFormat:
        """The formats of the layer called ``layer``."""
        return self.layer_formats.get(layer) or LayerFormat(self.weight_code, self.act_bits)

    @property
    def layer_methods(self) -> LayerMethods:
        """The per-layer methods (``layeropt``) these options turn on."""
        return LayerMethods(self.bias_correction, self.scale_search, self.adaround)

    @property
    def uses_layer_inputs(self) -> bool:
        """Whether the calibration-driven methods need the float and quantized inputs of layers."""
        return self.adaround or self.scale_search or self.bias_correction or self.bn_reestimate


class Role(Enum):
    """What a node of the folded float model becomes."""

    LAYER = auto()  #: Conv/Gemm with constant weights: shift weights, int32 bias, requantisation
    COMBINE = auto()  #: Add of two tensors, Concat along channels: new values, new scale
    PASS = auto()  #: MaxPool, Flatten, Identity, nearest 2x Resize, SpaceToDepth: keeps the input's scale
    MEAN = auto()  #: GlobalAveragePool, ReduceMean over H and W: new values, new scale
    ACT = auto()  #: ReLU, LeakyReLU, Clip(0, top) (e.g. ReLU6); fused into the layer before it where it can be
    FLOAT = auto()  #: stays float on the CPU


def _fused_activations(model: onnx.ModelProto, g: GraphIndex,
                       roles: dict[int, tuple[Role, str]]) -> dict[int, onnx.NodeProto]:
    """Layer or Add node -> the activation node fused into its requantisation (its only consumer)."""
    fused: dict[int, onnx.NodeProto] = {}
    for n in model.graph.node:
        if roles[id(n)][0] in (Role.LAYER, Role.COMBINE) and n.op_type != "Concat":
            users = g.consumers.get(n.output[0], [])
            if len(users) == 1 and roles[id(users[0])][0] is Role.ACT and n.output[0] not in g.graph_outputs:
                fused[id(n)] = users[0]
    return fused


def quantized_layers(folded: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, bool]]:
    """The Conv/Gemm layers of a folded float model (``fold_float_model``) in graph order, each with the tensor
    its output format applies to (the output of its fused activation, if any) and whether that is signed."""
    g = GraphIndex(folded)
    roles = {id(n): _role(n, g) for n in folded.graph.node}
    fused = _fused_activations(folded, g, roles)
    out = []
    for n in folded.graph.node:
        if roles[id(n)][0] is Role.LAYER:
            act = fused.get(id(n))
            out.append((n, n.output[0] if act is None else act.output[0],
                        act is None or _activation(act) is not Activation.RELU))
    return out


def _leaky_k(node: onnx.NodeProto) -> int | None:
    return leaky_shift_of(float(attr(node, "alpha", 0.01)))


def _clip_top(node: onnx.NodeProto, g: GraphIndex) -> float | None:
    """``top`` of a ``Clip(x, 0, top)`` with constant bounds, top > 0 (a bounded ReLU, e.g. ReLU6); else None."""
    if node.op_type != "Clip" or len(node.input) < 3 or not node.input[1] or not node.input[2]:
        return None
    lo, hi = g.const(node.input[1]), g.const(node.input[2])
    if lo is None or hi is None or lo.size != 1 or hi.size != 1 or float(lo) != 0.0 or not float(hi) > 0.0:
        return None
    return float(hi)


def _mean_over_hw(node: onnx.NodeProto, g: GraphIndex) -> bool:
    """Whether a ReduceMean averages over H and W only (axes as an attribute or, from opset 18, an input)."""
    axes = attr(node, "axes", None)
    if len(node.input) > 1 and node.input[1]:
        axes = g.const(node.input[1])
    return axes is not None and sorted(int(a) % 4 for a in np.asarray(axes).ravel()) == [2, 3]


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
    if op == "SpaceToDepth":
        if int(attr(node, "blocksize", 0)) == 2:
            return Role.PASS, ""
        return Role.FLOAT, "only blocks of 2 x 2 (the largest stride is 2)"
    if op == "GlobalAveragePool" or (op == "ReduceMean" and _mean_over_hw(node, g)):
        return Role.MEAN, ""
    if op == "Relu" or (op == "LeakyRelu" and _leaky_k(node) is not None) or _clip_top(node, g) is not None:
        return Role.ACT, ""
    if op == "LeakyRelu":
        return Role.FLOAT, f"slope {attr(node, 'alpha', 0.01)} is not 2^-k (--leaky-slope cpu keeps it)"
    if op == "Clip":
        return Role.FLOAT, "only Clip(0, top) with constant bounds, top > 0, runs on the fabric"
    if op == "BatchNormalization":
        return Role.FLOAT, "BatchNormalization not after a Conv cannot be folded"
    if op in ("Reshape", "Transpose"):
        return Role.FLOAT, (f"{op} moves values only: a chain of such nodes that is a space-to-depth (a reorg) runs "
                            "on the fabric as a CONV after compile, any other on the CPU")
    return Role.FLOAT, f"{op} has no fabric operation"


class _Quantizer:
    def __init__(self, folded: onnx.ModelProto, data: np.ndarray, options: PtqOptions,
                 reference: onnx.ModelProto | None = None, stats: dict[str, TensorStats] | None = None,
                 nearest_cache: dict | None = None) -> None:
        self.model = folded
        #: activation statistics of the float model on ``data`` already collected (they hold ``stat_names()``)
        self.given_stats = stats
        #: layer weights quantized by nearest rounding in earlier quantizations of the same model's variants (the
        #: equalisation candidates): (digest, shape, code) -> (float weights, shift weights, weight SQNR)
        self.nearest_cache = {} if nearest_cache is None else nearest_cache
        self.weight_sqnr: dict[str, float] = {}  # layer name -> weight SQNR taken from nearest_cache
        #: the float model the report's model-output SQNR is measured against (the model before its LeakyReLU
        #: slopes were rounded)
        self.reference = reference or folded
        self.g = GraphIndex(folded)
        self.data = data
        self.options = options
        self.b = QdqBuilder(graph_name=folded.graph.name or "shiftpu_ptq")
        self.env: dict[str, QTensor | str] = {}
        self.report = PtqReport(n_calibration=len(data))
        self.layer_tensors: dict[str, tuple[str, str]] = {}  # layer name -> (float tensor, quantized dq name)
        self.roles = {id(n): _role(n, self.g) for n in folded.graph.node}
        self.fused = _fused_activations(folded, self.g, self.roles)
        self.fused_acts = {id(a) for a in self.fused.values()}
        self.layer_inputs: dict[str, tuple[str, str]] = {}  # layer name -> (float input, quantized dq name)
        self.float_inputs: dict[str, np.ndarray] = {}  # layer input -> float model values (first samples)
        self.n_layers = 0

    def stat_names(self) -> list[str]:
        """The tensors whose activation statistics the quantization reads."""
        names = set(self.g.graph_inputs)
        for n in self.model.graph.node:
            role = self.roles[id(n)][0]
            if id(n) in self.fused_acts:
                continue
            out = self.fused[id(n)].output[0] if id(n) in self.fused else n.output[0]
            if role in (Role.LAYER, Role.COMBINE, Role.ACT, Role.MEAN):
                names.add(out)
            if role is not Role.FLOAT:
                names.update(i for i in n.input[:1] if self.g.const(i) is None)
            if role is Role.COMBINE:
                names.update(i for i in n.input if self.g.const(i) is None)
        return sorted(names)

    def calibrate(self) -> None:
        if self.given_stats is not None:
            self.stats = self.given_stats
        else:
            self.stats = collect_stats(self.model, self.data, self.stat_names())

    def fmt(self, signed: bool, bits: int | None = None) -> ActFormat:
        return ActFormat(bits or self.options.act_bits, signed)

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

    def requantize(self, y: str, out: str, signed: bool, bits: int | None = None) -> QTensor:
        fmt = self.fmt(signed, bits)
        q = self.b.quantize(y, choose_exponent(self.stats[out].values, fmt), fmt, out)
        self.env[out] = q
        return q

    def activation(self, node: onnx.NodeProto, y: str) -> tuple[str, str, Activation]:
        """Apply the fused activation of ``node`` (if any) to ``y``: (value, output tensor name, activation)."""
        act_node = self.fused.get(id(node))
        if act_node is None:
            return y, node.output[0], Activation.NONE
        return self.apply_activation(act_node, y, node_label(node)), act_node.output[0], _activation(act_node)

    def apply_activation(self, act_node: onnx.NodeProto, y: str, hint: str) -> str:
        """The activation node ``act_node`` written on the value ``y``."""
        top = _clip_top(act_node, self.g)
        if top is not None:
            return self.b.clip(y, top, hint)
        act = _activation(act_node)
        return self.b.activation(y, act, (_leaky_k(act_node) or 0) if act is Activation.LEAKY else 0, hint)

    def capture_inputs(self) -> None:
        """Keep the float model's input of every layer (and of every float BatchNormalization) on the first
        calibration samples: as many as LAYER_INPUT_VALUES allows for the tensor."""
        m = self.options.layer_methods
        layers = m.bias_correction or m.scale_search or m.rounding
        names = [n.input[0] for n in self.model.graph.node
                 if layers and self.roles[id(n)][0] is Role.LAYER
                 or self.options.bn_reestimate and n.op_type == "BatchNormalization"]
        names = list(dict.fromkeys(names))
        if not names:
            return
        input_name, shape = input_spec(self.model)
        fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 1
        inner = [n for n in names if n != input_name]
        sizes = {n: v[0].size for n, v in _run(self.model, input_name, self.data[:fixed], inner).items()}
        sizes[input_name] = self.data[0].size
        whole = len(self.data) // fixed * fixed  # a fixed batch runs whole batches only
        counts = {n: int(np.clip(LAYER_INPUT_VALUES // max(sizes[n], 1) // fixed * fixed, fixed, whole))
                  for n in names}
        values = _run(self.model, input_name, self.data[: max(counts.values(), default=0)], inner)
        values[input_name] = self.data
        self.float_inputs = {n: values[n][: counts[n]] for n in names}

    def quantized_values(self, name: str, n: int) -> np.ndarray:
        """A tensor of the quantized graph built so far, on the first ``n`` calibration samples."""
        input_name, _ = input_spec(self.model)
        return _run(self.b.partial([name]), input_name, self.data[:n], [name])[name]

    def layer_weights(self, node: onnx.NodeProto, x: QTensor, w_float: np.ndarray,
                      b_float: np.ndarray) -> tuple[ShiftWeights, np.ndarray, tuple[tuple[str, float], ...]]:
        """Shift weights, the float bias to quantize, and the SQNR after each calibration-driven method."""
        methods = self.options.layer_methods
        code = self.options.layer_format(node_label(node)).weight_code
        if not (methods.bias_correction or methods.scale_search or methods.rounding):
            key = (hashlib.sha1(np.ascontiguousarray(w_float).tobytes()).hexdigest(), w_float.shape, code)
            hit = self.nearest_cache.get(key)
            if hit is None or not np.array_equal(hit[0], w_float):
                w = quantize_weights(w_float, code)
                hit = self.nearest_cache[key] = (w_float, w, sqnr_db(w_float, w.dequantize()))
            self.weight_sqnr[node_label(node)] = hit[2]
            return hit[1], b_float, ()
        xf = self.float_inputs[node.input[0]]
        xq = self.quantized_values(x.name, len(xf))
        n = min(len(xf), len(xq))
        if node.op_type == "Conv":
            geo = ConvGeometry(tuple(w_float.shape[2:]), tuple(attr(node, "strides", [1, 1])),
                               tuple(attr(node, "pads", [0, 0, 0, 0])), tuple(attr(node, "dilations", [1, 1])),
                               int(attr(node, "group", 1)))
        else:
            geo = ConvGeometry()
        rng = np.random.default_rng([self.options.seed, self.n_layers])
        stats = LayerStats.collect(xf[:n], xq[:n], geo, rng)
        result = optimise_layer(w_float, b_float, stats, code, methods, rng)
        return result.weights, result.bias, result.steps

    def layer(self, node: onnx.NodeProto) -> None:
        x = self.quantized(node.input[0])
        w_float = self.g.const(node.input[1])
        b_float = self.g.const(node.input[2]) if len(node.input) > 2 else np.zeros(w_float.shape[0], np.float32)
        w, b_float, steps = self.layer_weights(node, x, w_float, b_float)
        self.n_layers += 1
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
        q = self.requantize(y, out, signed=act is not Activation.RELU, bits=self.options.layer_format(name).act_bits)
        self.layer_tensors[name] = (out, q.name)
        self.layer_inputs[name] = (node.input[0], x.name)
        act_node = self.fused.get(id(node))
        label = _activation_label(act_node, self.g) if act_node is not None else "none"
        weight_sqnr = self.weight_sqnr.get(name)
        if weight_sqnr is None:
            weight_sqnr = sqnr_db(w_float, w.dequantize())
        self.report.layers.append(LayerReport(name, node.op_type, weight_sqnr, float("nan"),
                                              q.exponent, q.fmt, label, steps))

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
        y = self.apply_activation(node, x.name, node_label(node))
        self.requantize(y, node.output[0], signed=_activation(node) is not Activation.RELU)

    def mean(self, node: onnx.NodeProto) -> None:
        x = self.quantized(node.input[0])
        rest = [self.const_or(i, self.float_value) for i in node.input[1:]]
        (y,) = self.copy_node(node, [x.name, *rest])
        self.requantize(y, node.output[0], signed=x.fmt.signed)

    def reestimated_bn(self, node: onnx.NodeProto) -> list[str] | None:
        """The inputs of a float BatchNormalization with its mean and variance re-estimated so that its output
        on the quantized model has the float model's per-channel mean and variance; None when that does not
        lower the output error on the calibration data (or the node's parameters are not constant)."""
        params = [self.g.const(i) for i in node.input[1:5]]
        if any(p is None for p in params) or node.input[0] not in self.float_inputs:
            return None
        label = node_label(node)
        eps = float(attr(node, "epsilon", 1e-5))
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        xf = self.float_inputs[node.input[0]].astype(np.float64)
        xq = self.quantized_values(self.float_value(node.input[0]), len(xf)).astype(np.float64)
        axes = (0, *range(2, xf.ndim))
        shape = (1, -1) + (1,) * (xf.ndim - 2)

        def bn(x: np.ndarray, m: np.ndarray, v: np.ndarray) -> np.ndarray:
            return gamma.reshape(shape) * (x - m.reshape(shape)) / np.sqrt(v + eps).reshape(shape) + beta.reshape(shape)

        std_f, std_q = xf.std(axis=axes), xq.std(axis=axes)
        ratio = np.where(std_f > 0, std_q / np.where(std_f > 0, std_f, 1.0), 1.0)
        new_var = np.maximum((var + eps) * ratio**2 - eps, 0.0)
        new_mean = xq.mean(axis=axes) - (xf.mean(axis=axes) - mean) * ratio
        ref = bn(xf, mean, var)
        before, after = sqnr_db(ref, bn(xq, mean, var)), sqnr_db(ref, bn(xq, new_mean, new_var))
        if before == float("inf"):
            self.report.bn_reestimation.append(MethodStep(label, before, before, False,
                                                          "its input is exact (nothing to re-estimate)"))
            return None
        kept = after > before
        self.report.bn_reestimation.append(MethodStep(label, before, after, kept))
        if not kept:
            return None
        return [self.float_value(node.input[0]), *(self.b.constant(n, p.astype(np.float32)) for n, p in
                                                    ((f"{label}_scale", gamma), (f"{label}_bias", beta),
                                                     (f"{label}_mean", new_mean), (f"{label}_var", new_var)))]

    def float_node(self, node: onnx.NodeProto, reason: str) -> None:
        inputs = None
        if node.op_type == "BatchNormalization" and self.options.bn_reestimate:
            inputs = self.reestimated_bn(node)
        outs = self.copy_node(node, inputs or [self.const_or(i, self.float_value) for i in node.input])
        for orig, new in zip(node.output, outs, strict=True):
            self.env[orig] = new
        self.report.float_nodes.append(FloatNode(node_label(node), node.op_type, reason))

    def run(self, measure: bool = True) -> tuple[onnx.ModelProto, PtqReport]:
        """The quantized model and its report; ``measure=False`` leaves out the report's SQNR measurement
        (a run of the float and the quantized model on REPORT_SAMPLES samples with every layer's input and output
        kept), for a quantization that is only scored (an equalisation candidate)."""
        input_name, shape = input_spec(self.model)
        self.b.reserve(list(self.g.graph_outputs))
        self.env[input_name] = self.b.float_input(input_name, shape)
        self.calibrate()
        if self.options.uses_layer_inputs:
            self.capture_inputs()
        handlers = {Role.LAYER: self.layer, Role.COMBINE: self.combine, Role.PASS: self.pass_through,
                    Role.ACT: self.standalone_act, Role.MEAN: self.mean}
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
        if measure:
            self.measure(model, renamed)
        return model, self.report

    def measure(self, model: onnx.ModelProto, renamed: dict[str, str]) -> None:
        """Fill in the input and output SQNR of every layer (against the float model quantized, equalised and with
        its slopes rounded) and of the model outputs (against the float model as given), on the first REPORT_SAMPLES
        samples."""
        input_name, _ = input_spec(model)
        data = self.data[:REPORT_SAMPLES]
        float_names = [f for f, _ in self.layer_tensors.values()]
        quant_names = [renamed.get(q, q) for _, q in self.layer_tensors.values()] + list(self.g.graph_outputs)
        float_inputs = [f for f, _ in self.layer_inputs.values()]
        quant_inputs = [renamed.get(q, q) for _, q in self.layer_inputs.values()]
        ref = _run(self.model, input_name, data,
                   list(dict.fromkeys(float_names + [f for f in float_inputs if f != input_name])))
        ref[input_name] = data
        ref.update(_run(self.reference, input_name, data, list(self.g.graph_outputs)))
        got = _run(model, input_name, data, list(dict.fromkeys(quant_names + quant_inputs)))
        for i, r in enumerate(self.report.layers):
            x = got[quant_inputs[i]]
            self.report.layers[i] = replace(r, output_sqnr_db=sqnr_db(ref[float_names[i]], got[quant_names[i]]),
                                            input_sqnr_db=sqnr_db(ref[float_inputs[i]][: len(x)], x))
        for name in self.g.graph_outputs:
            self.report.output_sqnr_db[name] = sqnr_db(ref[name], got[name])


def _activation(node: onnx.NodeProto) -> Activation:
    """The fabric activation of an ACT node (a Clip(0, top) is a ReLU whose output the compiler bounds)."""
    return Activation.LEAKY if node.op_type == "LeakyRelu" else Activation.RELU


def _activation_label(node: onnx.NodeProto, g: GraphIndex) -> str:
    """The activation in the report: relu, leaky, relu6 or clip."""
    top = _clip_top(node, g)
    if top is not None:
        return "relu6" if top == 6.0 else "clip"
    return _activation(node).name.lower()


def _run(model: onnx.ModelProto, input_name: str, data: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    if not names:
        return {}
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
    layers = [node_label(n) for n in folded.graph.node if _role(n, g)[0] is Role.LAYER]
    if not layers:
        raise ModelError("the model has no quantizable layer (Conv, Gemm or MatMul with constant weights)")
    unknown = sorted(set(options.layer_formats) - set(layers))
    if unknown:
        raise ModelError(f"layer_formats names {', '.join(map(repr, unknown))}, not a layer of the model; its layers "
                         f"are {', '.join(map(repr, layers))}")
    _, shape = input_spec(folded)
    data = validate_calibration(calibration, shape)
    reference = folded
    slopes = None
    if options.leaky_slope is LeakySlope.ROUND:
        folded, slopes = round_leaky_slopes(folded, data)
    steps: list[MethodStep] = []
    stats = None
    if options.equalize:
        folded, steps, stats = _equalise(folded, data, options)
        if len(data) > EQUALISATION_SAMPLES:  # the statistics are those of the first samples only
            stats = None
    model, report = _Quantizer(folded, data, options, reference, stats).run()
    report.slopes = slopes
    report.equalisation = steps
    report.seed = options.seed
    return model, report


def _output_sqnr(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """The worst model output's SQNR (dB) against the float outputs ``reference``."""
    return min(sqnr_db(reference[n][: len(got[n])], got[n]) for n in reference)


def _chain(model: onnx.ModelProto, g: GraphIndex, pair: EqualisationPair) -> list[str]:
    """The tensors from the output of a pair's first layer to the input of its second (what equalising the pair
    divides, channel by channel)."""
    first = next(n for n in model.graph.node if node_label(n) == pair.first)
    tensors = [first.output[0]]
    while tensors[-1] != pair.tensor:
        tensors.append(g.consumers[tensors[-1]][0].output[0])
    return tensors


def _equalise(folded: onnx.ModelProto, data: np.ndarray,
              options: PtqOptions) -> tuple[onnx.ModelProto, list[MethodStep], dict[str, TensorStats] | None]:
    """Cross-layer equalisation of each pair in graph order, kept where the model output SQNR of the fast
    quantization on the first EQUALISATION_SAMPLES calibration samples rises by EQUALISATION_MIN_GAIN_DB; with
    the activation statistics of the model returned on those samples (None without a pair).

    The float model is run once: equalising a pair divides the channels of the tensors between its layers by
    powers of two and leaves every other tensor bit for bit as it was, so a candidate's statistics are those of
    the model before it, with the statistics of these tensors divided (``TensorStats.divided``); each channel's
    range (what the factors are chosen from) comes from the same run."""
    pairs = find_pairs(folded)
    if not pairs:
        return folded, [], None
    sample = data[:EQUALISATION_SAMPLES]
    g = GraphIndex(folded)
    fast = replace(PtqOptions.fast(options.weight_code, options.act_bits, options.leaky_slope),
                   layer_formats=options.layer_formats)
    names = _Quantizer(folded, sample, fast).stat_names()
    by_label = {node_label(n): n for n in folded.graph.node}
    chains = {p: _chain(folded, g, p) for p in pairs}
    channels = {t: int(g.const(by_label[p.first].input[1]).shape[0]) for p in pairs for t in chains[p]
                if t in names or t == p.tensor}
    stats, reference = collect(folded, sample, sorted(set(names) | set(channels)), channels,
                               tuple(g.graph_outputs))

    nearest: dict = {}  # the layers a candidate leaves alone keep their quantized weights

    def score(m: onnx.ModelProto, st: dict[str, TensorStats]) -> float:
        q = _Quantizer(m, sample, fast, stats=st, nearest_cache=nearest).run(measure=False)[0]
        input_name, _ = input_spec(q)
        return _output_sqnr(reference, _run(q, input_name, sample, list(g.graph_outputs)))

    current = score(folded, stats)
    steps = []
    for pair in pairs:
        factors = equalisation_factors(folded, pair, stats[pair.tensor].channel_max_abs.astype(np.float64))
        if (factors == 1.0).all():
            steps.append(MethodStep(pair.label, current, current, False, "already balanced (every factor is 1)"))
            continue
        candidate = apply_equalisation(folded, pair, factors)
        divided = dict(stats)
        divided.update((t, stats[t].divided(factors)) for t in chains[pair] if t in channels)
        after = score(candidate, divided)
        kept = after > current + EQUALISATION_MIN_GAIN_DB
        steps.append(MethodStep(pair.label, current, after, kept))
        if kept:
            folded, current, stats = candidate, after, divided
    return folded, steps, stats
