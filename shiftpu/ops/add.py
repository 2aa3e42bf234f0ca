"""ADD: element-wise sum of two tensors of one shape, each shifted left to a common scale, + requantisation."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftpu.arch.isa import Instruction, Opcode
from shiftpu.arch.numerics import requantize
from shiftpu.ops.spec import LowerContext, Machine, OpSpec, output_format


def golden(m: Machine, i: Instruction, x: np.ndarray, const: np.ndarray, act: np.ndarray, pc: int) -> np.ndarray:
    b = m.load(act, i.in2_addr, i.in_c, i.in_h, i.in_w, i.in2_signed, pc)
    s = (x.astype(np.int64) << i.shift_a) + (b.astype(np.int64) << i.shift_b)
    return requantize(s, i.out_shift, output_format(i), i.act, i.leaky_shift)


def lower(op: Any, ctx: LowerContext) -> Instruction:
    """The ADD of an ``AddOp`` (its second input is ``op.inputs[1]``)."""
    b = ctx.tensors[op.inputs[1]]
    return Instruction(Opcode.ADD, in2_signed=b.fmt.signed, in2_addr=ctx.offset(b.name), shift_a=op.shift_a,
                       shift_b=op.shift_b, out_shift=op.out_shift, **ctx.common)


SPEC = OpSpec(Opcode.ADD, golden=golden, lower=lower,
              disasm_fields=("in2_addr", "shift_a", "shift_b", "out_shift", "in2_signed", "act"),
              cost="shiftpu.compiler.perf:stream_cost", random_case="shiftpu.sim.rtl.cases:add_random_eltwise")
