"""The soft reset (``CTRL.SOFT_RESET``): the sequencer and its engines back to idle without breaking AXI4.

The sequencer, its engines and its instruction fetch are held at their power-on state (the top wraps them in a
``ResetInserter`` driven by ``hold``) while the AXI4 burst engines drain what is in flight (``drain``, see
:mod:`shiftpu.hw.axi_master`). One thing has to wait: a write beat already offered on W must go out unchanged,
and the engine that offers it keeps it only while it runs, so the hold starts once the writer no longer holds
such a beat. The drain ends when the hold has been on for a cycle and both burst engines report ``idle``;
``busy`` covers the whole drain (STATUS.BUSY).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class SoftReset(wiring.Component):
    """Sequencing of one soft reset: drain the AXI4 master, hold the sequencer, report busy until both are done."""

    def __init__(self):
        super().__init__({
            "request": In(1),  # one-cycle pulse: CTRL.SOFT_RESET written
            "reader_idle": In(1),
            "writer_idle": In(1),
            "writer_holding": In(1),  # a data beat is on W, not yet taken: its producer must keep running
            "drain": Out(1),  # to both burst engines
            "hold": Out(1),  # the sequencer and its engines at their power-on state
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        held = Signal()  # hold was on in the previous cycle: the sequencer is at its power-on state now
        m.d.sync += held.eq(self.hold)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.request):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [self.drain.eq(1), self.busy.eq(1), self.hold.eq(~self.writer_holding)]
                with m.If(held & self.reader_idle & self.writer_idle):
                    m.next = "IDLE"
        return m
