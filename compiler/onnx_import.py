"""ONNX front end: read and validate a model, infer shapes, fold constants.

Everything that can go wrong with the file itself (missing, truncated, not ONNX, invalid graph, batch
size other than 1, unknown shapes) is reported here as a :class:`ModelError` naming the cause.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from shiftpu.errors import ShiftpuError


class ModelError(ShiftpuError):
    """The ONNX file cannot be read or is not a model shiftpu can compile."""


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read, check and shape-infer an ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, onnx raises others: all mean "not a model"
        raise ModelError(f"{path}: not a readable ONNX model (truncated or corrupt?): {type(e).__name__}: {e}") from None
    return prepare(model, str(path))


def prepare(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    """Check, fold constants and infer shapes of an in-memory model."""
    if not model.graph.node:
        raise ModelError(f"{source}: the graph has no nodes (empty or truncated file)")
    if not model.graph.output:
        raise ModelError(f"{source}: the graph has no outputs")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{source}: invalid ONNX model: {str(e).splitlines()[0]}") from None
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") for d in dims):
            raise ModelError(f"{source}: input '{vi.name}' has a symbolic or unknown shape: export with a fixed shape")
        if dims[0].dim_value != 1:
            raise ModelError(f"{source}: input '{vi.name}' has batch size {dims[0].dim_value}: only batch 1 is supported")
    model = fold_constants(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise ModelError(f"{source}: shape inference failed: {str(e).splitlines()[0]}") from None
    return model


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn Constant nodes into initializers and evaluate nodes whose inputs are all constant.

    DequantizeLinear of constants is kept: it is how quantized weights and biases are recognised.
    """
    from onnx.reference import ReferenceEvaluator

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    kept: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in g.node:
        inputs = [i for i in node.input if i]
        foldable = node.op_type == "Constant" or (
            node.op_type != "DequantizeLinear" and inputs and all(i in consts for i in inputs) and node.domain == ""
        )
        if not foldable:
            kept.append(node)
            continue
        if node.op_type == "Constant":
            values = [numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))]
        else:
            sub = helper.make_graph(
                [node], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
                [numpy_helper.from_array(consts[i], i) for i in inputs],
            )
            values = ReferenceEvaluator(helper.make_model(sub, opset_imports=model.opset_import)).run(None, {})
        for name, v in zip(node.output, values, strict=True):
            consts[name] = np.asarray(v)
            new_inits.append(numpy_helper.from_array(np.asarray(v), name))
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    return model


def shape_of(model: onnx.ModelProto, name: str) -> tuple[int, ...] | None:
    """Static shape of a value (graph input, output, value_info or initializer), None if unknown."""
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                return None
            return tuple(d.dim_value for d in dims)
    for init in g.initializer:
        if init.name == name:
            return tuple(init.dims)
    return None


def attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
