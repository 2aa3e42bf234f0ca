"""The canonical patterns of docs/quantized-onnx.md, one matcher per ONNX operator, in the table :data:`PATTERNS`.

A pattern ends at a QuantizeLinear whose input some *core* node computes, possibly through a fused activation
(Relu, LeakyRelu, Clip): ``Q(act(core(DQ(x), ...)))``. ``compiler/qdq.py`` peels the quantizer and the
activation into an :class:`Epilogue`, looks the core's ``op_type`` up in :data:`PATTERNS` and calls its matcher,
which returns the fabric operations computing the quantized result and the extra float nodes they replace, raises
:class:`NoMatch` (the nodes stay on the CPU, with that reason) or, for a quantized layer the accelerator can never
run, ``CompileError``. A new pattern is a function ``(graph, core, epilogue) -> Matched`` and a line in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from shiftpu.arch.numerics import Activation
from shiftpu.compiler.composite import bounded, mean_conv, negated_conv, rearrangement
from shiftpu.compiler.ir import AddOp, CompileError, ConcatOp, ConvOp, CpuReason, FabricOp, MoveOp, PoolOp, QTensor
from shiftpu.compiler.onnx_import import attrs
from shiftpu.compiler.padding import MAX_PAD, conv_pads, maxpool_pads, spatial_pad
from shiftpu.compiler.qdq_conv import FLOAT32_EXACT, check_accumulator, conv_op, weights
from shiftpu.compiler.qdq_graph import NoMatch, QdqGraph

#: Widest alignment shift of ADD inputs (5-bit fields).
MAX_ADD_SHIFT = 31
#: Activations that fold into the operation before them (or into a MOVE of their own).
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip")
#: Operations that only move values between positions: a chain of them may be a space-to-depth.
REARRANGING = ("Reshape", "Transpose", "SpaceToDepth", "Identity", "Squeeze", "Unsqueeze")
#: Means over H and W.
MEANS = ("GlobalAveragePool", "ReduceMean")


@dataclass(frozen=True)
class Epilogue:
    """What the core's result goes through before it is a quantized tensor: a fused activation, the quantizer."""

    q: onnx.NodeProto  #: the QuantizeLinear that ends the pattern
    out: QTensor  #: the quantized tensor it defines
    act: Activation = Activation.NONE
    leaky_shift: int = 0
    #: for a Clip whose maximum lies inside the output range: that maximum, quantized (``composite.bounded``)
    top: int | None = None
    act_node: onnx.NodeProto | None = None  #: the activation node, if any

    @property
    def fused(self) -> bool:
        """Whether the core's operation must apply an activation or bound."""
        return self.act is not Activation.NONE or self.top is not None

    def name(self, core: onnx.NodeProto) -> str:
        """The name of the fabric operation computing the core."""
        return core.name or self.out.name


@dataclass
class Matched:
    """The fabric operations that compute a pattern's result (in order), and the float nodes they replace besides
    the core and the epilogue's."""

    ops: list[FabricOp]
    absorbed: list[onnx.NodeProto] = field(default_factory=list)


Matcher = Callable[[QdqGraph, onnx.NodeProto, Epilogue], Matched]


@dataclass(frozen=True)
class Pattern:
    """How a core node of one ``op_type`` becomes fabric operations."""

    match: Matcher
    #: whether an activation after the core folds into its operation (otherwise the activation keeps it on the CPU)
    fuses_activation: bool = False


# -- the epilogue -------------------------------------------------------------------------------------


