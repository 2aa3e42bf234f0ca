"""Builders of shift-quantized QDQ ONNX graphs for tests and benchmarks (the form of docs/quantized-onnx.md).

A :class:`QdqBuilder` starts from a float32 NCHW input followed by a QuantizeLinear and appends the
canonical patterns (Conv/Gemm with fused activation, MaxPool, Add, Concat, Resize, requantising moves)
and CPU-side operations, with random shift weights (values of ``numerics.SHIFT4_VALUES``), power-of-two
scales and int32 biases. Output exponents are chosen so that activations use most of their range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shiftpu.arch.numerics import SHIFT4_VALUES

OPSET = 19


@dataclass(frozen=True)
class QT:
    """A quantized tensor of the graph under construction (the output of a QuantizeLinear)."""

    name: str
    shape: tuple[int, ...]  #: ONNX shape without the batch dimension: (C, H, W) or (K,)
    exp: int  #: scale = 2^exp
    signed: bool
    rms: float  #: rough RMS of the integer values (to choose the next scales)


class QdqBuilder:
    """Appends QDQ patterns to a graph; ``model()`` returns the finished ModelProto."""

    def __init__(self, shape: tuple[int, int, int], seed: int = 0, in_exp: int = -5, name: str = "x"):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._n = 0
        self.input = helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, *shape])
        self.x = self._quantize(name, shape, in_exp, True, rms=40.0)

    # -- plumbing ----------------------------------------------------------------------------------

    def _uid(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    def _const(self, stem: str, value: np.ndarray) -> str:
        name = self._uid(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _scale(self, exp: int | np.ndarray) -> np.ndarray:
        return np.ldexp(np.float32(1.0), np.asarray(exp)).astype(np.float32)

    def _quantize(self, x: str, shape: tuple[int, ...], exp: int, signed: bool, rms: float) -> QT:
        out = self._uid("q")
        zp = np.zeros((), np.int8 if signed else np.uint8)
        self.nodes.append(helper.make_node(
            "QuantizeLinear", [x, self._const("s", self._scale(exp)), self._const("zp", zp)], [out],
            name=self._uid("Q_")))
        return QT(out, tuple(shape), exp, signed, rms)

    def dq(self, t: QT) -> str:
        out = self._uid("dq")
        zp = np.zeros((), np.int8 if t.signed else np.uint8)
        self.nodes.append(helper.make_node(
            "DequantizeLinear", [t.name, self._const("s", self._scale(t.exp)), self._const("zp", zp)], [out],
            name=self._uid("DQ_")))
        return out

    def _out_exp(self, acc_rms_exp: float, target_rms: float) -> int:
        """Exponent that maps an accumulator of RMS 2^acc_rms_exp to about target_rms."""
        return int(round(acc_rms_exp - math.log2(target_rms)))

    def _weights(self, shape: tuple[int, ...], density: float = 0.7) -> np.ndarray:
        codes = self.rng.choice(np.array([1, 2, 3, 4, 9, 10, 11, 12]), size=shape)
        w = SHIFT4_VALUES[codes].astype(np.int8)
        return np.where(self.rng.random(shape) < density, w, 0).astype(np.int8)

    def _act(self, y: str, act: str, alpha_shift: int) -> str:
        if act == "none":
            return y
        out = self._uid("a")
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [y], [out], name=self._uid("Relu_")))
        elif act == "leaky":
            self.nodes.append(helper.make_node("LeakyRelu", [y], [out], alpha=2.0 ** -alpha_shift,
                                               name=self._uid("Leaky_")))
        elif act == "clip":
            self.nodes.append(helper.make_node(
                "Clip", [y, self._const("lo", np.float32(0)), self._const("hi", np.float32(1e6))], [out],
                name=self._uid("Clip_")))
        else:
            raise ValueError(act)
        return out

    # -- fabric patterns ---------------------------------------------------------------------------

    def conv(self, t: QT, c_out: int, k: int = 3, stride: int = 1, pad: int | tuple[int, int, int, int] | None = None,
             groups: int = 1, act: str = "relu", alpha_shift: int = 3, bias: bool = True,
             kw: int | None = None, target_rms: float = 30.0, clip: tuple[float | None, float | None] | None = None,
             ) -> QT:
        """Conv (+ bias) + activation + QuantizeLinear; ``act`` is none, relu, leaky or clip. ``clip`` replaces
        ``act`` by a Clip with these bounds in units of the output scale (None: that bound absent); the output is
        unsigned when the lower bound is 0."""
        c_in, h, w = t.shape
        kh, kw = k, (k if kw is None else kw)
        pads = (kh // 2, kw // 2, kh // 2, kw // 2) if pad is None else (
            (pad, pad, pad, pad) if isinstance(pad, int) else pad)
        icg = c_in // groups
        wq = self._weights((c_out, icg, kh, kw))
        w_exp = self.rng.integers(-7, -4, size=c_out)
        acc_scale_exp = t.exp + w_exp
        inputs = [self.dq(t), self._dq_weight(wq, w_exp)]
        if bias:
            b = self.rng.integers(-2000, 2000, size=c_out).astype(np.int32)
            inputs.append(self._dq_const(b, acc_scale_exp))
        y = self._uid("conv")
        self.nodes.append(helper.make_node(
            "Conv", inputs, [y], kernel_shape=[kh, kw], strides=[stride, stride],
            pads=[pads[0], pads[1], pads[2], pads[3]], group=groups, name=self._uid("Conv_")))
        oh = (h + pads[0] + pads[2] - kh) // stride + 1
        ow = (w + pads[1] + pads[3] - kw) // stride + 1
        fan_in = icg * kh * kw * 0.7
        acc_rms = math.log2(max(t.rms * 4.0 * math.sqrt(fan_in), 1.0)) + float(np.mean(acc_scale_exp))
        exp = self._out_exp(acc_rms, target_rms)
        if clip is not None:
            return self.quantize(self.clip(y, clip, exp), (c_out, oh, ow), exp, clip[0] != 0)
        y = self._act(y, act, alpha_shift)
        return self._quantize(y, (c_out, oh, ow), exp, act == "leaky" or act == "none", target_rms)

    def clip(self, y: str, bounds: tuple[float | None, float | None], exp: int) -> str:
        """Clip of a float value, with bounds in units of 2^exp (None: that bound absent)."""
        inputs = [y] + [self._const("clip", np.float32(np.ldexp(v, exp))) if v is not None else "" for v in bounds]
        out = self._uid("a")
        self.nodes.append(helper.make_node("Clip", inputs, [out], name=self._uid("Clip_")))
        return out

    def quantize(self, value: str, shape: tuple[int, ...], exp: int, signed: bool, rms: float = 30.0) -> QT:
        """QuantizeLinear of a float value (e.g. a :meth:`float_node`'s output) with scale 2^exp."""
        return self._quantize(value, shape, exp, signed, rms)

    def _dq_weight(self, wq: np.ndarray, w_exp: np.ndarray, axis: int = 0) -> str:
        out = self._uid("w")
        n = len(w_exp)
        self.nodes.append(helper.make_node(
            "DequantizeLinear",
            [self._const("wq", wq), self._const("ws", self._scale(w_exp)), self._const("wz", np.zeros(n, np.int8))],
            [out], axis=axis, name=self._uid("DQw_")))
        return out

    def _dq_const(self, b: np.ndarray, exp: np.ndarray) -> str:
        out = self._uid("b")
        self.nodes.append(helper.make_node(
            "DequantizeLinear",
            [self._const("bq", b), self._const("bs", self._scale(exp)), self._const("bz", np.zeros(len(b), np.int32))],
            [out], axis=0, name=self._uid("DQb_")))
        return out

    def flatten(self, t: QT) -> QT:
        """DQ -> Flatten -> Q with the same scale (how exporters often quantize a flattened tensor)."""
        f = self._uid("flat")
        self.nodes.append(helper.make_node("Flatten", [self.dq(t)], [f], axis=1, name=self._uid("Flatten_")))
        return self._quantize(f, (int(np.prod(t.shape)),), t.exp, t.signed, t.rms)

    def gemm(self, t: QT, n: int, act: str = "none", flatten: bool = True, target_rms: float = 30.0) -> QT:
        """[Flatten] + Gemm(transB=1) + bias + activation + QuantizeLinear."""
        x = self.dq(t)
        k = int(np.prod(t.shape))
        if len(t.shape) > 1 and flatten:
            f = self._uid("flat")
            self.nodes.append(helper.make_node("Flatten", [x], [f], axis=1, name=self._uid("Flatten_")))
            x = f
        wq = self._weights((n, k))
        w_exp = self.rng.integers(-7, -4, size=n)
        b = self.rng.integers(-2000, 2000, size=n).astype(np.int32)
        y = self._uid("gemm")
        self.nodes.append(helper.make_node(
            "Gemm", [x, self._dq_weight(wq, w_exp), self._dq_const(b, t.exp + w_exp)], [y], transB=1,
            name=self._uid("Gemm_")))
        y = self._act(y, act, 3)
        acc_rms = math.log2(t.rms * 4.0 * math.sqrt(k * 0.7)) + t.exp + float(np.mean(w_exp))
        return self._quantize(y, (n,), self._out_exp(acc_rms, target_rms), act == "none", target_rms)

    def maxpool(self, t: QT, k: int = 2, stride: int = 2, pad: int = 0, exp_delta: int = 0) -> QT:
        y = self._uid("pool")
        self.nodes.append(helper.make_node(
            "MaxPool", [self.dq(t)], [y], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
            name=self._uid("MaxPool_")))
        c, h, w = t.shape
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        return self._quantize(y, (c, oh, ow), t.exp + exp_delta, t.signed, t.rms)

    def add(self, a: QT, b: QT, relu: bool = False, exp: int | None = None) -> QT:
        y = self._uid("add")
        self.nodes.append(helper.make_node("Add", [self.dq(a), self.dq(b)], [y], name=self._uid("Add_")))
        if relu:
            y = self._act(y, "relu", 0)
        e = max(a.exp, b.exp) + 1 if exp is None else exp
        return self._quantize(y, a.shape, e, not relu, max(a.rms, b.rms))

    def concat(self, ts: list[QT], exp: int | None = None, signed: bool | None = None) -> QT:
        y = self._uid("cat")
        self.nodes.append(helper.make_node("Concat", [self.dq(t) for t in ts], [y], axis=1, name=self._uid("Concat_")))
        c = sum(t.shape[0] for t in ts)
        e = max(t.exp for t in ts) if exp is None else exp
        s = ts[0].signed if signed is None else signed
        return self._quantize(y, (c, *ts[0].shape[1:]), e, s, ts[0].rms)

    def resize(self, t: QT, exp_delta: int = 0) -> QT:
        y = self._uid("up")
        self.nodes.append(helper.make_node(
            "Resize", [self.dq(t), "", self._const("sc", np.array([1, 1, 2, 2], np.float32))], [y], mode="nearest",
            name=self._uid("Resize_")))
        c, h, w = t.shape
        return self._quantize(y, (c, 2 * h, 2 * w), t.exp + exp_delta, t.signed, t.rms)

    def requant(self, t: QT, exp_delta: int = 1, signed: bool | None = None) -> QT:
        """DQ -> Q with another scale (a MOVE)."""
        s = t.signed if signed is None else signed
        return self._quantize(self.dq(t), t.shape, t.exp + exp_delta, s, t.rms)

    # -- CPU-side operations -------------------------------------------------------------------------

    def sigmoid(self, t: QT, exp: int = -7) -> QT:
        y = self._uid("sig")
        self.nodes.append(helper.make_node("Sigmoid", [self.dq(t)], [y], name=self._uid("Sigmoid_")))
        return self._quantize(y, t.shape, exp, False, 60.0)

    def global_avg_pool(self, t: QT) -> QT:
        y = self._uid("gap")
        self.nodes.append(helper.make_node("GlobalAveragePool", [self.dq(t)], [y], name=self._uid("GAP_")))
        return self._quantize(y, (t.shape[0], 1, 1), t.exp, t.signed, t.rms)

    def constant(self, stem: str, value: np.ndarray) -> str:
        """An initializer (e.g. a float node's constant operand); returns its name."""
        return self._const(stem, value)

    def float_node(self, op_type: str, inputs: list[str], **attrs) -> str:
        """A float node (it stays on the CPU) reading the named values; returns its output."""
        y = self._uid(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [y], name=self._uid(f"{op_type}_"), **attrs))
        return y

    def pad(self, t: QT, pads: tuple[int, int, int, int], mode: str = "reflect") -> QT:
        """DQ -> Pad (top, left, bottom, right) -> Q at the same scale: a padding the fabric does not fold."""
        pt, pl, pb, pr = pads
        y = self.float_node("Pad", [self.dq(t), self._const("pads", np.array([0, 0, pt, pl, 0, 0, pb, pr], np.int64))],
                            mode=mode)
        c, h, w = t.shape
        return self._quantize(y, (c, h + pt + pb, w + pl + pr), t.exp, t.signed, t.rms)

    def output_value(self, name: str, elem_type: int, shape: tuple[int, ...]) -> str:
        """Make a float value (of a :meth:`float_node`) a model output."""
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, t: QT, float_op: str | None = None) -> str:
        """Make t a model output through DequantizeLinear (optionally followed by a float op, e.g. Sigmoid)."""
        y = self.dq(t)
        if float_op is not None:
            z = self._uid("o")
            self.nodes.append(helper.make_node(float_op, [y], [z], name=self._uid(f"{float_op}_")))
            y = z
        self.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, *t.shape]))
        return y

    def model(self, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "qdq", [self.input], self.outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="shiftpu-tests")
        m.ir_version = 9 if opset <= OPSET else 10
        onnx.checker.check_model(m)
        return m


