"""Export of a shift quantization-aware model (from ``prepare_qat``) to the quantized ONNX form.

The exported graph computes exactly what the model computes in eval mode: onnxruntime on the file and
the PyTorch model give equal outputs, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch.nn.functional as F
from torch import fx, nn

from shiftpu.arch.numerics import Activation
from shiftpu.compiler.quant.fxops import classify, describe
from shiftpu.compiler.quant.qat import ActQuant, QatError, QConv2d, QLinear, leaky_shift
from shiftpu.compiler.quant.qdq import QdqBuilder, QTensor

Value = QTensor | str  # a quantized activation, or the name of a float tensor


def _arg(node: fx.Node, index: int, name: str, default: object) -> object:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _pair(v: object) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _quantized(value: Value, node: fx.Node) -> QTensor:
    if not isinstance(value, QTensor):
        raise QatError(f"{describe(node)} reads a value that is not quantized (an ActQuant is missing)")
    return value


class _Exporter:
    def __init__(self, gm: fx.GraphModule, input_shape: list[int | str]) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.input_shape = input_shape
        self.b = QdqBuilder(graph_name=type(gm).__name__)
        self.env: dict[fx.Node, Value] = {}
        self.n_inputs = 0
        self.b.reserve(["output"] + [f"output{i}" for i in range(1, 16)])

    def value(self, arg: fx.Node) -> Value:
        return self.env[arg]

    def run(self) -> onnx.ModelProto:
        for node in self.gm.graph.nodes:
            op = classify(node, self.modules)
            handler = getattr(self, f"_{op.name.lower()}", None)
            if handler is None:
                raise QatError(f"{describe(node)} has no shift-quantized ONNX form")
            result = handler(node)
            if result is not None:
                self.env[node] = result
        return self.b.build(producer="shiftpu.compiler.quant.export")

    def _input(self, node: fx.Node) -> Value:
        name = "input" if self.n_inputs == 0 else f"input{self.n_inputs}"
        self.n_inputs += 1
        return self.b.float_input(name, self.input_shape)

    def _act_quant(self, node: fx.Node) -> Value:
        quant: ActQuant = self.modules[node.target]
        x = self.value(node.args[0])
        if isinstance(x, QTensor):
            x = x.name
        return self.b.quantize(x, quant.exponent, quant.fmt, node.name)

    def _qconv(self, node: fx.Node) -> Value:
        conv: QConv2d = self.modules[node.target]
        x = self._layer_input(node, conv)
        ph, pw = _pair(conv.padding)
        return self.b.conv(x, conv.shift_weights(), conv.int_bias(), node.name, strides=list(_pair(conv.stride)),
                           pads=[ph, pw, ph, pw], dilations=list(_pair(conv.dilation)), group=conv.groups)

    def _qlinear(self, node: fx.Node) -> Value:
        linear: QLinear = self.modules[node.target]
        x = self._layer_input(node, linear)
        return self.b.gemm(x, linear.shift_weights(), linear.int_bias(), node.name)

    def _layer_input(self, node: fx.Node, layer: QConv2d | QLinear) -> QTensor:
        x = _quantized(self.value(node.args[0]), node)
        if layer.input_quant is None or layer.input_quant.exponent != x.exponent:
            raise QatError(f"{describe(node)}: its input quantizer does not match the scale of its input")
        return x

    def _float(self, node: fx.Node, index: int = 0) -> str:
        v = self.value(node.args[index])
        return v.name if isinstance(v, QTensor) else v

    def _relu(self, node: fx.Node) -> Value:
        return self.b.activation(self._float(node), Activation.RELU, 0, node.name)

    def _relu6(self, node: fx.Node) -> Value:
        return self.b.clip(self._float(node), 6.0, node.name)

    def _leaky_relu(self, node: fx.Node) -> Value:
        if node.op == "call_module":
            slope = self.modules[node.target].negative_slope
        else:
            slope = float(_arg(node, 1, "negative_slope", 0.01))
        return self.b.activation(self._float(node), Activation.LEAKY, leaky_shift(slope), node.name)

    def _add(self, node: fx.Node) -> Value:
        if not all(isinstance(a, fx.Node) for a in node.args[:2]):
            raise QatError(f"{describe(node)} adds a constant; only tensor + tensor is supported")
        return self.b.node("Add", [self._float(node, 0), self._float(node, 1)], node.name)[0]

    def _concat(self, node: fx.Node) -> Value:
        dim = int(_arg(node, 1, "dim", 0))
        if dim != 1:
            raise QatError(f"{describe(node)} concatenates along dim {dim}; only channels (dim 1) are supported")
        parts = [_quantized(self.value(a), node).name for a in node.args[0]]
        return self.b.node("Concat", parts, node.name, axis=1)[0]

    def _maxpool(self, node: fx.Node) -> Value:
        x = _quantized(self.value(node.args[0]), node)
        if node.op == "call_module":
            mod = self.modules[node.target]
            k, s, p, d, ceil = mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode
        else:
            k = _arg(node, 1, "kernel_size", None)
            s = _arg(node, 2, "stride", None) or k
            p, d = _arg(node, 3, "padding", 0), _arg(node, 4, "dilation", 1)
            ceil = _arg(node, 5, "ceil_mode", False)
        if _pair(d) != (1, 1) or ceil:
            raise QatError(f"{describe(node)}: max pooling with dilation or ceil_mode has no fabric form")
        ph, pw = _pair(p)
        (y,) = self.b.node("MaxPool", [x.name], node.name, kernel_shape=list(_pair(k)), strides=list(_pair(s)),
                           pads=[ph, pw, ph, pw])
        return self.b.requantize_like(y, x, node.name)

    def _flatten(self, node: fx.Node) -> Value:
        x = _quantized(self.value(node.args[0]), node)
        if node.op == "call_module":
            start = self.modules[node.target].start_dim
        else:
            start = int(_arg(node, 1, "start_dim", 0))
        if start != 1:
            raise QatError(f"{describe(node)} flattens from dim {start}; only dim 1 is supported")
        (y,) = self.b.node("Flatten", [x.name], node.name, axis=1)
        return self.b.requantize_like(y, x, node.name)

    def _upsample(self, node: fx.Node) -> Value:
        x = _quantized(self.value(node.args[0]), node)
        if node.op == "call_module":
            mod = self.modules[node.target]
            factor, mode = mod.scale_factor, mod.mode
        else:
            factor, mode = _arg(node, 2, "scale_factor", None), _arg(node, 3, "mode", "nearest")
        if mode != "nearest" or factor not in (2, 2.0, (2, 2), (2.0, 2.0)):
            raise QatError(f"{describe(node)}: only nearest upsampling by 2 is supported")
        scales = self.b.constant(f"{node.name}_scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
        (y,) = self.b.node("Resize", [x.name, "", scales], node.name, mode="nearest",
                           coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return self.b.requantize_like(y, x, node.name)

    def _mean(self, node: fx.Node) -> Value:
        """Global average pooling: GlobalAveragePool (a 1 x 1 map kept) or ReduceMean over H and W (dropped);
        the ActQuant after it gives the result its scale."""
        x = _quantized(self.value(node.args[0]), node)
        if node.op == "call_module":
            size = self.modules[node.target].output_size
            keep = True
        elif node.target is F.adaptive_avg_pool2d:
            size, keep = _arg(node, 1, "output_size", None), True
        else:  # torch.mean(x, dims, keepdim) or x.mean(dims, keepdim)
            dims = _arg(node, 1, "dim", None)
            dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
            size = 1 if sorted(int(d) % 4 for d in dims if d is not None) == [2, 3] else None
            keep = bool(_arg(node, 2, "keepdim", False))
        if size not in (1, (1, 1), [1, 1]):
            raise QatError(f"{describe(node)}: only global average pooling (a 1 x 1 output, a mean over H and W) "
                           "is supported")
        if keep:
            return self.b.node("GlobalAveragePool", [x.name], node.name)[0]
        axes = self.b.constant(f"{node.name}_axes", np.array([2, 3], dtype=np.int64))
        return self.b.node("ReduceMean", [x.name, axes], node.name, keepdims=0)[0]

    def _identity(self, node: fx.Node) -> Value:
        return self.value(node.args[0])

    def _output(self, node: fx.Node) -> None:
        results = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
        for i, arg in enumerate(results):
            v = self.value(arg)
            self.b.output(v.name if isinstance(v, QTensor) else v, "output" if i == 0 else f"output{i}")


def export_qdq(model: nn.Module, input_shape: list[int | str], path: str | Path | None = None) -> onnx.ModelProto:
    """The quantized ONNX form of a prepared model (``prepare_qat``); also written to ``path`` when given.

    ``input_shape`` is the NCHW (or NC) shape of the model input, e.g. ``[1, 3, 64, 64]`` (the batch may be
    a name such as ``"N"``).
    """
    if not isinstance(model, fx.GraphModule):
        raise QatError("export_qdq needs the model returned by prepare_qat")
    was_training = model.training
    model.eval()
    try:
        onnx_model = _Exporter(model, list(input_shape)).run()
    finally:
        model.train(was_training)
    if path is not None:
        onnx.save(onnx_model, str(path))
    return onnx_model