def fused_activation(g: QdqGraph, node: onnx.NodeProto, q: onnx.NodeProto, out: QTensor) -> Epilogue:
    """The epilogue of an activation node before the quantizer ``q``: the activation, its leaky shift, and for a
    Clip whose maximum lies inside the output range the quantized maximum (``composite.bounded`` applies it)."""
    if node.op_type == "Relu":
        return Epilogue(q, out, Activation.RELU, act_node=node)
    if node.op_type == "LeakyRelu":
        alpha = float(attrs(node).get("alpha", 0.01))
        k = -np.log2(alpha) if alpha > 0 else -1.0
        if k != int(k) or not 1 <= k <= 15:
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"LeakyRelu alpha {alpha} is not 2^-k, 1 <= k <= 15")
        return Epilogue(q, out, Activation.LEAKY, int(k), act_node=node)
    bounds = []
    for i in (1, 2):
        name = node.input[i] if len(node.input) > i else ""
        if name and (name not in g.consts or g.consts[name].size != 1):
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "Clip bounds are not constants")
        bounds.append(float(g.consts[name]) if name else None)
    lo, hi = bounds
    scale = 2.0 ** out.exp
    act = Activation.NONE
    if lo is not None and lo != 0.0 and np.rint(lo / scale) > out.fmt.qmin:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"Clip min {lo} is neither 0 nor below the range")
    if lo == 0.0:
        act = Activation.RELU
    if hi is None or np.rint(hi / scale) >= out.fmt.qmax:
        return Epilogue(q, out, act, act_node=node)  # the requantiser's saturation is the Clip
    # rounding commutes with min: Q(min(v, hi)) = min(Q(v), round_half_even(hi / scale))
    top = int(np.rint(hi / scale))
    if top <= (0 if act is Activation.RELU else out.fmt.qmin):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"Clip max {hi} leaves a constant output")
    return Epilogue(q, out, act, top=top, act_node=node)


def bounded_by(g: QdqGraph, op: FabricOp, ep: Epilogue) -> list[FabricOp]:
    """``op``, followed by the bound of its output at ``ep.top`` when a Clip puts one inside the output range."""
    if ep.top is None:
        return [op]
    assert ep.act_node is not None
    negated = negated_conv(op, ep.top, g.cfg.weight_code) if isinstance(op, ConvOp) else None
    if negated is not None:
        check_accumulator(g, negated, g.tensors[op.inputs[0]], ep.act_node)
    return bounded(op, ep.out, ep.top, g.tensors, g.cfg.weight_code, [ep.act_node.name], negated)


# -- the core patterns --------------------------------------------------------------------------------


def folded_pad(g: QdqGraph, node: onnx.NodeProto) -> tuple[onnx.NodeProto | None, tuple[int, int, int, int] | None]:
    """The Pad feeding a Conv or MaxPool alone that folds into its padding (``compiler/padding.py``), and the
    padding with it folded in; (None, None) when there is none."""
    pad = g.producer.get(node.input[0])
    p = spatial_pad(pad, g.consts.get) if pad is not None else None
    a = attrs(node)
    if p is None or not g.only_consumer(pad.output[0], node) or pad.input[0] not in g.dq_act or \
            a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(a.get("pads", [0] * 4)) != 4:
        return None, None
    own = tuple(int(v) for v in a.get("pads", [0, 0, 0, 0]))
    if node.op_type == "Conv":
        return (pad, new) if (new := conv_pads(p, own)) is not None else (None, None)
    x = g.act_input(pad.input[0])
    k, s = list(a.get("kernel_shape", [])), list(a.get("strides", [1, 1]))
    if len(k) != 2 or len(s) != 2 or a.get("ceil_mode", 0):
        return None, None
    new = maxpool_pads(p, x.chw[1:], (k[0], k[1]), (s[0], s[1]), own, x.fmt.qmin * 2.0**x.exp)
    return (pad, new) if new is not None else (None, None)


