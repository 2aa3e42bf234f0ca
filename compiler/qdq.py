"""QDQ folding: recognise the canonical patterns of docs/quantized-onnx.md and turn them into fabric operations.

Every QuantizeLinear with a power-of-two per-tensor scale and zero point 0 defines a quantized tensor.
A QuantizeLinear whose input is computed by a canonical pattern (Conv/Gemm/MatMul with fused activation,
MaxPool, Add, Concat, Resize, a mean over H and W, a space-to-depth rearrangement, an activation, or a plain
DequantizeLinear; a Pad the Conv or MaxPool can do itself folded in) becomes a fabric operation with explicit
integer shifts, or a few (``composite``: a Clip bounded inside the output range, a mean, a space-to-depth); the
nodes it replaces disappear. All other nodes stay as CPU nodes, each with its reason.
A quantized Conv/Gemm that the accelerator cannot execute is refused with a :class:`CompileError`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.numerics import ActFormat, Activation, NumericsError, pow2_exponent, shift_representable
from shiftpu.compiler.composite import bounded, mean_conv, negated_conv, rearrangement
from shiftpu.compiler.ir import (
    AddOp,
    CompileError,
    ConcatOp,
    ConvOp,
    CpuNode,
    CpuReason,
    FabricOp,
    Graph,
    MoveOp,
    PoolOp,
    QTensor,
)
from shiftpu.compiler.onnx_import import attrs, shape_of
from shiftpu.compiler.padding import MAX_PAD, conv_pads, maxpool_pads, spatial_pad

#: Range of the 8-bit signed requantisation shift fields.
SHIFT_RANGE = (-128, 127)
#: Integers up to this magnitude are exact in float32 (24-bit significand): onnxruntime's sums stay exact below it.
FLOAT32_EXACT = 1 << 24
#: Widest alignment shift of ADD inputs (5-bit fields).
MAX_ADD_SHIFT = 31
_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip")
#: Operations that only move values between positions: a chain of them may be a space-to-depth.
_REARRANGING = ("Reshape", "Transpose", "SpaceToDepth", "Identity", "Squeeze", "Unsqueeze")
#: Means over H and W.
_MEANS = ("GlobalAveragePool", "ReduceMean")


@dataclass(frozen=True)
class ConstDQ:
    """A DequantizeLinear of a constant: integer values, per-slice power-of-two exponents, axis."""

    values: np.ndarray
    exps: np.ndarray
    axis: int


class _NoMatch(Exception):
    """The pattern does not apply; the nodes stay on the CPU with this reason."""

    def __init__(self, reason: CpuReason, detail: str = ""):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Folder:
    def __init__(self, model: onnx.ModelProto, cfg: AccelConfig):
        self.model = model
        self.cfg = cfg
        self.warnings: list[str] = []
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in g.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in g.output}
        self.tensors: dict[str, QTensor] = {}
        self.dq_act: dict[str, str] = {}  # float name -> quantized tensor it dequantises
        self.dq_const: dict[str, ConstDQ] = {}
        self.failures: dict[int, _NoMatch] = {}

    # -- recognising quantized tensors -------------------------------------------------------------

    def _pow2(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in self.consts:
            raise _NoMatch(CpuReason.FLOAT_OPERANDS, "scale is not a constant")
        try:
            return pow2_exponent(self.consts[name].astype(np.float64))
        except NumericsError as e:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"scale: {e}") from None

    def _zero_point(self, node: onnx.NodeProto) -> np.dtype:
        if len(node.input) < 3 or not node.input[2]:
            return np.dtype(np.uint8)
        zp = self.consts.get(node.input[2])
        if zp is None or np.any(zp != 0):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "zero point is not a constant 0")
        return zp.dtype

    def scan_quantizers(self) -> None:
        for node in self.model.graph.node:
            if node.op_type == "QuantizeLinear":
                try:
                    self._quant_tensor(node)
                except _NoMatch as e:
                    self.failures[id(node)] = e
        for node in self.model.graph.node:
            if node.op_type == "DequantizeLinear":
                try:
                    self._dequant(node)
                except _NoMatch as e:
                    self.failures[id(node)] = e

    def _quant_tensor(self, node: onnx.NodeProto) -> None:
        exp = self._pow2(node.input[1], node)
        if exp.size != 1:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "per-channel activation scale")
        dtype = self._zero_point(node)
        if dtype not in (np.int8, np.uint8):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"quantizes to {dtype}, not int8/uint8")
        shape = shape_of(self.model, node.output[0])
        if shape is None or len(shape) not in (2, 4) or shape[0] != 1:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"shape {shape} is not (1, C, H, W) or (1, K)")
        out = node.output[0]
        e = int(exp.reshape(-1)[0])
        signed = dtype == np.int8
        # a Clip to exactly the 4-bit range right before the quantizer makes the tensor 4-bit
        four = ActFormat(4, signed)
        bits = 4 if self._range_clip(self.producer.get(node.input[0]), four, e) else 8
        self.tensors[out] = QTensor(out, shape, ActFormat(bits, signed), e)

    def _range_clip(self, node: onnx.NodeProto | None, fmt: ActFormat, exp: int) -> bool:
        """Whether ``node`` is ``Clip(qmin * 2^exp, qmax * 2^exp)``: the clip that 4-bit quantizers put first."""
        if node is None or node.op_type != "Clip" or len(node.input) < 3:
            return False
        lo, hi = self.consts.get(node.input[1]), self.consts.get(node.input[2])
        if lo is None or hi is None or lo.size != 1 or hi.size != 1:
            return False
        scale = 2.0 ** exp
        return float(lo) == fmt.qmin * scale and float(hi) == fmt.qmax * scale

    def _dequant(self, node: onnx.NodeProto) -> None:
        src, out = node.input[0], node.output[0]
        if src in self.tensors:
            t = self.tensors[src]
            exp = self._pow2(node.input[1], node)
            if exp.size != 1 or int(exp.reshape(-1)[0]) != t.exp:
                raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "dequantises with another scale than it was quantized")
            self._zero_point(node)
            self.dq_act[out] = src
        elif src in self.consts:
            exps = self._pow2(node.input[1], node)
            if len(node.input) > 2 and node.input[2] and np.any(self.consts.get(node.input[2], 1) != 0):
                raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "non-zero zero point")
            self.dq_const[out] = ConstDQ(self.consts[src], exps.astype(np.int64), int(attrs(node).get("axis", 1)))
        else:
            raise _NoMatch(CpuReason.QUANT_BOUNDARY, "dequantises a tensor that is not a power-of-two quantized tensor")

    # -- patterns ----------------------------------------------------------------------------------

    def _only_consumer(self, name: str, node: onnx.NodeProto) -> bool:
        return name not in self.graph_outputs and [id(c) for c in self.consumers[name]] == [id(node)]

    def match(self, q: onnx.NodeProto) -> tuple[list[FabricOp], list[onnx.NodeProto]]:
        """The fabric operations that compute q's output (in order), and the float nodes they absorb."""
        out = self.tensors[q.output[0]]
        x = q.input[0]
        if x in self.dq_act:
            t = self.tensors[self.dq_act[x]]
            op = MoveOp(q.name or out.name, [t.name], out.name, [], out_shift=self._shift(out.exp - t.exp, q))
            return [op], []
        core = self.producer.get(x)
        if core is None:
            raise _NoMatch(CpuReason.QUANT_BOUNDARY, "quantizes a model input")
        if not self._only_consumer(x, q):
            raise _NoMatch(CpuReason.FLOAT_OPERANDS, f"the float value '{x}' is also used elsewhere")
        absorbed = []
        act, leaky = Activation.NONE, 0
        if out.fmt.bits < 8 and self._range_clip(core, out.fmt, out.exp):
            # the 4-bit range clip: the fabric's saturation to out_bits does the same after rounding
            absorbed.append(core)
            y = core.input[0]
            if y in self.dq_act:  # requantising a tensor to 4 bits
                t = self.tensors[self.dq_act[y]]
                return [MoveOp(q.name or out.name, [t.name], out.name, [],
                               out_shift=self._shift(out.exp - t.exp, q))], absorbed
            core = self.producer.get(y)
            if core is None:
                raise _NoMatch(CpuReason.QUANT_BOUNDARY, "quantizes a model input")
            if not self._only_consumer(y, absorbed[-1]):
                raise _NoMatch(CpuReason.FLOAT_OPERANDS, "4-bit range clip of a value used elsewhere")
        top, act_node = None, None
        pad, pads = None, None
        if core.op_type in _ACTIVATIONS:
            act, leaky, top = self._activation(core, out)
            act_node = core
            absorbed.append(core)
            y = core.input[0]
            if y in self.dq_act:  # an activation of its own: a MOVE applies it
                t = self.tensors[self.dq_act[y]]
                op = MoveOp(core.name or out.name, [t.name], out.name, [core.name], act, leaky,
                            out_shift=self._shift(out.exp - t.exp, q))
                return self._bounded(op, out, top, act_node), absorbed
            core = self.producer.get(y)
            if core is None or not self._only_consumer(y, absorbed[-1]):
                raise _NoMatch(CpuReason.FLOAT_OPERANDS, "activation of a value used elsewhere")
        absorbed.append(core)
        name = core.name or out.name
        kind = core.op_type
        if kind in ("Conv", "MaxPool"):
            pad, pads = self._folded_pad(core)
            if pad is not None:
                absorbed.append(pad)
        if kind == "Conv":
            return self._bounded(self._conv(core, out, act, leaky, name, pad, pads), out, top, act_node), absorbed
        if kind in ("Gemm", "MatMul") or (kind == "Add" and self._is_matmul_add(core)):
            op, extra = self._gemm(core, out, act, leaky, name)
            return self._bounded(op, out, top, act_node), absorbed + extra
        if kind == "Add":
            return self._bounded(self._add(core, out, act, name), out, top, act_node), absorbed
        if act is not Activation.NONE or top is not None:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"activation after {kind} is not fused on the fabric")
        if kind == "MaxPool":
            return [self._maxpool(core, out, name, pad, pads)], absorbed
        if kind == "Concat":
            return [self._concat(core, out, name)], absorbed
        if kind == "Resize":
            return [self._resize(core, out, name)], absorbed
        if kind in _MEANS:
            return [self._mean(core, out, name)], absorbed
        if kind in _REARRANGING and len(out.onnx_shape) == 4:
            op, chain = self._rearrange(core, out, name)
            return [op], absorbed + chain
        if kind == "DepthToSpace":
            raise _NoMatch(CpuReason.NO_FABRIC_OP, "DepthToSpace spreads each pixel over a block: a MOVE upsamples only "
                           "by repeating one value, and a CONV has no transposed (fractional-stride) form")
        raise _NoMatch(CpuReason.NO_FABRIC_OP, f"{kind} is not a fabric operation")

    def _bounded(self, op: FabricOp, out: QTensor, top: int | None,
                 act_node: onnx.NodeProto | None) -> list[FabricOp]:
        """``op``, followed by the bound of its output at ``top`` when a Clip puts one inside the output range."""
        if top is None:
            return [op]
        assert act_node is not None
        negated = negated_conv(op, top, self.cfg.weight_code) if isinstance(op, ConvOp) else None
        if negated is not None:
            self._check_accumulator(negated, self.tensors[op.inputs[0]], act_node)
        return bounded(op, out, top, self.tensors, self.cfg.weight_code, [act_node.name], negated)

    def _shift(self, s: int, node: onnx.NodeProto) -> int:
        if not SHIFT_RANGE[0] <= s <= SHIFT_RANGE[1]:
            raise CompileError(f"node '{node.name}': requantisation shift {s} outside {SHIFT_RANGE}")
        return int(s)

    def _act_input(self, name: str, node: onnx.NodeProto) -> QTensor:
        if name not in self.dq_act:
            raise _NoMatch(CpuReason.FLOAT_OPERANDS, f"input '{name}' is not a dequantised quantized tensor")
        return self.tensors[self.dq_act[name]]

    def _activation(self, node: onnx.NodeProto, out: QTensor) -> tuple[Activation, int, int | None]:
        """The activation, its leaky shift, and for a Clip whose maximum lies inside the output range the
        quantized maximum (``composite.bounded`` applies it)."""
        if node.op_type == "Relu":
            return Activation.RELU, 0, None
        if node.op_type == "LeakyRelu":
            alpha = float(attrs(node).get("alpha", 0.01))
            k = -np.log2(alpha) if alpha > 0 else -1.0
            if k != int(k) or not 1 <= k <= 15:
                raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"LeakyRelu alpha {alpha} is not 2^-k, 1 <= k <= 15")
            return Activation.LEAKY, int(k), None
        bounds = []
        for i in (1, 2):
            name = node.input[i] if len(node.input) > i else ""
            if name and (name not in self.consts or self.consts[name].size != 1):
                raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "Clip bounds are not constants")
            bounds.append(float(self.consts[name]) if name else None)
        lo, hi = bounds
        scale = 2.0 ** out.exp
        act = Activation.NONE
        if lo is not None and lo != 0.0 and np.rint(lo / scale) > out.fmt.qmin:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"Clip min {lo} is neither 0 nor below the range")
        if lo == 0.0:
            act = Activation.RELU
        if hi is None or np.rint(hi / scale) >= out.fmt.qmax:
            return act, 0, None  # the requantiser's saturation is the Clip
        # rounding commutes with min: Q(min(v, hi)) = min(Q(v), round_half_even(hi / scale))
        top = int(np.rint(hi / scale))
        if top <= (0 if act is Activation.RELU else out.fmt.qmin):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"Clip max {hi} leaves a constant output")
        return act, 0, top

    def _weights(self, name: str, node: onnx.NodeProto, c_out: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.dq_const:
            raise CompileError(f"node '{node.name}': weights '{name}' are not a DequantizeLinear of an int8 constant")
        d = self.dq_const[name]
        if d.values.dtype != np.int8:
            raise CompileError(f"node '{node.name}': weights are {d.values.dtype}, expected int8")
        if d.exps.size not in (1, c_out) or (d.exps.size > 1 and d.axis % d.values.ndim != axis):
            raise CompileError(f"node '{node.name}': weight scale must be per output channel")
        bad = ~shift_representable(d.values, self.cfg.weight_code)
        if bad.any():
            raise CompileError(
                f"node '{node.name}': weight {int(d.values[bad].reshape(-1)[0])} is not representable as "
                f"{self.cfg.weight_code.name} shift code")
        return d.values, np.broadcast_to(d.exps.reshape(-1), (c_out,)).astype(np.int64)

    def _bias(self, name: str | None, node: onnx.NodeProto, acc_exp: np.ndarray) -> np.ndarray:
        c_out = len(acc_exp)
        if not name:
            return np.zeros(c_out, np.int64)
        if name in self.dq_const:
            d = self.dq_const[name]
            vals = d.values.astype(np.int64).reshape(-1)
            rel = np.broadcast_to(d.exps.reshape(-1), (c_out,)) - acc_exp
            bias = np.where(rel >= 0, vals << np.maximum(rel, 0), vals >> np.maximum(-rel, 0))
            exact = np.where(rel >= 0, True, (bias << np.maximum(-rel, 0)) == vals)
        elif name in self.consts:
            f = self.consts[name].astype(np.float64).reshape(-1)
            scaled = np.ldexp(f, -acc_exp)
            bias = np.round(scaled).astype(np.int64)
            exact = scaled == bias
        else:
            raise CompileError(f"node '{node.name}': bias '{name}' is not a constant")
        if not np.all(exact):
            raise CompileError(f"node '{node.name}': bias is not an integer at the accumulator scale")
        return bias

    def _conv_op(self, name: str, node: onnx.NodeProto, x: QTensor, out: QTensor, w: np.ndarray, w_exp: np.ndarray,
                 bias_name: str | None, act: Activation, leaky: int, stride: int, pads: tuple[int, int, int, int],
                 depthwise: bool, sources: list[str]) -> ConvOp:
        cfg = self.cfg
        kh, kw = w.shape[2], w.shape[3]
        if max(kh, kw) > cfg.max_kernel:
            raise CompileError(f"node '{node.name}': kernel {kh}x{kw} exceeds the accelerator's max_kernel {cfg.max_kernel}")
        if stride not in (1, 2):
            raise CompileError(f"node '{node.name}': stride {stride} not supported (1 or 2)")
        if max(pads) > MAX_PAD:
            raise CompileError(f"node '{node.name}': padding {max(pads)} exceeds {MAX_PAD}")
        acc_exp = x.exp + w_exp
        bias = self._bias(bias_name, node, acc_exp)
        shifts = out.exp - acc_exp
        for s in shifts:
            self._shift(int(s), node)
        op = ConvOp(name, [x.name], out.name, sources, act, leaky, weights=w.astype(np.int8), bias=bias,
                    shift=shifts.astype(np.int64), stride=stride, pads=pads, depthwise=depthwise)
        self._check_accumulator(op, x, node)
        return op

    def _check_accumulator(self, op: ConvOp, x: QTensor, node: onnx.NodeProto) -> None:
        """Refuse a CONV whose accumulator could overflow; warn where onnxruntime's float32 sum may round."""
        cfg = self.cfg
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
            self.warnings.append(
                f"node '{node.name}': accumulator of output channel {o} could reach {int(worst[o])} >= 2^24: exact on "
                f"the accelerator and the golden model, but onnxruntime's float32 sum may round (docs/numerics.md)")

    def _folded_pad(self, node: onnx.NodeProto) -> tuple[onnx.NodeProto | None, tuple[int, int, int, int] | None]:
        """The Pad feeding a Conv or MaxPool alone that folds into its padding (``compiler/padding.py``), and the
        padding with it folded in; (None, None) when there is none."""
        pad = self.producer.get(node.input[0])
        p = spatial_pad(pad, self.consts.get) if pad is not None else None
        a = attrs(node)
        if p is None or not self._only_consumer(pad.output[0], node) or pad.input[0] not in self.dq_act or \
                a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(a.get("pads", [0] * 4)) != 4:
            return None, None
        own = tuple(int(v) for v in a.get("pads", [0, 0, 0, 0]))
        if node.op_type == "Conv":
            return (pad, new) if (new := conv_pads(p, own)) is not None else (None, None)
        x = self.tensors[self.dq_act[pad.input[0]]]
        k, s = list(a.get("kernel_shape", [])), list(a.get("strides", [1, 1]))
        if len(k) != 2 or len(s) != 2 or a.get("ceil_mode", 0):
            return None, None
        new = maxpool_pads(p, x.chw[1:], (k[0], k[1]), (s[0], s[1]), own, x.fmt.qmin * 2.0**x.exp)
        return (pad, new) if new is not None else (None, None)

    def _conv(self, node: onnx.NodeProto, out: QTensor, act: Activation, leaky: int, name: str,
              pad: onnx.NodeProto | None = None, pads: tuple[int, int, int, int] | None = None) -> ConvOp:
        a = attrs(node)
        source = pad.input[0] if pad is not None else node.input[0]
        if len(node.input) < 2 or source not in self.dq_act:
            raise _NoMatch(CpuReason.FLOAT_OPERANDS, "Conv input is not a quantized tensor")
        x = self.tensors[self.dq_act[source]]
        c_in = x.chw[0]
        group = int(a.get("group", 1))
        c_out = out.chw[0]
        w, w_exp = self._weights(node.input[1], node, c_out, 0)
        if w.ndim != 4:
            raise CompileError(f"node '{node.name}': only 2-D convolutions are supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise CompileError(f"node '{node.name}': dilation {list(a['dilations'])} not supported (only 1)")
        strides = list(a.get("strides", [1, 1]))
        if strides[0] != strides[1]:
            raise CompileError(f"node '{node.name}': unequal strides {strides} not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise CompileError(f"node '{node.name}': auto_pad is not supported: use explicit pads")
        p = list(pads or a.get("pads", [0, 0, 0, 0]))
        depthwise = group > 1
        if depthwise and not (group == c_in == c_out):
            raise CompileError(
                f"node '{node.name}': groups={group} with {c_in} -> {c_out} channels: only groups=1 and depthwise "
                "(groups = input = output channels) run on the fabric")
        sources = [node.name] + ([pad.name] if pad is not None else [])
        return self._conv_op(name, node, x, out, w, w_exp, node.input[2] if len(node.input) > 2 else None,
                             act, leaky, strides[0], (p[0], p[1], p[2], p[3]), depthwise, sources)

    def _is_matmul_add(self, node: onnx.NodeProto) -> bool:
        return any((p := self.producer.get(i)) is not None and p.op_type == "MatMul" and self._only_consumer(i, node)
                   for i in node.input)

    def _gemm(self, node: onnx.NodeProto, out: QTensor, act: Activation, leaky: int,
              name: str) -> tuple[ConvOp, list[onnx.NodeProto]]:
        extra: list[onnx.NodeProto] = []
        bias_name = None
        if node.op_type == "Add":
            mm_out = next(i for i in node.input if (p := self.producer.get(i)) is not None and p.op_type == "MatMul")
            bias_name = next(i for i in node.input if i != mm_out)
            add, node = node, self.producer[mm_out]
            extra.append(node)
            sources = [add.name, node.name]
        else:
            sources = [node.name]
        a = attrs(node)
        if node.op_type == "Gemm":
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "Gemm with alpha/beta != 1 or transA")
            trans_b = bool(a.get("transB", 0))
            if len(node.input) > 2 and node.input[2]:
                bias_name = node.input[2]
        else:
            trans_b = False
        a_in = node.input[0]
        flat = self.producer.get(a_in)
        if a_in not in self.dq_act and flat is not None and flat.op_type == "Flatten" and \
                int(attrs(flat).get("axis", 1)) == 1 and self._only_consumer(a_in, node):
            extra.append(flat)
            a_in = flat.input[0]
        x = self._unflatten(self._act_input(a_in, node))
        c, h, w_ = x.chw
        n = out.chw[0]
        wq, w_exp = self._weights(node.input[1], node, n, 0 if trans_b else 1)
        mat = wq if trans_b else wq.T
        if h * w_ > 1 and max(h, w_) > self.cfg.max_kernel:
            raise CompileError(
                f"node '{node.name}': flattened input {c}x{h}x{w_} needs a {h}x{w_} kernel, beyond max_kernel "
                f"{self.cfg.max_kernel}")
        weights = np.ascontiguousarray(mat).reshape(n, c, h, w_)
        return self._conv_op(name, node, x, out, weights, w_exp, bias_name, act, leaky, 1, (0, 0, 0, 0), False,
                             sources), extra

    def _unflatten(self, t: QTensor) -> QTensor:
        """The C x H x W tensor that ``t`` flattens when t = Q(Flatten(DQ(x))) with x's own scale and format.

        Such a quantize is the identity on the integers, so a Gemm can read x directly (kernel H x W);
        the CPU nodes computing t become dead unless something else reads t.
        """
        q = self.producer.get(t.name)
        flat = self.producer.get(q.input[0]) if q is not None else None
        if flat is None or flat.op_type != "Flatten" or int(attrs(flat).get("axis", 1)) != 1 or \
                flat.input[0] not in self.dq_act:
            return t
        x = self.tensors[self.dq_act[flat.input[0]]]
        same = x.exp == t.exp and x.fmt == t.fmt and len(x.onnx_shape) == 4
        return x if same and max(x.chw[1], x.chw[2]) <= self.cfg.max_kernel else t

    def _add(self, node: onnx.NodeProto, out: QTensor, act: Activation, name: str) -> AddOp:
        a = self._act_input(node.input[0], node)
        b = self._act_input(node.input[1], node)
        if a.chw != b.chw or a.chw != out.chw:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"broadcasting add {a.chw} + {b.chw}")
        if act is Activation.LEAKY:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "LeakyRelu after Add")
        m = min(a.exp, b.exp)
        sa, sb = a.exp - m, b.exp - m
        if max(sa, sb) > MAX_ADD_SHIFT:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"input scales 2^{a.exp}, 2^{b.exp} too far apart")
        return AddOp(name, [a.name, b.name], out.name, [node.name], act, 0, shift_a=sa, shift_b=sb,
                     out_shift=self._shift(out.exp - m, node))

    def _maxpool(self, node: onnx.NodeProto, out: QTensor, name: str, pad: onnx.NodeProto | None = None,
                 pads: tuple[int, int, int, int] | None = None) -> PoolOp:
        x = self._act_input(pad.input[0] if pad is not None else node.input[0], node)
        a = attrs(node)
        k = list(a.get("kernel_shape", []))
        s = list(a.get("strides", [1, 1]))
        p = list(pads or a.get("pads", [0, 0, 0, 0]))
        if len(node.output) > 1 and node.output[1]:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "MaxPool indices output")
        if len(k) != 2 or k[0] != k[1] or not 1 <= k[0] <= self.cfg.max_kernel:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"kernel {k}")
        if s[0] != s[1] or s[0] not in (1, 2):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"strides {s}")
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or max(p) > MAX_PAD \
                or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "ceil_mode, dilations, auto_pad or padding > 7")
        return PoolOp(name, [x.name], out.name, [node.name] + ([pad.name] if pad is not None else []), kernel=k[0],
                      stride=s[0], pads=(p[0], p[1], p[2], p[3]), out_shift=self._shift(out.exp - x.exp, node))

    def _mean(self, node: onnx.NodeProto, out: QTensor, name: str) -> ConvOp:
        x = self._act_input(node.input[0], node)
        c, h, w = x.chw
        if node.op_type == "ReduceMean":
            a = attrs(node)
            axes = a.get("axes")
            if len(node.input) > 1 and node.input[1]:
                axes = self.consts.get(node.input[1])
            if axes is None or sorted(int(v) % 4 for v in np.asarray(axes).ravel()) != [2, 3] or len(x.onnx_shape) != 4:
                raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "ReduceMean not over H and W")
        if out.chw != (c, 1, 1):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"mean of {x.chw} to {out.chw}")
        if h * w & (h * w - 1):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                           f"mean of {h}x{w} = {h * w} values: the fabric divides by shifting, by powers of two only")
        if max(h, w) > self.cfg.max_kernel:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                           f"mean of a {h}x{w} map: a CONV kernel covers at most {self.cfg.max_kernel}x{self.cfg.max_kernel}")
        shift = self._shift(out.exp - x.exp + (h * w).bit_length() - 1, node)
        op = mean_conv(name, x, out, [node.name], shift)
        self._check_accumulator(op, x, node)
        return op

    def _rearrange(self, node: onnx.NodeProto, out: QTensor, name: str) -> tuple[FabricOp, list[onnx.NodeProto]]:
        """A chain of Reshape/Transpose/SpaceToDepth nodes from a quantized tensor: a space-to-depth (or a plain
        copy) runs as one CONV (or MOVE), found by sending each value's index through the chain."""
        from onnx.reference import ReferenceEvaluator

        chain = [node]
        while chain[0].input[0] not in self.dq_act:
            prev = self.producer.get(chain[0].input[0])
            if prev is None or prev.op_type not in _REARRANGING or not self._only_consumer(prev.output[0], chain[0]):
                raise _NoMatch(CpuReason.FLOAT_OPERANDS, f"input '{chain[0].input[0]}' is not a quantized tensor")
            chain.insert(0, prev)
        x = self.tensors[self.dq_act[chain[0].input[0]]]
        size = int(np.prod(x.onnx_shape))
        operands = {i for n in chain for i in n.input[1:] if i}
        if size >= FLOAT32_EXACT or not operands <= self.consts.keys():
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "a rearrangement with computed shapes")
        consts = {i: self.consts[i] for i in operands}
        model = onnx.helper.make_model(onnx.helper.make_graph(
            chain, "rearrange", [onnx.helper.make_tensor_value_info(chain[0].input[0], onnx.TensorProto.FLOAT,
                                                                    list(x.onnx_shape))],
            [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)],
            [numpy_helper.from_array(v, k) for k, v in consts.items()]), opset_imports=self.model.opset_import)
        index = np.arange(size, dtype=np.float32).reshape(x.onnx_shape)
        (moved,) = ReferenceEvaluator(model).run(None, {chain[0].input[0]: index})
        op = None
        if tuple(np.shape(moved)) == out.onnx_shape:
            op = rearrangement(name, x, out, [n.name for n in chain], np.asarray(moved).astype(np.int64).reshape(out.chw),
                               self._shift(out.exp - x.exp, node))
        if op is None:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"moves values {x.chw} -> {out.chw} in a way no fabric "
                           "operation does (a space-to-depth by 2 runs as a CONV)")
        if isinstance(op, ConvOp):
            self._check_accumulator(op, x, node)
        return op, chain[:-1]

    def _concat(self, node: onnx.NodeProto, out: QTensor, name: str) -> ConcatOp:
        ins = [self._act_input(i, node) for i in node.input]
        axis = int(attrs(node).get("axis", 1))
        if len(out.onnx_shape) != 4 or axis not in (1, -3):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"concatenation along axis {axis}")
        cb = self.cfg.channel_block
        if any(t.chw[0] % cb for t in ins[:-1]):
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                           f"input channel counts {[t.chw[0] for t in ins]} not multiples of the channel block {cb}")
        return ConcatOp(name, [t.name for t in ins], out.name, [node.name])

    def _resize(self, node: onnx.NodeProto, out: QTensor, name: str) -> MoveOp:
        x = self._act_input(node.input[0], node)
        a = attrs(node)
        mode = a.get("mode", b"nearest")
        ctm = a.get("coordinate_transformation_mode", b"half_pixel")
        nm = a.get("nearest_mode", b"round_prefer_floor")
        ok = {(b"asymmetric", b"floor"), (b"asymmetric", b"round_prefer_floor"), (b"half_pixel", b"round_prefer_floor"),
              (b"half_pixel", b"round_prefer_ceil"), (b"pytorch_half_pixel", b"round_prefer_floor"),
              (b"pytorch_half_pixel", b"round_prefer_ceil")}
        c, h, w = x.chw
        if mode != b"nearest" or (ctm, nm) not in ok or out.chw != (c, 2 * h, 2 * w) or len(out.onnx_shape) != 4:
            raise _NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                           f"Resize mode={mode.decode()} {ctm.decode()}/{nm.decode()} {x.chw}->{out.chw}")
        return MoveOp(name, [x.name], out.name, [node.name], upsample=2, out_shift=self._shift(out.exp - x.exp, node))

    # -- the whole graph ---------------------------------------------------------------------------

    def run(self) -> Graph:
        self.scan_quantizers()
        fabric: dict[int, list[FabricOp]] = {}
        absorbed: set[int] = set()
        for node in self.model.graph.node:
            if node.op_type != "QuantizeLinear" or node.output[0] not in self.tensors:
                continue
            try:
                ops, nodes = self.match(node)
            except _NoMatch as e:
                core = self.producer.get(node.input[0])
                chain = [core] if core is None or core.op_type not in _ACTIVATIONS else [
                    core, self.producer.get(core.input[0])]
                for n in chain:
                    if n is not None and id(n) not in self.failures:
                        self.failures[id(n)] = e
                continue
            fabric[id(node)] = ops
            absorbed.update(id(n) for n in nodes)
        # DequantizeLinear nodes whose every consumer was absorbed disappear too
        for node in self.model.graph.node:
            if node.op_type == "DequantizeLinear" and node.output[0] not in self.graph_outputs:
                cons = self.consumers[node.output[0]]
                if cons and all(id(c) in absorbed for c in cons):
                    absorbed.add(id(node))
        steps: list = []
        for node in self.model.graph.node:
            if id(node) in fabric:
                steps.extend(fabric[id(node)])
            elif id(node) not in absorbed:
                steps.append(self._cpu(node))
        return Graph(self.model, dict(self.tensors), steps, warnings=list(self.warnings))

    def _cpu(self, node: onnx.NodeProto) -> CpuNode:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            f = self.failures.get(id(node))
            if f is not None and f.reason is not CpuReason.QUANT_BOUNDARY:
                return CpuNode(node, f.reason, f.detail)
            return CpuNode(node, CpuReason.QUANT_BOUNDARY)
        if node.op_type in ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"):
            return CpuNode(node, CpuReason.SHAPE_ONLY)
        cons = self.consumers.get(node.output[0], [])
        if len(cons) == 1 and cons[0].op_type == "QuantizeLinear" and cons[0].output[0] in self.tensors:
            t = self.tensors[cons[0].output[0]]
            if t.fmt.bits < 8 and self._range_clip(node, t.fmt, t.exp):
                return CpuNode(node, CpuReason.QUANT_BOUNDARY, "the 4-bit range clip of a quantizer on the CPU")
        f = self.failures.get(id(node))
        if f is not None:
            return CpuNode(node, f.reason, f.detail)
        if node.op_type in ("Conv", "MaxPool", "Add", "Concat", "Resize", "Gemm", "MatMul", "Relu", "LeakyRelu", "Clip"):
            return CpuNode(node, CpuReason.FLOAT_OPERANDS)
        return CpuNode(node, CpuReason.NO_FABRIC_OP, f"{node.op_type}")


def fold_qdq(model: onnx.ModelProto, cfg: AccelConfig) -> Graph:
    """The typed IR of a prepared QDQ model (see onnx_import.prepare)."""
    return _Folder(model, cfg).run()
