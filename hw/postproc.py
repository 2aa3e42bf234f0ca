"""Post-processing of one output value: requantising shift with round-half-to-even, activation, saturation.

Implements ``shiftpu.arch.numerics.requantize`` exactly: ``y = sat(rhe(v * 2^-shift))`` where
``v = acc + bias``; a negative shift is a left shift; ReLU clamps at 0; LeakyReLU uses
``shift + leaky_shift`` for negative ``v``; the result saturates to (out_bits, out_signed) and leaves
as one byte (4-bit values sign- or zero-extended).

The requantiser is a pipeline of :data:`REQUANT_LATENCY` register stages with no stall: a value given in
cycle ``t`` leaves in cycle ``t + REQUANT_LATENCY``. Only the first stage has a wide adder (the bias); the
rounding decision and the saturation are AND-OR trees and bit selections, not comparators, and the +1 of
rounding up is added to the output byte alone, so every stage stays a few LUT levels deep at any width:

1. ``v = value + bias``; both candidate shifts (plain, and LeakyReLU's for negative values) clamped into
   right and left amounts;
2. the shift chosen by the sign of ``v``, and the mask of the bits below its guard bit (a thermometer code);
3. the right-shifted and the left-shifted value, the guard and sticky bits;
4. the shifted value's low bits, its high bits reduced in chunks of :data:`REDUCE_CHUNK`, and the rounding
   decision;
5. the reductions of high and low bits that saturation needs, for each output format;
6. saturation, the rounding increment of the output byte, ReLU.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.latency import REQUANT_LATENCY
from shiftpu.arch.numerics import MAX_LEFT_SHIFT, Activation

#: The bit above the largest magnitude of each output format (out_bits, out_signed): qmax = 2^k - 1, and
#: qmin = -2^k (signed) or 0 (unsigned).
_FORMAT_BITS = {(4, True): 3, (8, True): 7, (4, False): 4, (8, False): 8}
#: Bits of the shifted value reduced together in stage 4 (with the left/right selection in front: two LUT
#: levels).
REDUCE_CHUNK = 5


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
        # v = value + bias needs vw bits, |v| <= 2^(vw-1): a right shift by vw + 1 or more rounds to 0, so shifts
        # are clamped to that; one more bit keeps the sign of the largest shift's guard bit
        vw = max(self.value_width, 32) + 1
        max_right = vw + 1
        width = vw + 2
        wide = width + MAX_LEFT_SHIFT  # the left-shifted value

        def clamped(sh):
            right = Mux(sh > max_right, max_right, Mux(sh > 0, sh, 0))
            left = Mux(-sh > MAX_LEFT_SHIFT, MAX_LEFT_SHIFT, Mux(sh < 0, -sh, 0))
            return right, left

        # stage 1: the sum; the right/left amounts of the plain shift and of LeakyReLU's negative-side shift
        v1 = Signal(signed(width))
        right_p1, right_n1 = Signal(range(max_right + 1)), Signal(range(max_right + 1))
        left_p1, left_n1 = Signal(range(MAX_LEFT_SHIFT + 1)), Signal(range(MAX_LEFT_SHIFT + 1))
        sh_n = Signal(signed(10))
        m.d.comb += sh_n.eq(self.shift + self.leaky_shift)
        leaky1, relu1 = Signal(), Signal()
        bits1, signed1 = Signal(4), Signal()
        (rp, lp), (rn, ln) = clamped(self.shift), clamped(sh_n)
        stage += [v1.eq(self.value + self.bias), right_p1.eq(rp), left_p1.eq(lp), right_n1.eq(rn), left_n1.eq(ln),
                  leaky1.eq(self.act == Activation.LEAKY), relu1.eq(self.act == Activation.RELU),
                  bits1.eq(self.out_bits), signed1.eq(self.out_signed)]

        # stage 2: the amounts for this value's sign, and the mask of the bits below its guard bit
        neg1 = v1[-1]
        use_n = leaky1 & neg1
        right = Signal(range(max_right + 1))
        m.d.comb += right.eq(Mux(use_n, right_n1, right_p1))
        v2 = Signal(signed(width))
        right2 = Signal(range(max_right + 1))
        left2 = Signal(range(MAX_LEFT_SHIFT + 1))
        sticky_mask2 = Signal(max_right)  # bit k: v's bit k is below the guard bit (k < right - 1)
        zero2, bits2, signed2 = Signal(), Signal(4), Signal()
        stage += [
            v2.eq(v1), right2.eq(right), left2.eq(Mux(use_n, left_n1, left_p1)),
            sticky_mask2.eq(Cat(*(right > k + 1 for k in range(max_right)))),
            zero2.eq(relu1 & neg1), bits2.eq(bits1), signed2.eq(signed1),
        ]

        # stage 3: the shifted value and whether it rounds up (half to even: the first bit shifted out is set and
        # any bit below it, or the result's lowest bit, is); a left shift never rounds
        q = Signal(signed(width))
        m.d.comb += q.eq(v2 >> right2)
        guard = Cat(0, v2).bit_select(right2, 1)  # v's bit right - 1
        sticky = (v2[:max_right] & sticky_mask2).any()  # any of v's bits 0 .. right - 2
        q3, lv3 = Signal(signed(width)), Signal(signed(wide))
        left3, guard3, sticky3, zero3, bits3, signed3 = Signal(), Signal(), Signal(), Signal(), Signal(4), Signal()
        stage += [
            q3.eq(q), lv3.eq(v2 << left2), left3.eq(left2 != 0), guard3.eq(guard), sticky3.eq(sticky),
            zero3.eq(zero2), bits3.eq(bits2), signed3.eq(signed2),
        ]
        t3 = Signal(signed(wide))  # the shifted value
        m.d.comb += t3.eq(Mux(left3, lv3, q3))

        # stage 4: the shifted value's low bits, and its high bits reduced chunk by chunk (any set, all set);
        # whether it rounds up
        ks = sorted(set(_FORMAT_BITS.values()))
        low_bits = max(ks) + 2  # every format's magnitude bit, the bit above it, and the next
        n_chunks = -(-(wide - low_bits) // REDUCE_CHUNK)
        chunks = [t3[low_bits + REDUCE_CHUNK * c:low_bits + REDUCE_CHUNK * (c + 1)] for c in range(n_chunks)]
        low4 = Signal(low_bits)
        chunk_any4, chunk_all4 = Signal(n_chunks), Signal(n_chunks)
        neg4, up4, zero4, bits4, signed4 = Signal(), Signal(), Signal(), Signal(4), Signal()
        stage += [
            low4.eq(t3[:low_bits]), chunk_any4.eq(Cat(*(c.any() for c in chunks))),
            chunk_all4.eq(Cat(*(c.all() for c in chunks))), neg4.eq(t3[-1]),
            up4.eq(~left3 & guard3 & (sticky3 | q3[0])), zero4.eq(zero3), bits4.eq(bits3), signed4.eq(signed3),
        ]

        # stage 5: per output format (k: the bit above its magnitude), the reductions saturation needs
        any_hi = {k: Signal(name=f"any_hi{k}") for k in ks}  # a bit at or above k is set
        all_hi = {k: Signal(name=f"all_hi{k}") for k in ks + [k + 1 for k in ks]}  # all bits from k on are set
        all_lo = {k: Signal(name=f"all_lo{k}") for k in ks}  # bits 0 .. k-1 are all set
        all5 = Signal()  # all bits set (-1)
        low5 = Signal(8)
        bit5 = {k: Signal(name=f"bit{k}") for k in ks}  # bit k itself
        neg5, up5, zero5, bits5, signed5 = Signal(), Signal(), Signal(), Signal(4), Signal()
        stage += [
            *(any_hi[k].eq(low4[k:].any() | chunk_any4.any()) for k in ks),
            *(all_hi[k].eq(low4[k:].all() & chunk_all4.all()) for k in all_hi),
            *(all_lo[k].eq(low4[:k].all()) for k in ks), all5.eq(low4.all() & chunk_all4.all()),
            *(bit5[k].eq(low4[k]) for k in ks), low5.eq(low4[:8]), neg5.eq(neg4),
            up5.eq(up4), zero5.eq(zero4), bits5.eq(bits4), signed5.eq(signed4),
        ]

        # stage 6: saturation of t + up into the format, the byte rounded up, ReLU
        over, under = Signal(), Signal()
        qmin, qmax = Signal(8), Signal(8)
        with m.Switch(Cat(bits5, signed5)):
            for (b, sg), k in _FORMAT_BITS.items():
                with m.Case(b | (sg << 4)):
                    # above: t > qmax, or t == qmax and it rounds up
                    m.d.comb += [over.eq(~neg5 & (any_hi[k] | (all_lo[k] & up5))), qmax.eq((1 << k) - 1)]
                    if sg:  # below: t < -2^k, unless t == -2^k - 1 and it rounds up
                        m.d.comb += [under.eq(neg5 & ~all_hi[k] & ~(up5 & all_hi[k + 1] & ~bit5[k] & all_lo[k])),
                                     qmin.eq(-(1 << k) & 0xFF)]
                    else:  # below: t < 0, unless t == -1 and it rounds up
                        m.d.comb += [under.eq(neg5 & ~(up5 & all5)), qmin.eq(0)]
            with m.Default():  # out_bits other than 4 and 8 are refused by the decoder
                m.d.comb += [over.eq(0), under.eq(0), qmin.eq(0), qmax.eq(0)]
        out = Signal(8)
        stage += out.eq(Mux(zero5, 0, Mux(over, qmax, Mux(under, qmin, low5 + up5))))
        m.d.comb += self.out.eq(out)
        assert REQUANT_LATENCY == 6, "the stages above are the latency the cycle model counts"
        return m