def conv(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """Conv (dense or depthwise, a Pad before it folded in): a CONV."""
    pad, pads = folded_pad(g, node)
    a = attrs(node)
    source = pad.input[0] if pad is not None else node.input[0]
    if len(node.input) < 2 or source not in g.dq_act:
        raise NoMatch(CpuReason.FLOAT_OPERANDS, "Conv input is not a quantized tensor")
    x = g.act_input(source)
    c_in = x.chw[0]
    group = int(a.get("group", 1))
    c_out = ep.out.chw[0]
    w, w_exp = weights(g, node.input[1], node, c_out, 0)
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
    op = conv_op(g, ep.name(node), node, x, ep.out, w, w_exp, node.input[2] if len(node.input) > 2 else None,
                 ep.act, ep.leaky_shift, strides[0], (p[0], p[1], p[2], p[3]), depthwise, sources)
    return Matched([op], [pad] if pad is not None else [])


def _matmul_input(g: QdqGraph, node: onnx.NodeProto) -> str | None:
    """The input of an Add that a MatMul alone computes (the Add is then that MatMul's bias)."""
    return next((i for i in node.input if (p := g.producer.get(i)) is not None and p.op_type == "MatMul"
                 and g.only_consumer(i, node)), None)


def _unflatten(g: QdqGraph, t: QTensor) -> QTensor:
    """The C x H x W tensor that ``t`` flattens when t = Q(Flatten(DQ(x))) with x's own scale and format.

    Such a quantize is the identity on the integers, so a Gemm can read x directly (kernel H x W);
    the CPU nodes computing t become dead unless something else reads t.
    """
    q = g.producer.get(t.name)
    flat = g.producer.get(q.input[0]) if q is not None else None
    if flat is None or flat.op_type != "Flatten" or int(attrs(flat).get("axis", 1)) != 1 or \
            flat.input[0] not in g.dq_act:
        return t
    x = g.act_input(flat.input[0])
    same = x.exp == t.exp and x.fmt == t.fmt and len(x.onnx_shape) == 4
    return x if same and max(x.chw[1], x.chw[2]) <= g.cfg.max_kernel else t


def gemm(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """Gemm, MatMul, or the Add of a MatMul and a bias (a Flatten before it folded in): a CONV whose kernel covers
    the whole input map (1x1 on a vector)."""
    name, sources = ep.name(node), [node.name]
    extra: list[onnx.NodeProto] = []
    bias_name = None
    if node.op_type == "Add":
        mm_out = next(i for i in node.input if (p := g.producer.get(i)) is not None and p.op_type == "MatMul")
        bias_name = next(i for i in node.input if i != mm_out)
        node = g.producer[mm_out]
        extra.append(node)
        sources.append(node.name)
    a = attrs(node)
    if node.op_type == "Gemm":
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "Gemm with alpha/beta != 1 or transA")
        trans_b = bool(a.get("transB", 0))
        if len(node.input) > 2 and node.input[2]:
            bias_name = node.input[2]
    else:
        trans_b = False
    a_in = node.input[0]
    flat = g.producer.get(a_in)
    if a_in not in g.dq_act and flat is not None and flat.op_type == "Flatten" and \
            int(attrs(flat).get("axis", 1)) == 1 and g.only_consumer(a_in, node):
        extra.append(flat)
        a_in = flat.input[0]
    x = _unflatten(g, g.act_input(a_in))
    c, h, w_ = x.chw
    n = ep.out.chw[0]
    wq, w_exp = weights(g, node.input[1], node, n, 0 if trans_b else 1)
    mat = wq if trans_b else wq.T
    if h * w_ > 1 and max(h, w_) > g.cfg.max_kernel:
        raise CompileError(
            f"node '{node.name}': flattened input {c}x{h}x{w_} needs a {h}x{w_} kernel, beyond max_kernel "
            f"{g.cfg.max_kernel}")
    kernel = np.ascontiguousarray(mat).reshape(n, c, h, w_)
    op = conv_op(g, name, node, x, ep.out, kernel, w_exp, bias_name, ep.act, ep.leaky_shift, 1, (0, 0, 0, 0), False,
                 sources)
    return Matched([op], extra)


def add(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """Add of two quantized tensors of one shape: an ADD (the Add of a MatMul and a bias is a Gemm)."""
    if _matmul_input(g, node) is not None:
        return gemm(g, node, ep)
    a = g.act_input(node.input[0])
    b = g.act_input(node.input[1])
    if a.chw != b.chw or a.chw != ep.out.chw:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"broadcasting add {a.chw} + {b.chw}")
    if ep.act is Activation.LEAKY:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "LeakyRelu after Add")
    m = min(a.exp, b.exp)
    sa, sb = a.exp - m, b.exp - m
    if max(sa, sb) > MAX_ADD_SHIFT:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"input scales 2^{a.exp}, 2^{b.exp} too far apart")
    return Matched([AddOp(ep.name(node), [a.name, b.name], ep.out.name, [node.name], ep.act, 0, shift_a=sa,
                          shift_b=sb, out_shift=g.shift(ep.out.exp - m, node))])


