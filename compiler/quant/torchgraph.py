"""A float ONNX graph evaluated with PyTorch operations, so that gradients flow back to its input.

Data-free calibration (``datafree``) optimises inputs through the float model; this module rebuilds the part
of an ONNX graph it needs (the nodes that feed the named tensors) from torch.nn.functional, with the graph's
constants as fixed tensors. It covers the operations of the float models that ``shiftpu quantize`` takes
(convolution, BatchNormalization, activations, padding, pooling, means, Gemm/MatMul, Add/Mul, Concat, reshaping,
nearest upsampling, space-to-depth) and names any other operation it meets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from shiftpu.compiler.onnx_import import fold_constants
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, attr, node_label

Tensor = torch.Tensor


class UnsupportedNode(ModelError):
    """A node on the way to a requested tensor has no PyTorch form here."""


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return [int(v) for v in attr(node, name, default)]


def _pad_spatial(x: Tensor, pads: list[int], value: float) -> Tensor:
    """ONNX pads [top, left, bottom, right] (begins, then ends) applied to the last two axes."""
    if not any(pads):
        return x
    half = len(pads) // 2
    torch_pads: list[int] = []
    for axis in reversed(range(half)):
        torch_pads += [pads[axis], pads[axis + half]]
    return F.pad(x, torch_pads, value=value)


class TorchGraph:
    """The float ONNX ``model`` as a function of its single input, returning the named tensors.

    Only the nodes those tensors depend on are evaluated; an operation without a PyTorch form among them is
    refused when the graph is built (``UnsupportedNode``, naming the node).
    """

    def __init__(self, model: onnx.ModelProto, outputs: list[str]) -> None:
        self.model = fold_constants(model)
        self.g = GraphIndex(self.model)
        if len(self.g.graph_inputs) != 1:
            raise ModelError(f"the model has {len(self.g.graph_inputs)} inputs; exactly one is supported")
        self.input_name = self.g.graph_inputs[0]
        self.outputs = list(outputs)
        self.consts = {k: torch.tensor(np.array(v)) for k, v in self.g.constants.items()}
        self.nodes = self._needed(outputs)
        for node in self.nodes:
            if getattr(self, f"_op_{node.op_type.lower()}", None) is None:
                raise UnsupportedNode(f"node {node_label(node)} ({node.op_type}) has no PyTorch form for data-free "
                                      "calibration")
        dims = self.model.graph.input[[i.name for i in self.model.graph.input].index(self.input_name)]
        first = dims.type.tensor_type.shape.dim[0] if dims.type.tensor_type.shape.dim else None
        #: the model's fixed batch size (0 when symbolic): a Reshape to it is given the batch of the run instead
        self.fixed_batch = int(first.dim_value) if first is not None and first.HasField("dim_value") else 0

    def _needed(self, outputs: list[str]) -> list[onnx.NodeProto]:
        """The nodes the named tensors depend on, in graph order."""
        wanted, stack = set(), list(outputs)
        while stack:
            name = stack.pop()
            node = self.g.producer.get(name)
            if node is None or id(node) in wanted:
                continue
            wanted.add(id(node))
            stack.extend(i for i in node.input if i and i not in self.g.constants)
        return [n for n in self.model.graph.node if id(n) in wanted]

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        env: dict[str, Tensor] = {self.input_name: x}

        def value(name: str) -> Tensor | None:
            if not name:
                return None
            return env[name] if name in env else self.consts[name]

        for node in self.nodes:
            op: Callable = getattr(self, f"_op_{node.op_type.lower()}")
            result = op(node, [value(i) for i in node.input])
            results = result if isinstance(result, tuple) else (result,)
            for name, v in zip(node.output, results, strict=False):
                env[name] = v
        return {name: env[name] for name in self.outputs}

    # -- operations ----------------------------------------------------------------------------------------

    def _op_conv(self, node: onnx.NodeProto, ins: list) -> Tensor:
        if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedNode(f"node {node_label(node)}: Conv with auto_pad")
        x, w = ins[0], ins[1]
        k = w.dim() - 2
        pads = _ints(node, "pads", [0] * 2 * k)
        padding = pads[:k]
        if pads[:k] != pads[k:]:  # torch pads both sides alike: pad asymmetric ones first
            x, padding = _pad_spatial(x, pads, 0.0), [0] * k
        conv = F.conv2d if k == 2 else F.conv1d
        return conv(x, w, ins[2] if len(ins) > 2 else None, _ints(node, "strides", [1] * k), padding,
                    _ints(node, "dilations", [1] * k), int(attr(node, "group", 1)))

    def _op_batchnormalization(self, node: onnx.NodeProto, ins: list) -> Tensor:
        x, gamma, beta, mean, var = ins[:5]
        return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=float(attr(node, "epsilon", 1e-5)))

    def _op_pad(self, node: onnx.NodeProto, ins: list) -> Tensor:
        x = ins[0]
        pads = [int(v) for v in (ins[1].tolist() if len(ins) > 1 and ins[1] is not None else attr(node, "pads", []))]
        axes = list(range(x.dim()))
        if len(ins) > 3 and ins[3] is not None:
            axes = [int(a) % x.dim() for a in ins[3].tolist()]
        begins, ends = dict(zip(axes, pads[: len(axes)], strict=True)), dict(zip(axes, pads[len(axes) :], strict=True))
        torch_pads: list[int] = []
        for axis in reversed(range(x.dim())):
            torch_pads += [begins.get(axis, 0), ends.get(axis, 0)]
        while torch_pads and torch_pads[-2:] == [0, 0]:  # torch's reflect and replicate pad only trailing axes
            torch_pads = torch_pads[:-2]
        mode = attr(node, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode == "constant":
            value = float(ins[2]) if len(ins) > 2 and ins[2] is not None and ins[2].numel() else 0.0
            return F.pad(x, torch_pads, value=value)
        if mode not in ("reflect", "edge"):
            raise UnsupportedNode(f"node {node_label(node)}: Pad mode {mode}")
        return F.pad(x, torch_pads, mode="reflect" if mode == "reflect" else "replicate")

    def _op_relu(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return F.relu(ins[0])

    def _op_leakyrelu(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return F.leaky_relu(ins[0], float(attr(node, "alpha", 0.01)))

    def _op_clip(self, node: onnx.NodeProto, ins: list) -> Tensor:
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else attr(node, "min", None)
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else attr(node, "max", None)
        return torch.clamp(ins[0], None if lo is None else float(lo), None if hi is None else float(hi))

    def _op_sigmoid(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return torch.sigmoid(ins[0])

    def _op_maxpool(self, node: onnx.NodeProto, ins: list) -> Tensor:
        if len(node.output) > 1 or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedNode(f"node {node_label(node)}: MaxPool with indices or auto_pad")
        k = _ints(node, "kernel_shape", [])
        x = _pad_spatial(ins[0], _ints(node, "pads", [0] * 2 * len(k)), float("-inf"))
        return F.max_pool2d(x, k, _ints(node, "strides", [1] * len(k)), 0, _ints(node, "dilations", [1] * len(k)),
                            ceil_mode=bool(attr(node, "ceil_mode", 0)))

    def _op_averagepool(self, node: onnx.NodeProto, ins: list) -> Tensor:
        k = _ints(node, "kernel_shape", [])
        pads = _ints(node, "pads", [0] * 2 * len(k))
        if pads[: len(k)] != pads[len(k) :] or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedNode(f"node {node_label(node)}: AveragePool with asymmetric or automatic padding")
        return F.avg_pool2d(ins[0], k, _ints(node, "strides", [1] * len(k)), pads[: len(k)],
                            ceil_mode=bool(attr(node, "ceil_mode", 0)),
                            count_include_pad=bool(attr(node, "count_include_pad", 0)))

    def _op_globalaveragepool(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)

    def _op_reducemean(self, node: onnx.NodeProto, ins: list) -> Tensor:
        axes = ins[1] if len(ins) > 1 and ins[1] is not None else attr(node, "axes", None)
        dims = tuple(range(ins[0].dim())) if axes is None else tuple(int(a) for a in np.asarray(axes).ravel())
        return ins[0].mean(dim=dims, keepdim=bool(attr(node, "keepdims", 1)))

    def _op_flatten(self, node: onnx.NodeProto, ins: list) -> Tensor:
        axis = int(attr(node, "axis", 1)) % max(ins[0].dim(), 1)
        return ins[0].reshape(int(np.prod(ins[0].shape[:axis])), -1)

    def _op_reshape(self, node: onnx.NodeProto, ins: list) -> Tensor:
        x = ins[0]
        shape = [int(v) for v in ins[1].tolist()]
        shape = [x.shape[i] if v == 0 and not attr(node, "allowzero", 0) else v for i, v in enumerate(shape)]
        if shape and self.fixed_batch and shape[0] == self.fixed_batch and x.shape[0] != self.fixed_batch:
            shape[0] = x.shape[0]
        return x.reshape(shape)

    def _op_transpose(self, node: onnx.NodeProto, ins: list) -> Tensor:
        perm = _ints(node, "perm", list(reversed(range(ins[0].dim()))))
        return ins[0].permute(perm)

    def _op_squeeze(self, node: onnx.NodeProto, ins: list) -> Tensor:
        axes = ins[1] if len(ins) > 1 and ins[1] is not None else attr(node, "axes", None)
        if axes is None:
            return ins[0].squeeze()
        return ins[0].squeeze(tuple(int(a) for a in np.asarray(axes).ravel()))

    def _op_unsqueeze(self, node: onnx.NodeProto, ins: list) -> Tensor:
        axes = ins[1] if len(ins) > 1 and ins[1] is not None else attr(node, "axes", [])
        x = ins[0]
        for a in sorted(int(a) for a in np.asarray(axes).ravel()):
            x = x.unsqueeze(a)
        return x

    def _op_concat(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return torch.cat(ins, dim=int(attr(node, "axis", 0)))

    def _op_add(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0] + ins[1]

    def _op_sub(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0] - ins[1]

    def _op_mul(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0] * ins[1]

    def _op_div(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0] / ins[1]

    def _op_gemm(self, node: onnx.NodeProto, ins: list) -> Tensor:
        a = ins[0].t() if attr(node, "transA", 0) else ins[0]
        b = ins[1].t() if attr(node, "transB", 0) else ins[1]
        y = float(attr(node, "alpha", 1.0)) * (a @ b)
        if len(ins) > 2 and ins[2] is not None:
            y = y + float(attr(node, "beta", 1.0)) * ins[2]
        return y

    def _op_matmul(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return torch.matmul(ins[0], ins[1])

    def _op_identity(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0]

    def _op_dropout(self, node: onnx.NodeProto, ins: list) -> Tensor:
        return ins[0]

    def _op_resize(self, node: onnx.NodeProto, ins: list) -> Tensor:
        scales = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].numel() else None
        if attr(node, "mode", b"nearest") not in (b"nearest", "nearest") or scales is None:
            raise UnsupportedNode(f"node {node_label(node)}: only nearest Resize by constant scales")
        factors = [float(s) for s in scales.tolist()]
        if factors[:2] != [1.0, 1.0]:
            raise UnsupportedNode(f"node {node_label(node)}: Resize of the batch or channel axis")
        return F.interpolate(ins[0], scale_factor=factors[2:], mode="nearest")

    def _op_spacetodepth(self, node: onnx.NodeProto, ins: list) -> Tensor:
        b = int(attr(node, "blocksize", 2))
        n, c, h, w = ins[0].shape
        y = ins[0].reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)
