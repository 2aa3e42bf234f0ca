"""Loading ONNX files with one-line errors, and small graph look-ups shared by the quantizer and the checker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from shiftpu.errors import ShiftpuError


class ModelError(ShiftpuError, ValueError):
    """An ONNX file cannot be read, or is not a model the quantizer or checker can work with."""


def load_model(path: str | Path, validate: bool = True) -> onnx.ModelProto:
    """Read (and unless told otherwise, check) an ONNX model; any failure becomes a ModelError naming the cause."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such file")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf raises several unrelated types on garbage
        raise ModelError(f"{p}: not an ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})") from e
    if not model.graph.node:
        raise ModelError(f"{p}: not an ONNX model (no graph nodes)")
    if not validate:
        return model
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{p}: invalid ONNX model: {str(e).splitlines()[0]}") from e
    return model


@dataclass
class GraphIndex:
    """Producers, consumers and constant values of one graph, for pattern matching."""

    model: onnx.ModelProto

    def __post_init__(self) -> None:
        g = self.model.graph
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_inputs = [i.name for i in g.input if i.name not in self.constants]
        self.graph_outputs = [o.name for o in g.output]

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def op_of(self, name: str) -> str | None:
        """The op type producing tensor ``name`` (None for graph inputs and initializers)."""
        n = self.producer.get(name)
        return n.op_type if n is not None else None


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """One attribute of a node as a Python value (``default`` when absent)."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or a description when it has none."""
    return node.name or f"{node.op_type}->{node.output[0] if node.output else '?'}"