def maxpool(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """MaxPool (a Pad before it folded in): a POOL."""
    pad, pads = folded_pad(g, node)
    x = g.act_input(pad.input[0] if pad is not None else node.input[0])
    a = attrs(node)
    k = list(a.get("kernel_shape", []))
    s = list(a.get("strides", [1, 1]))
    p = list(pads or a.get("pads", [0, 0, 0, 0]))
    if len(node.output) > 1 and node.output[1]:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "MaxPool indices output")
    if len(k) != 2 or k[0] != k[1] or not 1 <= k[0] <= g.cfg.max_kernel:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"kernel {k}")
    if s[0] != s[1] or s[0] not in (1, 2):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"strides {s}")
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or max(p) > MAX_PAD \
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "ceil_mode, dilations, auto_pad or padding > 7")
    sources = [node.name] + ([pad.name] if pad is not None else [])
    op = PoolOp(ep.name(node), [x.name], ep.out.name, sources, kernel=k[0], stride=s[0], pads=(p[0], p[1], p[2], p[3]),
                out_shift=g.shift(ep.out.exp - x.exp, node))
    return Matched([op], [pad] if pad is not None else [])


def mean(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """GlobalAveragePool, or ReduceMean over H and W, of a map of a power of two of values: a depthwise CONV."""
    out = ep.out
    x = g.act_input(node.input[0])
    c, h, w = x.chw
    if node.op_type == "ReduceMean":
        a = attrs(node)
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = g.consts.get(node.input[1])
        if axes is None or sorted(int(v) % 4 for v in np.asarray(axes).ravel()) != [2, 3] or len(x.onnx_shape) != 4:
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "ReduceMean not over H and W")
    if out.chw != (c, 1, 1):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"mean of {x.chw} to {out.chw}")
    if h * w & (h * w - 1):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                      f"mean of {h}x{w} = {h * w} values: the fabric divides by shifting, by powers of two only")
    if max(h, w) > g.cfg.max_kernel:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                      f"mean of a {h}x{w} map: a CONV kernel covers at most {g.cfg.max_kernel}x{g.cfg.max_kernel}")
    shift = g.shift(out.exp - x.exp + (h * w).bit_length() - 1, node)
    op = mean_conv(ep.name(node), x, out, [node.name], shift)
    check_accumulator(g, op, x, node)
    return Matched([op])


def rearrange(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """A chain of Reshape/Transpose/SpaceToDepth nodes from a quantized tensor: a space-to-depth (or a plain copy)
    runs as one CONV (or MOVE), found by sending each value's index through the chain."""
    from onnx.reference import ReferenceEvaluator

    out = ep.out
    if len(out.onnx_shape) != 4:
        raise NoMatch(CpuReason.NO_FABRIC_OP, f"{node.op_type} is not a fabric operation")
    chain = [node]
    while chain[0].input[0] not in g.dq_act:
        prev = g.producer.get(chain[0].input[0])
        if prev is None or prev.op_type not in REARRANGING or not g.only_consumer(prev.output[0], chain[0]):
            raise NoMatch(CpuReason.FLOAT_OPERANDS, f"input '{chain[0].input[0]}' is not a quantized tensor")
        chain.insert(0, prev)
    x = g.act_input(chain[0].input[0])
    size = int(np.prod(x.onnx_shape))
    operands = {i for n in chain for i in n.input[1:] if i}
    if size >= FLOAT32_EXACT or not operands <= g.consts.keys():
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "a rearrangement with computed shapes")
    consts = {i: g.consts[i] for i in operands}
    model = onnx.helper.make_model(onnx.helper.make_graph(
        chain, "rearrange", [onnx.helper.make_tensor_value_info(chain[0].input[0], onnx.TensorProto.FLOAT,
                                                                list(x.onnx_shape))],
        [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()]), opset_imports=g.model.opset_import)
    index = np.arange(size, dtype=np.float32).reshape(x.onnx_shape)
    (moved,) = ReferenceEvaluator(model).run(None, {chain[0].input[0]: index})
    op = None
    if tuple(np.shape(moved)) == out.onnx_shape:
        op = rearrangement(ep.name(node), x, out, [n.name for n in chain],
                           np.asarray(moved).astype(np.int64).reshape(out.chw), g.shift(out.exp - x.exp, node))
    if op is None:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"moves values {x.chw} -> {out.chw} in a way no fabric "
                      "operation does (a space-to-depth by 2 runs as a CONV)")
    if isinstance(op, ConvOp):
        check_accumulator(g, op, x, node)
    return Matched([op], chain[:-1])


