"""A QDQ ONNX graph indexed for pattern matching: its quantized tensors, constants, producers and consumers.

:class:`QdqGraph` is what the matchers of ``compiler/qdq_patterns.py`` read. Every QuantizeLinear with a
power-of-two per-tensor scale and zero point 0 defines a quantized tensor (:class:`QTensor`); a DequantizeLinear
of such a tensor is a *dequantised activation*, one of a constant a *quantized constant* (:class:`ConstDQ`:
weights, biases). A pattern that does not apply raises :class:`NoMatch` with the reason its nodes stay on the CPU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.numerics import ActFormat, NumericsError, pow2_exponent
from shiftpu.compiler.ir import CompileError, CpuReason, QTensor
from shiftpu.compiler.onnx_import import attrs, shape_of

#: Range of the 8-bit signed requantisation shift fields.
SHIFT_RANGE = (-128, 127)


@dataclass(frozen=True)
class ConstDQ:
    """A DequantizeLinear of a constant: integer values, per-slice power-of-two exponents, axis."""

    values: np.ndarray
    exps: np.ndarray
    axis: int


class NoMatch(Exception):
    """The pattern does not apply; the nodes stay on the CPU with this reason."""

    def __init__(self, reason: CpuReason, detail: str = ""):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class QdqGraph:
    """A prepared QDQ model (``onnx_import.prepare``) and what the matchers look up in it.

    Folding adds to it: the intermediate tensors of composite operations (``tensors``), the warnings of the
    accumulator checks (``warnings``) and the reason each node that no pattern took stays on the CPU
    (``failures``, by ``id`` of the node).
    """

    def __init__(self, model: onnx.ModelProto, cfg: AccelConfig):
        self.model = model
        self.cfg = cfg
        self.warnings: list[str] = []
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in g.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in g.output}
        self.tensors: dict[str, QTensor] = {}
        self.dq_act: dict[str, str] = {}  # float name -> quantized tensor it dequantises
        self.dq_const: dict[str, ConstDQ] = {}
        self.failures: dict[int, NoMatch] = {}
        self._scan_quantizers()

    # -- recognising quantized tensors -------------------------------------------------------------

    def pow2(self, name: str) -> np.ndarray:
        """The exponents of the power-of-two scale constant ``name``."""
        if name not in self.consts:
            raise NoMatch(CpuReason.FLOAT_OPERANDS, "scale is not a constant")
        try:
            return pow2_exponent(self.consts[name].astype(np.float64))
        except NumericsError as e:
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"scale: {e}") from None

    def zero_point(self, node: onnx.NodeProto) -> np.dtype:
        """The integer type of a Q/DQ node whose zero point is 0 (uint8 when it has none)."""
        if len(node.input) < 3 or not node.input[2]:
            return np.dtype(np.uint8)
        zp = self.consts.get(node.input[2])
        if zp is None or np.any(zp != 0):
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "zero point is not a constant 0")
        return zp.dtype

    def _scan_quantizers(self) -> None:
        for node in self.model.graph.node:
            if node.op_type == "QuantizeLinear":
                try:
                    self._quant_tensor(node)
                except NoMatch as e:
                    self.failures[id(node)] = e
        for node in self.model.graph.node:
            if node.op_type == "DequantizeLinear":
                try:
                    self._dequant(node)
                except NoMatch as e:
                    self.failures[id(node)] = e

    def _quant_tensor(self, node: onnx.NodeProto) -> None:
        exp = self.pow2(node.input[1])
        if exp.size != 1:
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "per-channel activation scale")
        dtype = self.zero_point(node)
        if dtype not in (np.int8, np.uint8):
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"quantizes to {dtype}, not int8/uint8")
        shape = shape_of(self.model, node.output[0])
        if shape is None or len(shape) not in (2, 4) or shape[0] != 1:
            raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, f"shape {shape} is not (1, C, H, W) or (1, K)")
        out = node.output[0]
        e = int(exp.reshape(-1)[0])
        signed = dtype == np.int8
        # a Clip to exactly the 4-bit range right before the quantizer makes the tensor 4-bit
        four = ActFormat(4, signed)
        bits = 4 if self.range_clip(self.producer.get(node.input[0]), four, e) else 8
        self.tensors[out] = QTensor(out, shape, ActFormat(bits, signed), e)

    def _dequant(self, node: onnx.NodeProto) -> None:
        src, out = node.input[0], node.output[0]
        if src in self.tensors:
            t = self.tensors[src]
            exp = self.pow2(node.input[1])
            if exp.size != 1 or int(exp.reshape(-1)[0]) != t.exp:
                raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "dequantises with another scale than it was quantized")
            self.zero_point(node)
            self.dq_act[out] = src
        elif src in self.consts:
            exps = self.pow2(node.input[1])
            if len(node.input) > 2 and node.input[2] and np.any(self.consts.get(node.input[2], 1) != 0):
                raise NoMatch(CpuReason.UNSUPPORTED_ATTRIBUTES, "non-zero zero point")
            self.dq_const[out] = ConstDQ(self.consts[src], exps.astype(np.int64), int(attrs(node).get("axis", 1)))
        else:
            raise NoMatch(CpuReason.QUANT_BOUNDARY, "dequantises a tensor that is not a power-of-two quantized tensor")

    # -- what the matchers ask ---------------------------------------------------------------------

    def range_clip(self, node: onnx.NodeProto | None, fmt: ActFormat, exp: int) -> bool:
        """Whether ``node`` is ``Clip(qmin * 2^exp, qmax * 2^exp)``: the clip that 4-bit quantizers put first."""
        if node is None or node.op_type != "Clip" or len(node.input) < 3:
            return False
        lo, hi = self.consts.get(node.input[1]), self.consts.get(node.input[2])
        if lo is None or hi is None or lo.size != 1 or hi.size != 1:
            return False
        scale = 2.0 ** exp
        return float(lo) == fmt.qmin * scale and float(hi) == fmt.qmax * scale

    def only_consumer(self, name: str, node: onnx.NodeProto) -> bool:
        """Whether ``node`` is all that reads ``name`` (and it is no model output): ``name`` may disappear."""
        return name not in self.graph_outputs and [id(c) for c in self.consumers[name]] == [id(node)]

    def dequantised(self, name: str) -> QTensor | None:
        """The quantized tensor that the float value ``name`` dequantises, if it is one."""
        return self.tensors[self.dq_act[name]] if name in self.dq_act else None

    def act_input(self, name: str) -> QTensor:
        """The quantized tensor behind an operand; :class:`NoMatch` when it is a float value."""
        t = self.dequantised(name)
        if t is None:
            raise NoMatch(CpuReason.FLOAT_OPERANDS, f"input '{name}' is not a dequantised quantized tensor")
        return t

    def shift(self, s: int, node: onnx.NodeProto) -> int:
        """A requantisation shift, refused outside the instruction fields' range."""
        if not SHIFT_RANGE[0] <= s <= SHIFT_RANGE[1]:
            raise CompileError(f"node '{node.name}': requantisation shift {s} outside {SHIFT_RANGE}")
        return int(s)
