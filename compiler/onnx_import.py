"""ONNX front end: read and validate a model, fix its input shapes, infer shapes, fold constants.

Everything that can go wrong with the file itself (missing, truncated, not ONNX, invalid graph, batch
size other than 1, symbolic shapes that are not given, scales that are not powers of two) is reported
here as a :class:`ModelError` naming the cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from shiftpu.arch.numerics import is_pow2
from shiftpu.errors import ShiftpuError


class ModelError(ShiftpuError):
    """The ONNX file cannot be read or is not a model shiftpu can compile."""


def load_onnx(path: str | Path, input_shapes: Mapping[str, tuple[int, ...]] | None = None
              ) -> tuple[onnx.ModelProto, list[str]]:
    """Read, check and shape-infer an ONNX file (see :func:`prepare`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, onnx raises others: all mean "not a model"
        raise ModelError(f"{path}: not a readable ONNX model (truncated or corrupt?): {type(e).__name__}: {e}") from None
    return prepare(model, str(path), input_shapes)


def prepare(model: onnx.ModelProto, source: str = "model", input_shapes: Mapping[str, tuple[int, ...]] | None = None
            ) -> tuple[onnx.ModelProto, list[str]]:
    """Check a model, fix its input shapes (:func:`bind_input_shapes`), fold constants and infer shapes.

    Returns the prepared model and one line per symbolic batch dimension bound without being asked.
    """
    if not model.graph.node:
        raise ModelError(f"{source}: the graph has no nodes (empty or truncated file)")
    if not model.graph.output:
        raise ModelError(f"{source}: the graph has no outputs")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{source}: invalid ONNX model: {str(e).splitlines()[0]}") from None
    model, bound = bind_input_shapes(model, input_shapes or {}, source)
    for vi in model_inputs(model):
        batch = vi.type.tensor_type.shape.dim[0].dim_value
        if batch != 1:
            raise ModelError(f"{source}: input '{vi.name}' has batch size {batch}: only batch 1 is supported")
    model = fold_constants(model)
    require_pow2_scales(model, source)
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:
        raise ModelError(f"{source}: shape inference failed: {str(e).splitlines()[0]}") from None
    return model, bound


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers: what a caller feeds."""
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def parse_input_shapes(specs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` values by input name: ``1,3,224,224`` gives the only input's shape (key ""),
    ``name:1,3,224,224`` that of the input ``name``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, _, sizes = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in sizes.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ModelError(f"--input-shape {spec!r}: expected positive sizes separated by commas, "
                             "e.g. 1,3,224,224 or input:1,3,224,224")
        if name in shapes:
            raise ModelError(f"--input-shape: input '{name}' is given twice" if name else
                             "--input-shape: give one shape per input, each as name:sizes")
        shapes[name] = shape
    return shapes


def _dim_text(d: onnx.TensorShapeProto.Dimension) -> str:
    return f"'{d.dim_param}'" if d.dim_param else "(unnamed)"


def bind_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], source: str = "model"
                      ) -> tuple[onnx.ModelProto, list[str]]:
    """Give every model input a fixed shape: the one in ``shapes`` (by name, "" for the only input), or its own
    with a symbolic first (batch) dimension bound to 1. Another symbolic dimension without a given shape is
    refused. Returns the model (a copy when anything changed) and one line per batch dimension bound.
    """
    inputs = model_inputs(model)
    names = [vi.name for vi in inputs]
    shapes = dict(shapes)
    if "" in shapes:
        if len(inputs) != 1:
            raise ModelError(f"--input-shape: the model has {len(inputs)} inputs ({', '.join(names)}): "
                             "give each shape as name:sizes")
        if names[0] in shapes:
            raise ModelError(f"--input-shape: input '{names[0]}' is given twice")
        shapes[names[0]] = shapes.pop("")
    for name in shapes:
        if name not in names:
            raise ModelError(f"--input-shape: {source} has no input '{name}' (its inputs: {', '.join(names)})")
    fixed: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for vi in inputs:
        t = vi.type.tensor_type
        dims = list(t.shape.dim)
        given = shapes.get(vi.name)
        if given is not None:
            if t.HasField("shape") and len(dims) != len(given):
                raise ModelError(f"--input-shape {vi.name}: {len(given)} sizes for an input with {len(dims)} dimensions")
            for k, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value != given[k]:
                    raise ModelError(f"--input-shape {vi.name}: dimension {k} is {d.dim_value} in the model, "
                                     f"not {given[k]}")
            if any(not d.HasField("dim_value") for d in dims) or not t.HasField("shape"):
                fixed[vi.name] = given
            continue
        if not t.HasField("shape") or not dims:
            raise ModelError(f"{source}: input '{vi.name}' has an unknown shape: give it with "
                             f"--input-shape {vi.name}:1,C,H,W")
        free = [k for k, d in enumerate(dims) if not d.HasField("dim_value")]
        if free and free[-1] > 0:
            k = next(k for k in free if k > 0)
            example = ",".join("1" if j == 0 else (str(d.dim_value) if d.HasField("dim_value") else
                                                   f"<{d.dim_param or f'size {j}'}>") for j, d in enumerate(dims))
            raise ModelError(f"{source}: input '{vi.name}' has symbolic dimension {k} {_dim_text(dims[k])}: "
                             f"give its size with --input-shape {vi.name}:{example}")
        if free:
            fixed[vi.name] = (1, *(d.dim_value for d in dims[1:]))
            notes.append(f"input '{vi.name}': symbolic batch dimension {_dim_text(dims[0])} bound to 1")
    if not fixed:
        return model, notes
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for vi in model.graph.input:
        if vi.name in fixed:
            vi.type.tensor_type.ClearField("shape")
            for size in fixed[vi.name]:
                vi.type.tensor_type.shape.dim.add().dim_value = size
    # the shapes inferred from the symbolic ones are stale: shape inference gives them again
    del model.graph.value_info[:]
    for vi in model.graph.output:
        if any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim):
            vi.type.tensor_type.ClearField("shape")
    return model, notes


def require_pow2_scales(model: onnx.ModelProto, source: str = "model") -> None:
    """Refuse a model whose QuantizeLinear/DequantizeLinear scales are not all powers of two (a model quantized
    by another tool, e.g. onnxruntime's quantize_static): the accelerator rescales by shifts only."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
               if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    scales: dict[str, np.ndarray] = {}  # quantized tensor -> its scale, activations first
    for op in ("QuantizeLinear", "DequantizeLinear"):
        for node in model.graph.node:
            if node.op_type == op and len(node.input) > 1 and node.input[1] in consts:
                tensor = node.output[0] if op == "QuantizeLinear" else node.input[0]
                scales.setdefault(tensor, consts[node.input[1]].astype(np.float64).ravel())
    bad = {name: s[~is_pow2(s)] for name, s in scales.items() if not is_pow2(s).all()}
    if bad:
        name, s = next(iter(bad.items()))
        raise ModelError(
            f"{source}: tensor '{name}' has scale {float(s[0]):.7g}, not a power of two ({len(bad)} of {len(scales)} "
            "quantized tensors have such scales; the accelerator rescales by shifts only): quantize the float model "
            "with `shiftpu quantize`")


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
