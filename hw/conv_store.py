"""The CONV store: streams a finished output row from the accumulator buffer to DDR, requantising it.

Per channel group of ``G = min(pe_oc, cb)`` output channels: ``S_ADDR`` (CONV_STORE_SETUP cycles, in which the
group's DDR address settles through registered products), ``S_CMD`` (the write command) and ``S_DATA`` (one
accumulator read per beat, ``sw`` beats). A beat's read enters a pipeline (buffer read, lane selection, the
pipelined requantisers, lane placement) and lands in a :class:`~shiftpu.hw.beat_queue.BeatQueue`
CONV_STORE_LATENCY cycles later; its registered output drives the AXI write data. Reads are only issued while
the queue has room for every beat in flight, so the pipeline never stalls and a slow write channel only slows
the reads.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.latency import CONV_STORE_LATENCY, CONV_STORE_SETUP
from shiftpu.hw.arith import pipelined_product
from shiftpu.hw.axi_master import transfer_layout, write_beat_layout
from shiftpu.hw.beat_queue import BeatQueue
from shiftpu.hw.decode import INSTRUCTION
from shiftpu.hw.params import HwParams, log2
from shiftpu.hw.pe_array import acc_layout
from shiftpu.hw.postproc import Requantizer
from shiftpu.hw.wait import delayed, wait_cycles

#: One bias/shift record of the bias table (arch/layout.py: int32 bias, int8 shift, padded to 8 bytes).
QP_RECORD = data.StructLayout({"bias": signed(32), "shift": signed(8)})

def qp_row_layout(p: HwParams) -> data.ArrayLayout:
    """One entry of the bias table buffer: the records of pe_oc output channels."""
    return data.ArrayLayout(QP_RECORD, p.cfg.pe_oc)


class ConvStore(wiring.Component):
    """Writes one output row (accumulators of a buffer half) to DDR, channel group by channel group.

    The tile inputs (``o0``, ``x0``, ``sw``, ``obs``, ``n_groups``, the base and size registers) must hold
    while ``busy``; ``y`` and ``half`` are taken with ``kick``.
    """

    def __init__(self, p: HwParams):
        self.p = p
        acc_entries_bits = range(p.acc_entries + 1)
        super().__init__({
            "kick": In(1),
            "instr": In(INSTRUCTION),
            "y": In(16),
            "half": In(1),
            "o0": In(16),
            "x0": In(16),
            "sw": In(16),
            "obs": In(16),
            "n_groups": In(16),
            "tile_out_base": In(32),  #: DDR address of output column x0 of channel block 0, row 0
            "out_plane": In(32),  #: bytes of one channel block's plane of the output tensor
            "out_row": In(32),  #: bytes of one output row of one channel block
            "busy": Out(1),
            "acc_addr": Out(acc_entries_bits),
            "acc_data": In(acc_layout(p)),
            "qp_addr": Out(acc_entries_bits),
            "qp_data": In(qp_row_layout(p)),
            "wr_cmd": Out(stream.Signature(transfer_layout(p))),
            "wr_data": Out(stream.Signature(write_beat_layout(p))),
        })

    def elaborate(self, platform):
        p = self.p
        cfg = p.cfg
        m = Module()
        i = self.instr
        P, PO, CB, G = cfg.pe_px, cfg.pe_oc, p.cb, p.out_group
        lp, lcb, lg = log2(P), log2(CB), log2(G)
        row_groups = PO // G
        lrg = log2(row_groups)
        half_entries = p.acc_entries // 2

        g = Signal(16)  # channel group of the row
        x = Signal(16)  # beat (output column) of the group
        sw_m1, groups_m1 = Signal(16), Signal(16)  # the last beat and group, registered from the tile inputs
        m.d.sync += [sw_m1.eq(self.sw - 1), groups_m1.eq(self.n_groups - 1)]
        y = Signal(16)
        half = Signal()
        with m.If(self.kick):
            m.d.sync += [y.eq(self.y), half.eq(self.half)]

        # -- the group's DDR address and lane masks, settling in S_ADDR (registered stages, no products on a
        # per-beat path) --
        c_base = Signal(16)
        blk = Signal(16)
        group_addr = Signal(32)
        chan_ok = Signal(G)
        plane_off = pipelined_product(m, blk, self.out_plane, "plane_off")  # PRODUCT_LATENCY stages after blk
        row_off = pipelined_product(m, y, self.out_row, "row_off")
        m.d.sync += [
            c_base.eq(self.o0 + (g << lg)),
            blk.eq((self.o0 + (g << lg)) >> lcb),
            group_addr.eq(self.tile_out_base + plane_off[:32] + row_off[:32]),
            chan_ok.eq(Cat(*(c_base + k < i.out_c for k in range(G)))),
        ]
        ob_g = g >> lrg if row_groups > 1 else g
        lane0 = c_base[:lcb] if CB > G else Const(0, 1)

        # -- beat issue: one accumulator read per beat while the queue has room --
        m.submodules.queue = queue = BeatQueue(p)
        wiring.connect(m, wiring.flipped(self.wr_data), queue.wr_data)
        issue = Signal()
        m.d.comb += queue.issue.eq(issue)
        acc_addr = Signal.like(self.acc_addr)
        m.d.comb += [self.acc_addr.eq(acc_addr), self.qp_addr.eq(ob_g)]

        with m.FSM(name="store") as fsm:
            with m.State("S_IDLE"):
                with m.If(self.kick):
                    m.d.sync += g.eq(0)
                    m.next = "S_ADDR"
            with m.State("S_ADDR"):
                m.d.sync += [x.eq(0), acc_addr.eq(Mux(half, half_entries, 0) + ob_g)]
                with m.If(wait_cycles(m, CONV_STORE_SETUP, "store_setup")):
                    m.next = "S_CMD"
            with m.State("S_CMD"):
                m.d.comb += [self.wr_cmd.valid.eq(1), self.wr_cmd.payload.addr.eq(group_addr),
                             self.wr_cmd.payload.beats.eq(self.sw)]
                with m.If(self.wr_cmd.ready):
                    m.next = "S_DATA"
            with m.State("S_DATA"):
                m.d.comb += issue.eq(queue.room)
                with m.If(issue):
                    m.d.sync += x.eq(x + 1)
                    if P > 1:
                        with m.If(x[:lp] == P - 1):
                            m.d.sync += acc_addr.eq(acc_addr + self.obs)
                    else:
                        m.d.sync += acc_addr.eq(acc_addr + self.obs)
                    with m.If(x == sw_m1):
                        m.d.sync += g.eq(g + 1)
                        with m.If(g == groups_m1):
                            m.next = "S_IDLE"
                        with m.Else():
                            m.next = "S_ADDR"
        m.d.comb += self.busy.eq(~fsm.ongoing("S_IDLE"))

        # -- the beat pipeline: tag of each beat, lane selection, requantisers, lane placement --
        tag = data.StructLayout({"valid": 1, "col": range(P), "row_grp": range(max(2, row_groups)),
                                 "chan_ok": G, "lane0": lcb if CB > G else 1})
        t1 = Signal(tag)  # with the accumulator buffer's read data
        m.d.sync += [t1.valid.eq(issue), t1.col.eq(x[:lp] if P > 1 else 0),
                     t1.row_grp.eq(g[:lrg] if row_groups > 1 else 0), t1.chan_ok.eq(chan_ok), t1.lane0.eq(lane0)]
        # then the selected lanes (the requantisers' input), then the requantisers
        t_out = delayed(m, t1, CONV_STORE_LATENCY - 1, "out_tag")

        out_bytes = []
        for k in range(G):
            rq = Requantizer(cfg.acc_bits)
            m.submodules[f"rq{k}"] = rq
            # lane k only ever sees rows k, G + k, 2G + k, ...: select among those rows' pe_px columns
            acc_sel = Signal(signed(cfg.acc_bits), name=f"out_acc{k}")
            rec_sel = Signal(QP_RECORD, name=f"out_qp{k}")
            with m.Switch(Cat(t1.col, t1.row_grp) if P > 1 else t1.row_grp):
                for rg in range(row_groups):
                    for jj in range(P):
                        with m.Case(rg * P + jj if P > 1 else rg):
                            m.d.sync += acc_sel.eq(self.acc_data[(rg * G + k) * P + jj])
            with m.Switch(t1.row_grp):
                for rg in range(row_groups):
                    with m.Case(rg):
                        m.d.sync += rec_sel.eq(self.qp_data[rg * G + k])
            m.d.comb += [
                rq.value.eq(acc_sel), rq.bias.eq(rec_sel.bias), rq.shift.eq(rec_sel.shift), rq.act.eq(i.act),
                rq.leaky_shift.eq(i.leaky_shift), rq.out_bits.eq(i.out_bits), rq.out_signed.eq(i.out_signed),
            ]
            out_bytes.append(Mux(t_out.chan_ok[k], rq.out, 0))
        beat = Signal(write_beat_layout(p))
        m.d.comb += [
            beat.data.eq(Cat(*out_bytes) << (t_out.lane0 * 8)),
            beat.strb.eq(Const((1 << G) - 1, CB) << t_out.lane0),
            queue.beat.valid.eq(t_out.valid),
            queue.beat.payload.eq(beat),
        ]
        return m

