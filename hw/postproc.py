"""Post-processing of one output value: requantising shift with round-half-to-even, activation, saturation.

Implements ``shiftpu.arch.numerics.requantize`` exactly: ``y = sat(rhe(v * 2^-shift))`` where
``v = acc + bias``; a negative shift is a left shift; ReLU clamps at 0; LeakyReLU uses
``shift + leaky_shift`` for negative ``v``; the result saturates to (out_bits, out_signed) and leaves
as one byte (4-bit values sign- or zero-extended).

The requantiser is a pipeline of :data:`REQUANT_LATENCY` register stages with no stall: a value given in
cycle ``t`` leaves in cycle ``t + REQUANT_LATENCY``. Each stage is one adder or one barrel shifter, so the
path between two registers stays a few LUT levels deep at any width. Built with ``pipelined=False`` the
same stages are combinational (the POOL/ADD/MOVE engine's output path, not yet pipelined).
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.latency import REQUANT_LATENCY
from shiftpu.arch.numerics import MAX_LEFT_SHIFT, Activation


class Requantizer(wiring.Component):
    """Requantiser for one lane: ``value + bias`` -> output byte, REQUANT_LATENCY cycles later (or at once)."""

    def __init__(self, value_width: int, pipelined: bool = True):
        self.value_width = value_width
        self.pipelined = pipelined
        self.latency = REQUANT_LATENCY if pipelined else 0
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
        stage = m.d.sync if self.pipelined else m.d.comb
        # v = value + bias needs vw bits, |v| <= 2^(vw-1): a right shift by vw + 1 or more rounds to 0, so shifts
        # are clamped to that; one more bit lets the remainder of the largest shift see the sign extension
        vw = max(self.value_width, 32) + 1
        max_right = vw + 1
        width = vw + 2

        # stage 1: the sum, and the format fields carried along
        v1 = Signal(signed(width))
        shift1 = Signal(signed(8))
        act1 = Signal(2)
        leaky1 = Signal(4)
        bits1 = Signal(4)
        signed1 = Signal()
        stage += [v1.eq(self.value + self.bias), shift1.eq(self.shift), act1.eq(self.act),
                     leaky1.eq(self.leaky_shift), bits1.eq(self.out_bits), signed1.eq(self.out_signed)]

        # stage 2: the shift (LeakyReLU's extra shift for negative values), clamped into right / left amounts
        neg = v1 < 0
        sh = Signal(signed(10))
        m.d.comb += sh.eq(shift1 + Mux((act1 == Activation.LEAKY) & neg, leaky1, 0))
        v2 = Signal(signed(width))
        right2 = Signal(range(max_right + 1))
        left2 = Signal(range(MAX_LEFT_SHIFT + 1))
        relu2 = Signal()
        bits2 = Signal(4)
        signed2 = Signal()
        stage += [
            v2.eq(v1),
            right2.eq(Mux(sh > max_right, max_right, Mux(sh > 0, sh, 0))),
            left2.eq(Mux(-sh > MAX_LEFT_SHIFT, MAX_LEFT_SHIFT, Mux(sh < 0, -sh, 0))),
            relu2.eq(act1 == Activation.RELU), bits2.eq(bits1), signed2.eq(signed1),
        ]

        # stage 3: the shifted value and its rounding decision (half to even), or the left shift
        q = Signal(signed(width))
        rem = Signal(unsigned(max_right))
        half = Signal(unsigned(max_right))
        m.d.comb += [
            q.eq(v2 >> right2),
            rem.eq(v2.as_unsigned() & ((1 << right2) - 1)),
            half.eq((Const(1, 1) << right2) >> 1),
        ]
        q3 = Signal(signed(width))
        up3 = Signal()
        left_val3 = Signal(signed(width + MAX_LEFT_SHIFT + 1))
        is_right3 = Signal()
        relu3 = Signal()
        bits3 = Signal(4)
        signed3 = Signal()
        stage += [
            q3.eq(q), up3.eq((right2 > 0) & ((rem > half) | ((rem == half) & q[0]))),
            left_val3.eq(v2 << left2), is_right3.eq(right2 > 0),
            relu3.eq(relu2), bits3.eq(bits2), signed3.eq(signed2),
        ]

        # stage 4: round, activation, saturation into the output format
        shifted = Signal(signed(width + MAX_LEFT_SHIFT + 1))
        m.d.comb += shifted.eq(Mux(is_right3, q3 + up3, left_val3))
        y = Mux(relu3 & (shifted < 0), 0, shifted)
        qmin = Signal(signed(10))
        qmax = Signal(signed(10))
        with m.If(signed3):
            m.d.comb += [qmin.eq(Mux(bits3 == 4, -8, -128)), qmax.eq(Mux(bits3 == 4, 7, 127))]
        with m.Else():
            m.d.comb += [qmin.eq(0), qmax.eq(Mux(bits3 == 4, 15, 255))]
        out = Signal(8)
        stage += out.eq(Mux(y < qmin, qmin, Mux(y > qmax, qmax, y))[:8])
        m.d.comb += self.out.eq(out)
        assert REQUANT_LATENCY == 4, "the stages above are the latency the cycle model counts"
        return m
