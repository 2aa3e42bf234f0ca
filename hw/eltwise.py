"""The POOL / ADD / MOVE engine: channel-block-parallel operations on row segments.

Every beat of the DDR layout holds ``cb`` channels of one pixel, so the engine works on all of them
at once, one pixel per cycle. The output is produced in segments of up to ``strip_width`` columns of
one output row of one channel block. A read issuer walks the same loop nest ahead of the engine and
queues every read (each kernel row of a POOL window, ADD's two operands, MOVE's source row) in the burst
reader, so only the first read of an instruction waits for the memory's latency ``L_r``; the data of the
later ones has arrived by the time the engine takes it (the memory returns one beat per cycle, in order).
Every address is stepped along its loop or settles through registered stages; no product of instruction
fields sits on a per-cycle path. Cost per segment in clock cycles:

* MOVE: SEG 1, SETTLE, LOAD 1 + m (m input columns), OUT_CMD 1 + n beats, NEXT 1;
* ADD: SEG 1, SETTLE, LOAD 1 + n, OUT_CMD 1 + n beats (the B operand is taken as each beat is issued), NEXT 1;
* POOL: SEG 1, per kernel row: SETTLE, LOAD 1 (+ in_cols when the row is inside the tensor), P_NEXT 1;
  P_DRAIN; OUT_CMD 1 + n beats, NEXT 1.

POOL takes the maximum as the row streams in: the last kw input columns sit in a shift register, and when
column c closes the window of output x (c = x * stride + kw - 1) the window's maximum goes through a
registered tree (``pool_tree_stages``) and is merged into the running maximum of x (a read-modify-write of
the segment buffer, one per cycle). Values are compared with the sign bit flipped, so the smallest value is
0 for signed and unsigned inputs alike: padding columns, and a window with no row inside the tensor, give it.

Output beats are issued one per cycle into a fixed-latency pipeline (buffer read, lanes and ADD's shifted
terms, the sum or selection, the pipelined requantisers: ELT_OUT_LATENCY stages) that ends in a
:class:`~shiftpu.hw.beat_queue.BeatQueue`, whose registered FIFO output drives the AXI write data.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring

from shiftpu.arch.isa import Opcode
from shiftpu.arch.latency import DECODE_CHECK, ELT_ISSUE_LATENCY, ELT_OUT_LATENCY, ELT_SETTLE, pool_tree_stages
from shiftpu.hw.arith import PRODUCT_LATENCY, pipelined_product, small_product
from shiftpu.hw.beat_queue import BeatQueue
from shiftpu.hw.conv_engine import engine_members
from shiftpu.hw.params import ACT_WIDTH, ADD_WIDTH, HwParams, log2
from shiftpu.hw.postproc import Requantizer
from shiftpu.hw.wait import delayed, wait_cycles


class EltwiseEngine(wiring.Component):
    """Runs one POOL, ADD or MOVE instruction."""

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__(engine_members(p))

    def elaborate(self, platform):
        p = self.p
        m = Module()
        # the engine's own copy of the instruction (see the CONV engine)
        i = Signal.like(self.instr, name="elt_instr")
        m.d.sync += i.eq(self.instr)
        CB = p.cb
        lcb = log2(CB)
        K = p.cfg.max_kernel
        SEG = p.seg_width
        word = unsigned(CB * 8)
        m.submodules.abuf = abuf = memory.Memory(shape=word, depth=p.elt_depth, init=[])
        m.submodules.mbuf = mbuf = memory.Memory(shape=word, depth=SEG, init=[])
        a_wr, a_rd = abuf.write_port(), abuf.read_port()  # a_rd: the output pipeline's
        m_wr = mbuf.write_port()
        merge_rd = mbuf.read_port()  # the running maximum being merged
        m_rd = mbuf.read_port()  # the output pipeline's
        m.submodules.queue = queue = BeatQueue(p)
        wiring.connect(m, wiring.flipped(self.wr_data), queue.wr_data)

        # -- per-instruction values, registered (the instruction holds from LATCH, DECODE_CHECK cycles and more
        # before start) --
        assert 1 + PRODUCT_LATENCY + 1 <= DECODE_CHECK, "the plane sizes settle before the engine starts"
        is_pool, is_add, up_sh, s2 = Signal(), Signal(), Signal(), Signal()
        kh_m1, out_h_m1, last_blk = Signal(3), Signal(16), Signal(16)
        kw_ok = Signal(K)  # window column j (0: the newest) is inside the kernel
        flip = Signal(word)  # the sign bit of every lane, for signed inputs: flipped values compare unsigned
        in_plane, in_row, out_plane, out_row = Signal(32), Signal(32), Signal(32), Signal(32)
        s_seg, s_row, pad_row = Signal(16), Signal(32), Signal(32)  # stride x segment, stride x row, pad_t x row
        in_hw = pipelined_product(m, i.in_h, i.in_w, "in_hw")
        out_hw = pipelined_product(m, i.out_h, i.out_w, "out_hw")
        m.d.sync += [
            is_pool.eq(i.opcode == Opcode.POOL), is_add.eq(i.opcode == Opcode.ADD),
            up_sh.eq((i.opcode == Opcode.MOVE) & (i.upsample == 2)), s2.eq(i.stride == 2),
            kh_m1.eq(i.kh - 1), out_h_m1.eq(i.out_h - 1), last_blk.eq(((i.in_c + CB - 1) >> lcb) - 1),
            kw_ok.eq(Cat(*(i.kw > j for j in range(K)))),
            flip.eq(Mux(i.in_signed, int("80" * CB, 16), 0)),
            in_plane.eq(in_hw << lcb), in_row.eq(i.in_w << lcb),
            out_plane.eq(out_hw << lcb), out_row.eq(i.out_w << lcb),
            s_seg.eq(Mux(s2, SEG * 2, SEG)), s_row.eq(Mux(s2, in_row << 1, in_row)),
            pad_row.eq(small_product(in_row, i.pad_t)),
        ]

        # -- the engine's loop nest: channel block, output row, segment; strided positions and address offsets
        # stepped with their counters --
        blk, y, xs, n, n_m1 = Signal(16), Signal(16), Signal(16), Signal(16), Signal(16)
        x, col, ky = Signal(16), Signal(16), Signal(3)
        xs_s, ys = Signal(16), Signal(16)  # xs * stride, y * stride
        o_plane, o_rowoff = Signal(32), Signal(32)  # blk * out_plane, y * out_row
        seg_last, y_last, blk_last = Signal(), Signal(), Signal()  # the segment ends the row, the block, the tensor
        m.d.sync += [seg_last.eq(xs + SEG >= i.out_w), y_last.eq(y == out_h_m1), blk_last.eq(blk == last_blk),
                     n_m1.eq(n - 1)]

        # source columns and row of the segment or kernel row, through registered stages (settled in SETTLE)
        ix0 = Signal(signed(18))
        in_cols = Signal(16)
        iy = Signal(signed(18))
        vlo = Signal(signed(18))
        vhi = Signal(signed(18))
        row_ok, in_cols_m1 = Signal(), Signal(16)
        has_cols = Signal()
        col_lo_s, col_hi_s = Signal(16), Signal(16)
        m.d.sync += [
            ix0.eq(Mux(is_pool, xs_s.as_signed() - i.pad_l, xs >> up_sh)),
            in_cols.eq(Mux(is_pool, Mux(s2, (n - 1) << 1, n - 1) + i.kw,
                           Mux(up_sh, ((xs + n - 1) >> 1) - (xs >> 1) + 1, n))),
            iy.eq(ys.as_signed() - i.pad_t + ky),
            vlo.eq(Mux(ix0 < 0, 0, ix0)), vhi.eq(Mux(ix0 + in_cols > i.in_w, i.in_w, ix0 + in_cols)),
            row_ok.eq(~is_pool | ((iy >= 0) & (iy < i.in_h))), in_cols_m1.eq(in_cols - 1),
            has_cols.eq(row_ok & (vhi > vlo)), col_lo_s.eq(vlo - ix0), col_hi_s.eq(vhi - ix0),
        ]
        # the output segment's DDR address, through registered stages (settled long before OUT_CMD)
        o_base, o_off, o_addr = Signal(32), Signal(32), Signal(32)
        m.d.sync += [o_base.eq(self.act_base + i.out_addr + (xs << lcb)), o_off.eq(o_plane + o_rowoff),
                     o_addr.eq(o_base + o_off)]
        # the channels of the block that exist (the others are written as 0)
        blk_c0 = Signal(16)
        chan_ok = Signal(CB)
        m.d.sync += [blk_c0.eq(blk << lcb), chan_ok.eq(Cat(*(blk_c0 + k < i.in_c for k in range(CB))))]

        # -- the read issuer's copy of the loop nest; each segment's (or kernel row's) address through
        # ELT_ISSUE_LATENCY registered stages; ADD's two operands (q_b: the second) in consecutive cycles --
        q_blk, q_y, q_xs = Signal(16), Signal(16), Signal(16)
        q_ky, q_b = Signal(3), Signal()
        q_xs_s, q_ys = Signal(16), Signal(16)
        q_plane, q_yrow, q_kyrow = Signal(32), Signal(32), Signal(32)  # q_blk * in_plane; source row offsets
        q_seg_last, q_y_last, q_blk_last = Signal(), Signal(), Signal()  # registered: tested cycles later
        m.d.sync += [q_seg_last.eq(q_xs + SEG >= i.out_w), q_y_last.eq(q_y == out_h_m1), q_blk_last.eq(q_blk == last_blk)]
        q_n, q_ix0, q_row_pool = Signal(16), Signal(signed(18)), Signal(signed(18))
        q_base, q_base_b, q_yk = Signal(32), Signal(32), Signal(32)
        q_in_cols, q_row_ok, q_ix0_2, q_base_plane, q_base_plane_b, q_rowoff = (
            Signal(16), Signal(), Signal(signed(18)), Signal(32), Signal(32), Signal(32))
        q_vlo, q_vhi, q_ok3, q_base3, q_base3_b = Signal(signed(18)), Signal(signed(18)), Signal(), Signal(32), Signal(32)
        q_addr, q_addr_b, q_beats, q_has_cols = Signal(32), Signal(32), Signal(16), Signal()
        m.d.sync += [
            q_n.eq(Mux(i.out_w - q_xs < SEG, i.out_w - q_xs, SEG)),
            q_ix0.eq(Mux(is_pool, q_xs_s.as_signed() - i.pad_l, q_xs >> up_sh)),
            q_row_pool.eq(q_ys.as_signed() - i.pad_t + q_ky),
            q_base.eq(self.act_base + i.in_addr), q_base_b.eq(self.act_base + i.in2_addr), q_yk.eq(q_yrow + q_kyrow),
            q_in_cols.eq(Mux(is_pool, Mux(s2, (q_n - 1) << 1, q_n - 1) + i.kw,
                             Mux(up_sh, ((q_xs + q_n - 1) >> 1) - (q_xs >> 1) + 1, q_n))),
            q_row_ok.eq(~is_pool | ((q_row_pool >= 0) & (q_row_pool < i.in_h))),
            q_ix0_2.eq(q_ix0), q_base_plane.eq(q_base + q_plane), q_base_plane_b.eq(q_base_b + q_plane),
            q_rowoff.eq(q_yk - Mux(is_pool, pad_row, 0)),
            q_vlo.eq(Mux(q_ix0_2 < 0, 0, q_ix0_2)),
            q_vhi.eq(Mux(q_ix0_2 + q_in_cols > i.in_w, i.in_w, q_ix0_2 + q_in_cols)),
            q_ok3.eq(q_row_ok), q_base3.eq(q_base_plane + q_rowoff), q_base3_b.eq(q_base_plane_b + q_rowoff),
            q_addr.eq(q_base3 + (q_vlo << lcb)), q_addr_b.eq(q_base3_b + (q_vlo << lcb)), q_beats.eq(q_vhi - q_vlo),
            q_has_cols.eq(q_ok3 & (q_vhi > q_vlo)),
        ]

        def lanes(w, signed_flag):
            out = []
            for k in range(CB):
                byte = w[k * 8:(k + 1) * 8]
                v = Signal(signed(ACT_WIDTH), name=f"lane{k}_{len(out)}")
                m.d.comb += v.eq(Mux(signed_flag, byte.as_signed(), byte))
                out.append(v)
            return out

        def vmax(a, b):  # lane-wise maximum of two flipped words
            return Cat(*(Mux(a[k * 8:(k + 1) * 8] > b[k * 8:(k + 1) * 8], a[k * 8:(k + 1) * 8], b[k * 8:(k + 1) * 8])
                         for k in range(CB)))

        # -- LOAD_COLS: the row's columns arrive (ADD/MOVE: into the A buffer; POOL: into the window) --
        in_range = Signal()  # column col is inside the tensor (registered, from equality tests on the counter)
        col_lo_m1, col_hi_m1 = Signal(16), Signal(16)
        advance = Signal()
        hist = [Signal(word, name=f"win{j}") for j in range(K)]  # flipped columns, hist[0] the newest
        seen = Signal()  # POOL: a kernel row inside the tensor has been merged into the running maximum
        next_end = Signal(16)  # input column that closes output x's window
        ptag = data.StructLayout({"valid": 1, "x": range(SEG), "first": 1})
        p_win = Signal(ptag)  # a window closed last cycle: its columns are in hist
        m.d.sync += p_win.valid.eq(0)
        with m.If(advance):
            m.d.sync += [hist[0].eq(Mux(in_range, self.rd_data.payload ^ flip, 0)),
                         *(h.eq(prev) for h, prev in zip(hist[1:], hist[:-1], strict=True))]
        m.d.comb += [a_wr.addr.eq(col), a_wr.data.eq(self.rd_data.payload), a_wr.en.eq(advance)]

        # -- POOL: the window's maximum through a registered tree, then merged into output x's running maximum --
        level = [hist[0]] + [Mux(kw_ok[j], hist[j], 0) for j in range(1, K)]
        tags = [p_win]
        for lv in range(pool_tree_stages(K)):
            regs = []
            for k in range(0, len(level), 2):
                r = Signal(word, name=f"pool_max{lv}_{k // 2}")
                m.d.sync += r.eq(vmax(level[k], level[k + 1]) if k + 1 < len(level) else level[k])
                regs.append(r)
            level = regs
            tag = Signal(ptag, name=f"pool_tag{lv}")
            m.d.sync += tag.eq(tags[-1])
            tags.append(tag)
        assert len(level) == 1
        win_max, t_merge = level[0], tags[-1]
        m.d.comb += [
            merge_rd.addr.eq(tags[-2].x),
            m_wr.addr.eq(t_merge.x), m_wr.en.eq(t_merge.valid),
            m_wr.data.eq(Mux(t_merge.first, win_max, vmax(win_max, merge_rd.data))),
        ]

        # -- OUT_DATA: one beat issued per cycle while the queue has room (ADD: and B's beat is there), through
        # ELT_OUT_LATENCY stages into the queue --
        issue = Signal()
        a_x = Signal(range(p.elt_depth))  # A buffer column of beat x (MOVE upsampling: every other beat steps)
        m.d.comb += [a_rd.addr.eq(a_x), m_rd.addr.eq(x), queue.issue.eq(issue)]
        otag = data.StructLayout({"valid": 1, "seen": 1, "chan_ok": CB})
        o_issue = Signal(otag)  # with the buffers' read data
        b_word = Signal(word)
        m.d.sync += [o_issue.valid.eq(issue), o_issue.seen.eq(seen), o_issue.chan_ok.eq(chan_ok),
                     b_word.eq(self.rd_data.payload)]
        # the buffers' read data in registers (the block RAMs' output registers), beside B's beat
        o_read = Signal(otag)
        a_word, m_word, b_word2 = Signal(word), Signal(word), Signal(word)
        m.d.sync += [o_read.eq(o_issue), a_word.eq(a_rd.data), m_word.eq(m_rd.data), b_word2.eq(b_word)]
        # then the lanes and ADD's shifted terms (the requantisers' input), then the requantisers
        t_out = delayed(m, o_read, ELT_OUT_LATENCY - 2, "out_tag")

        a_lanes = lanes(a_word, i.in_signed)
        b_lanes = lanes(b_word2, i.in2_signed)
        m_lanes = lanes(Mux(o_read.seen, m_word, 0) ^ flip, i.in_signed)
        out_bytes = []
        for k in range(CB):
            a_term = Signal(signed(ADD_WIDTH), name=f"a_term{k}")
            b_term = Signal(signed(ADD_WIDTH), name=f"b_term{k}")
            passed = Signal(signed(ACT_WIDTH), name=f"pass{k}")
            m.d.sync += [a_term.eq(a_lanes[k] << i.shift_a), b_term.eq(b_lanes[k] << i.shift_b),
                         passed.eq(Mux(is_pool, m_lanes[k], a_lanes[k]))]
            rq = Requantizer(ADD_WIDTH)
            m.submodules[f"rq{k}"] = rq
            m.d.comb += [
                rq.value.eq(Mux(is_add, a_term + b_term, passed)),
                rq.bias.eq(0), rq.shift.eq(i.out_shift), rq.act.eq(i.act), rq.leaky_shift.eq(i.leaky_shift),
                rq.out_bits.eq(i.out_bits), rq.out_signed.eq(i.out_signed),
            ]
            out_bytes.append(Mux(t_out.chan_ok[k], rq.out, 0))
        m.d.comb += [queue.beat.valid.eq(t_out.valid), queue.beat.payload.data.eq(Cat(*out_bytes)),
                     queue.beat.payload.strb.eq((1 << CB) - 1)]

        with m.FSM(name="issuer") as qfsm:
            with m.State("Q_IDLE"):
                with m.If(self.start):
                    m.d.sync += [q_blk.eq(0), q_y.eq(0), q_xs.eq(0), q_ky.eq(0), q_b.eq(0), q_xs_s.eq(0),
                                 q_ys.eq(0), q_plane.eq(0), q_yrow.eq(0), q_kyrow.eq(0)]
                    m.next = "Q_CALC"
            with m.State("Q_CALC"):
                with m.If(wait_cycles(m, ELT_ISSUE_LATENCY, "issue")):
                    m.next = "Q_RUN"
            with m.State("Q_RUN"):
                q_next = Signal()
                with m.If(q_has_cols):
                    m.d.comb += [
                        self.rd_cmd.valid.eq(1),
                        self.rd_cmd.payload.addr.eq(Mux(q_b, q_addr_b, q_addr)),
                        self.rd_cmd.payload.beats.eq(q_beats),
                        q_next.eq(self.rd_cmd.ready),
                    ]
                with m.Else():
                    m.d.comb += q_next.eq(1)
                with m.If(q_next):
                    m.next = "Q_CALC"
                    with m.If(is_add & ~q_b):  # ADD's second operand next cycle, at the same position
                        m.d.sync += q_b.eq(1)
                        m.next = "Q_RUN"
                    with m.Elif(is_pool & (q_ky != kh_m1)):
                        m.d.sync += [q_ky.eq(q_ky + 1), q_kyrow.eq(q_kyrow + in_row)]
                    with m.Else():
                        m.d.sync += [q_b.eq(0), q_ky.eq(0), q_kyrow.eq(0), q_xs.eq(q_xs + SEG),
                                     q_xs_s.eq(q_xs_s + s_seg)]
                        with m.If(q_seg_last):
                            # the source row steps by the stride (POOL) or every other row (MOVE upsampling)
                            m.d.sync += [q_xs.eq(0), q_xs_s.eq(0), q_y.eq(q_y + 1), q_ys.eq(q_ys + Mux(s2, 2, 1)),
                                         q_yrow.eq(q_yrow + Mux(is_pool, s_row, Mux(~up_sh | q_y[0], in_row, 0)))]
                            with m.If(q_y_last):
                                m.d.sync += [q_y.eq(0), q_ys.eq(0), q_yrow.eq(0), q_blk.eq(q_blk + 1),
                                             q_plane.eq(q_plane + in_plane)]
                                with m.If(q_blk_last):
                                    m.next = "Q_IDLE"

        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += self.done.eq(done)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [blk.eq(0), y.eq(0), xs.eq(0), xs_s.eq(0), ys.eq(0), o_plane.eq(0), o_rowoff.eq(0)]
                    m.next = "SEG"
            with m.State("SEG"):
                m.d.sync += [n.eq(Mux(i.out_w - xs < SEG, i.out_w - xs, SEG)), x.eq(0), ky.eq(0), seen.eq(0)]
                m.next = "SETTLE"
            with m.State("SETTLE"):  # the segment's (or kernel row's) source columns settle in their registers
                with m.If(wait_cycles(m, ELT_SETTLE, "settle")):
                    m.next = "LOAD"
            with m.State("LOAD"):  # the row's read (if any) was queued by the issuer
                m.d.sync += [col.eq(0), x.eq(0), next_end.eq(i.kw - 1),
                             in_range.eq(has_cols & (col_lo_s == 0)),
                             col_lo_m1.eq(Mux(has_cols, col_lo_s - 1, 0xFFFF)), col_hi_m1.eq(col_hi_s - 1)]
                with m.If(~has_cols & is_pool):
                    m.next = "P_NEXT"
                with m.Else():
                    m.next = "LOAD_COLS"
            with m.State("LOAD_COLS"):
                m.d.comb += [advance.eq(~in_range | self.rd_data.valid), self.rd_data.ready.eq(in_range)]
                with m.If(advance):
                    m.d.sync += [col.eq(col + 1),
                                 in_range.eq(Mux(in_range, col != col_hi_m1, col == col_lo_m1))]
                    with m.If(is_pool & (col == next_end)):  # output x's window is complete
                        m.d.sync += [p_win.valid.eq(1), p_win.x.eq(x), p_win.first.eq(~seen),
                                     x.eq(x + 1), next_end.eq(next_end + Mux(s2, 2, 1))]
                    with m.If(col == in_cols_m1):
                        with m.If(is_pool):
                            m.d.sync += seen.eq(1)
                            m.next = "P_NEXT"
                        with m.Else():
                            m.next = "OUT_CMD"
            with m.State("P_NEXT"):
                m.d.sync += [ky.eq(ky + 1), x.eq(0)]
                with m.If(ky == kh_m1):
                    m.next = "P_DRAIN" if pool_tree_stages(K) > 1 else "OUT_CMD"
                with m.Else():
                    m.next = "SETTLE"
            if pool_tree_stages(K) > 1:
                with m.State("P_DRAIN"):  # the last merges of the segment land before its output reads
                    with m.If(wait_cycles(m, pool_tree_stages(K) - 1, "drain")):
                        m.next = "OUT_CMD"
            with m.State("OUT_CMD"):
                m.d.comb += [self.wr_cmd.valid.eq(1), self.wr_cmd.payload.beats.eq(n),
                             self.wr_cmd.payload.addr.eq(o_addr)]
                with m.If(self.wr_cmd.ready):
                    m.d.sync += [x.eq(0), a_x.eq(0)]
                    m.next = "OUT_DATA"
            with m.State("OUT_DATA"):
                m.d.comb += [issue.eq(queue.room & (~is_add | self.rd_data.valid)),
                             self.rd_data.ready.eq(is_add & queue.room)]
                with m.If(issue):
                    m.d.sync += [x.eq(x + 1), a_x.eq(a_x + Mux(up_sh, xs[0] ^ x[0], 1))]
                    with m.If(x == n_m1):
                        m.next = "NEXT"
            with m.State("NEXT"):
                m.d.sync += [xs.eq(xs + SEG), xs_s.eq(xs_s + s_seg)]
                m.next = "SEG"
                with m.If(seg_last):
                    m.d.sync += [xs.eq(0), xs_s.eq(0), y.eq(y + 1), ys.eq(ys + Mux(s2, 2, 1)),
                                 o_rowoff.eq(o_rowoff + out_row)]
                    with m.If(y_last):
                        m.d.sync += [y.eq(0), ys.eq(0), o_rowoff.eq(0), blk.eq(blk + 1),
                                     o_plane.eq(o_plane + out_plane)]
                        with m.If(blk_last):
                            m.next = "FINISH"
            with m.State("FINISH"):  # done leaves from a register, a cycle later (ENGINE_DONE)
                with m.If(self.wr_idle & queue.empty & qfsm.ongoing("Q_IDLE")):
                    m.d.sync += done.eq(1)
                    m.next = "IDLE"
        waiting = ("SETTLE", "LOAD", "LOAD_COLS", "OUT_CMD", "OUT_DATA", "FINISH")
        m.d.comb += [self.stall.eq(Cat(*(fsm.ongoing(st) for st in waiting)).any()), self.failed.eq(0),
                     self.error_code.eq(0)]
        return m
