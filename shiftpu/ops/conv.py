"""CONV: convolution (dense or depthwise) + per-channel bias + requantisation + activation.

Weights come from ``w_addr`` in the order of ``dataflow``, bias and shift from the per-channel table at ``qp_addr``;
``strip_w``, ``ic_tile``, ``oc_tile`` and ``dataflow`` order the hardware's work and never change the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftpu.arch import layout
from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.arch.numerics import Activation, requantize
from shiftpu.ops.spec import FieldError, LowerContext, Machine, OpSpec, output_format


def weights(m: Machine, i: Instruction, const: np.ndarray, pc: int) -> np.ndarray:
    """The integer weights (OC x ICg x KH x KW); an illegal code raises FieldError."""
    icg = 1 if i.depthwise else i.in_c
    raw = m.read(const, i.w_addr, layout.weight_bytes(i.out_c, icg, i.kh, i.kw, i.dataflow, m.config), pc)
    try:
        return layout.unpack_weights(raw, i.out_c, icg, i.kh, i.kw, i.dataflow, m.config)
    except ValueError as e:
        raise FieldError(f"weights: {e}") from None


def check_constants(m: Machine, i: Instruction, const: np.ndarray, pc: int) -> None:
    weights(m, i, const, pc)  # the hardware would read an illegal code as a weight


def golden(m: Machine, i: Instruction, x: np.ndarray, const: np.ndarray, act: np.ndarray, pc: int) -> np.ndarray:
    w = weights(m, i, const, pc)
    bias, shift = layout.unpack_qparams(m.read(const, i.qp_addr, layout.qparam_bytes(i.out_c, m.config), pc), i.out_c)
    # float32 sums are exact while every partial sum stays below 2^24; otherwise use float64
    in_max = max(abs(int(x.min(initial=0))), int(x.max(initial=0)))
    bound = int(np.abs(w.astype(np.int64)).reshape(i.out_c, -1).sum(axis=1).max(initial=0)) * in_max
    ftype = np.float32 if bound < (1 << 24) else np.float64
    xp = np.pad(x.astype(ftype), ((0, 0), (i.pad_t, i.pad_b), (i.pad_l, i.pad_r)))
    s, oh, ow = i.stride, i.out_h, i.out_w
    wf = w.astype(ftype)
    taps = [(ky, kx) for ky in range(i.kh) for kx in range(i.kw)]
    if i.depthwise:
        acc = np.zeros((i.out_c, oh * ow), dtype=ftype)
        for ky, kx in taps:
            xs = xp[:, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s].reshape(i.in_c, -1)
            acc += wf[:, 0, ky, kx][:, None] * xs
    else:
        cols = np.empty((len(taps), i.in_c, oh, ow), dtype=ftype)  # im2col: one matrix product per layer
        for t, (ky, kx) in enumerate(taps):
            cols[t] = xp[:, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s]
        wmat = wf.transpose(0, 2, 3, 1).reshape(i.out_c, -1)
        acc = wmat @ cols.reshape(len(taps) * i.in_c, oh * ow)
    total = acc.astype(np.int64).reshape(i.out_c, oh, ow) + bias.astype(np.int64)[:, None, None]
    return requantize(total, shift.astype(np.int64)[:, None, None], output_format(i), Activation(i.act),
                      i.leaky_shift)


def instruction(op: Any, tiling: Any, dataflow: Dataflow, ctx: LowerContext) -> Instruction:
    """The CONV of a ``ConvOp`` with the given tiling (``ConvTiling``) and dataflow."""
    pt, pl, pb, pr = op.pads
    return Instruction(
        Opcode.CONV, dataflow=dataflow, depthwise=op.depthwise, kh=op.kh, kw=op.kw, stride=op.stride,
        pad_t=pt, pad_l=pl, pad_b=pb, pad_r=pr, strip_w=tiling.strip_w, ic_tile=tiling.ic_tile,
        oc_tile=tiling.oc_tile, w_addr=ctx.w_addr, qp_addr=ctx.qp_addr, **ctx.common,
    )


def lower(op: Any, ctx: LowerContext) -> Instruction:
    """The CONV of a tiled ``ConvOp`` (its tiling and dataflow chosen)."""
    assert op.tiling is not None and op.dataflow is not None, f"{op.name} was not tiled"
    return instruction(op, op.tiling, op.dataflow, ctx)


SPEC = OpSpec(Opcode.CONV, golden=golden, lower=lower, check_constants=check_constants,
              disasm_fields=("dataflow", "depthwise", "kh", "kw", "stride", "pad_t", "pad_l", "pad_b", "pad_r",
                             "strip_w", "ic_tile", "oc_tile", "w_addr", "qp_addr", "act", "leaky_shift"),
              cost="shiftpu.compiler.perf:conv_cost", random_case="shiftpu.sim.rtl.cases:add_random_conv")
