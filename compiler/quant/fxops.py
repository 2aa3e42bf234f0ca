"""Classification of torch.fx graph nodes into the operations the shift quantizer knows."""

from __future__ import annotations

import operator
from enum import Enum, auto

import torch
import torch.nn.functional as F
from torch import fx, nn

from shiftpu.compiler.quant.qat import ActQuant, QConv2d, QLinear


class FxOp(Enum):
    """What a node of a traced model does, as far as quantization is concerned."""

    INPUT = auto()
    OUTPUT = auto()
    CONV = auto()  #: nn.Conv2d (float, before preparation)
    LINEAR = auto()  #: nn.Linear (float, before preparation)
    BATCHNORM = auto()
    QCONV = auto()
    QLINEAR = auto()
    ACT_QUANT = auto()
    RELU = auto()
    RELU6 = auto()  #: ReLU6, exported as Clip(0, 6)
    LEAKY_RELU = auto()
    ADD = auto()
    CONCAT = auto()
    MAXPOOL = auto()
    FLATTEN = auto()
    UPSAMPLE = auto()  #: nearest-neighbour upsampling
    MEAN = auto()  #: global average pooling (AdaptiveAvgPool2d to 1 x 1, a mean over H and W)
    IDENTITY = auto()  #: dropout and identity: nothing at inference
    OTHER = auto()


#: Operations that produce new values, so that a quantizer follows them (after a fused activation).
PRODUCERS = frozenset({FxOp.QCONV, FxOp.QLINEAR, FxOp.ADD, FxOp.CONCAT, FxOp.MEAN})
#: Operations that only move or select values, so their output keeps the input's scale.
PASS_THROUGH = frozenset({FxOp.MAXPOOL, FxOp.FLATTEN, FxOp.UPSAMPLE, FxOp.IDENTITY})
#: Activations that fuse into requantisation.
ACTIVATIONS = frozenset({FxOp.RELU, FxOp.RELU6, FxOp.LEAKY_RELU})
#: Activations whose output is never negative (an unsigned quantizer follows them).
NON_NEGATIVE = frozenset({FxOp.RELU, FxOp.RELU6})

_MODULES: tuple[tuple[type, FxOp], ...] = (
    (QConv2d, FxOp.QCONV),
    (QLinear, FxOp.QLINEAR),
    (ActQuant, FxOp.ACT_QUANT),
    (nn.Conv2d, FxOp.CONV),
    (nn.Linear, FxOp.LINEAR),
    (nn.BatchNorm2d, FxOp.BATCHNORM),
    (nn.ReLU, FxOp.RELU),
    (nn.ReLU6, FxOp.RELU6),
    (nn.LeakyReLU, FxOp.LEAKY_RELU),
    (nn.MaxPool2d, FxOp.MAXPOOL),
    (nn.Flatten, FxOp.FLATTEN),
    (nn.Upsample, FxOp.UPSAMPLE),
    (nn.AdaptiveAvgPool2d, FxOp.MEAN),
    (nn.Dropout, FxOp.IDENTITY),
    (nn.Identity, FxOp.IDENTITY),
)
_FUNCTIONS = {
    operator.add: FxOp.ADD,
    torch.add: FxOp.ADD,
    torch.cat: FxOp.CONCAT,
    torch.concat: FxOp.CONCAT,
    torch.relu: FxOp.RELU,
    F.relu: FxOp.RELU,
    F.relu6: FxOp.RELU6,
    F.leaky_relu: FxOp.LEAKY_RELU,
    F.max_pool2d: FxOp.MAXPOOL,
    torch.flatten: FxOp.FLATTEN,
    F.interpolate: FxOp.UPSAMPLE,
    F.adaptive_avg_pool2d: FxOp.MEAN,
    torch.mean: FxOp.MEAN,
    F.dropout: FxOp.IDENTITY,
}
_METHODS = {"add": FxOp.ADD, "relu": FxOp.RELU, "flatten": FxOp.FLATTEN, "mean": FxOp.MEAN}


def classify(node: fx.Node, modules: dict[str, nn.Module]) -> FxOp:
    """The FxOp of one node (OTHER for anything the quantizer does not know)."""
    if node.op == "placeholder":
        return FxOp.INPUT
    if node.op == "output":
        return FxOp.OUTPUT
    if node.op == "call_module":
        mod = modules[node.target]
        for cls, op in _MODULES:
            if isinstance(mod, cls):
                return op
        return FxOp.OTHER
    if node.op == "call_function":
        return _FUNCTIONS.get(node.target, FxOp.OTHER)
    if node.op == "call_method":
        return _METHODS.get(node.target, FxOp.OTHER)
    return FxOp.OTHER


def describe(node: fx.Node) -> str:
    """A short human name of a node for error messages."""
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({node.op} {target})"
