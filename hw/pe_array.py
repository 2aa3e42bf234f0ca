"""The pe_oc x pe_px array of shift-add PEs with their output-stationary accumulators.

Row ``r`` computes output channel ``ob * pe_oc + r``; column ``j`` holds output pixel ``pg * pe_px + j``.
In the PIXEL dataflow one input channel is broadcast along each column and every PE accumulates its
own term; DEPTHWISE feeds each row its own channel. With ``reduce`` set (INPUT_CHANNEL) the columns
carry pe_px input channels of one pixel, an adder tree sums each row, and only column ``slot`` (the
pixel being computed) accumulates. On a step with ``first`` set an accumulator restarts from ``init``
(partial sums of earlier input tiles, or 0).

The product terms are registered: ``acts`` and ``codes`` of cycle ``t`` are accumulated in cycle ``t + 1``,
with that cycle's ``en``, ``first``, ``reduce``, ``slot`` and ``init``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.hw.params import ACT_WIDTH, HwParams
from shiftpu.hw.pe import TERM_WIDTH, ShiftAddPE


def acc_layout(p: HwParams) -> data.ArrayLayout:
    """All accumulators of the array, row-major: index r * pe_px + j."""
    return data.ArrayLayout(signed(p.cfg.acc_bits), p.cfg.pe_oc * p.cfg.pe_px)


def acts_layout(p: HwParams) -> data.ArrayLayout:
    """Activations per PE, row-major: index r * pe_px + j."""
    return data.ArrayLayout(signed(ACT_WIDTH), p.cfg.pe_oc * p.cfg.pe_px)


def codes_layout(p: HwParams) -> data.ArrayLayout:
    """Weight codes per PE, row-major: index r * pe_px + j."""
    return data.ArrayLayout(unsigned(p.cfg.weight_code.bits), p.cfg.pe_oc * p.cfg.pe_px)


def _tree_sum(values: list):
    """Balanced adder tree."""
    while len(values) > 1:
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k] for k in range(0, len(values), 2)]
    return values[0]


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
            row_sum = Signal(signed(TERM_WIDTH + P.bit_length()), name=f"row_sum_{r}")
            m.d.comb += row_sum.eq(_tree_sum(terms))
            for j in range(P):
                k = r * P + j
                # one accumulator adder per PE: its own term, or the row's sum in the reducing column
                base = Mux(self.first, self.init[k], self.acc[k])
                addend = Signal.like(row_sum, name=f"addend_{r}_{j}")
                m.d.comb += addend.eq(Mux(self.reduce, row_sum, terms[j]))
                with m.If(self.en & (~self.reduce | (self.slot == j))):
                    m.d.sync += self.acc[k].eq(base + addend)
        return m
