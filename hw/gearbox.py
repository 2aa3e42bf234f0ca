"""Width conversion from AXI beats to the words a buffer stores (weight steps, bias records, instructions).

Narrow words (word <= beat) are taken lane by lane from each beat, after dropping ``skip`` words at the
start of a transfer (a weight run that starts inside a beat); wide words (word > beat) are assembled
from consecutive beats, first beat in the low bits.
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class BeatsToWords(wiring.Component):
    """Stream of ``beat_bits`` beats in, stream of ``word_bits`` words out (little-endian order)."""

    def __init__(self, beat_bits: int, word_bits: int):
        self.beat_bits = beat_bits
        self.word_bits = word_bits
        super().__init__({
            "beats": In(stream.Signature(unsigned(beat_bits))),
            "words": Out(stream.Signature(unsigned(word_bits))),
            "restart": In(1),
            "skip": In(16),
        })

    def elaborate(self, platform):
        if self.word_bits <= self.beat_bits:
            return self._narrow()
        return self._wide()

    def _narrow(self):
        m = Module()
        ratio = self.beat_bits // self.word_bits
        buf = Signal(self.beat_bits)
        lane = Signal(range(ratio + 1))
        have = Signal()
        pending_skip = Signal(16)
        last_lane = lane == ratio - 1
        out_fire = self.words.valid & self.words.ready
        lanes = [buf[i * self.word_bits:(i + 1) * self.word_bits] for i in range(ratio)]
        word = Signal(self.word_bits)
        with m.Switch(lane):
            for i, w in enumerate(lanes):
                with m.Case(i):
                    m.d.comb += word.eq(w)
        m.d.comb += [
            self.words.payload.eq(word),
            self.words.valid.eq(have),
            self.beats.ready.eq(~have | (out_fire & last_lane)),
        ]
        with m.If(self.restart):
            m.d.sync += [have.eq(0), pending_skip.eq(self.skip), lane.eq(0)]
        with m.Elif(self.beats.valid & self.beats.ready):
            m.d.sync += [buf.eq(self.beats.payload), have.eq(1), pending_skip.eq(0)]
            m.d.sync += lane.eq(pending_skip if ratio > 1 else 0)
        with m.Elif(out_fire):
            m.d.sync += lane.eq(lane + 1)
            with m.If(last_lane):
                m.d.sync += have.eq(0)
        return m

    def _wide(self):
        m = Module()
        ratio = self.word_bits // self.beat_bits
        buf = Signal(self.word_bits)
        count = Signal(range(ratio + 1))
        full = Signal()
        out_fire = self.words.valid & self.words.ready
        in_fire = self.beats.valid & self.beats.ready
        m.d.comb += [
            self.words.payload.eq(buf),
            self.words.valid.eq(full),
            self.beats.ready.eq(~full | self.words.ready),
        ]
        with m.If(self.restart):
            m.d.sync += [full.eq(0), count.eq(0)]
        with m.Else():
            with m.If(in_fire):
                m.d.sync += buf.eq((buf >> self.beat_bits) | (self.beats.payload << (self.word_bits - self.beat_bits)))
                with m.If(count == ratio - 1):
                    m.d.sync += [count.eq(0), full.eq(1)]
                with m.Else():
                    m.d.sync += [count.eq(count + 1)]
                    with m.If(out_fire):
                        m.d.sync += full.eq(0)
            with m.Elif(out_fire):
                m.d.sync += full.eq(0)
        return m
