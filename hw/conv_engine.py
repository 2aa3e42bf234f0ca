"""The CONV engine: the column-prior loop nest of docs/architecture.md on the PE array, all three dataflows.

Three machines share the engine's AXI ports (docs/rtl.md has the whole cycle model; ``L_r``/``L_w``: AXI read/write
latency of the memory system):

* the main FSM, per (strip x0, output tile o0): TILE 1, QP_CHECK 1, QP_CMD 1 + L_r + bias table beats (obs*pe_oc
  records); per output row: ROW 1, per input tile: IC 1, IC_CHECK 1 (starts the loader unless the rows came
  ahead), LB_WAIT (until the loader is done, at least 1), W_CHECK 1, weights only when the (o0, i0) pair changed
  (per pe_oc block W_CMD 1 + L_r + its beats, every step of a beat written in one cycle), COMPUTE_INIT 1 (waits
  for the store when it would write the half the store reads, or read the port the store uses), COMPUTE (the
  dataflow's formula of the contract), DRAIN 1, STORE 1 (the last input tile hands the row to the store once
  it is free); NEXT_ROW 1 (the last row of a tile waits for the store); FINISH until every write response is
  back.
* the line-buffer loader: kh*blocks rows for the first output row (and for every row with several input
  tiles), the min(stride, kh) new ones later (K-row reuse: kernel row ky in row slot (base + ky) mod n_slots),
  each 1 + in_cols words. Its read issuer walks the same rows ahead and queues all their reads in the burst
  reader, so only the first row inside the tensor waits for L_r (less the padding written meanwhile). With one
  input tile and kh + min(stride, kh) row slots in the line buffer (n_slots), COMPUTE_INIT starts the next
  row's load into the free slots.
* the store: per channel group of min(pe_oc, cb) OUT_CMD 1 + sw beats, requantising as the row streams out.
  When a row's accumulators fit half the buffer, rows alternate halves, so the next row computes meanwhile.

PIXEL broadcasts one input channel to pe_px adjacent pixels, DEPTHWISE gives each row its own channel,
INPUT_CHANNEL reduces pe_px input channels of one pixel with the rows' adder trees (one pixel at a time).
Partial sums stay in the accumulator buffer across input tiles; bias is added and the result
requantised as each row segment streams to DDR.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.isa import Dataflow
from shiftpu.arch.regmap import ErrorCode
from shiftpu.hw.axi_master import transfer_layout, write_beat_layout
from shiftpu.hw.crossbar import rotate_words
from shiftpu.hw.decode import INSTRUCTION
from shiftpu.hw.gearbox import BeatsToWords
from shiftpu.hw.line_buffer import LineBuffer
from shiftpu.hw.params import ACT_WIDTH, HwParams
from shiftpu.hw.pe_array import PEArray, acc_layout
from shiftpu.hw.postproc import Requantizer
from shiftpu.hw.weight_buffer import WeightBuffer

QP_WORD_BITS = 64


def _log2(n: int) -> int:
    return (n - 1).bit_length()


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
        i = self.instr
        P, PO, CB, G = cfg.pe_px, cfg.pe_oc, p.cb, p.out_group
        lp, lpo, lcb = _log2(P), _log2(PO), _log2(CB)

        m.submodules.lb = lb = LineBuffer(p)
        m.submodules.wb = wb = WeightBuffer(p)
        m.submodules.pe = pe = PEArray(p)
        narrow_steps = p.step_bits <= p.beat_bits  # whole steps per beat, written in one cycle
        if not narrow_steps:
            m.submodules.w_gear = w_gear = BeatsToWords(p.beat_bits, p.step_bits)
        m.submodules.qp_gear = qp_gear = BeatsToWords(p.beat_bits, QP_WORD_BITS)
        acc_bits = acc_layout(p).size
        m.submodules.accbuf = accbuf = memory.Memory(shape=unsigned(acc_bits), depth=p.acc_entries, init=[])
        acc_wr = accbuf.write_port()
        # one read port: partial sums for the PE array while computing, finished rows while writing out
        acc_rd = accbuf.read_port()
        qp_rec = data.StructLayout({"bias": signed(32), "shift": signed(8)})
        m.submodules.qpmem = qpmem = memory.Memory(shape=unsigned(qp_rec.size * PO), depth=p.acc_entries, init=[])
        qp_wr = qpmem.write_port(granularity=qp_rec.size)
        qp_rd = qpmem.read_port()

        # -- loop state --
        x0, o0, y, i0 = (Signal(16, name=n) for n in ("x0", "o0", "y", "i0"))
        sw, ot, it = Signal(16), Signal(17), Signal(17)
        dw = i.depthwise
        s = i.stride
        khkw = Signal(6)
        m.d.comb += khkw.eq(i.kh * i.kw)
        obs = Signal(16)
        pgs = Signal(16)
        m.d.comb += [obs.eq((ot + PO - 1) >> lpo), pgs.eq((sw + P - 1) >> lp)]
        ic_mode = i.dataflow == Dataflow.INPUT_CHANNEL
        n_groups_ic = (it + P - 1) >> lp
        # steps of the compute loop per output block: input channels (PIXEL), 1 (DEPTHWISE) or groups of pe_px
        it_w = Mux(dw, 1, Mux(ic_mode, n_groups_ic, it))
        it_run = Mux(ic_mode, n_groups_ic << lp, it_w)  # input channels per weight run in DDR
        n_steps = Signal(16)
        m.d.comb += n_steps.eq(it_run * khkw)
        blk_lo = Signal(16)
        nblk = Signal(16)
        in_cols = Signal(16)
        ix0 = Signal(signed(18))
        m.d.comb += [
            blk_lo.eq(i0 >> lcb),
            nblk.eq(((i0 + it - 1) >> lcb) - (i0 >> lcb) + 1),
            in_cols.eq((sw - 1) * s + i.kw),
            ix0.eq((x0 * s).as_signed() - i.pad_l),
        ]
        last_ic = dw | (i0 + i.ic_tile >= i.in_c)

        # -- row slots of the line buffer --
        # Kernel row ky of output row y sits in row slot (base + ky) mod n_slots, base advancing by r_new =
        # min(stride, kh) per output row. With one input tile, rows ky >= stride of row y + 1 are rows
        # ky - stride of row y (K-row reuse): only the last r_new rows are loaded. When kh + r_new slots fit,
        # those rows are loaded into the free slots while row y computes (prefetch); otherwise n_slots = kh
        # and each row's load waits for the previous computation.
        single_tile = dw | (i.ic_tile >= i.in_c)
        r_new = Signal(3)
        m.d.comb += r_new.eq(Mux(s < i.kh, s, i.kh))
        prefetch = Signal()  # registered in IC_CHECK (the tile's blocks and columns are known by then)
        n_slots = Signal(4)
        m.d.comb += n_slots.eq(i.kh + Mux(prefetch, r_new, 0))
        rslot_base = Signal(4)  # base of the output row the PE array computes (or is about to)
        rs_next0 = Signal(5)
        base_next = Signal(4)
        m.d.comb += [rs_next0.eq(rslot_base + r_new),
                     base_next.eq(Mux(rs_next0 >= n_slots, rs_next0 - n_slots, rs_next0))]
        ky_later = i.kh - r_new  # first kernel row an output row after the first loads (one input tile)
        ky_first = Mux((y != 0) & single_tile, ky_later, 0)
        pf_pending = Signal()  # the rows of output row y were loaded ahead, while row y - 1 computed

        # -- line-buffer loader: its own FSM, so that it can fill the next row's slots during compute --
        l_y = Signal(16)
        l_base = Signal(4)
        l_ky, b = Signal(3), Signal(16)
        l_kick = Signal()
        col = Signal(16)
        l_sum = Signal(5)
        l_slot = Signal(4)
        m.d.comb += [l_sum.eq(l_base + l_ky), l_slot.eq(Mux(l_sum >= n_slots, l_sum - n_slots, l_sum))]
        lb_row_base = Signal(range(p.lb_words + 1))
        m.d.comb += lb_row_base.eq((l_slot * nblk + b) * in_cols)
        iy = Signal(signed(18))
        m.d.comb += iy.eq((l_y * s).as_signed() - i.pad_t + l_ky)
        row_ok = (iy >= 0) & (iy < i.in_h)
        # the loader's read issuer walks the same (kernel row, block) rows ahead of the loader, queueing the
        # reads of a whole load in the burst reader: only the first one waits for the memory's latency
        a_ky, a_b = Signal(3), Signal(16)
        a_iy = Signal(signed(18))
        m.d.comb += a_iy.eq((l_y * s).as_signed() - i.pad_t + a_ky)
        a_row_ok = (a_iy >= 0) & (a_iy < i.in_h)
        vlo = Signal(signed(18))
        vhi = Signal(signed(18))
        m.d.comb += [
            vlo.eq(Mux(ix0 < 0, 0, ix0)),
            vhi.eq(Mux(ix0 + in_cols > i.in_w, i.in_w, ix0 + in_cols)),
        ]
        col_lo, col_hi = Signal(16), Signal(16)
        has_cols = row_ok & (vhi > vlo)
        a_has_cols = a_row_ok & (vhi > vlo)

        # -- weight load / compute state --
        ob, pg, ii = Signal(16), Signal(16), Signal(17)
        ky, kx = Signal(3), Signal(3)
        rs_sum = Signal(5)
        rslot = Signal(4)  # row slot of the kernel row the PE array reads
        m.d.comb += [rs_sum.eq(rslot_base + ky), rslot.eq(Mux(rs_sum >= n_slots, rs_sum - n_slots, rs_sum))]
        wcount = Signal(16)
        w_lane0 = Signal(range(p.w_lanes))
        wb_wr_base = Signal(range(p.wb_depth + 1))
        w_valid = Signal()
        w_o0, w_i0 = Signal(16), Signal(16)
        wb_base = Signal(range(p.wb_depth + 1))
        slot = Signal(range(P + 1))
        ai = Signal(range(p.acc_entries + 1))
        # accumulator buffer halves: while the store streams one row out of a half, the next row computes
        # into the other (when a row's obs x pgs entries fit half the buffer: `dbl`)
        half_entries = p.acc_entries // 2
        dbl = Signal()  # registered in QP_CHECK
        c_half = Signal()  # half the PE array writes
        store_pending = Signal()
        store_addr = Signal(range(p.acc_entries + 1))
        qp_n = Signal(17)
        # -- store: its own FSM, streaming a finished row to DDR while the next one loads and computes --
        g = Signal(16)
        x = Signal(16)
        st_y = Signal(16)
        st_half = Signal()
        s_kick = Signal()
        store_busy = Signal()
        storing = Signal()  # the store owns the accumulator read port
        err_code = Signal(8)

        m.d.comb += [self.error_code.eq(err_code)]
        m.d.comb += [acc_wr.en.eq(store_pending), acc_wr.addr.eq(store_addr), acc_wr.data.eq(pe.acc.as_value())]

        # -- compute datapath: stage 0 addresses the buffers, stage 1 (next cycle) updates the PE array --
        # channel of this step: the input channel (PIXEL), the first of a pe_px group (INPUT_CHANNEL),
        # the first of the output block (DEPTHWISE)
        ch = Signal(17)
        computing = Signal()
        first0 = Signal()
        block_end = Signal()
        en1, first1, block_end1 = Signal(), Signal(), Signal()
        slot1 = Signal.like(slot)
        ch1 = Signal.like(ch)
        ai1 = Signal.like(ai)
        m.d.comb += first0.eq((ii == 0) & (ky == 0) & (kx == 0))
        m.d.sync += [en1.eq(computing), first1.eq(first0), block_end1.eq(computing & block_end), slot1.eq(slot),
                     ch1.eq(ch), ai1.eq(ai), store_pending.eq(block_end1), store_addr.eq(ai1)]
        m.d.comb += ch.eq(Mux(dw, o0 + (ob << lpo), i0 + Mux(ic_mode, ii << lp, ii)))
        step = Signal(16)
        m.d.comb += step.eq(ii * khkw + ky * i.kw + kx)
        m.d.comb += [
            lb.rd_addr.eq((rslot * nblk + (ch >> lcb) - blk_lo) * in_cols + ((pg << lp) + Mux(ic_mode, slot, 0)) * s + kx),
            lb.rd_stride.eq(s),
            wb.rd_addr.eq(wb_base + Mux(ic_mode, step << lp, step)),
            pe.init.eq(Mux(~dw & (i0 != 0), acc_rd.data, 0)),
            pe.en.eq(en1),
            pe.first.eq(first1),
            pe.reduce.eq(ic_mode),
            pe.slot.eq(slot1),
        ]
        codes = data.View(data.ArrayLayout(data.ArrayLayout(unsigned(cfg.weight_code.bits), PO), P), wb.rd_data)
        # each column's word rotated so that byte t holds channel lane + t (mod cb): PIXEL takes byte 0 of its
        # column, DEPTHWISE byte r for row r, INPUT_CHANNEL byte j of the one pixel's word for column j
        rot = []
        for j in range(P):
            col_bytes = [lb.rd_data[j].word_select(t, 8) for t in range(CB)]
            rot.append(Cat(*rotate_words(m, col_bytes, ch1[:lcb], 8, f"col{j}")) if lcb else lb.rd_data[j])
        for r in range(PO):
            for j in range(P):
                byte = Mux(ic_mode, rot[0].word_select(j % CB, 8),
                           Mux(dw, rot[j].word_select(r % CB, 8), rot[j].word_select(0, 8)))
                a = Signal(signed(ACT_WIDTH), name=f"act_{r}_{j}")
                m.d.comb += [a.eq(Mux(i.in_signed, byte.as_signed(), byte)), pe.acts[r * P + j].eq(a),
                             pe.codes[r * P + j].eq(Mux(ic_mode, codes[j][r], codes[0][r]))]

        # -- output datapath: G channels of pixel x for channel group g --
        ob_g = (g * G) >> lpo
        r0 = (g * G)[:lpo] if PO > G else 0
        c_base = o0 + g * G
        lane0 = c_base[:lcb] if CB > G else 0
        j_out = x[:lp] if P > 1 else 0
        # the accumulators of beat x arrive one cycle after their address: present the next beat's
        x_next = Signal.like(x)
        m.d.comb += [x_next.eq(x), qp_rd.addr.eq(ob_g),
                     acc_rd.addr.eq(Mux(storing, Mux(st_half, half_entries, 0) + (x_next >> lp) * obs + ob_g, ai))]
        acc_view = data.View(acc_layout(p), acc_rd.data)
        qp_view = data.View(data.ArrayLayout(qp_rec, PO), qp_rd.data)
        out_bytes = []
        for k in range(G):
            rq = Requantizer(cfg.acc_bits)
            m.submodules[f"rq{k}"] = rq
            # lane k only ever sees rows k, G + k, 2G + k, ...: select among those rows' pe_px columns
            acc_sel = Signal(signed(cfg.acc_bits), name=f"out_acc{k}")
            bias_sel = Signal(signed(32), name=f"out_bias{k}")
            shift_sel = Signal(signed(8), name=f"out_shift{k}")
            row_grp = Signal(range(max(2, PO // G)), name=f"out_rowgrp{k}")
            m.d.comb += row_grp.eq(r0 >> _log2(G) if PO > G else 0)
            with m.Switch(Cat(j_out, row_grp) if P > 1 else row_grp):
                for rg in range(PO // G):
                    for jj in range(P):
                        with m.Case(rg * P + jj if P > 1 else rg):
                            m.d.comb += acc_sel.eq(acc_view[(rg * G + k) * P + jj])
            with m.Switch(row_grp):
                for rg in range(PO // G):
                    with m.Case(rg):
                        m.d.comb += [bias_sel.eq(qp_view[rg * G + k].bias), shift_sel.eq(qp_view[rg * G + k].shift)]
            m.d.comb += [
                rq.value.eq(acc_sel), rq.bias.eq(bias_sel), rq.shift.eq(shift_sel), rq.act.eq(i.act),
                rq.leaky_shift.eq(i.leaky_shift), rq.out_bits.eq(i.out_bits), rq.out_signed.eq(i.out_signed),
            ]
            out_bytes.append(Mux(c_base + k < i.out_c, rq.out, 0))
        group_bits = Cat(*out_bytes)
        m.d.comb += [
            self.wr_data.payload.data.eq(group_bits << (lane0 * 8)),
            self.wr_data.payload.strb.eq(Const((1 << G) - 1, CB) << lane0),
        ]
        last_tile = o0 + i.oc_tile >= i.out_c
        nblk_out = (i.out_c + CB - 1) >> lcb
        end_ch = Mux(last_tile, (nblk_out << lcb) - o0, ot)
        n_groups = (end_ch + G - 1) >> _log2(G)

        # -- weight run addressing --
        spb_log = _log2(p.beat_bits // p.step_bits) if p.step_bits <= p.beat_bits else 0
        s0 = Signal(40)
        weight_channels = Mux(dw, 1, Mux(ic_mode, ((i.in_c + P - 1) >> lp) << lp, i.in_c))
        m.d.comb += s0.eq((((o0 >> lpo) + ob) * weight_channels + Mux(dw, 0, i0)) * khkw)
        if p.step_bits <= p.beat_bits:
            w_skip = s0 & ((1 << spb_log) - 1) if spb_log else 0
            w_addr = self.const_base + i.w_addr + ((s0 >> spb_log) << _log2(p.beat_bytes))
            w_beats = (w_skip + n_steps + (1 << spb_log) - 1) >> spb_log
        else:
            bps = p.step_bits // p.beat_bits
            w_skip = 0
            w_addr = self.const_base + i.w_addr + s0 * (bps * p.beat_bytes)
            w_beats = n_steps * bps
        qp_byte = i.qp_addr + (o0 << 3)
        qp_skip = (qp_byte[:_log2(p.beat_bytes)] >> 3) if p.beat_bytes > 8 else 0
        qp_addr = self.const_base + ((qp_byte >> _log2(p.beat_bytes)) << _log2(p.beat_bytes))
        qp_beats = ((qp_skip << 3) + (obs << (lpo + 3)) + p.beat_bytes - 1) >> _log2(p.beat_bytes)

        m.d.comb += [
            qp_gear.beats.payload.eq(self.rd_data.payload),
            qp_wr.addr.eq(qp_n >> lpo), qp_wr.data.eq(Cat(qp_gear.words.payload[:40]).replicate(PO)),
        ]

        with m.FSM(name="issuer") as afsm:
            with m.State("A_IDLE"):
                with m.If(l_kick):
                    m.next = "A_ROW"
            with m.State("A_ROW"):
                a_next = Signal()
                with m.If(a_has_cols):
                    m.d.comb += [
                        self.rd_cmd.valid.eq(1),
                        self.rd_cmd.payload.addr.eq(
                            self.act_base + i.in_addr + ((((blk_lo + a_b) * i.in_h + a_iy) * i.in_w + vlo) << lcb)),
                        self.rd_cmd.payload.beats.eq(vhi - vlo),
                        a_next.eq(self.rd_cmd.ready),
                    ]
                with m.Else():
                    m.d.comb += a_next.eq(1)
                with m.If(a_next):
                    with m.If(a_b == nblk - 1):
                        m.d.sync += [a_b.eq(0), a_ky.eq(a_ky + 1)]
                        with m.If(a_ky == i.kh - 1):
                            m.next = "A_IDLE"
                    with m.Else():
                        m.d.sync += a_b.eq(a_b + 1)

        with m.FSM(name="loader") as lfsm:
            with m.State("L_IDLE"):
                with m.If(l_kick):
                    m.next = "L_ROW"
            with m.State("L_ROW"):  # the row's read (if any) was queued by the issuer
                m.d.sync += [col.eq(0), col_lo.eq(Mux(has_cols, vlo - ix0, 0)),
                             col_hi.eq(Mux(has_cols, vhi - ix0, 0))]
                m.next = "L_COLS"
            with m.State("L_COLS"):
                in_range = (col >= col_lo) & (col < col_hi)
                advance = Signal()
                m.d.comb += [
                    lb.wr_addr.eq(lb_row_base + col),
                    lb.wr_data.eq(Mux(in_range, self.rd_data.payload, 0)),
                    self.rd_data.ready.eq(in_range),
                    advance.eq(~in_range | self.rd_data.valid),
                    lb.wr_en.eq(advance),
                ]
                with m.If(advance):
                    m.d.sync += col.eq(col + 1)
                    with m.If(col == in_cols - 1):
                        with m.If(b == nblk - 1):
                            m.d.sync += [b.eq(0), l_ky.eq(l_ky + 1)]
                            with m.If(l_ky == i.kh - 1):
                                m.next = "L_IDLE"
                            with m.Else():
                                m.next = "L_ROW"
                        with m.Else():
                            m.d.sync += b.eq(b + 1)
                            m.next = "L_ROW"

        with m.FSM(name="store") as sfsm:
            with m.State("S_IDLE"):
                with m.If(s_kick):
                    m.d.sync += g.eq(0)
                    m.next = "S_CMD"
            with m.State("S_CMD"):
                m.d.comb += [
                    storing.eq(1),
                    self.wr_cmd.valid.eq(1),
                    self.wr_cmd.payload.addr.eq(
                        self.act_base + i.out_addr + ((((c_base >> lcb) * i.out_h + st_y) * i.out_w + x0) << lcb)),
                    self.wr_cmd.payload.beats.eq(sw),
                ]
                m.d.comb += x_next.eq(0)
                with m.If(self.wr_cmd.ready):
                    m.d.sync += x.eq(0)
                    m.next = "S_DATA"
            with m.State("S_DATA"):
                m.d.comb += [storing.eq(1), self.wr_data.valid.eq(1)]
                with m.If(self.wr_data.ready):
                    m.d.comb += x_next.eq(x + 1)
                    m.d.sync += x.eq(x + 1)
                    with m.If(x == sw - 1):
                        m.d.sync += g.eq(g + 1)
                        with m.If(g == n_groups - 1):
                            m.next = "S_IDLE"
                        with m.Else():
                            m.next = "S_CMD"
        m.d.comb += store_busy.eq(~sfsm.ongoing("S_IDLE"))

        need_rd = ~dw & (i0 != 0)  # this input tile adds to partial sums: it reads the accumulator port
        loader_idle = lfsm.ongoing("L_IDLE") & afsm.ongoing("A_IDLE")
        blocked = Signal()  # the main FSM waits for the loader or the store

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [x0.eq(0), o0.eq(0), w_valid.eq(0), err_code.eq(0)]
                    m.next = "TILE"
            with m.State("TILE"):
                m.d.sync += [
                    sw.eq(Mux(i.strip_w < i.out_w - x0, i.strip_w, i.out_w - x0)),
                    ot.eq(Mux(i.oc_tile < i.out_c - o0, i.oc_tile, i.out_c - o0)),
                ]
                m.next = "QP_CHECK"
            with m.State("QP_CHECK"):
                with m.If(obs * pgs > p.acc_entries):
                    m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += dbl.eq(obs * pgs <= half_entries)
                    m.next = "QP_CMD"
            with m.State("QP_CMD"):
                m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.payload.addr.eq(qp_addr),
                             self.rd_cmd.payload.beats.eq(qp_beats)]
                with m.If(self.rd_cmd.ready):
                    m.d.comb += [qp_gear.restart.eq(1), qp_gear.skip.eq(qp_skip)]
                    m.d.sync += qp_n.eq(0)
                    m.next = "QP_DATA"
            with m.State("QP_DATA"):
                m.d.comb += [self.rd_data.ready.eq(qp_gear.beats.ready), qp_gear.beats.valid.eq(self.rd_data.valid),
                             qp_gear.words.ready.eq(1)]
                with m.If(qp_gear.words.valid):
                    m.d.comb += qp_wr.en.eq(1 << qp_n[:lpo] if PO > 1 else 1)
                    m.d.sync += qp_n.eq(qp_n + 1)
                    with m.If(qp_n == (obs << lpo) - 1):
                        m.d.sync += [y.eq(0), rslot_base.eq(0), c_half.eq(0), pf_pending.eq(0)]
                        m.next = "ROW"
            with m.State("ROW"):
                m.d.sync += i0.eq(Mux(dw, o0, 0))
                m.next = "IC"
            with m.State("IC"):
                m.d.sync += it.eq(Mux(dw, ot, Mux(i.ic_tile < i.in_c - i0, i.ic_tile, i.in_c - i0)))
                m.next = "IC_CHECK"
            with m.State("IC_CHECK"):
                with m.If(i.kh * nblk * in_cols > p.lb_words):
                    m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += prefetch.eq(single_tile & ((i.kh + r_new) * nblk * in_cols <= p.lb_words))
                    with m.If(pf_pending):  # loaded (or loading) while the previous row computed
                        m.d.sync += pf_pending.eq(0)
                    with m.Else():
                        m.d.comb += l_kick.eq(1)
                        m.d.sync += [l_y.eq(y), l_base.eq(rslot_base), l_ky.eq(ky_first), b.eq(0),
                                     a_ky.eq(ky_first), a_b.eq(0)]
                    m.next = "LB_WAIT"
            with m.State("LB_WAIT"):
                m.d.comb += blocked.eq(1)
                with m.If(loader_idle):
                    m.next = "W_CHECK"
            with m.State("W_CHECK"):
                m.d.sync += [ob.eq(0), wb_wr_base.eq(0)]
                with m.If(w_valid & (w_o0 == o0) & (w_i0 == i0)):
                    m.next = "COMPUTE_INIT"
                with m.Elif(obs * n_steps > p.wb_depth):
                    m.d.sync += err_code.eq(ErrorCode.BAD_FIELD)
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += w_valid.eq(0)
                    m.next = "W_CMD"
            with m.State("W_CMD"):
                m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.payload.addr.eq(w_addr),
                             self.rd_cmd.payload.beats.eq(w_beats)]
                with m.If(self.rd_cmd.ready):
                    if not narrow_steps:
                        m.d.comb += w_gear.restart.eq(1)
                    m.d.sync += [wcount.eq(0), w_lane0.eq(w_skip)]
                    m.next = "W_DATA"
            with m.State("W_DATA"):
                # one beat per cycle: its steps from w_lane0 on, up to the end of the run
                room = p.w_lanes - w_lane0
                take = Signal(range(p.w_lanes + 1))
                m.d.comb += take.eq(Mux(n_steps - wcount < room, n_steps - wcount, room))
                if narrow_steps:
                    w_valid_beat = self.rd_data.valid
                    m.d.comb += [self.rd_data.ready.eq(1), wb.wr_data.eq(self.rd_data.payload)]
                else:
                    w_valid_beat = w_gear.words.valid
                    m.d.comb += [self.rd_data.ready.eq(w_gear.beats.ready), w_gear.beats.valid.eq(self.rd_data.valid),
                                 w_gear.beats.payload.eq(self.rd_data.payload), w_gear.words.ready.eq(1),
                                 wb.wr_data.eq(w_gear.words.payload)]
                m.d.comb += [wb.wr_addr.eq(wb_wr_base + wcount - w_lane0), wb.wr_en.eq(w_valid_beat),
                             wb.wr_mask.eq((((1 << take) - 1) << w_lane0)[:p.w_lanes])]
                with m.If(w_valid_beat):
                    m.d.sync += [wcount.eq(wcount + take), w_lane0.eq(0)]
                    with m.If(wcount + take == n_steps):
                        m.d.sync += [wb_wr_base.eq(wb_wr_base + n_steps), ob.eq(ob + 1)]
                        with m.If(ob == obs - 1):
                            m.d.sync += [w_valid.eq(1), w_o0.eq(o0), w_i0.eq(i0)]
                            m.next = "COMPUTE_INIT"
                        with m.Else():
                            m.next = "W_CMD"
            with m.State("COMPUTE_INIT"):
                # the half being written must not be the one the store reads, nor the port in use
                with m.If(store_busy & (~dbl | need_rd)):
                    m.d.comb += blocked.eq(1)
                with m.Else():
                    m.d.sync += [pg.eq(0), ob.eq(0), ii.eq(0), ky.eq(0), kx.eq(0), slot.eq(0), wb_base.eq(0),
                                 ai.eq(Mux(dbl & c_half, half_entries, 0))]
                    with m.If(prefetch & (y + 1 < i.out_h)):
                        m.d.comb += l_kick.eq(1)
                        m.d.sync += [l_y.eq(y + 1), l_base.eq(base_next), l_ky.eq(ky_later), b.eq(0),
                                     a_ky.eq(ky_later), a_b.eq(0), pf_pending.eq(1)]
                    m.next = "COMPUTE"
            with m.State("COMPUTE"):
                m.d.comb += computing.eq(1)
                m.d.sync += kx.eq(kx + 1)
                k_end = kx == i.kw - 1
                with m.If(k_end):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1)]
                    with m.If(ky == i.kh - 1):
                        m.d.sync += [ky.eq(0), ii.eq(ii + 1)]
                pixel_end = k_end & (ky == i.kh - 1) & (ii == it_w - 1)
                # INPUT_CHANNEL visits the pixels of the group one by one, the others all at once
                last_slot = ~ic_mode | (slot == P - 1) | ((pg << lp) + slot + 1 == sw)
                with m.If(pixel_end):
                    m.d.sync += [ii.eq(0), slot.eq(slot + 1)]
                m.d.comb += block_end.eq(pixel_end & last_slot)
                with m.If(block_end):
                    m.d.sync += [ai.eq(ai + 1), slot.eq(0), ob.eq(ob + 1),
                                 wb_base.eq(wb_base + n_steps)]
                    with m.If(ob == obs - 1):
                        m.d.sync += [ob.eq(0), wb_base.eq(0), pg.eq(pg + 1)]
                        with m.If(pg == pgs - 1):
                            m.next = "DRAIN"
            with m.State("DRAIN"):  # the last step updates the PE array
                m.next = "STORE"
            with m.State("STORE"):  # its accumulators go to the buffer (in this state's first cycle)
                with m.If(last_ic):
                    with m.If(store_busy):
                        m.d.comb += blocked.eq(1)
                    with m.Else():
                        m.d.comb += s_kick.eq(1)
                        m.d.sync += [st_y.eq(y), st_half.eq(dbl & c_half), c_half.eq(dbl & ~c_half)]
                        m.next = "NEXT_ROW"
                with m.Else():
                    m.d.sync += i0.eq(i0 + i.ic_tile)
                    m.next = "IC"
            with m.State("NEXT_ROW"):
                with m.If(y != i.out_h - 1):
                    m.d.sync += [y.eq(y + 1), rslot_base.eq(base_next)]
                    m.next = "ROW"
                with m.Elif(store_busy):  # the tile's last row is written before the tile changes
                    m.d.comb += blocked.eq(1)
                with m.Else():
                    m.d.sync += o0.eq(o0 + i.oc_tile)
                    m.next = "TILE"
                    with m.If(last_tile):
                        m.d.sync += [o0.eq(0), x0.eq(x0 + i.strip_w)]
                        with m.If(x0 + i.strip_w >= i.out_w):
                            m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(self.wr_idle & ~store_busy & loader_idle):
                    m.d.comb += [self.done.eq(1), self.failed.eq(err_code != 0)]
                    m.next = "IDLE"
        waiting = ("QP_CMD", "QP_DATA", "W_CMD", "W_DATA", "FINISH")
        m.d.comb += self.stall.eq(blocked | Cat(*(fsm.ongoing(st) for st in waiting)).any())
        return m
