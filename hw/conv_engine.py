"""The CONV engine: the column-prior loop nest of docs/architecture.md on the PE array, all three dataflows.

Components (docs/rtl.md has the whole cycle model; ``L_r``: AXI read latency of the memory system):

* the main FSM (this module), per (strip x0, output tile o0): TILE 1, TILE_SETUP (CONV_TILE_SETUP), QP_CMD 1 +
  L_r + bias table beats; per output row: ROW 1, per input tile: IC 1, IC_SETUP (CONV_IC_SETUP, 1 for the later
  rows of a single input tile; its last cycle starts the loader unless the rows came ahead), LB_WAIT (until
  the loader is done, at least 1), W_CHECK 1, weights only when the (o0, i0) pair changed (per pe_oc block
  W_SETUP (CONV_W_SETUP) + W_CMD 1 + L_r + its beats, every step of a beat written in one cycle),
  COMPUTE_INIT 1 (waits for the store when it would write the half the store reads, or read the port the
  store uses), COMPUTE (the dataflow's formula of the contract, then the pipeline's CONV_COMPUTE_LATENCY),
  STORE 1 (the last input tile hands the row to the store once it is free); NEXT_ROW 1 (the last row of a
  tile waits for the store); FINISH until every write response is back. The instruction starts with SETUP
  (CONV_SETUP).
* :class:`~shiftpu.hw.conv_loader.LineLoader`: the input rows into the line buffer, its read issuer queueing
  the reads ahead. With one input tile and kh + min(stride, kh) row slots in the line buffer, COMPUTE_INIT
  starts the next row's load into the free slots.
* :class:`~shiftpu.hw.conv_compute.ConvCompute`: the PE array and its loop counters.
* :class:`~shiftpu.hw.conv_store.ConvStore`: requantises a finished row and streams it to DDR. When a row's
  accumulators fit half the buffer, rows alternate halves, so the next row computes meanwhile.

Every product of instruction fields is computed once per instruction, tile or input tile into a register
(the *_SETUP states give the registered stages time to settle); per-cycle addresses are stepped.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.isa import Dataflow
from shiftpu.arch.latency import CONV_IC_SETUP, CONV_SETUP, CONV_TILE_SETUP, CONV_W_SETUP
from shiftpu.arch.numerics import NEGATIVE_ZERO_CODE, SHIFT_CODE_BITS
from shiftpu.arch.regmap import ErrorCode
from shiftpu.hw.arith import pipelined_product, small_product
from shiftpu.hw.axi_master import transfer_layout, write_beat_layout
from shiftpu.hw.conv_compute import ConvCompute, max_row_slots
from shiftpu.hw.conv_loader import LineLoader
from shiftpu.hw.conv_store import QP_RECORD, ConvStore
from shiftpu.hw.decode import INSTRUCTION
from shiftpu.hw.gearbox import BeatsToWords
from shiftpu.hw.line_buffer import LineBuffer
from shiftpu.hw.params import HwParams, log2
from shiftpu.hw.pe_array import acc_layout
from shiftpu.hw.wait import wait_cycles
from shiftpu.hw.weight_buffer import WeightBuffer

QP_WORD_BITS = 64


def engine_members(p: HwParams) -> dict[str, wiring.Member]:
    """What the sequencer and the AXI engines see of an execution engine."""
    return {
        "start": In(1),
        "instr": In(INSTRUCTION),
        "const_base": In(32),
        "act_base": In(32),
        "done": Out(1),
        "failed": Out(1),
        "error_code": Out(8),
        "stall": Out(1),
        "rd_cmd": Out(stream.Signature(transfer_layout(p))),
        "rd_data": In(stream.Signature(unsigned(p.beat_bits))),
        "wr_cmd": Out(stream.Signature(transfer_layout(p))),
        "wr_data": Out(stream.Signature(write_beat_layout(p))),
        "wr_idle": In(1),
    }


class ConvEngine(wiring.Component):
    """Runs one CONV instruction: loads, shift-add compute, requantise, store."""

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__(engine_members(p))

    def elaborate(self, platform):
        p = self.p
        cfg = p.cfg
        m = Module()
        # the engine's own copy of the instruction (it holds from LATCH, DECODE_CHECK cycles before start): the
        # sequencer's register drives only the copies, not every engine's logic across the chip
        i = Signal.like(self.instr, name="conv_instr")
        m.d.sync += i.eq(self.instr)
        P, PO, L, CB, G = cfg.pe_px, cfg.pe_oc, cfg.pe_ic, p.cb, p.out_group
        lp, lpo, ll, lcb, lg = log2(P), log2(PO), log2(L), log2(CB), log2(G)
        lbb = log2(p.beat_bytes)
        dw = i.depthwise
        ic_mode = i.dataflow == Dataflow.INPUT_CHANNEL
        s = i.stride
        half_entries = p.acc_entries // 2

        m.submodules.lb = lb = LineBuffer(p)
        m.submodules.wb = wb = WeightBuffer(p)
        m.submodules.loader = loader = LineLoader(p)
        m.submodules.compute = compute = ConvCompute(p)
        m.submodules.store = store = ConvStore(p)
        narrow_steps = p.step_bits <= p.beat_bits  # whole steps per beat, written in one cycle
        if not narrow_steps:
            m.submodules.w_gear = w_gear = BeatsToWords(p.beat_bits, p.step_bits)
        m.submodules.qp_gear = qp_gear = BeatsToWords(p.beat_bits, QP_WORD_BITS)
        m.submodules.accbuf = accbuf = memory.Memory(shape=acc_layout(p), depth=p.acc_entries, init=[])
        acc_wr = accbuf.write_port()
        acc_rd = accbuf.read_port()  # partial sums for the PE array while computing, finished rows for the store
        m.submodules.qpmem = qpmem = memory.Memory(shape=unsigned(QP_RECORD.size * PO), depth=p.acc_entries, init=[])
        qp_wr = qpmem.write_port(granularity=QP_RECORD.size)
        qp_rd = qpmem.read_port()

        # -- per instruction (settled in SETUP) --
        khkw = Signal(6)
        in_row, in_plane, out_row, out_plane = Signal(32), Signal(32), Signal(32), Signal(32)
        in_base, out_base, w_base = Signal(32), Signal(32), Signal(32)
        w_channels = Signal(17)  # input channels per output channel in the weight layout
        w_stride = pipelined_product(m, w_channels, khkw, "w_stride")  # weight steps per pe_oc block in DDR
        r_new = Signal(3)  # rows a later output row loads: min(stride, kh)
        nblk_out = Signal(16)
        single_tile = Signal()
        in_hw = pipelined_product(m, i.in_h, i.in_w, "in_hw")
        out_hw = pipelined_product(m, i.out_h, i.out_w, "out_hw")
        m.d.sync += [
            khkw.eq(small_product(i.kw, i.kh)),
            in_row.eq(i.in_w << lcb), in_plane.eq(in_hw << lcb),
            out_row.eq(i.out_w << lcb), out_plane.eq(out_hw << lcb),
            in_base.eq(self.act_base + i.in_addr), out_base.eq(self.act_base + i.out_addr),
            w_base.eq(self.const_base + i.w_addr),
            w_channels.eq(Mux(dw, 1, Mux(ic_mode, ((i.in_c + P - 1) >> lp) << lp, ((i.in_c + L - 1) >> ll) << ll))),
            r_new.eq(Mux(s < i.kh, s, i.kh)),
            nblk_out.eq((i.out_c + CB - 1) >> lcb),
            single_tile.eq(dw | (i.ic_tile >= i.in_c)),
        ]
        ky_later = i.kh - r_new  # first kernel row an output row after the first loads (one input tile)
        pf_slots = Signal(4)  # row slots with prefetch: kh + r_new
        m.d.sync += pf_slots.eq(i.kh + r_new)
        # loop conditions of the main FSM, registered ahead of the states that test them
        out_h_m1 = Signal(16)
        y_more, later_row, last_it, last_strip = Signal(), Signal(), Signal(), Signal()
        qp_end = Signal(17)  # the last bias/shift record of the tile

        # -- per (strip x0, output tile o0) (settled in TILE_SETUP) --
        x0, o0, y, i0 = (Signal(16, name=n) for n in ("x0", "o0", "y", "i0"))
        sw, ot, it = Signal(16), Signal(17), Signal(17)
        obs, pgs, in_cols = Signal(16), Signal(16), Signal(16)
        ix0 = Signal(signed(18))
        vlo, vhi = Signal(ix0.shape()), Signal(ix0.shape())
        col_lo, col_hi, n_beats = Signal(16), Signal(16), Signal(16)
        in_base_x, tile_out_base = Signal(32), Signal(32)
        acc_use = pipelined_product(m, obs, pgs, "acc_use")
        acc_over = Signal()  # the tile's accumulators do not fit the buffer
        dbl = Signal()  # a row's accumulators fit half the buffer: rows alternate halves
        last_tile, end_ch, n_groups = Signal(), Signal(17), Signal(16)
        sw_m1, obs_m1, pgs_m1 = Signal(16), Signal(16), Signal(16)
        qp_byte = Signal(32)
        qp_skip, qp_addr, qp_beats = Signal(16), Signal(32), Signal(24)
        m.d.sync += [
            obs.eq((ot + PO - 1) >> lpo), pgs.eq((sw + P - 1) >> lp),
            in_cols.eq(Mux(s == 2, (sw - 1) << 1, sw - 1) + i.kw), ix0.eq(Mux(s == 2, x0 << 1, x0).as_signed() - i.pad_l),
            vlo.eq(Mux(ix0 < 0, 0, ix0)), vhi.eq(Mux(ix0 + in_cols > i.in_w, i.in_w, ix0 + in_cols)),
            col_lo.eq(Mux(vhi > vlo, vlo - ix0, 0)), col_hi.eq(Mux(vhi > vlo, vhi - ix0, 0)),
            n_beats.eq(Mux(vhi > vlo, vhi - vlo, 0)), in_base_x.eq(in_base + (vlo << lcb)),
            tile_out_base.eq(out_base + (x0 << lcb)),
            acc_over.eq(acc_use > p.acc_entries), dbl.eq(acc_use <= half_entries),
            last_tile.eq(o0 + i.oc_tile >= i.out_c),
            end_ch.eq(Mux(last_tile, (nblk_out << lcb) - o0, ot)),
            n_groups.eq((end_ch + G - 1) >> lg),
            sw_m1.eq(sw - 1), obs_m1.eq(obs - 1), pgs_m1.eq(pgs - 1),
            qp_byte.eq(i.qp_addr + (o0 << 3)),
            qp_skip.eq((qp_byte[:lbb] >> 3) if p.beat_bytes > 8 else 0),
            qp_addr.eq(self.const_base + ((qp_byte >> lbb) << lbb)),
            qp_beats.eq(((qp_skip << 3) + (obs << (lpo + 3)) + p.beat_bytes - 1) >> lbb),
        ]

        m.d.sync += [
            out_h_m1.eq(i.out_h - 1), y_more.eq(y != out_h_m1), later_row.eq((y != 0) & single_tile),
            last_it.eq(dw | (i0 + i.ic_tile >= i.in_c)), last_strip.eq(x0 + i.strip_w >= i.out_w),
            qp_end.eq((obs << lpo) - 1),
        ]

        # -- per input tile (settled in IC_SETUP) --
        n_slot_bases = max_row_slots(p) + 1
        nblk, blk_lo = Signal(16), Signal(16)
        it_w, it_run, it_w_m1 = Signal(17), Signal(17), Signal(17)
        slot_words = pipelined_product(m, nblk, in_cols, "slot_words")
        n_steps = pipelined_product(m, it_run, khkw, "n_steps")  # weight steps of one block's run
        slot_base = Signal(data.ArrayLayout(range(p.lb_words + p.lb_banks * 2), n_slot_bases))
        wb_use = pipelined_product(m, obs, n_steps, "wb_use")
        wb_over = Signal()  # the tile's weight runs do not fit the weight buffer
        prefetch = Signal()  # kh + r_new row slots fit: the next row loads while this one computes
        lb_bad = Signal()
        slots_fit = Signal(n_slot_bases)  # bit k: k row slots fit the line buffer
        n_groups_ic = (it + P - 1) >> lp  # INPUT_CHANNEL: groups of pe_px channels
        n_groups_px = (it + L - 1) >> ll  # PIXEL: groups of pe_ic channels (the PEs' lanes)
        m.d.sync += [
            nblk.eq(((i0 + it - 1) >> lcb) - (i0 >> lcb) + 1), blk_lo.eq(i0 >> lcb),
            it_w.eq(Mux(dw, 1, Mux(ic_mode, n_groups_ic, n_groups_px))),
            it_run.eq(Mux(dw, 1, Mux(ic_mode, n_groups_ic << lp, n_groups_px << ll))),
            it_w_m1.eq(it_w - 1), wb_over.eq(wb_use > p.wb_depth),
            prefetch.eq(single_tile & slots_fit.bit_select(pf_slots, 1)),
            lb_bad.eq(~slots_fit.bit_select(i.kh, 1)),
        ]
        for k in range(n_slot_bases):  # k * slot_words: a shift and at most one adder per constant k
            m.d.sync += slot_base[k].eq(_times_constant(slot_words, k))
        # k row slots fit the line buffer: k * slot_words <= lb_words, compared with a constant per k (no index
        # into the slot bases on the way)
        m.d.sync += slots_fit.eq(Cat(1, *(slot_words <= p.lb_words // k for k in range(1, n_slot_bases))))
        n_slots = Signal(4)
        m.d.comb += n_slots.eq(i.kh + Mux(prefetch, r_new, 0))

        # -- row slots of the line buffer: kernel row ky of output row y in slot (rslot_base + ky) mod n_slots --
        rslot_base = Signal(4)
        base_next = Signal(4)
        m.d.comb += base_next.eq(Mux(rslot_base + r_new >= n_slots, rslot_base + r_new - n_slots, rslot_base + r_new))
        ky_first = Mux((y != 0) & single_tile, ky_later, 0)
        pf_pending = Signal()  # the rows of output row y were loaded ahead, while row y - 1 computed

        m.d.comb += [loader.nblk.eq(nblk), loader.blk_lo.eq(blk_lo), loader.in_cols.eq(in_cols),
                     loader.n_slots.eq(n_slots), loader.col_lo.eq(col_lo), loader.col_hi.eq(col_hi),
                     loader.n_beats.eq(n_beats), loader.in_plane.eq(in_plane), loader.in_row.eq(in_row)]
        m.d.comb += [loader.instr.eq(i), loader.in_base.eq(in_base_x),
                     loader.slot_base.eq(slot_base.as_value()[:len(loader.slot_base.as_value())]),
                     lb.wr_addr.eq(loader.lb_wr_addr), lb.wr_data.eq(loader.lb_wr_data), lb.wr_en.eq(loader.lb_wr_en)]

        # -- compute --
        c_half = Signal()  # half of the accumulator buffer the next row computes into
        need_rd = Signal()  # this input tile adds to partial sums: it reads the accumulator port
        m.d.sync += need_rd.eq(~dw & (i0 != 0))
        m.d.comb += [
            compute.instr.eq(i), compute.o0.eq(o0), compute.i0.eq(i0), compute.sw_m1.eq(sw_m1),
            compute.obs_m1.eq(obs_m1), compute.pgs_m1.eq(pgs_m1), compute.it_w_m1.eq(it_w_m1),
            compute.n_steps.eq(n_steps), compute.in_cols.eq(in_cols),
            compute.slot_base.eq(slot_base.as_value()[:len(compute.slot_base.as_value())]),
            compute.rslot_base.eq(rslot_base), compute.n_slots.eq(n_slots),
            compute.acc_base.eq(Mux(dbl & c_half, half_entries, 0)), compute.add_partials.eq(need_rd),
            lb.rd_addr.eq(compute.lb_rd_addr), lb.rd_stride.eq(compute.lb_rd_stride),
            compute.lb_rd_data.eq(lb.rd_data), wb.rd_addr.eq(compute.wb_rd_addr), compute.wb_rd_data.eq(wb.rd_data),
            compute.acc_rd_data.eq(acc_rd.data),
            acc_wr.en.eq(compute.acc_wr_en), acc_wr.addr.eq(compute.acc_wr_addr), acc_wr.data.eq(compute.acc_wr_data),
        ]

        # -- store --
        m.d.comb += [
            store.instr.eq(i), store.o0.eq(o0), store.x0.eq(x0), store.sw.eq(sw), store.obs.eq(obs),
            store.n_groups.eq(n_groups), store.tile_out_base.eq(tile_out_base), store.out_plane.eq(out_plane),
            store.out_row.eq(out_row), store.acc_data.eq(acc_rd.data), store.qp_data.eq(qp_rd.data),
            qp_rd.addr.eq(store.qp_addr),
            acc_rd.addr.eq(Mux(store.busy, store.acc_addr, compute.acc_rd_addr)),
        ]
        wiring.connect(m, store.wr_cmd, wiring.flipped(self.wr_cmd))
        wiring.connect(m, store.wr_data, wiring.flipped(self.wr_data))

        # -- the read port: the loader's issuer, or the main FSM's table and weight reads (never both at once) --
        main_rd_valid, main_rd_addr, main_rd_beats = Signal(), Signal(32), Signal(24)
        main_rd_ready = Signal()
        m.d.comb += [
            self.rd_cmd.valid.eq(loader.rd_cmd.valid | main_rd_valid),
            self.rd_cmd.payload.eq(Mux(loader.rd_cmd.valid, loader.rd_cmd.payload.as_value(),
                                       Cat(main_rd_addr[:p.addr_bits], main_rd_beats))),
            loader.rd_cmd.ready.eq(self.rd_cmd.ready),
            loader.rd_data.valid.eq(self.rd_data.valid), loader.rd_data.payload.eq(self.rd_data.payload),
            self.rd_data.ready.eq(loader.rd_data.ready | main_rd_ready),
        ]

        # -- weight run addressing (settled in W_SETUP): the run of pe_oc block ob starts at step s0 in DDR --
        ob = Signal(16)
        spb_log = log2(p.beat_bits // p.step_bits) if narrow_steps else 0
        # the run of block ob starts (o0 / pe_oc + ob) * w_stride + i0 * kh * kw steps into the layer's weights:
        # the first term stepped by w_stride from the tile's product, run by run
        tile_steps = pipelined_product(m, o0 >> lpo, w_stride, "tile_steps")  # settled in TILE_SETUP
        i0_prod = pipelined_product(m, i0, khkw, "i0_steps")  # settled in IC_SETUP
        i0_steps, w_prod, s0 = Signal(24), Signal(32), Signal(32)
        w_addr, w_beats, w_skip = Signal(32), Signal(24), Signal(range(p.w_lanes))
        m.d.sync += [i0_steps.eq(Mux(dw, 0, i0_prod)), s0.eq(w_prod + i0_steps)]
        if narrow_steps:
            m.d.sync += [w_skip.eq(s0[:spb_log] if spb_log else 0),
                         w_addr.eq(w_base + ((s0 >> spb_log) << lbb)),
                         w_beats.eq(((s0[:spb_log] if spb_log else 0) + n_steps + (1 << spb_log) - 1) >> spb_log)]
        else:
            bps = p.step_bits // p.beat_bits
            m.d.sync += [w_skip.eq(0), w_addr.eq(w_base + s0 * (bps * p.beat_bytes)), w_beats.eq(n_steps * bps)]

        w_valid = Signal()
        w_o0, w_i0 = Signal(16), Signal(16)
        wb_wr_base = Signal(20)
        w_left = Signal(16)  # steps of the run still to write
        w_lane0 = Signal(range(p.w_lanes))
        w_waddr = Signal(20)  # weight buffer address of write lane 0 of this beat
        qp_n = Signal(17)
        err_code = Signal(8)
        m.d.comb += [
            self.error_code.eq(err_code),
            qp_gear.beats.payload.eq(self.rd_data.payload),
            qp_wr.addr.eq(qp_n >> lpo), qp_wr.data.eq(Cat(qp_gear.words.payload[:QP_RECORD.size]).replicate(PO)),
        ]

        # -- illegal weight codes (negative zero, in any term) among the steps written, in registered stages: the
        # codes of each lane, then the lanes of the run; the instruction fails at FINISH --
        beat_mask = Signal(p.w_lanes)  # lanes of this cycle's beat that belong to the run
        lane_bad, mask_q = Signal(p.w_lanes), Signal(p.w_lanes)
        code_bad = Signal()  # sticky for the instruction
        nibbles = p.step_bits // SHIFT_CODE_BITS
        wr_bits = wb.wr_data.as_value()
        if narrow_steps:
            m.d.sync += lane_bad.eq(Cat(*(
                Cat(*(wr_bits.word_select(lane * nibbles + k, SHIFT_CODE_BITS) == NEGATIVE_ZERO_CODE
                      for k in range(nibbles))).any() for lane in range(p.w_lanes))))
        else:
            m.d.sync += lane_bad.eq(Cat(*(wr_bits.word_select(k, SHIFT_CODE_BITS) == NEGATIVE_ZERO_CODE
                                          for k in range(nibbles))).any())
        m.d.sync += [mask_q.eq(beat_mask), code_bad.eq(code_bad | (lane_bad & mask_q).any())]

        blocked = Signal()  # the main FSM waits for the loader or the store
        w_loaded = Signal()  # the weight buffer holds this (output tile, input tile)'s weights (registered)
        m.d.sync += w_loaded.eq(w_valid & (w_o0 == o0) & (w_i0 == i0))
        done, failed = Signal(), Signal()
        m.d.sync += [done.eq(0), failed.eq(0)]
        m.d.comb += [self.done.eq(done), self.failed.eq(failed)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [x0.eq(0), o0.eq(0), w_valid.eq(0), err_code.eq(0), code_bad.eq(0)]
                    m.next = "SETUP"
            with m.State("SETUP"):
                with m.If(wait_cycles(m, CONV_SETUP, "setup")):
                    m.next = "TILE"
            with m.State("TILE"):
                m.d.sync += [
                    sw.eq(Mux(i.strip_w < i.out_w - x0, i.strip_w, i.out_w - x0)),
                    ot.eq(Mux(i.oc_tile < i.out_c - o0, i.oc_tile, i.out_c - o0)),
                ]
                m.next = "TILE_SETUP"
            with m.State("TILE_SETUP"):
                with m.If(wait_cycles(m, CONV_TILE_SETUP, "tile_setup")):
                    with m.If(acc_over):
                        m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "QP_CMD"
            with m.State("QP_CMD"):
                m.d.comb += [main_rd_valid.eq(1), main_rd_addr.eq(qp_addr), main_rd_beats.eq(qp_beats)]
                with m.If(self.rd_cmd.ready):
                    m.d.comb += [qp_gear.restart.eq(1), qp_gear.skip.eq(qp_skip)]
                    m.d.sync += qp_n.eq(0)
                    m.next = "QP_DATA"
            with m.State("QP_DATA"):
                m.d.comb += [main_rd_ready.eq(qp_gear.beats.ready), qp_gear.beats.valid.eq(self.rd_data.valid),
                             qp_gear.words.ready.eq(1)]
                with m.If(qp_gear.words.valid):
                    m.d.comb += qp_wr.en.eq(1 << qp_n[:lpo] if PO > 1 else 1)
                    m.d.sync += qp_n.eq(qp_n + 1)
                    with m.If(qp_n == qp_end):
                        m.d.sync += [y.eq(0), rslot_base.eq(0), c_half.eq(0), pf_pending.eq(0)]
                        m.next = "ROW"
            with m.State("ROW"):
                m.d.sync += i0.eq(Mux(dw, o0, 0))
                m.next = "IC"
            with m.State("IC"):
                m.d.sync += it.eq(Mux(dw, ot, Mux(i.ic_tile < i.in_c - i0, i.ic_tile, i.in_c - i0)))
                m.next = "IC_SETUP"
            with m.State("IC_SETUP"):
                # the per-input-tile values are recomputed for a new tile; later rows of one input tile reuse them
                with m.If(wait_cycles(m, Mux(later_row, 1, CONV_IC_SETUP), "ic_setup")):
                    with m.If(lb_bad):
                        m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                        m.next = "FINISH"
                    with m.Else():
                        with m.If(pf_pending):  # loaded (or loading) while the previous row computed
                            m.d.sync += pf_pending.eq(0)
                        with m.Else():
                            m.d.comb += [loader.kick.eq(1), loader.y.eq(y), loader.base.eq(rslot_base),
                                         loader.ky0.eq(ky_first)]
                        m.next = "LB_WAIT"
            with m.State("LB_WAIT"):
                m.d.comb += blocked.eq(1)
                with m.If(loader.idle):
                    m.next = "W_CHECK"
            with m.State("W_CHECK"):
                m.d.sync += [ob.eq(0), wb_wr_base.eq(0), w_prod.eq(tile_steps)]
                with m.If(w_loaded):
                    m.next = "COMPUTE_INIT"
                with m.Elif(wb_over):
                    m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += w_valid.eq(0)
                    m.next = "W_SETUP"
            with m.State("W_SETUP"):
                with m.If(wait_cycles(m, CONV_W_SETUP, "w_setup")):
                    m.next = "W_CMD"
            with m.State("W_CMD"):
                m.d.comb += [main_rd_valid.eq(1), main_rd_addr.eq(w_addr), main_rd_beats.eq(w_beats)]
                with m.If(self.rd_cmd.ready):
                    if not narrow_steps:
                        m.d.comb += w_gear.restart.eq(1)
                    m.d.sync += [w_left.eq(n_steps), w_lane0.eq(w_skip), w_waddr.eq(wb_wr_base - w_skip)]
                    m.next = "W_DATA"
            with m.State("W_DATA"):
                # one beat per cycle: its steps from w_lane0 on, up to the end of the run
                room = p.w_lanes - w_lane0
                last_beat = w_left <= room
                if narrow_steps:
                    w_valid_beat = self.rd_data.valid
                    m.d.comb += [main_rd_ready.eq(1), wb.wr_data.eq(self.rd_data.payload)]
                else:
                    w_valid_beat = w_gear.words.valid
                    m.d.comb += [main_rd_ready.eq(w_gear.beats.ready), w_gear.beats.valid.eq(self.rd_data.valid),
                                 w_gear.beats.payload.eq(self.rd_data.payload), w_gear.words.ready.eq(1),
                                 wb.wr_data.eq(w_gear.words.payload)]
                mask = Cat(*((w_lane0 <= lane) & (w_left > lane - w_lane0) for lane in range(p.w_lanes)))
                m.d.comb += [wb.wr_addr.eq(w_waddr), wb.wr_en.eq(w_valid_beat), wb.wr_mask.eq(mask),
                             beat_mask.eq(Mux(w_valid_beat, mask, 0))]
                with m.If(w_valid_beat):
                    m.d.sync += [w_left.eq(w_left - room), w_lane0.eq(0), w_waddr.eq(w_waddr + p.w_lanes)]
                    with m.If(last_beat):
                        m.d.sync += [wb_wr_base.eq(wb_wr_base + n_steps), ob.eq(ob + 1), w_prod.eq(w_prod + w_stride)]
                        with m.If(ob == obs_m1):
                            m.d.sync += [w_valid.eq(1), w_o0.eq(o0), w_i0.eq(i0)]
                            m.next = "COMPUTE_INIT"
                        with m.Else():
                            m.next = "W_SETUP"
            with m.State("COMPUTE_INIT"):
                # the half being written must not be the one the store reads, nor the port in use
                with m.If(store.busy & (~dbl | need_rd)):
                    m.d.comb += blocked.eq(1)
                with m.Else():
                    m.d.comb += compute.start.eq(1)
                    with m.If(prefetch & y_more):
                        m.d.comb += [loader.kick.eq(1), loader.y.eq(y + 1), loader.base.eq(base_next),
                                     loader.ky0.eq(ky_later)]
                        m.d.sync += pf_pending.eq(1)
                    m.next = "COMPUTE"
            with m.State("COMPUTE"):  # the PE array, then its pipeline, until the last block accumulates
                with m.If(compute.done):
                    m.next = "STORE"
            with m.State("STORE"):  # its accumulators go to the buffer (in this state's first cycle)
                with m.If(last_it):
                    with m.If(store.busy):
                        m.d.comb += blocked.eq(1)
                    with m.Else():
                        m.d.comb += [store.kick.eq(1), store.y.eq(y), store.half.eq(dbl & c_half)]
                        m.d.sync += c_half.eq(dbl & ~c_half)
                        m.next = "NEXT_ROW"
                with m.Else():
                    m.d.sync += i0.eq(i0 + i.ic_tile)
                    m.next = "IC"
            with m.State("NEXT_ROW"):
                with m.If(y_more):
                    m.d.sync += [y.eq(y + 1), rslot_base.eq(base_next)]
                    m.next = "ROW"
                with m.Elif(store.busy):  # the tile's last row is written before the tile changes
                    m.d.comb += blocked.eq(1)
                with m.Else():
                    m.d.sync += o0.eq(o0 + i.oc_tile)
                    m.next = "TILE"
                    with m.If(last_tile):
                        m.d.sync += [o0.eq(0), x0.eq(x0 + i.strip_w)]
                        with m.If(last_strip):
                            m.next = "FINISH"
            with m.State("FINISH"):  # done and failed leave from registers, a cycle later (ENGINE_DONE)
                with m.If(self.wr_idle & ~store.busy & loader.idle):
                    m.d.sync += [done.eq(1), failed.eq((err_code != 0) | code_bad)]
                    with m.If(code_bad & (err_code == 0)):  # the run finishes, then refuses its weights
                        m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                    m.next = "IDLE"
        waiting = ("QP_CMD", "QP_DATA", "W_SETUP", "W_CMD", "W_DATA", "FINISH")
        m.d.comb += self.stall.eq(blocked | Cat(*(fsm.ongoing(st) for st in waiting)).any())
        return m


def _times_constant(value, k: int):
    """``value * k`` for a small constant k as shifts and at most one add or subtract (k <= 10)."""
    if k == 0:
        return 0
    ones = [b for b in range(k.bit_length()) if k >> b & 1]
    if len(ones) == 1:
        return value << ones[0]
    if len(ones) == 2:
        return (value << ones[1]) + (value << ones[0])
    top = k.bit_length()  # k = 2^top - 2^low when its ones are contiguous
    if k == (1 << top) - (1 << ones[0]):
        return (value << top) - (value << ones[0])
    raise ValueError(f"{k} is not a sum or difference of two powers of two")
