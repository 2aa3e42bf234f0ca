"""The pe_oc x pe_px array of shift-add PEs with their output-stationary accumulators.

Row ``r`` computes output channel ``ob * pe_oc + r``; column ``j`` holds output pixel ``pg * pe_px + j``.
In the PIXEL dataflow one input channel is broadcast along each column and every PE accumulates its
own term; DEPTHWISE feeds each row its own channel. With ``reduce`` set (INPUT_CHANNEL) the columns
carry pe_px input channels of one pixel, an adder tree sums each row, and only column ``slot`` (the
pixel being computed) accumulates. On a step with ``first`` set an accumulator restarts from ``init``
(partial sums of earlier input tiles, or 0).

The product terms are registered, and the row's adder tree has a register after every two adder levels
(:data:`ROW_SUM_STAGES` stages, whatever ``pe_px``; each PE's own term waits beside it): ``acts`` and
``codes`` of cycle ``t`` are accumulated in cycle ``t + 1 + ROW_SUM_STAGES``, with that cycle's ``en``,
``first``, ``reduce``, ``slot`` and ``init``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.hw.params import ACT_WIDTH, HwParams
from shiftpu.hw.pe import TERM_WIDTH, ShiftAddPE
from shiftpu.hw.wait import delayed


def acc_layout(p: HwParams) -> data.ArrayLayout:
    """All accumulators of the array, row-major: index r * pe_px + j."""
    return data.ArrayLayout(signed(p.cfg.acc_bits), p.cfg.pe_oc * p.cfg.pe_px)


def acts_layout(p: HwParams) -> data.ArrayLayout:
    """Activations per PE, row-major: index r * pe_px + j."""
    return data.ArrayLayout(signed(ACT_WIDTH), p.cfg.pe_oc * p.cfg.pe_px)


def codes_layout(p: HwParams) -> data.ArrayLayout:
    """Weight codes per PE, row-major: index r * pe_px + j."""
    return data.ArrayLayout(unsigned(p.cfg.weight_code.bits), p.cfg.pe_oc * p.cfg.pe_px)


#: Register stages of a row's adder tree: one after every two adder levels, for up to 16 PEs per row.
ROW_SUM_STAGES = 2
#: Adder levels between two registers of the row's adder tree.
LEVELS_PER_STAGE = 2
#: Cycles from a PE's operands to the accumulator update that takes its term.
ARRAY_LATENCY = 1 + ROW_SUM_STAGES


def _tree_levels(values: list, levels: int) -> list:
    """``levels`` levels of a balanced adder tree (fewer when the sum is reached)."""
    for _ in range(levels):
        if len(values) == 1:
            break
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k] for k in range(0, len(values), 2)]
    return values


class PEArray(wiring.Component):
    """Shift-add PE grid with per-PE accumulators and a per-row adder tree."""

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "acts": In(acts_layout(p)),
            "codes": In(codes_layout(p)),
            "en": In(1),
            "first": In(1),
            "reduce": In(1),
            "slot": In(range(p.cfg.pe_px)),
            "init": In(acc_layout(p)),
            "acc": Out(acc_layout(p)),
        })

    def elaborate(self, platform):
        p = self.p
        P = p.cfg.pe_px
        if P > 1 << (ROW_SUM_STAGES * LEVELS_PER_STAGE):
            raise ValueError(f"pe_px = {P}: the row adder tree has {ROW_SUM_STAGES} stages of "
                             f"{LEVELS_PER_STAGE} levels, for at most {1 << (ROW_SUM_STAGES * LEVELS_PER_STAGE)} PEs")
        m = Module()
        for r in range(p.cfg.pe_oc):
            terms = []
            for j in range(P):
                k = r * P + j
                pe = ShiftAddPE(p.cfg.weight_code)
                m.submodules[f"pe_{r}_{j}"] = pe
                term = Signal(signed(TERM_WIDTH), name=f"term_{r}_{j}")
                m.d.comb += [pe.act.eq(self.acts[k]), pe.code.eq(self.codes[k])]
                m.d.sync += term.eq(pe.term)
                terms.append(term)
            sum_width = TERM_WIDTH + P.bit_length()
            partial = terms
            for stage in range(ROW_SUM_STAGES):
                sums = _tree_levels(partial, LEVELS_PER_STAGE)
                partial = [Signal(signed(sum_width), name=f"row_sum_{r}_s{stage}_{n}") for n in range(len(sums))]
                m.d.sync += [reg.eq(value) for reg, value in zip(partial, sums, strict=True)]
                terms = [delayed(m, term, 1, f"term_{r}_{j}_s{stage}_") for j, term in enumerate(terms)]
            assert len(partial) == 1
            row_sum = partial[0]
            for j in range(P):
                k = r * P + j
                # one accumulator adder per PE: its own term, or the row's sum in the reducing column
                base = Mux(self.first, self.init[k], self.acc[k])
                addend = Signal(signed(sum_width), name=f"addend_{r}_{j}")
                m.d.comb += addend.eq(Mux(self.reduce, row_sum, terms[j]))
                with m.If(self.en & (~self.reduce | (self.slot == j))):
                    m.d.sync += self.acc[k].eq(base + addend)
        return m

