"""QDQ folding: recognise the canonical patterns of docs/quantized-onnx.md and turn them into fabric operations.

Every QuantizeLinear with a power-of-two per-tensor scale and zero point 0 defines a quantized tensor
(``compiler/qdq_graph.py``). A QuantizeLinear whose input is a plain DequantizeLinear becomes a requantising MOVE;
one whose input an activation of a dequantised tensor computes, a MOVE applying it. Otherwise the node computing
its input (after an optional fused Relu/LeakyRelu/Clip, and the range Clip of a 4-bit quantizer) is looked up in
the table of core patterns, ``compiler/qdq_patterns.py`` (Conv/Gemm/MatMul with fused activation, MaxPool, Add,
Concat, Resize, a mean over H and W, a space-to-depth rearrangement; a Pad the Conv or MaxPool can do itself
folded in), whose matcher gives a fabric operation with explicit integer shifts, or a few (``composite``: a Clip
bounded inside the output range, a mean, a space-to-depth); the nodes it replaces disappear. All other nodes stay
as CPU nodes, each with its reason. A quantized Conv/Gemm that the accelerator cannot execute is refused with a
:class:`CompileError`.
"""

from __future__ import annotations

import onnx

from shiftpu.arch.config import AccelConfig
from shiftpu.compiler.ir import CpuNode, CpuReason, FabricOp, Graph, MoveOp
from shiftpu.compiler.qdq_graph import NoMatch, QdqGraph
from shiftpu.compiler.qdq_patterns import ACTIVATIONS, PATTERNS, Epilogue, bounded_by, fused_activation

#: Operators that only reshape: on the CPU they are reported as such.
_SHAPE_ONLY = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")
#: Operators that run on the fabric when their operands are quantized.
_FABRIC_WHEN_QUANTIZED = ("Conv", "MaxPool", "Add", "Concat", "Resize", "Gemm", "MatMul", *ACTIVATIONS)


def _requantize(g: QdqGraph, name: str, q: onnx.NodeProto, src: str, ep: Epilogue | None = None,
                sources: list[str] | None = None) -> list[FabricOp]:
    """The MOVE that writes the quantized tensor behind the float value ``src`` as ``q``'s, through ``ep``'s
    activation when given."""
    t = g.act_input(src)
    out = g.tensors[q.output[0]]
    ep = ep or Epilogue(q, out)
    op = MoveOp(name, [t.name], out.name, sources or [], ep.act, ep.leaky_shift, out_shift=g.shift(out.exp - t.exp, q))
    return bounded_by(g, op, ep)


def match_quantizer(g: QdqGraph, q: onnx.NodeProto) -> tuple[list[FabricOp], list[onnx.NodeProto]]:
    """The fabric operations that compute q's output (in order), and the float nodes they absorb."""
    out = g.tensors[q.output[0]]
    x = q.input[0]
    if x in g.dq_act:
        return _requantize(g, q.name or out.name, q, x), []
    core = g.producer.get(x)
    if core is None:
        raise NoMatch(CpuReason.QUANT_BOUNDARY, "quantizes a model input")
    if not g.only_consumer(x, q):
        raise NoMatch(CpuReason.FLOAT_OPERANDS, f"the float value '{x}' is also used elsewhere")
    absorbed = []
    if out.fmt.bits < 8 and g.range_clip(core, out.fmt, out.exp):
        # the 4-bit range clip: the fabric's saturation to out_bits does the same after rounding
        absorbed.append(core)
        y = core.input[0]
        if y in g.dq_act:  # requantising a tensor to 4 bits
            return _requantize(g, q.name or out.name, q, y), absorbed
        core = g.producer.get(y)
        if core is None:
            raise NoMatch(CpuReason.QUANT_BOUNDARY, "quantizes a model input")
        if not g.only_consumer(y, absorbed[-1]):
            raise NoMatch(CpuReason.FLOAT_OPERANDS, "4-bit range clip of a value used elsewhere")
    ep = Epilogue(q, out)
    if core.op_type in ACTIVATIONS:
        ep = fused_activation(g, core, q, out)
        absorbed.append(core)
        y = core.input[0]
        if y in g.dq_act:  # an activation of its own: a MOVE applies it
            return _requantize(g, ep.name(core), q, y, ep, [core.name]), absorbed
        core = g.producer.get(y)
        if core is None or not g.only_consumer(y, absorbed[-1]):
            raise NoMatch(CpuReason.FLOAT_OPERANDS, "activation of a value used elsewhere")
    absorbed.append(core)
    pattern = PATTERNS.get(core.op_type)
    if ep.fused and (pattern is None or not pattern.fuses_activation):
        raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"activation after {core.op_type} is not fused on the fabric")
    if pattern is None:
        raise NoMatch(CpuReason.NO_FABRIC_OP, f"{core.op_type} is not a fabric operation")
    matched = pattern.match(g, core, ep)
    ops = matched.ops
    if ep.top is not None:
        (op,) = ops
        ops = bounded_by(g, op, ep)
    return ops, absorbed + matched.absorbed