def random_input(model: onnx.ModelProto, seed: int = 0, amplitude: float = 3.0) -> np.ndarray:
    """A float32 input for the model's (single) input, values spread over the first quantizer's range."""
    t = model.graph.input[0].type.tensor_type
    shape = [d.dim_value for d in t.shape.dim]
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * amplitude).astype(np.float32)


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    """The reference: onnxruntime with all graph optimisations disabled (the float QDQ path)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(outputs, {model.graph.input[0].name: x})


def detector(size: int = 512, seed: int = 0, width: int = 16) -> onnx.ModelProto:
    """A one-stage detector (a YOLO-like backbone, a 2x upsample + concat neck, two heads) at size x size."""
    b = QdqBuilder((3, size, size), seed=seed)
    t = b.conv(b.x, width, 3, stride=2, act="leaky")                  # /2
    t = b.conv(t, 2 * width, 3, stride=2, act="leaky")                # /4
    t = b.conv(t, 2 * width, 3, act="leaky")
    t = b.conv(t, 4 * width, 3, stride=2, act="leaky")                # /8
    r = b.conv(t, 2 * width, 1, act="leaky")
    r = b.conv(r, 4 * width, 3, act="none")
    t = b.add(t, r, exp=t.exp + 1)
    t = b.conv(t, 8 * width, 3, stride=2, act="leaky")                # /16
    p16 = b.conv(t, 4 * width, 1, act="leaky")
    t = b.conv(t, 16 * width, 3, stride=2, act="leaky")               # /32
    dw = b.conv(t, 16 * width, 3, groups=16 * width, act="relu")
    t = b.conv(dw, 16 * width, 1, act="leaky")
    head32 = b.conv(t, 3 * 8, 1, act="none", bias=True)
    u = b.conv(t, 4 * width, 1, act="leaky")
    u = b.resize(u)
    cat = b.concat([u, p16])
    t = b.conv(cat, 8 * width, 3, act="leaky")
    head16 = b.conv(t, 3 * 8, 1, act="none")
    b.output(head32)
    b.output(head16)
    return b.model()


def cpu_tail_model(size: int = 12, seed: int = 3) -> onnx.ModelProto:
    """Fabric layers with standard operators the fabric does not run around them: a reflect Pad between two
    convolutions, then on the output a linear Resize and a Softmax, a Slice and a Cast to float16, and a
    GroupNormalization plus a ConstantOfShape of its Shape (opset 21, for GroupNormalization-21)."""
    b = QdqBuilder((4, size, size), seed=seed)
    t = b.conv(b.x, 8, 3, act="relu")
    t = b.pad(t, (1, 1, 1, 1))
    t = b.conv(t, 8, 3, pad=0, act="relu")
    t = b.conv(t, 8, 3, act="none")
    up = b.float_node("Resize", [b.dq(t), "", b.constant("sc", np.array([1, 1, 2, 2], np.float32))], mode="linear")
    b.output_value(b.float_node("Softmax", [up], axis=1), TensorProto.FLOAT, (1, 8, 2 * size, 2 * size))
    cut = b.float_node("Slice", [b.dq(t), b.constant("st", np.array([0], np.int64)),
                                 b.constant("en", np.array([4], np.int64)), b.constant("ax", np.array([1], np.int64))])
    b.output_value(b.float_node("Cast", [cut], to=TensorProto.FLOAT16), TensorProto.FLOAT16, (1, 4, size, size))
    gn = b.float_node("GroupNormalization", [b.dq(t), b.constant("gs", np.linspace(0.5, 2, 8).astype(np.float32)),
                                             b.constant("gb", np.linspace(-1, 1, 8).astype(np.float32))], num_groups=2)
    half = b.float_node("ConstantOfShape", [b.float_node("Shape", [gn])],
                        value=numpy_helper.from_array(np.array([0.5], np.float32)))
    b.output_value(b.float_node("Add", [gn, half]), TensorProto.FLOAT, (1, 8, size, size))
    return b.model(opset=21)


def padded_model(pads: tuple[int, int, int, int], mode: str, consumer: str, signed: bool, value: float | None = None) -> onnx.ModelProto:
    """DQ -> Pad (pads: top, left, bottom, right; ``value`` for mode constant) -> the Conv or MaxPool(2, stride 1)
    ``consumer`` names, after a Conv with ReLU (unsigned) or none (``signed``)."""
    b = QdqBuilder((8, 6, 6), seed=7)
    t = b.conv(b.x, 8, 3, act="none" if signed else "relu")
    inputs = [b.dq(t), b.constant("pads", np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64))]
    if value is not None:
        inputs.append(b.constant("value", np.float32(value)))
    p = b.float_node("Pad", inputs, mode=mode)
    c, h, w = t.shape
    padded = b.quantize(p, (c, h + pads[0] + pads[2], w + pads[1] + pads[3]), t.exp, t.signed)
    if consumer == "conv":
        b.output(b.conv(padded, 8, 3, pad=0, act="relu"))
    else:
        b.output(b.maxpool(padded, 2, 1))
    m = b.model()
    # the Pad feeds the consumer directly: drop the Q/DQ pair between them
    q = next(n for n in m.graph.node if n.output[0] == padded.name)
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == padded.name)
    user = next(n for n in m.graph.node if dq.output[0] in n.input)
    user.input[0] = p
    m.graph.node.remove(q)
    m.graph.node.remove(dq)
    return m


def mean_model(size: int, op: str, keepdims: int = 1) -> onnx.ModelProto:
    """A mean (GlobalAveragePool or ReduceMean over H and W) of a size x size map after a stride-2 Conv."""
    b = QdqBuilder((8, 2 * size, 2 * size), seed=11)
    t = b.conv(b.x, 16, 3, stride=2, act="relu")
    if op == "GlobalAveragePool":
        y = b.float_node(op, [b.dq(t)])
    else:
        y = b.float_node(op, [b.dq(t), b.constant("axes", np.array([2, 3], np.int64))], keepdims=keepdims)
    shape = (16, 1, 1) if keepdims else (16,)
    b.output(b.quantize(y, shape, t.exp - 1, False))
    return b.model()


def rearrangement_model(kind: str) -> onnx.ModelProto:
    """DQ -> a rearrangement of an 8 x 8 x 8 map -> Q -> a 1x1 Conv: ``kind`` SpaceToDepth, DepthToSpace, or
    reshape-transpose (pixel_unshuffle's order, as darknet's reorg is written in PyTorch)."""
    b = QdqBuilder((8, 8, 8), seed=13)
    t = b.conv(b.x, 8, 3, act="none")
    x = b.dq(t)
    if kind == "SpaceToDepth":
        y = b.float_node("SpaceToDepth", [x], blocksize=2)
        shape = (32, 4, 4)
    elif kind == "DepthToSpace":
        y = b.float_node("DepthToSpace", [x], blocksize=2)
        shape = (2, 16, 16)
    else:  # pixel_unshuffle / darknet reorg written as Reshape -> Transpose -> Reshape (channel c * 4 + offset)
        r = b.float_node("Reshape", [x, b.constant("s6", np.array([1, 8, 4, 2, 4, 2], np.int64))])
        r = b.float_node("Transpose", [r], perm=[0, 1, 3, 5, 2, 4])
        y = b.float_node("Reshape", [r, b.constant("s4", np.array([1, 32, 4, 4], np.int64))])
        shape = (32, 4, 4)
    b.output(b.conv(b.quantize(y, shape, t.exp + 1, True), 8, 1, act="relu"))
    return b.model()


def golden_vs_onnxruntime(model: onnx.ModelProto, out_dir, board: str = "pynq-z2", seed: int = 0,
                          dataflows=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Compile ``model`` into ``out_dir``, run it on the golden model and on onnxruntime: (golden, reference)."""
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sw.executor import Executor

    x = random_input(model, seed)
    from shiftpu.arch.isa import Dataflow

    compile_model(model, board, out_dir, dataflows=frozenset(Dataflow) if dataflows is None else frozenset(dataflows))
    return Executor(out_dir).run(x), run_onnxruntime(model, x)


def compile_one_conv(folder, board: str = "pynq-z2"):
    """A one-convolution model (4 channels, 8x8, 3x3 + ReLU) compiled for ``board`` into ``folder/out``, and a
    valid input for it in ``folder/x.npy``: the small compiled model the CLI tests run."""
    from shiftpu.compiler.driver import compile_model

    b = QdqBuilder((4, 8, 8), seed=0)
    b.output(b.conv(b.x, 4, 3, act="relu"))
    m = b.model()
    compile_model(m, board, folder / "out")
    np.save(folder / "x.npy", random_input(m, 1))
    return folder / "out", folder / "x.npy"
