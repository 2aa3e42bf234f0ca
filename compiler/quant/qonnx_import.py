"""Import of QONNX ``Quant`` graphs and Brevitas QCDQ graphs into the quantized ONNX form.

A QONNX ``Quant(x, scale, zeropt, bitwidth)`` becomes QuantizeLinear/DequantizeLinear (activations), an int8
initializer through DequantizeLinear (weights, the second input of Conv/Gemm/MatMul) or an int32 one (biases).
A QCDQ chain ``QuantizeLinear -> Clip -> DequantizeLinear`` loses its integer Clip: folded into constant
weights, or turned into the float Clip before QuantizeLinear that the 4-bit form uses. Only representable
graphs are converted: power-of-two scales, zero points 0, at most 8-bit activations and weights, shift
weights, rounding half to even; anything else is a ModelError naming the node.

What real Brevitas exports (``export_qonnx``, ``export_onnx_qcdq``) add is handled too: graph outputs that are
constants (the scale, zero point and bit width of a ``QuantTensor`` output) are dropped, Identity and Constant
nodes are folded away, ``Reshape`` to N x K becomes ``Flatten`` and a Flatten of a quantized activation is
re-quantized at the same scale, ``Relu -> Clip(0, _)`` (a 4-bit ReLU) becomes the Clip, and the opset (20 for
QONNX, 18 for QCDQ) becomes the quantized form's opset 19.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from shiftpu.arch.numerics import WeightCode, is_pow2, shift_representable
from shiftpu.compiler.quant.fold import to_opset
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, attr, node_label
from shiftpu.compiler.quant.qdq import OPSET

#: Operator domains QONNX (and FINN before it) put ``Quant`` in.
QONNX_DOMAINS = frozenset({"qonnx.custom_op.general", "finn.custom_op.general", "finn"})
_WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul", "ConvTranspose"})


def _int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - (1 if narrow else 0)


class _Importer:
    def __init__(self, model: onnx.ModelProto, weight_code: WeightCode) -> None:
        self.model = model
        self.g = GraphIndex(model)
        self.code = weight_code
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.dropped: set[str] = set()

    def const(self, hint: str, value: np.ndarray) -> str:
        name, i = hint, 1
        while name in self.inits or name in self.g.constants or name in self.g.producer:
            name, i = f"{hint}_{i}", i + 1
        self.inits[name] = np.asarray(value)
        return name

    def role(self, tensor: str) -> str:
        """"weight", "bias" or "activation", from how the tensor is consumed."""
        for c in self.g.consumers.get(tensor, []):
            if c.op_type in _WEIGHT_OPS and len(c.input) > 1 and c.input[1] == tensor:
                return "weight"
            if c.op_type in _WEIGHT_OPS and len(c.input) > 2 and c.input[2] == tensor:
                return "bias"
        return "activation"

    def check_scale_zero(self, node: onnx.NodeProto, scale: np.ndarray | None, zero: np.ndarray | None) -> None:
        if scale is None:
            raise ModelError(f"{node_label(node)}: the scale is not a constant")
        if not is_pow2(scale).all():
            bad = np.asarray(scale).ravel()[~is_pow2(scale).ravel()][0]
            raise ModelError(f"{node_label(node)}: scale {float(bad)!r} is not a power of two")
        if zero is not None and np.any(zero != 0):
            raise ModelError(f"{node_label(node)}: zero point is not 0")

    def emit_constant(self, node: onnx.NodeProto, out: str, q: np.ndarray, scale: np.ndarray, role: str) -> None:
        """A quantized constant (integers q at scale) as int8/int32 initializer through DequantizeLinear."""
        scale = np.asarray(scale, np.float32)
        if role == "weight":
            if q.min() < -128 or q.max() > 127:
                raise ModelError(f"{node_label(node)}: weights do not fit int8")
            ok = shift_representable(q, self.code)
            if not ok.all():
                raise ModelError(f"{node_label(node)}: weight {int(q[~ok].ravel()[0])} is not shift-representable")
            dtype = np.int8
        else:
            dtype = np.int32
        per_channel = scale.size > 1
        if per_channel:
            scale = scale.reshape(-1)
            if scale.size != q.shape[0]:
                raise ModelError(f"{node_label(node)}: per-channel scales must be along the first (output) axis")
        values = self.const(f"{out}_q", q.astype(dtype))
        s = self.const(f"{out}_scale", scale)
        z = self.const(f"{out}_zero", np.zeros(scale.shape, dtype))
        attrs = {"axis": 0} if per_channel else {}
        self.nodes.append(helper.make_node("DequantizeLinear", [values, s, z], [out], name=f"{out}_dq", **attrs))

    def emit_activation(self, node: onnx.NodeProto, x: str, out: str, scale: np.ndarray,
                        lo: int, hi: int, signed: bool) -> None:
        if np.asarray(scale).size != 1:
            raise ModelError(f"{node_label(node)}: activations need one scale per tensor")
        dtype = np.int8 if signed else np.uint8
        info = np.iinfo(dtype)
        if lo < info.min or hi > info.max:
            raise ModelError(f"{node_label(node)}: activations wider than 8 bits")
        scale = np.float32(np.asarray(scale).ravel()[0])
        if (lo, hi) != (info.min, info.max):
            cl = self.const(f"{out}_clip_lo", np.float32(lo * scale))
            ch = self.const(f"{out}_clip_hi", np.float32(hi * scale))
            clipped = f"{out}_clipped"
            self.nodes.append(helper.make_node("Clip", [x, cl, ch], [clipped], name=f"{out}_clip"))
            x = clipped
        s = self.const(f"{out}_scale", scale)
        z = self.const(f"{out}_zero", np.zeros((), dtype))
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{out}_int"], name=f"{out}_q"))
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{out}_int", s, z], [out], name=f"{out}_dq"))

    def quant(self, node: onnx.NodeProto) -> None:
        """A QONNX Quant node."""
        x, scale = node.input[0], self.g.const(node.input[1])
        zero, bits = self.g.const(node.input[2]), self.g.const(node.input[3])
        self.check_scale_zero(node, scale, zero)
        mode = attr(node, "rounding_mode", b"ROUND")
        if (mode.decode() if isinstance(mode, bytes) else mode) != "ROUND":
            raise ModelError(f"{node_label(node)}: rounding mode {mode!r} (only ROUND, half to even)")
        if bits is None or np.asarray(bits).size != 1 or float(bits) != int(float(bits)):
            raise ModelError(f"{node_label(node)}: the bit width is not a constant integer")
        signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
        lo, hi = _int_range(int(float(bits)), signed, narrow)
        role = self.role(node.output[0])
        value = self.g.const(x)
        if value is not None:
            q = np.clip(np.rint(value.astype(np.float64) / np.asarray(scale, np.float64)), lo, hi)
            self.emit_constant(node, node.output[0], q, np.broadcast_to(scale, scale.shape), role)
        else:
            self.emit_activation(node, x, node.output[0], scale, lo, hi, signed)

    def qcdq_clip(self, node: onnx.NodeProto) -> bool:
        """Handle an integer Clip between QuantizeLinear/int constant and DequantizeLinear; False if not one."""
        src = node.input[0]
        users = self.g.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "DequantizeLinear":
            return False
        lo, hi = self.g.const(node.input[1]), self.g.const(node.input[2])
        if lo is None or hi is None:
            raise ModelError(f"{node_label(node)}: integer Clip bounds are not constants")
        dq = users[0]
        q_node = self.g.producer.get(src)
        values = self.g.const(src)
        if values is not None:  # int constant -> Clip -> DQ: fold the clip into the constant
            self.inits[src] = np.clip(values, lo, hi).astype(values.dtype)
            self.rewire[node.output[0]] = src
            return True
        if q_node is None or q_node.op_type != "QuantizeLinear":
            return False
        scale = self.g.const(q_node.input[1])
        self.check_scale_zero(q_node, scale, self.g.const(q_node.input[2]) if len(q_node.input) > 2 else None)
        info = np.iinfo(self.g.const(q_node.input[2]).dtype if len(q_node.input) > 2 else np.uint8)
        if (int(lo), int(hi)) != (info.min, info.max):
            self.clip_before_q[q_node.output[0]] = (int(lo), int(hi), float(np.asarray(scale).ravel()[0]))
        self.rewire[dq.input[0]] = src
        return True

    def run(self) -> onnx.ModelProto:
        self.rewire: dict[str, str] = {}
        self.clip_before_q: dict[str, tuple[int, int, float]] = {}
        graph_nodes = list(self.model.graph.node)
        clip_nodes = {id(n) for n in graph_nodes if n.op_type == "Clip" and self.qcdq_clip(n)}
        for n in graph_nodes:
            if id(n) in clip_nodes or n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                continue  # a Constant's value is in self.g.constants: finish() writes it as an initializer
            if n.op_type == "Identity" and n.domain in ("", "ai.onnx") and self.bypass_identity(n):
                continue
            if n.op_type in ("Quant", "BipolarQuant", "Trunc", "MultiThreshold") and n.domain in QONNX_DOMAINS:
                if n.op_type != "Quant":
                    raise ModelError(f"{node_label(n)}: QONNX {n.op_type} has no shiftpu form")
                self.quant(self.rewrite_inputs(n))
                continue
            if n.domain not in ("", "ai.onnx"):
                raise ModelError(f"{node_label(n)}: custom operator {n.domain}.{n.op_type}")
            n = self.rewrite_inputs(n)
            if n.op_type == "Reshape":
                n = self.reshape_as_flatten(n)
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                self.check_qdq(n)
            if n.op_type == "QuantizeLinear" and n.output[0] in self.clip_before_q:
                lo, hi, s = self.clip_before_q[n.output[0]]
                cl, ch = self.const(f"{n.output[0]}_clip_lo", np.float32(lo * s)), self.const(f"{n.output[0]}_clip_hi", np.float32(hi * s))
                self.nodes.append(helper.make_node("Clip", [n.input[0], cl, ch], [f"{n.output[0]}_clipped"]))
                n.input[0] = f"{n.output[0]}_clipped"
            self.nodes.append(n)
        return self.finish()

    def shape(self, tensor: str) -> list[int] | None:
        """A tensor's static shape from the model's inputs, outputs and value_info (None when not all known)."""
        g = self.model.graph
        for v in [*g.input, *g.output, *g.value_info]:
            if v.name == tensor and v.type.tensor_type.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                return None if None in dims else dims
        return None

    def reshape_as_flatten(self, n: onnx.NodeProto) -> onnx.NodeProto:
        """``Reshape(x, [N, K])`` of an N x ... tensor into N x K (how dynamo exports ``torch.flatten``) as Flatten."""
        target, dims = self.g.const(n.input[1]), self.shape(n.input[0])
        if target is None or dims is None or len(dims) < 2 or target.size != 2:
            return n
        n_rows, k = dims[0], int(np.prod(dims[1:]))
        resolved = [n_rows if int(t) == 0 and not attr(n, "allowzero", 0) else int(t) for t in target]
        resolved = [n_rows * k // -int(np.prod(resolved)) if t == -1 else t for t in resolved]
        if resolved != [n_rows, k]:
            return n
        return helper.make_node("Flatten", [n.input[0]], list(n.output), name=n.name, axis=1)

    def check_qdq(self, n: onnx.NodeProto) -> None:
        """A QuantizeLinear/DequantizeLinear of a QCDQ graph: power-of-two constant scales, zero points 0."""
        zero = self.g.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        self.check_scale_zero(n, self.g.const(n.input[1]), zero)

    def requantize_flatten(self) -> None:
        """Give ``DQ(x) -> Flatten`` a same-scale QuantizeLinear/DequantizeLinear after the Flatten.

        Brevitas exports ``Flatten`` between an activation's DequantizeLinear and a Linear layer; the
        quantized form wants every layer input to come from a DequantizeLinear. Flatten moves values without
        changing them, so quantizing its output with the same scale and type returns the same integers.
        """
        producer = {o: n for n in self.nodes for o in n.output}
        out: list[onnx.NodeProto] = []
        for n in self.nodes:
            dq = producer.get(n.input[0]) if n.op_type == "Flatten" else None
            is_act = dq is not None and dq.op_type == "DequantizeLinear" and self.const_value(dq.input[0]) is None
            if not is_act or n.output[0] in self.g.graph_outputs:
                out.append(n)
                continue
            flat, qname = f"{n.output[0]}_flat", f"{n.output[0]}_int"
            out.append(helper.make_node("Flatten", [n.input[0]], [flat], name=n.name, axis=int(attr(n, "axis", 1))))
            rest = list(dq.input[1:])
            out.append(helper.make_node("QuantizeLinear", [flat, *rest], [qname], name=f"{n.output[0]}_q"))
            out.append(helper.make_node("DequantizeLinear", [qname, *rest], [n.output[0]], name=f"{n.output[0]}_dq"))
        self.nodes = out

    def merge_relu_clip(self) -> None:
        """``Relu -> Clip(lo >= 0, hi)`` becomes ``Clip(lo, hi)``: the form a 4-bit ReLU output takes.

        A narrower-than-8-bit activation after a ReLU is exported as Relu and then the range Clip; the clip
        alone computes the same values (its lower bound already removes the negatives) and is the single
        activation the compiler fuses into the layer.
        """
        users: dict[str, int] = {}
        for n in self.nodes:
            for i in n.input:
                users[i] = users.get(i, 0) + 1
        producer = {o: n for n in self.nodes for o in n.output}
        dropped: set[int] = set()
        for n in self.nodes:
            relu = producer.get(n.input[0]) if n.op_type == "Clip" else None
            lo = self.const_value(n.input[1]) if relu is not None and len(n.input) > 1 and n.input[1] else None
            if relu is None or relu.op_type != "Relu" or lo is None or float(lo) < 0:
                continue
            if users[relu.output[0]] == 1 and relu.output[0] not in self.g.graph_outputs:
                n.input[0] = relu.input[0]
                dropped.add(id(relu))
        self.nodes = [n for n in self.nodes if id(n) not in dropped]

    def const_value(self, name: str) -> np.ndarray | None:
        """A constant's value, whether the model had it or the import made it."""
        return self.inits[name] if name in self.inits else self.g.const(name)

    def bypass_identity(self, n: onnx.NodeProto) -> bool:
        """Drop an Identity whose output is not a graph output (its users read its input); False to keep it."""
        if n.output[0] in self.g.graph_outputs:
            return False
        self.rewire[n.output[0]] = self.rewire.get(n.input[0], n.input[0])
        return True

    def outputs(self) -> list[onnx.ValueInfoProto]:
        """The graph outputs that are computed (constant outputs, e.g. a QuantTensor's scale, are dropped)."""
        kept = [o for o in self.model.graph.output if o.name not in self.g.constants]
        if not kept:
            raise ModelError("the model has no computed output (every graph output is a constant)")
        return kept

    def rewrite_inputs(self, n: onnx.NodeProto) -> onnx.NodeProto:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.input[:] = [self.rewire.get(i, i) for i in m.input]
        return m

    def finish(self) -> onnx.ModelProto:
        self.requantize_flatten()
        self.merge_relu_clip()
        used = {i for n in self.nodes for i in n.input}
        inits = {k: v for k, v in self.g.constants.items() if k in used}
        inits.update({k: v for k, v in self.inits.items() if k in used})
        g = self.model.graph
        graph = helper.make_graph(self.nodes, g.name or "imported", [i for i in g.input if i.name not in self.g.constants],
                                  self.outputs(), [numpy_helper.from_array(v, k) for k, v in inits.items()])
        version = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(version, 13))])
        model.ir_version = 9
        return onnx.shape_inference.infer_shapes(_to_project_opset(model))


