"""The weight buffer: weight steps (pe_oc shift codes each) of one output tile x input tile.

Oc block ``ob``'s run of ``n`` steps sits at ``ob * n`` in DDR order. Steps live in banks by
``address mod banks`` (banks = max(pe_px, pe_ic, steps per AXI beat)), so one cycle writes all the steps of a
beat and reads the ``max(pe_px, pe_ic)`` consecutive steps ``a ..``: DEPTHWISE uses the first, PIXEL the first
pe_ic (one step per input-channel lane of the PEs), INPUT_CHANNEL the first pe_px (one per column). Reads take two cycles (the block
RAM's, then a register after the lane rotation); a write is registered before it reaches the banks, so a
step written in cycle ``t`` can be read from cycle ``t + 2``.
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.layout import ceil_div
from shiftpu.hw.crossbar import rotate_words
from shiftpu.hw.params import HwParams

#: Width of the weight buffer's address arithmetic (addresses wrap modulo 2^ADDR_BITS).
ADDR_BITS = 20


class WeightBuffer(wiring.Component):
    """Up to ``w_lanes`` consecutive steps written and ``wb_read_steps`` consecutive steps read (two cycles latency)
    per cycle.

    ``wr_addr`` is the address of write lane 0; lanes with ``wr_mask`` set are written.
    """

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "wr_addr": In(ADDR_BITS),
            "wr_data": In(data.ArrayLayout(unsigned(p.step_bits), p.w_lanes)),
            "wr_mask": In(p.w_lanes),
            "wr_en": In(1),
            "rd_addr": In(ADDR_BITS),
            "rd_data": Out(data.ArrayLayout(unsigned(p.step_bits), p.wb_read_steps)),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        nb = p.wb_banks
        sel = (nb - 1).bit_length()
        outs = []
        addr_q, addr_qq = Signal.like(self.rd_addr), Signal.like(self.rd_addr)  # the read's rotation, 2 cycles on
        m.d.sync += [addr_q.eq(self.rd_addr), addr_qq.eq(addr_q)]
        # the write, registered: its bank steering and address adders then start from flip-flops
        wr_addr, wr_data = Signal.like(self.wr_addr), Signal.like(self.wr_data)
        wr_mask, wr_en = Signal.like(self.wr_mask), Signal()
        m.d.sync += [wr_addr.eq(self.wr_addr), wr_data.eq(self.wr_data), wr_mask.eq(self.wr_mask),
                     wr_en.eq(self.wr_en)]
        for b in range(nb):
            mem = memory.Memory(shape=unsigned(p.step_bits), depth=ceil_div(p.wb_depth, nb), init=[])
            m.submodules[f"bank{b}"] = mem
            wr = mem.write_port()
            rd = mem.read_port()
            if sel:
                # the write lane and the read address of bank b
                lane = Signal(sel, name=f"bank{b}_lane")
                m.d.comb += [lane.eq(b - wr_addr[:sel]), rd.addr.eq((self.rd_addr + (b - self.rd_addr[:sel])[:sel]) >> sel)]
            else:
                lane = 0
                m.d.comb += rd.addr.eq(self.rd_addr)
            m.d.comb += wr.addr.eq((wr_addr + lane)[:ADDR_BITS] >> sel)
            with m.Switch(lane):
                for k in range(p.w_lanes):
                    with m.Case(k):
                        m.d.comb += [wr.data.eq(wr_data[k]), wr.en.eq(wr_en & wr_mask[k])]
            out_q = Signal(unsigned(p.step_bits), name=f"bank{b}_out")  # the block RAM's output register
            m.d.sync += out_q.eq(rd.data)
            outs.append(out_q)
        lanes = rotate_words(m, outs, addr_qq[:sel], p.step_bits, "lanes") if sel else outs
        for j in range(p.wb_read_steps):
            m.d.sync += self.rd_data[j].eq(lanes[j])
        return m
