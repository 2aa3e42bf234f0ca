"""Lowering of fabric operations to instructions (the one place that fills instruction fields)."""

from __future__ import annotations

from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.compiler.ir import AddOp, ConcatOp, ConvOp, ConvTiling, FabricOp, MoveOp, Placement, PoolOp, QTensor

_NOWHERE = Placement(0, 0)


def _common(op: FabricOp, x: QTensor, y: QTensor, layer_id: int, place: dict[str, Placement]) -> dict:
    ci, hi, wi = x.chw
    co, ho, wo = y.chw
    return dict(
        act=op.act, leaky_shift=op.leaky_shift, in_signed=x.fmt.signed, out_signed=y.fmt.signed, out_bits=y.fmt.bits,
        layer_id=layer_id, in_h=hi, in_w=wi, in_c=ci, out_h=ho, out_w=wo, out_c=co,
        in_addr=place.get(x.name, _NOWHERE).offset, out_addr=place.get(y.name, _NOWHERE).offset,
    )


def conv_instruction(op: ConvOp, x: QTensor, y: QTensor, tiling: ConvTiling, dataflow: Dataflow, layer_id: int = 0,
                     place: dict[str, Placement] | None = None, w_addr: int = 0, qp_addr: int = 0) -> Instruction:
    """The CONV instruction of ``op`` with the given tiling and dataflow."""
    pt, pl, pb, pr = op.pads
    return Instruction(
        Opcode.CONV, dataflow=dataflow, depthwise=op.depthwise, kh=op.kh, kw=op.kw, stride=op.stride,
        pad_t=pt, pad_l=pl, pad_b=pb, pad_r=pr, strip_w=tiling.strip_w, ic_tile=tiling.ic_tile,
        oc_tile=tiling.oc_tile, w_addr=w_addr, qp_addr=qp_addr, **_common(op, x, y, layer_id, place or {}),
    )


def instruction(op: FabricOp, tensors: dict[str, QTensor], layer_id: int, place: dict[str, Placement],
                w_addr: int = 0, qp_addr: int = 0) -> Instruction | None:
    """The instruction of a tiled fabric operation (None for an in-place concatenation)."""
    x, y = tensors[op.inputs[0]], tensors[op.output]
    if isinstance(op, ConvOp):
        assert op.tiling is not None and op.dataflow is not None, f"{op.name} was not tiled"
        return conv_instruction(op, x, y, op.tiling, op.dataflow, layer_id, place, w_addr, qp_addr)
    if isinstance(op, PoolOp):
        pt, pl, pb, pr = op.pads
        return Instruction(Opcode.POOL, kh=op.kernel, kw=op.kernel, stride=op.stride, pad_t=pt, pad_l=pl, pad_b=pb,
                           pad_r=pr, out_shift=op.out_shift, **_common(op, x, y, layer_id, place))
    if isinstance(op, AddOp):
        b = tensors[op.inputs[1]]
        return Instruction(Opcode.ADD, in2_signed=b.fmt.signed, in2_addr=place.get(b.name, _NOWHERE).offset,
                           shift_a=op.shift_a, shift_b=op.shift_b, out_shift=op.out_shift,
                           **_common(op, x, y, layer_id, place))
    if isinstance(op, MoveOp):
        return Instruction(Opcode.MOVE, upsample=op.upsample, out_shift=op.out_shift,
                           **_common(op, x, y, layer_id, place))
    assert isinstance(op, ConcatOp)
    return None
