"""Normalisation of a float ONNX model before quantization.

BatchNormalization after a Conv is folded into the Conv's weights and bias; Gemm becomes
``Gemm(transA=0, transB=1, alpha=1, beta=1)`` with an explicit bias; ``MatMul`` by a constant matrix
followed by ``Add`` of a constant vector becomes such a Gemm. The result is a float model that computes
the same function and in which every quantizable layer is one Conv or Gemm node with constant weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, attr
from shiftpu.compiler.quant.qdq import OPSET

#: Ops that hold a quantizable layer after folding.
LAYER_OPS = frozenset({"Conv", "Gemm"})


class _Folder:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = GraphIndex(model)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = dict(self.g.constants)
        self.skip: set[int] = set()

    def sole_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.g.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.g.graph_outputs:
            return users[0]
        return None

    def new_const(self, hint: str, value: np.ndarray) -> str:
        name, i = hint, 1
        while name in self.inits or name in self.g.producer:
            name, i = f"{hint}_{i}", i + 1
        self.inits[name] = value
        return name

    def conv(self, node: onnx.NodeProto) -> None:
        w = self.g.const(node.input[1])
        if w is None:
            self.nodes.append(node)
            return
        w = w.astype(np.float64)
        b = self.g.const(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
        out = node.output[0]
        bn = self.sole_consumer(out, "BatchNormalization")
        if bn is not None and all(self.g.const(i) is not None for i in bn.input[1:5]) and len(bn.output) == 1:
            gamma, beta, mean, var = (self.g.const(i).astype(np.float64) for i in bn.input[1:5])
            k = gamma / np.sqrt(var + float(attr(bn, "epsilon", 1e-5)))
            w = w * k.reshape(-1, 1, 1, 1)
            b = (b - mean) * k + beta
            out = bn.output[0]
            self.skip.add(id(bn))
        wn = self.new_const(f"{node.name or out}_w", w.astype(np.float32))
        bname = self.new_const(f"{node.name or out}_b", b.astype(np.float32))
        self.nodes.append(helper.make_node("Conv", [node.input[0], wn, bname], [out], name=node.name or out,
                                           **{a.name: helper.get_attribute_value(a) for a in node.attribute}))

    def gemm(self, node: onnx.NodeProto) -> None:
        w = self.g.const(node.input[1])
        if w is None or int(attr(node, "transA", 0)):
            self.nodes.append(node)
            return
        w = w.astype(np.float64) * float(attr(node, "alpha", 1.0))
        if not int(attr(node, "transB", 0)):
            w = w.T
        c = self.g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
        if c is None:
            self.nodes.append(node)
            return
        b = np.broadcast_to(np.asarray(c, np.float64) * float(attr(node, "beta", 1.0)), (w.shape[0],))
        self._emit_gemm(node.name or node.output[0], node.input[0], w, b, node.output[0])

    def matmul(self, node: onnx.NodeProto) -> None:
        w = self.g.const(node.input[1])
        if w is None or w.ndim != 2:
            self.nodes.append(node)
            return
        b = np.zeros(w.shape[1])
        out = node.output[0]
        add = self.sole_consumer(out, "Add")
        if add is not None:
            other = add.input[1] if add.input[0] == out else add.input[0]
            c = self.g.const(other)
            if c is not None and c.size == w.shape[1]:
                b = c.astype(np.float64).ravel()
                out = add.output[0]
                self.skip.add(id(add))
        self._emit_gemm(node.name or out, node.input[0], w.T.astype(np.float64), b, out)

    def _emit_gemm(self, name: str, x: str, w: np.ndarray, b: np.ndarray, out: str) -> None:
        wn = self.new_const(f"{name}_w", np.ascontiguousarray(w, dtype=np.float32))
        bn = self.new_const(f"{name}_b", np.asarray(b, dtype=np.float32))
        self.nodes.append(helper.make_node("Gemm", [x, wn, bn], [out], name=name, transB=1))

    def run(self) -> onnx.ModelProto:
        for node in self.model.graph.node:
            if id(node) in self.skip or node.op_type == "Constant":
                continue
            handler = getattr(self, node.op_type.lower(), None) if node.op_type in ("Conv", "Gemm", "MatMul") else None
            if handler is None:
                self.nodes.append(node)
            else:
                handler(node)
        used = {i for n in self.nodes for i in n.input}
        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items() if k in used]
        g = self.model.graph
        inputs = [i for i in g.input if i.name not in self.g.constants]
        graph = helper.make_graph(self.nodes, g.name or "float", inputs, list(g.output), inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = self.model.ir_version
        return onnx.shape_inference.infer_shapes(model)


def to_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model converted to the quantized form's opset (the default domain only)."""
    domains = {o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")}
    if domains:
        raise ModelError(f"the model uses custom operator domains {sorted(domains)}")
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if version == OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, OPSET)
    except Exception as e:
        raise ModelError(f"cannot convert the model from opset {version} to {OPSET}: {str(e).splitlines()[0]}") from e


def fold_float_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float model with BatchNorms folded and every weighted layer as one Conv or Gemm (opset 19)."""
    return _Folder(to_opset(model)).run()
