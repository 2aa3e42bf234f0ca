"""Normalisation of a float ONNX model before quantization.

Nodes whose inputs are all constant are evaluated (e.g. the pads that torch.onnx computes for ``F.pad``);
BatchNormalization after a Conv is folded into the Conv's weights and bias; a Pad that the following Conv or
MaxPool can do itself is folded into its padding (``compiler/padding.py``); a GlobalAveragePool over H x W values,
H W not a power of two, that feeds a Gemm (through a Flatten) or a 1x1 Conv becomes a sum times 2^-m (a depthwise
Conv, weights 2^-m, 2^m >= H W), the factor 2^m / (H W) moving into the layer after it, since the fabric divides by
shifting only; Gemm becomes
``Gemm(transA=0, transB=1, alpha=1, beta=1)`` with an explicit bias; ``MatMul`` by a constant matrix
followed by ``Add`` of a constant vector becomes such a Gemm. The result is a float model that computes
the same function and in which every quantizable layer is one Conv or Gemm node with constant weights.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from shiftpu.compiler.onnx_import import fold_constants
from shiftpu.compiler.padding import conv_pads, maxpool_pads, spatial_pad
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, attr
from shiftpu.compiler.quant.qdq import OPSET

#: Ops that hold a quantizable layer after folding.
LAYER_OPS = frozenset({"Conv", "Gemm"})
_HANDLED = ("Conv", "Gemm", "MatMul", "MaxPool", "GlobalAveragePool")
#: Largest map a mean is rewritten for: the kernel of one CONV instruction.
MEAN_KERNEL = 7


class _Folder:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = GraphIndex(model)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = dict(self.g.constants)
        self.skip: set[int] = set()
        self.shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                       for vi in list(self.model.graph.input) + list(self.model.graph.value_info)}
        #: Conv/MaxPool -> (the input of the Pad folded into it, its padding with the Pad's)
        self.padded: dict[int, tuple[str, list[int]]] = {}
        #: GlobalAveragePool -> m of the sum times 2^-m it becomes; its consumer -> the factor of its weights
        self.mean_shift: dict[int, int] = {}
        self.weight_factor: dict[int, float] = {}
        self._fold_pads()
        self._fold_means()

    def _fold_means(self) -> None:
        for node in self.model.graph.node:
            shape = self.shapes.get(node.input[0], []) if node.op_type == "GlobalAveragePool" else []
            if len(shape) != 4 or min(shape) < 1:
                continue
            n = shape[2] * shape[3]
            if not n & (n - 1) or max(shape[2:]) > MEAN_KERNEL:
                continue
            user = self.sole_consumer(node.output[0], "Conv")
            if user is None:
                flat = self.sole_consumer(node.output[0], "Flatten")
                user = self.sole_consumer(flat.output[0], "Gemm") if flat is not None and \
                    int(attr(flat, "axis", 1)) == 1 else None
            weights = self.g.const(user.input[1]) if user is not None and len(user.input) > 1 else None
            if weights is None:
                continue
            if user.op_type == "Conv" and (weights.shape[2:] != (1, 1) or int(attr(user, "group", 1)) != 1):
                continue
            bias = user.input[2] if len(user.input) > 2 and user.input[2] else ""
            if user.op_type == "Gemm" and (int(attr(user, "transA", 0)) or (bias and self.g.const(bias) is None)):
                continue  # the Gemm is kept as it is (below): its weights could not take the factor
            m = (n - 1).bit_length()
            self.mean_shift[id(node)] = m
            self.weight_factor[id(user)] = 2.0**m / n

    def globalaveragepool(self, node: onnx.NodeProto) -> None:
        if id(node) not in self.mean_shift:
            self.nodes.append(node)
            return
        _, c, h, w = self.shapes[node.input[0]]
        name = node.name or node.output[0]
        wn = self.new_const(f"{name}_w", np.full((c, 1, h, w), 2.0 ** -self.mean_shift[id(node)], np.float32))
        bn = self.new_const(f"{name}_b", np.zeros(c, np.float32))
        self.nodes.append(helper.make_node("Conv", [node.input[0], wn, bn], list(node.output), name=name,
                                           kernel_shape=[h, w], group=c))

    def _fold_pads(self) -> None:
        shapes = self.shapes
        for pad in self.model.graph.node:
            p = spatial_pad(pad, self.g.const)
            user = self.sole_consumer(pad.output[0], "Conv") or self.sole_consumer(pad.output[0], "MaxPool")
            if p is None or user is None or user.input[0] != pad.output[0] or \
                    attr(user, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                continue
            own = tuple(int(v) for v in attr(user, "pads", [0, 0, 0, 0]))
            if len(own) != 4:
                continue
            if user.op_type == "Conv":
                new = conv_pads(p, own)
            else:
                shape = shapes.get(pad.input[0], [])
                kernel = tuple(int(v) for v in attr(user, "kernel_shape", []))
                if len(shape) != 4 or min(shape[2:]) < 1 or len(kernel) != 2 or int(attr(user, "ceil_mode", 0)) or \
                        any(d != 1 for d in attr(user, "dilations", [1, 1])):
                    continue
                strides = tuple(int(v) for v in attr(user, "strides", [1, 1]))
                new = maxpool_pads(p, (shape[2], shape[3]), kernel, strides, own, -np.inf)
            if new is not None:
                self.skip.add(id(pad))
                self.padded[id(user)] = (pad.input[0], list(new))

    def attributes(self, node: onnx.NodeProto) -> dict:
        """The node's attributes, with the padding of a Pad folded into it."""
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if id(node) in self.padded:
            a["pads"] = self.padded[id(node)][1]
        return a

    def data_input(self, node: onnx.NodeProto) -> str:
        """The node's first input, or the input of the Pad folded into it."""
        return self.padded[id(node)][0] if id(node) in self.padded else node.input[0]

    def maxpool(self, node: onnx.NodeProto) -> None:
        self.nodes.append(helper.make_node("MaxPool", [self.data_input(node), *node.input[1:]], list(node.output),
                                           name=node.name, **self.attributes(node)))

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
            self.nodes.append(helper.make_node("Conv", [self.data_input(node), *node.input[1:]], list(node.output),
                                               name=node.name, **self.attributes(node)))
            return
        w = w.astype(np.float64) * self.weight_factor.get(id(node), 1.0)
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
        self.nodes.append(helper.make_node("Conv", [self.data_input(node), wn, bname], [out], name=node.name or out,
                                           **self.attributes(node)))

    def gemm(self, node: onnx.NodeProto) -> None:
        w = self.g.const(node.input[1])
        if w is None or int(attr(node, "transA", 0)):
            self.nodes.append(node)
            return
        w = w.astype(np.float64) * float(attr(node, "alpha", 1.0)) * self.weight_factor.get(id(node), 1.0)
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
            handler = getattr(self, node.op_type.lower(), None) if node.op_type in _HANDLED else None
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
    """The float model with constants evaluated, BatchNorms and Pads folded and every weighted layer as one Conv
    or Gemm (opset 19)."""
    return _Folder(onnx.shape_inference.infer_shapes(fold_constants(to_opset(model)))).run()
