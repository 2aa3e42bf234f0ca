"""The output queue of a fixed-latency beat pipeline: a FIFO in front of the AXI write data, with credits.

The CONV store and the POOL/ADD/MOVE engine compute their output beats in pipelines that never stall: a beat
issued in cycle ``t`` arrives ``latency`` cycles later, whatever the write channel does. The queue takes every
arriving beat, and the pipeline only issues a beat while the queue has room for it and for every beat still in
flight (``room``, from a credit counter). So a slow write channel only slows the issue, no beat is ever dropped,
and the write data leaves from the FIFO's registered output, with no logic between it and ``m_axi_wdata``.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.hw.axi_master import write_beat_layout
from shiftpu.hw.params import HwParams

#: Queue depth: the beats in flight in a pipeline plus the FIFO's own turn-around, so that a pipeline issues
#: one beat per cycle when the write channel takes one per cycle.
BEAT_QUEUE_DEPTH = 16


class BeatQueue(wiring.Component):
    """Credits for ``issue``, a FIFO for the beats arriving on ``beat`` and the write-data stream out of it.

    ``issue`` may only be asserted while ``room`` is; the pipeline asserts ``beat.valid`` for each issued beat,
    ``latency`` cycles later (``beat`` has no ready: the credits guarantee the space). ``empty`` holds when no beat
    is in flight or queued.
    """

    def __init__(self, p: HwParams, depth: int = BEAT_QUEUE_DEPTH):
        self.p = p
        self.depth = depth
        super().__init__({
            "issue": In(1),
            "room": Out(1),
            "beat": In(stream.Signature(write_beat_layout(p), always_ready=True)),
            "wr_data": Out(stream.Signature(write_beat_layout(p))),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = out_fifo = fifo.SyncFIFOBuffered(width=self.p.beat_bits + self.p.beat_bytes,
                                                             depth=self.depth)
        credit = Signal(range(self.depth + 1), init=self.depth)
        out_fire = self.wr_data.valid & self.wr_data.ready
        m.d.sync += credit.eq(credit - self.issue + out_fire)
        m.d.comb += [
            self.room.eq(credit != 0),
            self.empty.eq(credit == self.depth),
            out_fifo.w_stream.valid.eq(self.beat.valid),
            out_fifo.w_stream.payload.eq(self.beat.payload),
            self.wr_data.valid.eq(out_fifo.r_stream.valid),
            self.wr_data.payload.eq(out_fifo.r_stream.payload),
            out_fifo.r_stream.ready.eq(self.wr_data.ready),
        ]
        return m
