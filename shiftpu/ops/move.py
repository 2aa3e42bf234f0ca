"""MOVE: a copy, optionally nearest-upsampled, + requantisation (rescale, concatenation input, 2x Resize)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftpu.arch.isa import Instruction, Opcode
from shiftpu.arch.numerics import requantize
from shiftpu.ops.spec import LowerContext, Machine, OpSpec, output_format


def golden(m: Machine, i: Instruction, x: np.ndarray, const: np.ndarray, act: np.ndarray, pc: int) -> np.ndarray:
    y = x.astype(np.int64)
    if i.upsample > 1:
        y = y.repeat(i.upsample, axis=1).repeat(i.upsample, axis=2)
    return requantize(y, i.out_shift, output_format(i), i.act, i.leaky_shift)


def lower(op: Any, ctx: LowerContext) -> Instruction:
    """The MOVE of a ``MoveOp``."""
    return Instruction(Opcode.MOVE, upsample=op.upsample, out_shift=op.out_shift, **ctx.common)


SPEC = OpSpec(Opcode.MOVE, golden=golden, lower=lower, disasm_fields=("upsample", "out_shift", "act"),
              cost="shiftpu.compiler.perf:stream_cost", random_case="shiftpu.sim.rtl.cases:add_random_eltwise")