def _cpu_node(g: QdqGraph, node: onnx.NodeProto) -> CpuNode:
    """A node no pattern took, with the reason it stays on the CPU."""
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        f = g.failures.get(id(node))
        if f is not None and f.reason is not CpuReason.QUANT_BOUNDARY:
            return CpuNode(node, f.reason, f.detail)
        return CpuNode(node, CpuReason.QUANT_BOUNDARY)
    if node.op_type in _SHAPE_ONLY:
        return CpuNode(node, CpuReason.SHAPE_ONLY)
    cons = g.consumers.get(node.output[0], [])
    if len(cons) == 1 and cons[0].op_type == "QuantizeLinear" and cons[0].output[0] in g.tensors:
        t = g.tensors[cons[0].output[0]]
        if t.fmt.bits < 8 and g.range_clip(node, t.fmt, t.exp):
            return CpuNode(node, CpuReason.QUANT_BOUNDARY, "the 4-bit range clip of a quantizer on the CPU")
    f = g.failures.get(id(node))
    if f is not None:
        return CpuNode(node, f.reason, f.detail)
    if node.op_type in _FABRIC_WHEN_QUANTIZED:
        return CpuNode(node, CpuReason.FLOAT_OPERANDS)
    return CpuNode(node, CpuReason.NO_FABRIC_OP, f"{node.op_type}")


def fold_qdq(model: onnx.ModelProto, cfg: AccelConfig) -> Graph:
    """The typed IR of a prepared QDQ model (see onnx_import.prepare)."""
    g = QdqGraph(model, cfg)
    fabric: dict[int, list[FabricOp]] = {}
    absorbed: set[int] = set()
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.output[0] not in g.tensors:
            continue
        try:
            ops, nodes = match_quantizer(g, node)
        except NoMatch as e:
            core = g.producer.get(node.input[0])
            chain = [core] if core is None or core.op_type not in ACTIVATIONS else [
                core, g.producer.get(core.input[0])]
            for n in chain:
                if n is not None and id(n) not in g.failures:
                    g.failures[id(n)] = e
            continue
        fabric[id(node)] = ops
        absorbed.update(id(n) for n in nodes)
    # DequantizeLinear nodes whose every consumer was absorbed disappear too
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] not in g.graph_outputs:
            cons = g.consumers[node.output[0]]
            if cons and all(id(c) in absorbed for c in cons):
                absorbed.add(id(node))
    steps: list = []
    for node in model.graph.node:
        if id(node) in fabric:
            steps.extend(fabric[id(node)])
        elif id(node) not in absorbed:
            steps.append(_cpu_node(g, node))
    return Graph(model, dict(g.tensors), steps, warnings=list(g.warnings))
