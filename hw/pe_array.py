"""The pe_oc x pe_px array of shift-add PEs with their output-stationary accumulators.

Row ``r`` computes output channel ``ob * pe_oc + r``; column ``j`` holds output pixel ``pg * pe_px + j``.
Each PE has ``pe_ic`` input-channel lanes: in the PIXEL dataflow the lanes of column ``j`` carry pe_ic adjacent
input channels of its pixel (shared by the rows), the lanes of row ``r`` their weights (shared by the columns),
and a PE accumulates the sum of its lanes' terms. DEPTHWISE feeds each row its own channel on lane 0. With
``reduce`` set (INPUT_CHANNEL) the columns carry pe_px input channels of one pixel on lane 0, an adder tree sums
each row, and only column ``slot`` (the pixel being computed) accumulates. On a step with ``first`` set an
accumulator restarts from ``init`` (partial sums of earlier input tiles, or 0).

Lane 0 has an operand per PE (``acts``, ``codes``); lanes 1 .. pe_ic - 1 have one activation per column
(``lane_acts``) and one code per row (``lane_codes``); a zero code makes a lane's term 0.

The product terms are registered, and both the row's adder tree and each PE's lane tree have a register after
every two adder levels (:data:`ROW_SUM_STAGES` stages, whatever ``pe_px`` and ``pe_ic``): operands of cycle
``t`` are accumulated in cycle ``t + 1 + ROW_SUM_STAGES``, with that cycle's ``en``, ``first``, ``reduce``,
``slot`` and ``init``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.numerics import MAX_WEIGHT_EXPONENT, SHIFT_CODE_BITS, WeightCode
from shiftpu.hw.params import ACT_WIDTH, HwParams
from shiftpu.hw.pe import TERM_WIDTH, ShiftAddPE, code_value, negated_shift_term


def acc_layout(p: HwParams) -> data.ArrayLayout:
    """All accumulators of the array, row-major: index r * pe_px + j."""
    return data.ArrayLayout(signed(p.cfg.acc_bits), p.cfg.pe_oc * p.cfg.pe_px)


def acts_layout(p: HwParams) -> data.ArrayLayout:
    """Activations per PE, row-major: index r * pe_px + j."""
    return data.ArrayLayout(signed(ACT_WIDTH), p.cfg.pe_oc * p.cfg.pe_px)


def codes_layout(p: HwParams) -> data.ArrayLayout:
    """Weight codes per PE, row-major: index r * pe_px + j."""
    return data.ArrayLayout(unsigned(p.cfg.weight_code.bits), p.cfg.pe_oc * p.cfg.pe_px)


def lane_acts_layout(p: HwParams) -> data.ArrayLayout:
    """Activations of lanes 1 .. pe_ic - 1 per column: index j * (pe_ic - 1) + l - 1."""
    return data.ArrayLayout(signed(ACT_WIDTH), p.cfg.pe_px * max(1, p.cfg.pe_ic - 1))


def lane_codes_layout(p: HwParams) -> data.ArrayLayout:
    """Weight codes of lanes 1 .. pe_ic - 1 per row: index r * (pe_ic - 1) + l - 1."""
    return data.ArrayLayout(unsigned(p.cfg.weight_code.bits), p.cfg.pe_oc * max(1, p.cfg.pe_ic - 1))


#: Register stages of a row's (and a PE's lane) adder tree: one after every two adder levels, for up to 16 PEs
#: per row (16 lanes per PE).
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
            "lane_acts": In(lane_acts_layout(p)),
            "lane_codes": In(lane_codes_layout(p)),
            "en": In(1),
            "first": In(1),
            "reduce": In(1),
            "slot": In(range(p.cfg.pe_px)),
            "init": In(acc_layout(p)),
            "acc": Out(acc_layout(p)),
        })

    def _staged_sum(self, m: Module, values: list, width: int, name: str, levels: tuple[int, ...]) -> Signal:
        """The sum of ``values``, a register after each stage of ``levels[k]`` adder levels."""
        for stage, n in enumerate(levels):
            sums = _tree_levels(values, n)
            values = [Signal(signed(width), name=f"{name}_s{stage}_{k}") for k in range(len(sums))]
            m.d.sync += [reg.eq(value) for reg, value in zip(values, sums, strict=True)]
        assert len(values) == 1
        return values[0]

    def elaborate(self, platform):
        p = self.p
        cfg = p.cfg
        P, L, D = cfg.pe_px, cfg.pe_ic, cfg.dsp_lanes
        most = 1 << (ROW_SUM_STAGES * LEVELS_PER_STAGE)
        for what, n in (("pe_px", P), ("pe_ic", L)):
            if n > most:
                raise ValueError(f"{what} = {n}: the adder trees have {ROW_SUM_STAGES} stages of "
                                 f"{LEVELS_PER_STAGE} levels, for at most {most} terms")
        m = Module()
        row_width = TERM_WIDTH + P.bit_length()
        lane_width = TERM_WIDTH + L.bit_length() + 1
        row_levels = (LEVELS_PER_STAGE,) * ROW_SUM_STAGES
        # the lane tree: with DSP lanes, the first stage is one level (each registered product plus a LUT lane's
        # term: a slice's post-adder), the second the rest (up to three levels, for 16 lanes)
        lane_levels = row_levels if D == 0 else (1, (L - 1).bit_length() - 1)
        # operands shared along a column (lane activations and their negations) or a row (lane weights)
        lane_act = [[self.lane_acts[j * (L - 1) + lane - 1] for lane in range(1, L)] for j in range(P)]
        lane_neg = []
        for j in range(P):
            negs = []
            for lane in range(1, L):
                n = Signal(signed(ACT_WIDTH + 1), name=f"neg_col{j}_l{lane}")
                m.d.comb += n.eq(-lane_act[j][lane - 1])
                negs.append(n)
            lane_neg.append(negs)
        for r in range(cfg.pe_oc):
            codes = [self.lane_codes[r * (L - 1) + lane - 1] for lane in range(1, L)]
            weights = []
            for lane in range(1, D + 1):
                w = Signal(signed(MAX_WEIGHT_EXPONENT + 3), name=f"weight_row{r}_l{lane}")
                m.d.comb += w.eq(code_value(codes[lane - 1], cfg.weight_code))
                weights.append(w)
            lane0 = []
            pe_sums = []
            for j in range(P):
                k = r * P + j
                pe = ShiftAddPE(cfg.weight_code)
                m.submodules[f"pe_{r}_{j}"] = pe
                t0 = Signal(signed(TERM_WIDTH), name=f"term_{r}_{j}")
                m.d.comb += [pe.act.eq(self.acts[k]), pe.code.eq(self.codes[k])]
                m.d.sync += t0.eq(pe.term)
                lane0.append(t0)
                luts = [t0]
                for lane in range(D + 1, L):
                    t = Signal(signed(TERM_WIDTH), name=f"term_{r}_{j}_l{lane}")
                    m.d.sync += t.eq(_lane_term(lane_act[j][lane - 1], lane_neg[j][lane - 1], codes[lane - 1],
                                                cfg.weight_code))
                    luts.append(t)
                products = []
                for lane in range(1, D + 1):
                    product = Signal(signed(TERM_WIDTH + 1), name=f"product_{r}_{j}_l{lane}")
                    m.d.sync += product.eq(lane_act[j][lane - 1] * weights[lane - 1])  # a DSP slice, M register
                    products.append(product)
                # each product beside a LUT lane's term, so the first level adds them in the slice
                terms = [t for pair in zip(products, luts[:D], strict=True) for t in pair] + luts[D:]
                pe_sums.append(self._staged_sum(m, terms, lane_width, f"pe_sum_{r}_{j}", lane_levels))
            row_sum = self._staged_sum(m, lane0, row_width, f"row_sum_{r}", row_levels)
            for j in range(P):
                k = r * P + j
                # one accumulator adder per PE: its lanes' sum, or the row's sum in the reducing column
                base = Mux(self.first, self.init[k], self.acc[k])
                addend = Signal(signed(max(row_width, lane_width)), name=f"addend_{r}_{j}")
                m.d.comb += addend.eq(Mux(self.reduce, row_sum, pe_sums[j]))
                with m.If(self.en & (~self.reduce | (self.slot == j))):
                    m.d.sync += self.acc[k].eq(base + addend)
        return m


def _lane_term(act, neg_act, code, weight_code: WeightCode):
    """A LUT lane's term from a shared activation and its negation (two-term codes: both terms added)."""
    term = negated_shift_term(act, neg_act, code[:SHIFT_CODE_BITS])
    if weight_code is WeightCode.SHIFT8_TWO_TERM:
        term = term + negated_shift_term(act, neg_act, code[SHIFT_CODE_BITS:])
    return term
