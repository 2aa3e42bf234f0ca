"""Column-prior tiling: the strip widths and channel tiles a CONV can use on a given accelerator.

A candidate is kept when the line buffer, weight buffer and accumulators hold it
(``shiftpu.arch.limits``, the same check the golden model and the RTL apply); the dataflow choice
then picks among the candidates with the performance model. A layer with no candidate is refused
with the limit it breaks.
"""

from __future__ import annotations

from shiftpu.arch import limits
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, IsaError
from shiftpu.arch.layout import ceil_div
from shiftpu.compiler.ir import CompileError, ConvOp, ConvTiling, QTensor
from shiftpu.compiler.lower import conv_instruction

#: Largest tensor height/width an instruction encodes (13-bit fields).
MAX_DIM = (1 << 13) - 1
#: Most channels an instruction encodes (16-bit fields).
MAX_CHANNELS = (1 << 16) - 1


def _powers(lo: int, hi: int) -> list[int]:
    out, v = [], lo
    while v <= hi:
        out.append(v)
        v *= 2
    return out


def check_dims(name: str, *tensors: QTensor) -> None:
    """Refuse tensors beyond what the instruction fields encode."""
    for t in tensors:
        c, h, w = t.chw
        if max(h, w) > MAX_DIM:
            raise CompileError(f"node '{name}': tensor '{t.name}' is {h}x{w}, beyond the {MAX_DIM} an instruction encodes")
        if c > MAX_CHANNELS:
            raise CompileError(f"node '{name}': tensor '{t.name}' has {c} channels, beyond {MAX_CHANNELS}")


def candidates(op: ConvOp, x: QTensor, y: QTensor, dataflow: Dataflow, cfg: AccelConfig) -> list[ConvTiling]:
    """Every tiling from a small, well-spread set that fits the accelerator's buffers."""
    check_dims(op.name, x, y)
    in_c, out_c, out_w = x.chw[0], y.chw[0], y.chw[2]
    strips = sorted({min(out_w, s) for s in range(cfg.pe_px, cfg.strip_width + 1, cfg.pe_px)})
    oc_full = ceil_div(out_c, cfg.pe_oc) * cfg.pe_oc
    ocs = sorted({v for v in _powers(cfg.pe_oc, oc_full) + [oc_full]})
    ics = sorted({in_c} | {v for v in _powers(cfg.channel_block, in_c)})  # several tiles start on blocks
    out: list[ConvTiling] = []
    first_problem = None
    for sw in strips:
        for ot in ocs:
            for it in ([ot] if op.depthwise else ics):
                t = ConvTiling(sw, it, ot)
                try:
                    problem = limits.violation(conv_instruction(op, x, y, t, dataflow), cfg)
                except IsaError as e:
                    raise CompileError(f"node '{op.name}': {e}") from None
                if problem is None:
                    out.append(t)
                elif first_problem is None:
                    first_problem = problem
    if not out:
        raise CompileError(f"node '{op.name}': no tiling fits the accelerator: {first_problem}")
    return out