def _same_definition(node: onnx.NodeProto, version: int) -> bool:
    """Whether ``node``'s operator has the same definition at opset ``version`` and at the project's opset."""
    try:
        here = onnx.defs.get_schema(node.op_type, max_inclusive_version=version, domain=node.domain).since_version
        there = onnx.defs.get_schema(node.op_type, max_inclusive_version=OPSET, domain=node.domain).since_version
    except onnx.defs.SchemaError:
        return False
    return here == there


def _to_project_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model at the quantized form's opset.

    When every operator is defined the same way at both opsets (e.g. QONNX exports at 20 use nothing that
    changed after 19), only the opset number changes. Otherwise an older model goes through onnx's version
    converter; a newer one is refused, naming a node whose operator changed (onnx cannot convert downwards).
    """
    version = model.opset_import[0].version
    changed = [n for n in model.graph.node if not _same_definition(n, version)]
    if not changed:
        model.opset_import[0].version = OPSET
        return model
    if version > OPSET:
        n = changed[0]
        raise ModelError(f"{node_label(n)}: {n.op_type} at opset {version} differs from opset {OPSET}; "
                         f"export at opset {OPSET} or lower")
    return to_opset(model)


def import_quantized(model: onnx.ModelProto, weight_code: WeightCode = WeightCode.SHIFT4) -> onnx.ModelProto:
    """A QONNX (``Quant`` nodes) or Brevitas QCDQ model in the quantized ONNX form of docs/quantized-onnx.md."""
    return _Importer(model, weight_code).run()
