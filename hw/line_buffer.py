"""The input line buffer: kh rows x strip input columns x channel blocks, read pe_px columns at a time.

Words are one channel block of one pixel (one AXI beat), stored densely at linear address
``(ky * blocks + block) * in_cols + column``. The words sit in 2 x pe_px banks by ``address mod 2 pe_px``,
so the pe_px columns ``a, a + s, ..., a + (pe_px - 1) s`` that one PIXEL step reads, at stride s of
1 or 2, always lie in different banks and are read in the same cycle. Reads take two cycles: the block
RAM's, then a register after the lane rotation (the words of the address given in cycle ``t`` are
``rd_data`` in cycle ``t + 2``).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.hw.crossbar import rotate_words
from shiftpu.hw.params import HwParams


class LineBuffer(wiring.Component):
    """Banked word store: one write per cycle, pe_px strided reads per cycle (two cycles of latency)."""

    def __init__(self, p: HwParams):
        self.p = p
        word = unsigned(p.cb * 8)
        super().__init__({
            "wr_addr": In(range(p.lb_words)),
            "wr_data": In(word),
            "wr_en": In(1),
            "rd_addr": In(range(p.lb_words + p.lb_banks * 2)),
            "rd_stride": In(2),
            "rd_data": Out(data.ArrayLayout(word, p.cfg.pe_px)),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        nb = p.lb_banks
        sel = (nb - 1).bit_length()
        bank_out = []
        # the read address's rotation and stride, two cycles on (with the banks' registered outputs)
        addr_q, addr_qq = Signal.like(self.rd_addr), Signal.like(self.rd_addr)
        stride_q, stride_qq = Signal.like(self.rd_stride), Signal.like(self.rd_stride)
        m.d.sync += [addr_q.eq(self.rd_addr), stride_q.eq(self.rd_stride), addr_qq.eq(addr_q), stride_qq.eq(stride_q)]
        for b in range(nb):
            mem = memory.Memory(shape=unsigned(p.cb * 8), depth=p.lb_bank_depth, init=[])
            m.submodules[f"bank{b}"] = mem
            wr = mem.write_port()
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(self.wr_addr >> sel),
                wr.data.eq(self.wr_data),
                wr.en.eq(self.wr_en & (self.wr_addr[:sel] == b)),
            ]
            # the one address in [rd_addr, rd_addr + nb) that lives in bank b
            offset = (b - self.rd_addr[:sel])[:sel]
            m.d.comb += rd.addr.eq((self.rd_addr + offset) >> sel)
            out_q = Signal(unsigned(p.cb * 8), name=f"bank{b}_out")  # the block RAM's output register
            m.d.sync += out_q.eq(rd.data)
            bank_out.append(out_q)
        # word a + t sits in bank (a + t) mod nb: rotate, then lane j takes word j * stride (stride 1 or 2)
        words = rotate_words(m, bank_out, addr_qq[:sel], p.cb * 8, "lanes")
        for j in range(p.cfg.pe_px):
            m.d.sync += self.rd_data[j].eq(Mux(stride_qq[1], words[(2 * j) % nb], words[j]))
        return m
