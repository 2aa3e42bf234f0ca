"""The AXI4-Lite register file of the contract (shiftpu.arch.regmap) and the run counters behind it.

Offsets, access types and bit positions all come from ``shiftpu.arch.regmap``. The counters
(cycles, stall cycles, AXI beats, retired instructions) are cleared by START and count while busy.
CTRL.SOFT_RESET gives a one-cycle ``soft_reset`` pulse (:mod:`shiftpu.hw.soft_reset` does the rest) and sets
STATUS.ABORTED, clearing DONE, ERROR and ERROR_CODE.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.isa import ISA_VERSION
from shiftpu.arch.regmap import IP_MAGIC, OFFSET, REGISTER_SPACE_BYTES, Ctrl, Irq, Status
from shiftpu.hw.params import HwParams

#: AXI4-Lite address width of the register file.
AXIL_ADDR_BITS = (REGISTER_SPACE_BYTES - 1).bit_length()


def axil_members() -> dict[str, wiring.Member]:
    """AXI4-Lite slave members, named as in AXI4 (without the interface prefix)."""
    return {
        "awaddr": In(AXIL_ADDR_BITS), "awprot": In(3), "awvalid": In(1), "awready": Out(1),
        "wdata": In(32), "wstrb": In(4), "wvalid": In(1), "wready": Out(1),
        "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
        "araddr": In(AXIL_ADDR_BITS), "arprot": In(3), "arvalid": In(1), "arready": Out(1),
        "rdata": Out(32), "rresp": Out(2), "rvalid": Out(1), "rready": In(1),
    }


class RegisterFile(wiring.Component):
    """AXI4-Lite slave with CTRL/STATUS/IRQ/base registers, run counters and the interrupt line."""

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            **axil_members(),
            "start": Out(1),  # one-cycle pulse: CTRL.START written while idle (and without SOFT_RESET)
            "soft_reset": Out(1),  # one-cycle pulse: CTRL.SOFT_RESET written
            "const_base": Out(32),
            "act_base": Out(32),
            "busy": In(1),  # a run or a soft reset's drain
            "finish": In(1),  # one-cycle pulse at the end of a run
            "failed": In(1),  # with finish: the run stopped on an error
            "error_code": In(8),
            "pc": In(32),
            "retire": In(1),
            "stall": In(1),
            "rd_beat": In(1),
            "wr_beat": In(1),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        done = Signal()
        error = Signal()
        aborted = Signal()
        code = Signal(8)
        irq_enable = Signal()
        irq_status = Signal()
        const_base = Signal(32)
        act_base = Signal(32)
        cycles = Signal(64)
        stalls = Signal(64)
        retired = Signal(32)
        rd_beats = Signal(32)
        wr_beats = Signal(32)

        # -- writes: address and data together, one response each --
        wr_fire = self.awvalid & self.wvalid & ~self.bvalid
        m.d.comb += [self.awready.eq(wr_fire), self.wready.eq(wr_fire), self.bresp.eq(0)]
        with m.If(wr_fire):
            m.d.sync += self.bvalid.eq(1)
        with m.Elif(self.bready):
            m.d.sync += self.bvalid.eq(0)
        start_req = Signal()
        ack_irq = Signal()
        with m.If(wr_fire):
            with m.Switch(self.awaddr):
                with m.Case(OFFSET["CTRL"]):
                    m.d.comb += [start_req.eq(self.wdata[Ctrl.START]),
                                 self.soft_reset.eq(self.wdata[Ctrl.SOFT_RESET])]
                with m.Case(OFFSET["IRQ_ENABLE"]):
                    m.d.sync += irq_enable.eq(self.wdata[Irq.DONE])
                with m.Case(OFFSET["IRQ_STATUS"]):
                    m.d.comb += ack_irq.eq(self.wdata[Irq.DONE])
                with m.Case(OFFSET["CONST_BASE"]):
                    m.d.sync += const_base.eq(self.wdata)
                with m.Case(OFFSET["ACT_BASE"]):
                    m.d.sync += act_base.eq(self.wdata)
        m.d.comb += [self.start.eq(start_req & ~self.busy & ~self.soft_reset), self.const_base.eq(const_base),
                     self.act_base.eq(act_base)]

        # -- run state and counters --
        with m.If(self.start):
            m.d.sync += [done.eq(0), error.eq(0), aborted.eq(0), code.eq(0), cycles.eq(0), stalls.eq(0),
                         retired.eq(0), rd_beats.eq(0), wr_beats.eq(0)]
        with m.Else():
            with m.If(self.busy):
                m.d.sync += cycles.eq(cycles + 1)
            with m.If(self.stall):
                m.d.sync += stalls.eq(stalls + 1)
            with m.If(self.retire):
                m.d.sync += retired.eq(retired + 1)
            with m.If(self.rd_beat):
                m.d.sync += rd_beats.eq(rd_beats + 1)
            with m.If(self.wr_beat):
                m.d.sync += wr_beats.eq(wr_beats + 1)
        with m.If(self.soft_reset):  # a run finishing in this very cycle counts as cut off
            m.d.sync += [done.eq(0), error.eq(0), aborted.eq(1), code.eq(0)]
        with m.Elif(self.finish):
            m.d.sync += [done.eq(~self.failed), error.eq(self.failed), code.eq(self.error_code), irq_status.eq(1)]
        with m.Elif(ack_irq):
            m.d.sync += irq_status.eq(0)
        m.d.comb += self.irq.eq(irq_status & irq_enable)

        # -- reads --
        values = {
            "STATUS": ((self.busy << Status.BUSY) | (done << Status.DONE) | (error << Status.ERROR)
                       | (aborted << Status.ABORTED)),
            "ERROR_CODE": code, "IRQ_ENABLE": irq_enable, "IRQ_STATUS": irq_status,
            "CONST_BASE": const_base, "ACT_BASE": act_base,
            "CYCLES_LO": cycles[:32], "CYCLES_HI": cycles[32:], "STALL_LO": stalls[:32], "STALL_HI": stalls[32:],
            "INSTR_RETIRED": retired, "PC": self.pc, "CONFIG_HASH": self.p.cfg.config_hash(),
            "ISA_VERSION": ISA_VERSION, "IP_ID": IP_MAGIC, "RD_BEATS": rd_beats, "WR_BEATS": wr_beats,
        }
        m.d.comb += [self.arready.eq(~self.rvalid), self.rresp.eq(0)]
        with m.If(self.arvalid & self.arready):
            m.d.sync += self.rvalid.eq(1)
            with m.Switch(self.araddr):
                for name, value in values.items():
                    with m.Case(OFFSET[name]):
                        m.d.sync += self.rdata.eq(value)
                with m.Default():
                    m.d.sync += self.rdata.eq(0)
        with m.Elif(self.rready):
            m.d.sync += self.rvalid.eq(0)
        return m
