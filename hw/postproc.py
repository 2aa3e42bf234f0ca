"""Post-processing of one output value: requantising shift with round-half-to-even, activation, saturation.

Implements ``shiftpu.arch.numerics.requantize`` exactly: ``y = sat(rhe(v * 2^-shift))`` where
``v = acc + bias``; a negative shift is a left shift; ReLU clamps at 0; LeakyReLU uses
``shift + leaky_shift`` for negative ``v``; the result saturates to (out_bits, out_signed) and leaves
as one byte (4-bit values sign- or zero-extended).
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.numerics import MAX_LEFT_SHIFT, Activation


class Requantizer(wiring.Component):
    """Combinational requantiser for one lane: ``value + bias`` -> output byte."""

    def __init__(self, value_width: int):
        self.value_width = value_width
        super().__init__({
            "value": In(signed(value_width)),
            "bias": In(signed(32)),
            "shift": In(signed(8)),
            "act": In(2),
            "leaky_shift": In(4),
            "out_bits": In(4),
            "out_signed": In(1),
            "out": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        # v = value + bias needs vw bits, |v| <= 2^(vw-1): a right shift by vw + 1 or more rounds to 0, so shifts
        # are clamped to that; one more bit lets the remainder of the largest shift see the sign extension
        vw = max(self.value_width, 32) + 1
        max_right = vw + 1
        width = vw + 2
        v = Signal(signed(width))
        m.d.comb += v.eq(self.value + self.bias)
        neg = v < 0
        leaky = (self.act == Activation.LEAKY) & neg
        sh = Signal(signed(10))
        m.d.comb += sh.eq(self.shift + Mux(leaky, self.leaky_shift, 0))

        right = Signal(range(max_right + 1))
        left = Signal(range(MAX_LEFT_SHIFT + 1))
        m.d.comb += [
            right.eq(Mux(sh > max_right, max_right, Mux(sh > 0, sh, 0))),
            left.eq(Mux(-sh > MAX_LEFT_SHIFT, MAX_LEFT_SHIFT, Mux(sh < 0, -sh, 0))),
        ]
        q = Signal(signed(width))
        rem = Signal(unsigned(max_right))
        half = Signal(unsigned(max_right))
        m.d.comb += [
            q.eq(v >> right),
            rem.eq(v.as_unsigned() & ((1 << right) - 1)),
            half.eq((Const(1, 1) << right) >> 1),
        ]
        round_up = (right > 0) & ((rem > half) | ((rem == half) & q[0]))
        shifted = Signal(signed(width + MAX_LEFT_SHIFT + 1))
        m.d.comb += shifted.eq(Mux(right > 0, q + round_up, v << left))
        y = Mux((self.act == Activation.RELU) & (shifted < 0), 0, shifted)

        qmin = Signal(signed(10))
        qmax = Signal(signed(10))
        with m.If(self.out_signed):
            m.d.comb += [qmin.eq(Mux(self.out_bits == 4, -8, -128)), qmax.eq(Mux(self.out_bits == 4, 7, 127))]
        with m.Else():
            m.d.comb += [qmin.eq(0), qmax.eq(Mux(self.out_bits == 4, 15, 255))]
        sat = Signal(signed(10))
        m.d.comb += sat.eq(Mux(y < qmin, qmin, Mux(y > qmax, qmax, y)))
        m.d.comb += self.out.eq(sat[:8])
        return m
