"""Cross-layer equalisation with power-of-two factors, on the folded float model.

In a pair ``A -> [ReLU | LeakyReLU | MaxPool]* -> [Flatten] -> B`` (A a Conv or Gemm, B a Conv with one group
or a Gemm; every tensor between them read only by the next node), output channel c of A may be
divided by a factor s_c and input channel c of B multiplied by it without changing the function, because the
activation and max pooling commute with positive per-channel scaling. With s_c a power of two the two
multiplications are exact in float, so the equalised float model computes bit for bit what the original did.

A's per-channel power-of-two weight scales absorb s_c exactly, so A's weight quantization does not change;
what changes is the range of channel c in the tensor between A and B (quantized with one scale for all
channels) and the magnitude of B's weights on input channel c (quantized with one scale per output channel
of B). ``equalisation_factors`` balances the two, as Nagel et al. (ICCV 2019) balance two weight ranges:
s_c = 2^round(log2(sqrt(a_c / r_c)) - m) with a_c the channel's calibration range, r_c the largest weight of
B on it and m the median of log2(sqrt(a_c / r_c)) over the channels (a factor common to all channels changes
nothing, power-of-two scales absorb it), so that a_c / s_c and r_c s_c become about equal. Whether a pair is
worth equalising is decided by the quantizer (``ptq``), on the calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from shiftpu.compiler.quant.onnxio import GraphIndex, attr, node_label

#: Nodes that may sit between the two layers of a pair (they commute with positive per-channel scaling).
_BETWEEN = ("Relu", "LeakyRelu", "MaxPool")


@dataclass(frozen=True)
class EqualisationPair:
    """Two layers whose shared channels may be rescaled: ``first`` output channels, ``second`` input channels."""

    first: str  #: node name of A (a Conv or Gemm of the folded model)
    second: str  #: node name of B
    tensor: str  #: B's input tensor (channel ranges are measured on it)
    flattened: bool  #: B is a Gemm reading A's flattened channels (each channel owns a block of its inputs)

    @property
    def label(self) -> str:
        return f"{self.first} -> {self.second}"


def _sole_consumer(g: GraphIndex, name: str) -> onnx.NodeProto | None:
    users = g.consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in g.graph_outputs else None


def find_pairs(model: onnx.ModelProto) -> list[EqualisationPair]:
    """Every A -> ... -> B pair of the folded float model that equalisation can rescale."""
    g = GraphIndex(model)
    pairs = []
    for a in model.graph.node:
        if a.op_type not in ("Conv", "Gemm") or g.const(a.input[1]) is None or len(a.input) < 3 \
                or g.const(a.input[2]) is None:
            continue
        tensor, flattened = a.output[0], False
        node = _sole_consumer(g, tensor)
        while node is not None and (node.op_type in _BETWEEN and len(node.output) == 1
                                    or node.op_type == "Flatten" and not flattened and int(attr(node, "axis", 1)) == 1):
            flattened |= node.op_type == "Flatten"
            tensor = node.output[0]
            node = _sole_consumer(g, tensor)
        if node is None or node.op_type not in ("Conv", "Gemm") or g.const(node.input[1]) is None \
                or node.input[0] != tensor:
            continue
        if node.op_type == "Conv" and not flattened and int(attr(node, "group", 1)) == 1 \
                or node.op_type == "Gemm" and (flattened or a.op_type == "Gemm"):
            pairs.append(EqualisationPair(node_label(a), node_label(node), tensor, flattened))
    return pairs


def _by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node_label(n): n for n in model.graph.node}


def _expand(factors: np.ndarray, n_inputs: int) -> np.ndarray:
    """Per-channel factors repeated over the block of inputs each channel owns (flattened Gemm inputs)."""
    return np.repeat(factors, n_inputs // len(factors))


def channel_ranges(values: np.ndarray, channels: int) -> np.ndarray:
    """Largest magnitude of each channel of a tensor's calibration values ([N, C, ...] or flattened [N, C*S])."""
    v = np.abs(values.reshape(values.shape[0], channels, -1))
    return v.max(axis=(0, 2)).astype(np.float64)


def equalisation_factors(model: onnx.ModelProto, pair: EqualisationPair, ranges: np.ndarray) -> np.ndarray:
    """Power-of-two factors s_c (float64) for the channels of ``pair`` given their calibration ranges."""
    g = GraphIndex(model)
    b = _by_name(model)[pair.second]
    wb = np.abs(g.const(b.input[1]).astype(np.float64))
    cols = wb.reshape(wb.shape[0], -1) if b.op_type == "Gemm" else wb.transpose(1, 0, 2, 3).reshape(wb.shape[1], -1).T
    r = np.abs(cols).max(axis=0)
    if pair.flattened:
        r = r.reshape(len(ranges), -1).max(axis=1)
    ok = (ranges > 0) & (r > 0)
    k = np.zeros(len(ranges))
    if ok.any():
        half_log = 0.5 * np.log2(ranges[ok] / r[ok])
        k[ok] = np.rint(half_log - np.median(half_log))  # a common factor changes nothing: keep them near 1
    return np.ldexp(1.0, k.astype(np.int64))


def apply_equalisation(model: onnx.ModelProto, pair: EqualisationPair, factors: np.ndarray) -> onnx.ModelProto:
    """A copy of the model with A's output channels divided and B's input channels multiplied by ``factors``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = _by_name(out)
    a, b = nodes[pair.first], nodes[pair.second]
    inits = {t.name: t for t in out.graph.initializer}

    def update(name: str, fn) -> None:
        t = inits[name]
        t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).astype(np.float64)).astype(np.float32), name))

    shape = (-1,) + (1,) * 3 if a.op_type == "Conv" else (-1, 1)
    update(a.input[1], lambda w: w / factors.reshape(shape))
    update(a.input[2], lambda v: v / factors)
    if b.op_type == "Gemm":
        update(b.input[1], lambda w: w * _expand(factors, w.shape[1])[None, :])
    else:
        update(b.input[1], lambda w: w * factors.reshape(1, -1, 1, 1))
    return out
