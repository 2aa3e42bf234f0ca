"""The CONV line-buffer loader and its read issuer: the input rows of one output row into the line buffer.

A load brings kernel rows ``ky0 .. kh - 1`` of output row ``y``, each in every channel block of the input
tile, into the row slots of the line buffer (kernel row ky in slot ``(base + ky) mod n_slots``). Each (kernel
row, block) row is ``in_cols`` words: padding columns and rows are written as zeros, the columns inside the
tensor come from DDR.

Two machines walk the same rows. The read issuer computes each row's DDR address in CONV_ISSUE_LATENCY
registered stages (row number, the block and row products, their sum) and queues the read in the burst
reader, running ahead of the loader so that only the first row waits for the memory. The loader writes one
word per cycle: ``L_START`` (the first row's slot and input row), then per row ``L_ROW`` (its line buffer base
and valid columns) and ``L_COLS`` (``in_cols`` words).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.latency import CONV_ISSUE_LATENCY, LOADER_KICK_LATENCY
from shiftpu.hw.arith import PRODUCT_LATENCY, pipelined_product
from shiftpu.hw.axi_master import transfer_layout
from shiftpu.hw.conv_compute import max_row_slots
from shiftpu.hw.decode import INSTRUCTION
from shiftpu.hw.params import HwParams
from shiftpu.hw.wait import wait_cycles


class LineLoader(wiring.Component):
    """Loads kernel rows ``ky0 ..`` of output row ``y`` into the line buffer (issuer and loader).

    ``y``, ``base`` and ``ky0`` are taken with ``kick``; the tile inputs must hold until ``idle``.
    """

    def __init__(self, p: HwParams):
        self.p = p
        lb_addr = range(p.lb_words + p.lb_banks * 2)
        super().__init__({
            "kick": In(1),
            "y": In(16),
            "base": In(4),
            "ky0": In(3),
            "idle": Out(1),
            "instr": In(INSTRUCTION),
            "nblk": In(16),  #: channel blocks of the input tile
            "blk_lo": In(16),  #: first channel block of the input tile
            "in_cols": In(16),  #: words per (row, block): the strip's input columns with padding
            "n_slots": In(4),
            "slot_base": In(data.ArrayLayout(lb_addr, max_row_slots(p))),
            "col_lo": In(16),  #: first column inside the tensor (0 .. in_cols)
            "col_hi": In(16),  #: one past the last column inside the tensor
            "n_beats": In(16),  #: columns inside the tensor (col_hi - col_lo)
            "in_base": In(32),  #: DDR address of input row 0, block 0, first column inside the tensor
            "in_plane": In(32),  #: bytes of one channel block's plane of the input tensor
            "in_row": In(32),  #: bytes of one input row of one block
            "rd_cmd": Out(stream.Signature(transfer_layout(p))),
            "rd_data": In(stream.Signature(unsigned(p.beat_bits))),
            "lb_wr_addr": Out(range(p.lb_words)),
            "lb_wr_data": Out(unsigned(p.cb * 8)),
            "lb_wr_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        i = self.instr
        s2 = i.stride == 2
        has_cols = self.n_beats != 0
        # the last block, kernel row, column and slot, registered from the inputs (they hold while busy)
        nblk_m1, kh_m1, in_cols_m1, n_slots_m1 = Signal(16), Signal(3), Signal(16), Signal(4)
        m.d.sync += [nblk_m1.eq(self.nblk - 1), kh_m1.eq(i.kh - 1), in_cols_m1.eq(self.in_cols - 1),
                     n_slots_m1.eq(self.n_slots - 1)]

        def wrap_slot(value):
            return Mux(value >= self.n_slots, value - self.n_slots, value)

        # -- the kick and its row, registered on the way in (LOADER_KICK_LATENCY): the engine's FSM decodes them --
        kick, kick_y, kick_base, kick_ky0 = Signal(), Signal.like(self.y), Signal.like(self.base), Signal.like(self.ky0)
        m.d.sync += [kick.eq(self.kick), kick_y.eq(self.y), kick_base.eq(self.base), kick_ky0.eq(self.ky0)]
        assert LOADER_KICK_LATENCY == 1, "one register on the way in: the latency the cycle model counts"

        # -- read issuer: (kernel row, block) rows, the address of each through registered stages --
        a_y, a_ky, a_b = Signal(16), Signal(3), Signal(16)
        a_iy = Signal(signed(18))
        a_blk = Signal(16)
        a_ok = [Signal(name=f"a_ok{k}") for k in range(CONV_ISSUE_LATENCY - 1)]
        a_addr = Signal(32)
        # the row's offsets as pipelined products (a row outside the tensor, a_iy < 0, gives an address that is
        # never used)
        plane_off = pipelined_product(m, a_blk, self.in_plane, "plane_off")
        row_off = pipelined_product(m, a_iy.as_unsigned(), self.in_row, "row_off")
        m.d.sync += [
            a_iy.eq(Mux(s2, a_y << 1, a_y).as_signed() - i.pad_t + a_ky), a_blk.eq(self.blk_lo + a_b),
            a_ok[0].eq((a_iy >= 0) & (a_iy < i.in_h) & has_cols),
            *(a_ok[k].eq(a_ok[k - 1]) for k in range(1, len(a_ok))),
            a_addr.eq(self.in_base + plane_off[:32] + row_off[:32]),
        ]
        assert CONV_ISSUE_LATENCY == 2 + PRODUCT_LATENCY, "row number, products, address sum"

        with m.FSM(name="issuer") as afsm:
            with m.State("A_IDLE"):
                with m.If(kick):
                    m.d.sync += [a_y.eq(kick_y), a_ky.eq(kick_ky0), a_b.eq(0)]
                    m.next = "A_CALC"
            with m.State("A_CALC"):
                with m.If(wait_cycles(m, CONV_ISSUE_LATENCY, "issue")):
                    m.next = "A_ROW"
            with m.State("A_ROW"):
                a_next = Signal()
                with m.If(a_ok[-1]):
                    m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.payload.addr.eq(a_addr),
                                 self.rd_cmd.payload.beats.eq(self.n_beats), a_next.eq(self.rd_cmd.ready)]
                with m.Else():
                    m.d.comb += a_next.eq(1)
                with m.If(a_next):
                    m.next = "A_CALC"
                    with m.If(a_b == nblk_m1):
                        m.d.sync += [a_b.eq(0), a_ky.eq(a_ky + 1)]
                        with m.If(a_ky == kh_m1):
                            m.next = "A_IDLE"
                    with m.Else():
                        m.d.sync += a_b.eq(a_b + 1)

        # -- loader: one word per cycle into the line buffer --
        l_y, l_base, l_ky, b = Signal(16), Signal(4), Signal(3), Signal(16)
        l_slot = Signal(4)
        l_iy = Signal(signed(18))
        b_off = Signal(16)  # b * in_cols
        wr_addr = Signal.like(self.lb_wr_addr)  # line buffer address of column col
        col = Signal(16)
        in_range = Signal()  # column col is inside the tensor (registered, stepped by equality tests)
        col_lo_m1, col_hi_m1 = Signal(16), Signal(16)
        with m.FSM(name="loader") as lfsm:
            with m.State("L_IDLE"):
                with m.If(kick):
                    m.d.sync += [l_y.eq(kick_y), l_base.eq(kick_base), l_ky.eq(kick_ky0), b.eq(0), b_off.eq(0)]
                    m.next = "L_START"
            with m.State("L_START"):
                m.d.sync += [l_slot.eq(wrap_slot(l_base + l_ky)),
                             l_iy.eq(Mux(s2, l_y << 1, l_y).as_signed() - i.pad_t + l_ky)]
                m.next = "L_ROW"
            with m.State("L_ROW"):  # the row's read (if any) was queued by the issuer
                cols_ok = (l_iy >= 0) & (l_iy < i.in_h) & (self.col_hi > self.col_lo)
                m.d.sync += [col.eq(0), in_range.eq(cols_ok & (self.col_lo == 0)),
                             col_lo_m1.eq(Mux(cols_ok, self.col_lo - 1, 0xFFFF)), col_hi_m1.eq(self.col_hi - 1),
                             wr_addr.eq(self.slot_base[l_slot] + b_off)]
                m.next = "L_COLS"
            with m.State("L_COLS"):
                advance = Signal()
                m.d.comb += [
                    self.lb_wr_addr.eq(wr_addr),
                    self.lb_wr_data.eq(Mux(in_range, self.rd_data.payload, 0)),
                    self.rd_data.ready.eq(in_range),
                    advance.eq(~in_range | self.rd_data.valid),
                    self.lb_wr_en.eq(advance),
                ]
                with m.If(advance):
                    m.d.sync += [col.eq(col + 1), wr_addr.eq(wr_addr + 1),
                                 in_range.eq(Mux(in_range, col != col_hi_m1, col == col_lo_m1))]
                    with m.If(col == in_cols_m1):
                        m.next = "L_ROW"
                        with m.If(b == nblk_m1):
                            m.d.sync += [b.eq(0), b_off.eq(0), l_ky.eq(l_ky + 1), l_iy.eq(l_iy + 1),
                                         l_slot.eq(Mux(l_slot == n_slots_m1, 0, l_slot + 1))]
                            with m.If(l_ky == kh_m1):
                                m.next = "L_IDLE"
                        with m.Else():
                            m.d.sync += [b.eq(b + 1), b_off.eq(b_off + self.in_cols)]
        m.d.comb += self.idle.eq(lfsm.ongoing("L_IDLE") & afsm.ongoing("A_IDLE") & ~kick)
        return m