def concat(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """Concat along the channels, every input but the last a whole number of channel blocks: in place."""
    ins = [g.act_input(i) for i in node.input]
    axis = int(attrs(node).get("axis", 1))
    if len(ep.out.onnx_shape) != 4 or axis not in (1, -3):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"concatenation along axis {axis}")
    cb = g.cfg.channel_block
    if any(t.chw[0] % cb for t in ins[:-1]):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                      f"input channel counts {[t.chw[0] for t in ins]} not multiples of the channel block {cb}")
    return Matched([ConcatOp(ep.name(node), [t.name for t in ins], ep.out.name, [node.name])])


#: (coordinate_transformation_mode, nearest_mode) pairs under which a nearest 2x Resize repeats each value 2x2.
_NEAREST_2X = {(b"asymmetric", b"floor"), (b"asymmetric", b"round_prefer_floor"),
               (b"half_pixel", b"round_prefer_floor"), (b"half_pixel", b"round_prefer_ceil"),
               (b"pytorch_half_pixel", b"round_prefer_floor"), (b"pytorch_half_pixel", b"round_prefer_ceil")}


def resize(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """Nearest 2x Resize: a MOVE that upsamples."""
    out = ep.out
    x = g.act_input(node.input[0])
    a = attrs(node)
    mode = a.get("mode", b"nearest")
    ctm = a.get("coordinate_transformation_mode", b"half_pixel")
    nm = a.get("nearest_mode", b"round_prefer_floor")
    c, h, w = x.chw
    if mode != b"nearest" or (ctm, nm) not in _NEAREST_2X or out.chw != (c, 2 * h, 2 * w) or len(out.onnx_shape) != 4:
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES,
                      f"Resize mode={mode.decode()} {ctm.decode()}/{nm.decode()} {x.chw}->{out.chw}")
    return Matched([MoveOp(ep.name(node), [x.name], out.name, [node.name], upsample=2,
                           out_shift=g.shift(out.exp - x.exp, node))])


def depth_to_space(g: QdqGraph, node: onnx.NodeProto, ep: Epilogue) -> Matched:
    """DepthToSpace: never on the fabric (the reason says why)."""
    raise NoMatch(CpuReason.NO_FABRIC_OP, "DepthToSpace spreads each pixel over a block: a MOVE upsamples only by "
                  "repeating one value, and a CONV has no transposed (fractional-stride) form")


#: The core patterns by ONNX ``op_type``.
PATTERNS: dict[str, Pattern] = {
    "Conv": Pattern(conv, fuses_activation=True),
    "Gemm": Pattern(gemm, fuses_activation=True),
    "MatMul": Pattern(gemm, fuses_activation=True),
    "Add": Pattern(add, fuses_activation=True),
    "MaxPool": Pattern(maxpool),
    "Concat": Pattern(concat),
    "Resize": Pattern(resize),
    **{op: Pattern(mean) for op in MEANS},
    **{op: Pattern(rearrange) for op in REARRANGING},
    "DepthToSpace": Pattern(depth_to_space),
}
