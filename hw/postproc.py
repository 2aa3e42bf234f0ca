"""Post-processing of one output value: requantising shift with round-half-to-even, activation, saturation.

Implements ``shiftpu.arch.numerics.requantize`` exactly: ``y = sat(rhe(v * 2^-shift))`` where
``v = acc + bias``; a negative shift is a left shift; ReLU clamps at 0; LeakyReLU uses
``shift + leaky_shift`` for negative ``v``; the result saturates to (out_bits, out_signed) and leaves
as one byte (4-bit values sign- or zero-extended).

The output is a saturated byte, so of the shifted value ``t`` only a window of :data:`WINDOW_BITS` low bits is
needed, together with the guard bit below it, a sticky bit (any bit below the guard bit is set) and one bit
saying whether any bit above the window differs from the sign. The window is cut out of ``v`` by a narrowing
shifter: ``v`` padded with :data:`~shiftpu.arch.numerics.MAX_LEFT_SHIFT` + 1 zeros below (left shifts) and sign
bits above is shifted right by ``u = shift + MAX_LEFT_SHIFT`` (clamped to ``0 .. 2^SHIFT_BITS - 1``), two bits of
``u`` per stage, highest first, each stage keeping only the bits the later stages can still select (one LUT per
kept bit: a 4:1 multiplexer). The bits a stage drops below its output go into the sticky bit; those it drops
above go into the high-part bit. No full-width shifted copy of ``v`` is ever built.

The requantiser is a pipeline of :data:`REQUANT_LATENCY` register stages with no stall: a value given in
cycle ``t`` leaves in cycle ``t + REQUANT_LATENCY``. Only the first stage has a wide adder (the bias); the
rounding decision and the saturation are AND-OR trees and bit selections, not comparators, and the +1 of
rounding up is added to the output byte alone, so every stage stays a few LUT levels deep at any width:

1. ``v = value + bias``; both candidate amounts ``u`` (plain, and LeakyReLU's for negative values), clamped;
2. the amount chosen by the sign of ``v``; the first shifter stage (the highest two bits of ``u``);
3. the second shifter stage;
4. the third shifter stage: the window and the high-part bit; the rounding decision (guard and sticky bits);
5. whether the rounded value lies above or below the output format;
6. saturation, the rounding increment of the output byte, ReLU.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.hdl import Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.latency import REQUANT_LATENCY
from shiftpu.arch.numerics import MAX_LEFT_SHIFT, Activation

#: The bit above the largest magnitude of each output format (out_bits, out_signed): qmax = 2^k - 1, and
#: qmin = -2^k (signed) or 0 (unsigned).
_FORMAT_BITS = {(4, True): 3, (8, True): 7, (4, False): 4, (8, False): 8}
#: Low bits of the shifted value that saturation and the output byte look at: every format's bit k, and below.
WINDOW_BITS = max(_FORMAT_BITS.values()) + 1
#: Bits of the shift amount the shifter selects with, two per shifter stage (three stages).
SHIFT_BITS = 6
#: Bits of ``u`` each shifter stage selects with, highest first.
_SHIFTER_STAGES = (2, 2, 2)
#: What travels with a value through the pipeline besides its bits: the output format (out_bits is 4 or 8; it is
#: 8; out_signed), and from stage 2 on (once v is known) the sign of v and whether ReLU makes the result 0.
_Control = data.StructLayout({"valid": 1, "wide": 1, "signed": 1, "neg": 1, "zero": 1})


def _shifter_stage(window: Value, sel: Value, step: int, sign: Value) -> tuple[Value, Value, Value]:
    """One stage of the narrowing shifter: ``window >> (sel * step)``, keeping the bits later stages can select.

    Returns the kept bits, whether any bit dropped below them is set, and whether any bit dropped above them
    differs from ``sign`` (``window`` holds the sign-extended bits explicitly).
    """
    n = 1 << len(sel)
    kept = len(window) - step * (n - 1)
    out = Cat(*(Cat(*(window[i + step * j] for j in range(n))).bit_select(sel, 1) for i in range(kept)))
    below = [window[step * c:step * (c + 1)].any() for c in range(n - 1)]
    above = [(window[kept + step * c:kept + step * (c + 1)] ^ sign.replicate(step)).any() for c in range(n - 1)]
    dropped_below = Cat(*((sel > c) & below[c] for c in range(n - 1))).any()
    dropped_above = Cat(*((sel <= c) & above[c] for c in range(n - 1))).any()
    return out, dropped_below, dropped_above


class Requantizer(wiring.Component):
    """Requantiser for one lane: ``value + bias`` -> output byte, REQUANT_LATENCY cycles later."""

    def __init__(self, value_width: int):
        self.value_width = value_width
        self.latency = REQUANT_LATENCY
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
        stage = m.d.sync
        # v = value + bias needs vw bits; with |v| <= 2^(vw-1) a right shift by vw or more rounds to 0, so the
        # amount u = shift + MAX_LEFT_SHIFT is clamped to 0 .. u_max (a right shift of u_max - MAX_LEFT_SHIFT)
        vw = max(self.value_width, 32) + 1
        u_max = (1 << SHIFT_BITS) - 1
        assert u_max - MAX_LEFT_SHIFT >= vw, "value too wide for the shift amount"
        pad = MAX_LEFT_SHIFT + 1  # zeros below v: the left shifts, and the guard bit of no shift
        window = WINDOW_BITS + 1  # the guard bit and the low bits of t

        def clamped(sh):
            return Mux(sh < 0, 0, Mux(sh > u_max, u_max, sh[:SHIFT_BITS]))

        # stage 1: the sum; the amounts of the plain shift and of LeakyReLU's negative-side shift; the format
        v1 = Signal(signed(vw))
        u_p1, u_n1 = Signal(SHIFT_BITS, name="u_p1"), Signal(SHIFT_BITS, name="u_n1")
        sh_p, sh_n = Signal(signed(10), name="sh_p"), Signal(signed(10), name="sh_n")
        m.d.comb += [sh_p.eq(self.shift + MAX_LEFT_SHIFT),
                     sh_n.eq(self.shift + (self.leaky_shift + MAX_LEFT_SHIFT))]
        leaky1, relu1 = Signal(name="leaky1"), Signal(name="relu1")
        ctl1 = Signal(_Control)
        stage += [v1.eq(self.value + self.bias), u_p1.eq(clamped(sh_p)), u_n1.eq(clamped(sh_n)),
                  leaky1.eq(self.act == Activation.LEAKY), relu1.eq(self.act == Activation.RELU),
                  ctl1.valid.eq((self.out_bits == 4) | (self.out_bits == 8)), ctl1.wide.eq(self.out_bits[3]),
                  ctl1.signed.eq(self.out_signed)]

        # stage 2: the amount for this value's sign; the first shifter stage on v padded and sign-extended
        neg1 = v1[-1]
        u = Signal(SHIFT_BITS)
        m.d.comb += u.eq(Mux(leaky1 & neg1, u_n1, u_p1))
        padded = Cat(Const(0, pad), v1, neg1.replicate(window + u_max - pad - vw))
        hi, mid, lo = (SHIFT_BITS - sum(_SHIFTER_STAGES[:i + 1]) for i in range(3))  # lowest bit of each part
        x, below, above = _shifter_stage(padded, u[hi:], 1 << hi, neg1)
        x2, u2, ctl2 = Signal(len(x), name="x2"), Signal(hi, name="u2"), Signal(_Control, name="ctl2")
        sticky2, above2 = Signal(name="sticky2"), Signal(name="above2")
        stage += [x2.eq(x), u2.eq(u[:hi]), sticky2.eq(below), above2.eq(above), ctl2.eq(ctl1),
                  ctl2.neg.eq(neg1), ctl2.zero.eq(relu1 & neg1)]  # ctl1 has no sign yet

        # stage 3: the second shifter stage
        x, below, above = _shifter_stage(x2, u2[mid:], 1 << mid, ctl2.neg)
        x3, u3, ctl3 = Signal(len(x), name="x3"), Signal(mid, name="u3"), Signal(_Control, name="ctl3")
        sticky3, above3 = Signal(name="sticky3"), Signal(name="above3")
        stage += [x3.eq(x), u3.eq(u2[:mid]), sticky3.eq(sticky2 | below), above3.eq(above2 | above), ctl3.eq(ctl2)]

        # stage 4: the third shifter stage: the window of t, the high-part bit, and whether t rounds up (half to
        # even: the guard bit is set and any bit below it, or t's lowest bit, is; a left shift has no guard bit)
        x, below, above = _shifter_stage(x3, u3, 1 << lo, ctl3.neg)
        assert len(x) == window
        guard, t = x[0], x[1:]
        t4, ctl4 = Signal(WINDOW_BITS, name="t4"), Signal(_Control, name="ctl4")
        up4, above4 = Signal(name="up4"), Signal(name="above4")
        stage += [t4.eq(t), up4.eq(guard & (sticky3 | below | t[0])), above4.eq(above3 | above), ctl4.eq(ctl3)]

        # stage 5: whether t + up lies above or below the format
        fits_hi = ~above4  # the bits above the window are all equal to the sign
        over, under = Signal(name="over"), Signal(name="under")
        with m.Switch(Cat(ctl4.wide, ctl4.signed)):
            for (b, sg), k in _FORMAT_BITS.items():
                with m.Case((b == 8) | (sg << 1)):
                    # above: t > qmax, or t == qmax and it rounds up
                    m.d.comb += over.eq(~ctl4.neg & (above4 | t4[k:].any() | (t4[:k].all() & up4)))
                    # below: t < qmin (t == qmin - 1 rounding up to qmin saturates to the same byte)
                    m.d.comb += under.eq(ctl4.neg & ~(fits_hi & t4[k:].all()) if sg else ctl4.neg)
        low5, ctl5 = Signal(8, name="low5"), Signal(_Control, name="ctl5")
        up5, over5, under5 = Signal(name="up5"), Signal(name="over5"), Signal(name="under5")
        stage += [low5.eq(t4[:8]), up5.eq(up4), over5.eq(ctl4.valid & over), under5.eq(ctl4.valid & under),
                  ctl5.eq(ctl4)]

        # stage 6: saturation, the byte rounded up, ReLU
        qmax = Mux(ctl5.wide, Mux(ctl5.signed, 0x7F, 0xFF), Mux(ctl5.signed, 0x07, 0x0F))
        qmin = Mux(ctl5.signed, Mux(ctl5.wide, 0x80, 0xF8), 0)
        out = Signal(8)
        stage += out.eq(Mux(ctl5.zero, 0, Mux(over5, qmax, Mux(under5, qmin, low5 + up5))))
        m.d.comb += self.out.eq(out)
        assert REQUANT_LATENCY == 6, "the stages above are the latency the cycle model counts"
        return m
