"""The POOL / ADD / MOVE engine: channel-block-parallel operations on row segments.

Every beat of the DDR layout holds ``cb`` channels of one pixel, so the engine works on all of them
at once, one pixel per cycle. The output is produced in segments of up to ``strip_width`` columns of
one output row of one channel block. A read issuer walks the same loop nest ahead of the engine and
queues every read (each kernel row of a POOL window, ADD's two operands, MOVE's source row) in the burst
reader, so only the first read of an instruction waits for the memory's latency ``L_r``; the data of the
later ones has arrived by the time the engine takes it (the memory returns one beat per cycle, in order).
Cost per segment in clock cycles:

* MOVE: SEG 1, LOAD 1 + m (m input columns), OUT_CMD 1 + n beats, NEXT 1;
* ADD: SEG 1, LOAD 1 + n, OUT_CMD 1 + n beats (the B operand streams in beside the output), NEXT 1;
* POOL: SEG 1, per kernel row: LOAD 1 (+ in_cols when the row is inside the tensor), P_NEXT 1;
  OUT_CMD 1 + n beats, NEXT 1.

POOL takes the maximum as the row streams in: the last kw input columns sit in a shift register, and when
column c closes the window of output x (c = x * stride + kw - 1) the window's maximum is merged into the
running maximum of x (one read-modify-write per cycle). Padding columns count as the smallest value; a window
with no row inside the tensor gives the smallest value.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring

from shiftpu.arch.isa import Opcode
from shiftpu.arch.latency import ELT_ISSUE_LATENCY, ELT_SETTLE
from shiftpu.hw.conv_engine import engine_members
from shiftpu.hw.params import ACT_WIDTH, ADD_WIDTH, HwParams
from shiftpu.hw.postproc import Requantizer
from shiftpu.hw.wait import wait_cycles


def _log2(n: int) -> int:
    return (n - 1).bit_length()


class EltwiseEngine(wiring.Component):
    """Runs one POOL, ADD or MOVE instruction."""

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__(engine_members(p))

    def elaborate(self, platform):
        p = self.p
        m = Module()
        i = self.instr
        CB = p.cb
        lcb = _log2(CB)
        word = unsigned(CB * 8)
        m.submodules.abuf = abuf = memory.Memory(shape=word, depth=p.elt_depth, init=[])
        m.submodules.mbuf = mbuf = memory.Memory(shape=word, depth=p.seg_width, init=[])
        a_wr, a_rd = abuf.write_port(), abuf.read_port(domain="comb")
        K = p.cfg.max_kernel
        m_wr, m_rd = mbuf.write_port(), mbuf.read_port(domain="comb")

        is_pool = i.opcode == Opcode.POOL
        is_add = i.opcode == Opcode.ADD
        up_sh = Mux(i.opcode == Opcode.MOVE, i.upsample == 2, 0)
        s = i.stride

        blk, y, xs, n = Signal(16), Signal(16), Signal(16), Signal(16)
        x, col, ky = Signal(16), Signal(16), Signal(3)
        nblk = (i.in_c + CB - 1) >> lcb
        # per-instruction sizes (the instruction holds from LATCH, several cycles before start)
        in_plane, in_row, out_plane, out_row = Signal(32), Signal(32), Signal(32), Signal(32)
        m.d.sync += [in_plane.eq((i.in_h * i.in_w) << lcb), in_row.eq(i.in_w << lcb),
                     out_plane.eq((i.out_h * i.out_w) << lcb), out_row.eq(i.out_w << lcb)]
        # source columns and row of the segment, through registered stages (settled in SETTLE)
        ix0 = Signal(signed(18))
        in_cols = Signal(16)
        iy = Signal(signed(18))
        vlo = Signal(signed(18))
        vhi = Signal(signed(18))
        row_ok, in_cols_m1 = Signal(), Signal(16)
        has_cols = Signal()
        col_lo_s, col_hi_s = Signal(16), Signal(16)
        m.d.sync += [
            ix0.eq(Mux(is_pool, (xs * s).as_signed() - i.pad_l, xs >> up_sh)),
            in_cols.eq(Mux(is_pool, (n - 1) * s + i.kw, Mux(up_sh, ((xs + n - 1) >> 1) - (xs >> 1) + 1, n))),
            iy.eq((y * s).as_signed() - i.pad_t + ky),
            vlo.eq(Mux(ix0 < 0, 0, ix0)), vhi.eq(Mux(ix0 + in_cols > i.in_w, i.in_w, ix0 + in_cols)),
            row_ok.eq(~is_pool | ((iy >= 0) & (iy < i.in_h))), in_cols_m1.eq(in_cols - 1),
            has_cols.eq(row_ok & (vhi > vlo)), col_lo_s.eq(vlo - ix0), col_hi_s.eq(vhi - ix0),
        ]
        col_lo, col_hi = Signal(16), Signal(16)
        # the output segment's DDR address, through registered stages (settled long before OUT_CMD)
        o_base, o_plane, o_rowoff, o_addr = Signal(32), Signal(32), Signal(32), Signal(32)
        m.d.sync += [o_base.eq(self.act_base + i.out_addr + (xs << lcb)), o_plane.eq(blk * out_plane),
                     o_rowoff.eq(y * out_row), o_addr.eq(o_base + o_plane + o_rowoff)]

        # -- the read issuer's copy of the loop nest (q_b: ADD's second operand of the segment); each command's
        # address through ELT_ISSUE_LATENCY registered stages --
        q_blk, q_y, q_xs = Signal(16), Signal(16), Signal(16)
        q_ky, q_b = Signal(3), Signal()
        q_n, q_ix0, q_row_pool, q_row_move = Signal(16), Signal(signed(18)), Signal(signed(18)), Signal(16)
        q_base, q_plane = Signal(32), Signal(32)
        q_in_cols, q_src_row, q_row_ok, q_ix0_2, q_base_plane = (Signal(16), Signal(16), Signal(), Signal(signed(18)),
                                                                Signal(32))
        q_vlo, q_vhi, q_rowoff, q_ok3, q_base3 = (Signal(signed(18)), Signal(signed(18)), Signal(32), Signal(),
                                                   Signal(32))
        q_addr, q_beats, q_has_cols = Signal(32), Signal(16), Signal()
        m.d.sync += [
            q_n.eq(Mux(i.out_w - q_xs < p.seg_width, i.out_w - q_xs, p.seg_width)),
            q_ix0.eq(Mux(is_pool, (q_xs * s).as_signed() - i.pad_l, q_xs >> up_sh)),
            q_row_pool.eq((q_y * s).as_signed() - i.pad_t + q_ky), q_row_move.eq(q_y >> up_sh),
            q_base.eq(self.act_base + Mux(q_b, i.in2_addr, i.in_addr)), q_plane.eq(q_blk * in_plane),
            q_in_cols.eq(Mux(is_pool, (q_n - 1) * s + i.kw,
                             Mux(up_sh, ((q_xs + q_n - 1) >> 1) - (q_xs >> 1) + 1, q_n))),
            q_src_row.eq(Mux(is_pool, q_row_pool, q_row_move)),
            q_row_ok.eq(~is_pool | ((q_row_pool >= 0) & (q_row_pool < i.in_h))),
            q_ix0_2.eq(q_ix0), q_base_plane.eq(q_base + q_plane),
            q_vlo.eq(Mux(q_ix0_2 < 0, 0, q_ix0_2)),
            q_vhi.eq(Mux(q_ix0_2 + q_in_cols > i.in_w, i.in_w, q_ix0_2 + q_in_cols)),
            q_rowoff.eq(q_src_row * in_row), q_ok3.eq(q_row_ok), q_base3.eq(q_base_plane),
            q_addr.eq(q_base3 + q_rowoff + (q_vlo << lcb)), q_beats.eq(q_vhi - q_vlo),
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

        min_byte = Mux(i.in_signed, 0x80, 0x00)
        min_word = Cat(*([min_byte[:8]] * CB))

        # A is read at x (ADD) or the upsampled source column (MOVE)
        m.d.comb += a_rd.addr.eq(Mux(up_sh, ((xs + x) >> 1) - (xs >> 1), x))
        m.d.comb += m_rd.addr.eq(x)
        a_lanes = lanes(a_rd.data, i.in_signed)
        seen = Signal()  # POOL: a kernel row inside the tensor has been merged into the running maximum
        ky_first = ~seen  # this row's maxima overwrite (no earlier row of the window was inside)
        m_lanes = lanes(Mux(seen, m_rd.data, min_word), i.in_signed)
        b_lanes = lanes(self.rd_data.payload, i.in2_signed)

        # POOL window: the arriving word and the kw - 1 before it, their maximum merged into output x's
        in_word = Signal(word)
        hist = [Signal(word, name=f"win{j}") for j in range(1, K)]
        win = [in_word] + hist
        masked = [lanes(Mux(j < i.kw, w, min_word), i.in_signed) if j else lanes(w, i.in_signed)
                  for j, w in enumerate(win)]

        def vmax(a, b):
            return [Mux(u > v, u, v) for u, v in zip(a, b, strict=True)]

        level = masked
        while len(level) > 1:
            level = [vmax(level[k], level[k + 1]) if k + 1 < len(level) else level[k]
                     for k in range(0, len(level), 2)]
        win_max = level[0]
        run_lanes = lanes(m_rd.data, i.in_signed)
        merged = Cat(*(Mux(ky_first, w, Mux(w > r, w, r))[:8] for w, r in zip(win_max, run_lanes, strict=True)))
        next_end = Signal(16)  # input column that closes output x's window

        out_bytes = []
        for k in range(CB):
            rq = Requantizer(ADD_WIDTH, pipelined=False)
            m.submodules[f"rq{k}"] = rq
            add = (a_lanes[k] << i.shift_a) + (b_lanes[k] << i.shift_b)
            m.d.comb += [
                rq.value.eq(Mux(is_pool, m_lanes[k], Mux(is_add, add, a_lanes[k]))),
                rq.bias.eq(0), rq.shift.eq(i.out_shift), rq.act.eq(i.act), rq.leaky_shift.eq(i.leaky_shift),
                rq.out_bits.eq(i.out_bits), rq.out_signed.eq(i.out_signed),
            ]
            out_bytes.append(Mux((blk << lcb) + k < i.in_c, rq.out, 0))
        m.d.comb += [self.wr_data.payload.data.eq(Cat(*out_bytes)), self.wr_data.payload.strb.eq((1 << CB) - 1)]

        with m.FSM(name="issuer") as qfsm:
            with m.State("Q_IDLE"):
                with m.If(self.start):
                    m.d.sync += [q_blk.eq(0), q_y.eq(0), q_xs.eq(0), q_ky.eq(0), q_b.eq(0)]
                    m.next = "Q_CALC"
            with m.State("Q_CALC"):
                with m.If(wait_cycles(m, ELT_ISSUE_LATENCY, "issue")):
                    m.next = "Q_RUN"
            with m.State("Q_RUN"):
                q_next = Signal()
                with m.If(q_has_cols):
                    m.d.comb += [
                        self.rd_cmd.valid.eq(1),
                        self.rd_cmd.payload.addr.eq(q_addr),
                        self.rd_cmd.payload.beats.eq(q_beats),
                        q_next.eq(self.rd_cmd.ready),
                    ]
                with m.Else():
                    m.d.comb += q_next.eq(1)
                with m.If(q_next):
                    m.next = "Q_CALC"
                    with m.If(is_add & ~q_b):
                        m.d.sync += q_b.eq(1)
                    with m.Elif(is_pool & (q_ky != i.kh - 1)):
                        m.d.sync += q_ky.eq(q_ky + 1)
                    with m.Else():
                        m.d.sync += [q_b.eq(0), q_ky.eq(0), q_xs.eq(q_xs + p.seg_width)]
                        with m.If(q_xs + p.seg_width >= i.out_w):
                            m.d.sync += [q_xs.eq(0), q_y.eq(q_y + 1)]
                            with m.If(q_y == i.out_h - 1):
                                m.d.sync += [q_y.eq(0), q_blk.eq(q_blk + 1)]
                                with m.If(q_blk == nblk - 1):
                                    m.next = "Q_IDLE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [blk.eq(0), y.eq(0), xs.eq(0)]
                    m.next = "SEG"
            with m.State("SEG"):
                m.d.sync += [n.eq(Mux(i.out_w - xs < p.seg_width, i.out_w - xs, p.seg_width)), x.eq(0), ky.eq(0),
                             seen.eq(0)]
                m.next = "SETTLE"
            with m.State("SETTLE"):  # the segment's (or kernel row's) source columns settle in their registers
                with m.If(wait_cycles(m, ELT_SETTLE, "settle")):
                    m.next = "LOAD"
            with m.State("LOAD"):  # the row's read (if any) was queued by the issuer
                m.d.sync += [col.eq(0), x.eq(0), col_lo.eq(Mux(has_cols, col_lo_s, 0)),
                             col_hi.eq(Mux(has_cols, col_hi_s, 0)), next_end.eq(i.kw - 1)]
                with m.If(~has_cols & is_pool):
                    m.next = "P_NEXT"
                with m.Else():
                    m.next = "LOAD_COLS"
            with m.State("LOAD_COLS"):
                in_range = (col >= col_lo) & (col < col_hi)
                advance = ~in_range | self.rd_data.valid
                m.d.comb += [in_word.eq(Mux(in_range, self.rd_data.payload, min_word)),
                             a_wr.addr.eq(col), a_wr.data.eq(in_word),
                             a_wr.en.eq(advance), self.rd_data.ready.eq(in_range)]
                with m.If(advance):
                    m.d.sync += col.eq(col + 1)
                    m.d.sync += [h.eq(prev) for h, prev in zip(hist, win[:-1], strict=True)]
                    with m.If(is_pool & (col == next_end)):  # output x's window is complete
                        m.d.comb += [m_wr.addr.eq(x), m_wr.data.eq(merged), m_wr.en.eq(1)]
                        m.d.sync += [x.eq(x + 1), next_end.eq(next_end + s)]
                    with m.If(col == in_cols_m1):
                        with m.If(is_pool):
                            m.d.sync += seen.eq(1)
                            m.next = "P_NEXT"
                        with m.Else():
                            m.next = "OUT_CMD"
            with m.State("P_NEXT"):
                m.d.sync += [ky.eq(ky + 1), x.eq(0)]
                with m.If(ky == i.kh - 1):
                    m.next = "OUT_CMD"
                with m.Else():
                    m.next = "SETTLE"
            with m.State("OUT_CMD"):
                m.d.comb += [self.wr_cmd.valid.eq(1), self.wr_cmd.payload.beats.eq(n),
                             self.wr_cmd.payload.addr.eq(o_addr)]
                with m.If(self.wr_cmd.ready):
                    m.d.sync += x.eq(0)
                    m.next = "OUT_DATA"
            with m.State("OUT_DATA"):
                m.d.comb += [self.wr_data.valid.eq(Mux(is_add, self.rd_data.valid, 1)),
                             self.rd_data.ready.eq(is_add & self.wr_data.ready)]
                with m.If(self.wr_data.valid & self.wr_data.ready):
                    m.d.sync += x.eq(x + 1)
                    with m.If(x == n - 1):
                        m.next = "NEXT"
            with m.State("NEXT"):
                m.d.sync += xs.eq(xs + p.seg_width)
                m.next = "SEG"
                with m.If(xs + p.seg_width >= i.out_w):
                    m.d.sync += [xs.eq(0), y.eq(y + 1)]
                    with m.If(y == i.out_h - 1):
                        m.d.sync += [y.eq(0), blk.eq(blk + 1)]
                        with m.If(blk == nblk - 1):
                            m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(self.wr_idle & qfsm.ongoing("Q_IDLE")):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        waiting = ("SETTLE", "LOAD", "LOAD_COLS", "OUT_CMD", "OUT_DATA", "FINISH")
        m.d.comb += [self.stall.eq(Cat(*(fsm.ongoing(st) for st in waiting)).any()), self.failed.eq(0),
                     self.error_code.eq(0)]
        return m
