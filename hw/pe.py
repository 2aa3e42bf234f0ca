"""The shift-add processing element: activation x shift-coded weight without a multiplier.

A 4-bit code ``sign << 3 | ecode`` stands for 0 (ecode 0) or ±2^(ecode-1): the PE shifts its
activation left by ``ecode - 1`` and negates it on the sign bit. A two-term 8-bit code is two such
terms added (term 1 in the low nibble).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.numerics import MAX_WEIGHT_EXPONENT, SHIFT_CODE_BITS, WeightCode
from shiftpu.hw.params import ACT_WIDTH

#: Width of one product: a 9-bit activation shifted by up to MAX_WEIGHT_EXPONENT, twice, plus sign.
TERM_WIDTH = ACT_WIDTH + MAX_WEIGHT_EXPONENT + 2


def shift_term(act, code4):
    """Value of one 4-bit shift code applied to ``act`` (an Amaranth expression)."""
    ecode = code4[:SHIFT_CODE_BITS - 1]
    sign = code4[SHIFT_CODE_BITS - 1]
    shifted = act << (ecode - 1)[:3]
    magnitude = Mux(ecode == 0, 0, shifted)
    return Mux(sign, -magnitude, magnitude)


def negated_shift_term(act, neg_act, code4):
    """:func:`shift_term` from ``act`` and its negation ``neg_act``, computed once where many PEs share ``act``:
    the sign picks the operand and the PE only shifts it (no negation per term)."""
    ecode = code4[:SHIFT_CODE_BITS - 1]
    operand = Mux(code4[SHIFT_CODE_BITS - 1], neg_act, act)
    return Mux(ecode == 0, 0, operand << (ecode - 1)[:3])


def code_value(code, weight_code: WeightCode):
    """The integer weight of a code (0 or +-2^e; two-term: the sum of both terms), as a signed value: the
    multiplicand of a PE lane that multiplies in a DSP slice.

    A term's bits come straight from its code, one LUT each: bit ``i`` of ``+2^k`` is ``i == k``, of ``-2^k``
    (two's complement) ``i >= k``, so no negation sits in front of the slice."""
    def term(code4):
        ecode = code4[:SHIFT_CODE_BITS - 1]
        sign = code4[SHIFT_CODE_BITS - 1]
        bits = [(ecode != 0) & Mux(sign, ecode <= i + 1, ecode == i + 1) for i in range(MAX_WEIGHT_EXPONENT + 2)]
        return Cat(*bits).as_signed()
    value = term(code[:SHIFT_CODE_BITS])
    if weight_code is WeightCode.SHIFT8_TWO_TERM:
        value = value + term(code[SHIFT_CODE_BITS:])
    return value


class ShiftAddPE(wiring.Component):
    """One PE's product term: ``act * w`` for a shift-coded ``w`` (combinational, no multiplier)."""

    def __init__(self, weight_code: WeightCode):
        self.weight_code = weight_code
        super().__init__({
            "act": In(signed(ACT_WIDTH)),
            "code": In(weight_code.bits),
            "term": Out(signed(TERM_WIDTH)),
        })

    def elaborate(self, platform):
        m = Module()
        term = shift_term(self.act, self.code[:SHIFT_CODE_BITS])
        if self.weight_code is WeightCode.SHIFT8_TWO_TERM:
            term = term + shift_term(self.act, self.code[SHIFT_CODE_BITS:])
        value = Signal(signed(TERM_WIDTH))
        m.d.comb += [value.eq(term), self.term.eq(value)]
        return m
