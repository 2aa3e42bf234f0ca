"""Lowering of fabric operations to instructions.

The fields every instruction has (shapes, formats, addresses, activation, layer id) are filled here; the rest by
the lowering of the instruction's module in shiftpu.ops, chosen by the operation's ``kind`` (the opcode's name).
"""

from __future__ import annotations

from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.compiler.ir import ConcatOp, ConvOp, ConvTiling, FabricOp, Placement, QTensor
from shiftpu.ops import OPS, LowerContext, conv

_NOWHERE = Placement(0, 0)


def _common(op: FabricOp, x: QTensor, y: QTensor, layer_id: int, place: dict[str, Placement]) -> dict:
    ci, hi, wi = x.chw
    co, ho, wo = y.chw
    return dict(
        act=op.act, leaky_shift=op.leaky_shift, in_signed=x.fmt.signed, out_signed=y.fmt.signed, out_bits=y.fmt.bits,
        layer_id=layer_id, in_h=hi, in_w=wi, in_c=ci, out_h=ho, out_w=wo, out_c=co,
        in_addr=place.get(x.name, _NOWHERE).offset, out_addr=place.get(y.name, _NOWHERE).offset,
    )


def _context(op: FabricOp, x: QTensor, y: QTensor, tensors: dict[str, QTensor], layer_id: int,
             place: dict[str, Placement], w_addr: int, qp_addr: int) -> LowerContext:
    return LowerContext(_common(op, x, y, layer_id, place), tensors, lambda name: place.get(name, _NOWHERE).offset,
                        w_addr, qp_addr)


def conv_instruction(op: ConvOp, x: QTensor, y: QTensor, tiling: ConvTiling, dataflow: Dataflow, layer_id: int = 0,
                     place: dict[str, Placement] | None = None, w_addr: int = 0, qp_addr: int = 0) -> Instruction:
    """The CONV instruction of ``op`` with the given tiling and dataflow."""
    ctx = _context(op, x, y, {x.name: x, y.name: y}, layer_id, place or {}, w_addr, qp_addr)
    return conv.instruction(op, tiling, dataflow, ctx)


def instruction(op: FabricOp, tensors: dict[str, QTensor], layer_id: int, place: dict[str, Placement],
                w_addr: int = 0, qp_addr: int = 0) -> Instruction | None:
    """The instruction of a tiled fabric operation (None for an in-place concatenation)."""
    if isinstance(op, ConcatOp):
        return None
    lower = OPS[Opcode[op.kind]].lower
    assert lower is not None, f"{op.kind} has no lowering"
    ctx = _context(op, tensors[op.inputs[0]], tensors[op.output], tensors, layer_id, place, w_addr, qp_addr)
    return lower(op, ctx)
