"""POOL: max pooling over a kh x kw window (padding skipped, not read as 0) + requantisation."""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftpu.arch.isa import Instruction, Opcode
from shiftpu.arch.numerics import requantize
from shiftpu.ops.spec import LowerContext, Machine, OpSpec, output_format


def window_max(i: Instruction, x: np.ndarray) -> np.ndarray:
    """The maximum over each in-image window of ``x`` (int64)."""
    low = np.iinfo(np.int64).min
    xp = np.pad(x.astype(np.int64), ((0, 0), (i.pad_t, i.pad_b), (i.pad_l, i.pad_r)), constant_values=low)
    s, oh, ow = i.stride, i.out_h, i.out_w
    out = np.full((i.in_c, oh, ow), low, dtype=np.int64)
    for ky in range(i.kh):
        for kx in range(i.kw):
            np.maximum(out, xp[:, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s], out=out)
    return out


def golden(m: Machine, i: Instruction, x: np.ndarray, const: np.ndarray, act: np.ndarray, pc: int) -> np.ndarray:
    return requantize(window_max(i, x), i.out_shift, output_format(i), i.act, i.leaky_shift)


def lower(op: Any, ctx: LowerContext) -> Instruction:
    """The POOL of a ``PoolOp``."""
    pt, pl, pb, pr = op.pads
    return Instruction(Opcode.POOL, kh=op.kernel, kw=op.kernel, stride=op.stride, pad_t=pt, pad_l=pl, pad_b=pb,
                       pad_r=pr, out_shift=op.out_shift, **ctx.common)


SPEC = OpSpec(Opcode.POOL, golden=golden, lower=lower,
              disasm_fields=("kh", "kw", "stride", "pad_t", "pad_l", "pad_b", "pad_r", "out_shift", "act"),
              cost="shiftpu.compiler.perf:stream_cost", random_case="shiftpu.sim.rtl.cases:add_random_eltwise")
