"""The accelerator: register file, sequencer with its engines, the AXI4 burst engines and the soft reset.

Top-level ports (names kept stable for the Vivado IP): ``clk``, ``rst``, the AXI4 master ``m_axi_*``,
the AXI4-Lite slave ``s_axi_*`` and ``irq``.
"""

from __future__ import annotations

from amaranth import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from shiftpu.arch.config import AccelConfig
from shiftpu.hw.axi_master import BurstReader, BurstWriter, read_port_members, write_port_members
from shiftpu.hw.axil_regs import RegisterFile, axil_members
from shiftpu.hw.params import HwParams
from shiftpu.hw.sequencer import Sequencer
from shiftpu.hw.soft_reset import SoftReset

#: Name of the generated top module.
TOP_NAME = "shiftpu_accel"
M_AXI = "m_axi"
S_AXI = "s_axi"


def _prefixed(prefix: str, members: dict[str, wiring.Member]) -> dict[str, wiring.Member]:
    return {f"{prefix}_{name}": member for name, member in members.items()}


def top_members(p: HwParams) -> dict[str, wiring.Member]:
    """The top-level ports besides clk and rst: m_axi_*, s_axi_*, irq."""
    return {
        **_prefixed(M_AXI, read_port_members(p)),
        **_prefixed(M_AXI, write_port_members(p)),
        **_prefixed(S_AXI, axil_members()),
        "irq": Out(1),
    }


class Accelerator(wiring.Component):
    """The shiftpu accelerator generated from one AccelConfig."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.p = HwParams(cfg)
        super().__init__(top_members(self.p))

    def elaborate(self, platform):
        p = self.p
        m = Module()
        m.submodules.regs = regs = RegisterFile(p)
        m.submodules.reader = reader = BurstReader(p)
        m.submodules.writer = writer = BurstWriter(p)
        seq = Sequencer(p)
        m.submodules.soft_reset = soft_reset = SoftReset()
        # CTRL.SOFT_RESET: the sequencer, its engines and its fetch at their power-on state while the AXI4 side drains
        m.submodules.seq = ResetInserter(soft_reset.hold)(seq)

        def wire_port(block, prefix, members):
            for name, member in members.items():
                outer = getattr(self, f"{prefix}_{name}")
                inner = getattr(block, name)
                if member.flow == wiring.Out:
                    m.d.comb += outer.eq(inner)
                else:
                    m.d.comb += inner.eq(outer)

        wire_port(reader, M_AXI, read_port_members(p))
        wire_port(writer, M_AXI, write_port_members(p))
        wire_port(regs, S_AXI, axil_members())
        wiring.connect(m, seq.rd_cmd, reader.cmd)
        wiring.connect(m, reader.data, seq.rd_data)
        wiring.connect(m, seq.wr_cmd, writer.cmd)
        wiring.connect(m, seq.wr_data, writer.data)
        m.d.comb += [
            seq.start.eq(regs.start), seq.const_base.eq(regs.const_base), seq.act_base.eq(regs.act_base),
            seq.rd_error.eq(reader.error), seq.wr_error.eq(writer.error), seq.wr_idle.eq(writer.idle),
            reader.clear.eq(seq.clear_errors), writer.clear.eq(seq.clear_errors),
            soft_reset.request.eq(regs.soft_reset), soft_reset.reader_idle.eq(reader.idle),
            soft_reset.writer_idle.eq(writer.idle), soft_reset.writer_holding.eq(writer.holding),
            reader.drain.eq(soft_reset.drain), writer.drain.eq(soft_reset.drain),
            regs.busy.eq(seq.busy | soft_reset.busy), regs.finish.eq(seq.finish & ~soft_reset.busy),
            regs.failed.eq(seq.failed),
            regs.error_code.eq(seq.error_code), regs.pc.eq(seq.pc), regs.retire.eq(seq.retire),
            regs.stall.eq(seq.stall),
            regs.rd_beat.eq(self.m_axi_rvalid & self.m_axi_rready),
            regs.wr_beat.eq(self.m_axi_wvalid & self.m_axi_wready),
            self.irq.eq(regs.irq),
        ]
        return m
