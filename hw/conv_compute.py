"""The CONV compute loop: walks one (output row, input tile) over the PE array, all three dataflows.

Loop nest, innermost first: kernel column ``kx``, kernel row ``ky``, input step ``ii`` (a group of pe_ic input
channels for PIXEL, one on each lane of the PEs; a group of pe_px input channels for INPUT_CHANNEL; one step for
DEPTHWISE), then the pixel ``slot``
(INPUT_CHANNEL visits the pe_px pixels of a group one by one), the output block ``ob`` (pe_oc channels) and
the pixel group ``pg`` (pe_px output columns). Every buffer address is stepped from registers (no product
of loop counters per cycle): the line-buffer word is ``row slot base + block offset + column``, the weight
step counts up by one per cycle (a group of ``lanes`` steps: pe_ic for PIXEL, pe_px for INPUT_CHANNEL).

Pipeline (CONV_COMPUTE_LATENCY stages from the loop counters to the accumulators): C1 partial address sums,
C2 the buffer addresses, C3 the block RAMs, C4 the block RAMs' output registers, C5 the buffers' rotated
outputs, C6 the operands (channel lane rotation, dataflow selection), C7 the registered shift terms, C8 and
C9 the row adder tree's registered stages (the PE array's ARRAY_LATENCY), added into the accumulators in C9
(with the partial sums of earlier input tiles, read from the accumulator buffer). A finished block's
accumulators are written to the buffer one cycle later. ``done`` rises while the last step accumulates.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.isa import Dataflow
from shiftpu.arch.latency import CONV_COMPUTE_LATENCY
from shiftpu.hw.crossbar import rotate_words
from shiftpu.hw.decode import INSTRUCTION
from shiftpu.hw.params import ACT_WIDTH, HwParams, log2
from shiftpu.hw.pe_array import ARRAY_LATENCY, PEArray, acc_layout
from shiftpu.hw.weight_buffer import ADDR_BITS as WB_ADDR_BITS


def max_row_slots(p: HwParams) -> int:
    """Row slots the line buffer may be cut into: kh + min(stride, kh) for the largest kernel."""
    return p.cfg.max_kernel + min(2, p.cfg.max_kernel)


class ConvCompute(wiring.Component):
    """The PE array with its loop counters, address generators and operand pipeline.

    Inputs other than ``start`` must hold from ``start`` until ``done``.
    """

    def __init__(self, p: HwParams):
        self.p = p
        lb_addr = range(p.lb_words + p.lb_banks * 2)
        entries = range(p.acc_entries + 1)
        super().__init__({
            "start": In(1),
            "done": Out(1),
            "instr": In(INSTRUCTION),
            "o0": In(16),
            "i0": In(16),
            "sw_m1": In(16),  #: strip width - 1
            "obs_m1": In(16),  #: output blocks - 1
            "pgs_m1": In(16),  #: pixel groups - 1
            "it_w_m1": In(17),  #: input steps per block - 1
            "n_steps": In(16),  #: weight steps per output block
            "in_cols": In(16),  #: line buffer words per (row slot, block) row
            "slot_base": In(data.ArrayLayout(lb_addr, max_row_slots(p))),  #: first word of each row slot
            "rslot_base": In(4),  #: row slot of kernel row 0
            "n_slots": In(4),
            "acc_base": In(entries),  #: first accumulator entry (the buffer half)
            "add_partials": In(1),  #: start from the partial sums in the buffer (not the first input tile)
            "lb_rd_addr": Out(lb_addr),
            "lb_rd_stride": Out(2),
            "lb_rd_data": In(data.ArrayLayout(unsigned(p.cb * 8), p.cfg.pe_px)),
            "wb_rd_addr": Out(WB_ADDR_BITS),
            "wb_rd_data": In(data.ArrayLayout(unsigned(p.step_bits), p.wb_read_steps)),
            "acc_rd_addr": Out(entries),
            "acc_rd_data": In(acc_layout(p)),
            "acc_wr_addr": Out(entries),
            "acc_wr_data": Out(acc_layout(p)),
            "acc_wr_en": Out(1),
        })

    def elaborate(self, platform):
        p = self.p
        cfg = p.cfg
        m = Module()
        i = self.instr
        P, PO, L, CB = cfg.pe_px, cfg.pe_oc, cfg.pe_ic, p.cb
        lp, ll, lcb = log2(P), log2(L), log2(CB)
        # the instruction's mapping, registered (the instruction holds from long before start)
        dw, ic_mode = Signal(), Signal()
        # channels a step advances: pe_oc (DEPTHWISE), pe_px (INPUT_CHANNEL) or pe_ic (PIXEL)
        ch_inc = Signal(range(max(PO, P, L) + 1))
        m.d.sync += [dw.eq(i.depthwise), ic_mode.eq(i.dataflow == Dataflow.INPUT_CHANNEL),
                     ch_inc.eq(Mux(dw, PO, Mux(ic_mode, P, L)))]
        s = i.stride

        m.submodules.pe = pe = PEArray(p)

        # -- loop counters (stage C0) --
        running = Signal()
        kx, ky = Signal(3), Signal(3)
        ii = Signal(17)
        slot = Signal(range(P + 1))
        ob, pg = Signal(16), Signal(16)
        ai = Signal.like(self.acc_base)
        kw_m1, kh_m1 = Signal(3), Signal(3)
        m.d.sync += [kw_m1.eq(i.kw - 1), kh_m1.eq(i.kh - 1)]
        kx_last = kx == kw_m1
        ky_last = ky == kh_m1
        px = Signal(16)  # output column of this step: (pg << lp) + slot
        px_next_pg = Signal(16)  # first output column of the next pixel group: (pg + 1) << lp
        # whether ii, slot (INPUT_CHANNEL: or the strip's last column), ob and pg are at their last value:
        # registers, set as the counters step (the next value compared with the limit), so that the loop's
        # wide comparisons are off the path into the counters
        ii_last, slot_last, ob_last, pg_last = Signal(), Signal(), Signal(), Signal()
        it_w_m2, sw_m2, obs_m2, pgs_m2 = Signal(17), Signal(16), Signal(16), Signal(16)
        one_step, one_col, one_block, one_group = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [it_w_m2.eq(self.it_w_m1 - 1), sw_m2.eq(self.sw_m1 - 1), obs_m2.eq(self.obs_m1 - 1),
                     pgs_m2.eq(self.pgs_m1 - 1), one_step.eq(self.it_w_m1 == 0), one_col.eq(self.sw_m1 == 0),
                     one_block.eq(self.obs_m1 == 0), one_group.eq(self.pgs_m1 == 0)]
        window_end = kx_last & ky_last  # the last term of input step ii
        pixel_end = window_end & ii_last
        last_slot = ~ic_mode | slot_last
        block_end = pixel_end & last_slot

        # -- address registers, stepped with the counters --
        rslot = Signal(4)  # row slot of kernel row ky
        chl = Signal(lcb + 1)  # channel of this step within its block (the lane rotation), carry on top
        blk_off = Signal(16)  # line buffer words from the first block of the tile to this step's block
        col_pg = Signal(16)  # (pg << lp) * stride
        col_slot = Signal(16)  # slot * stride (INPUT_CHANNEL)
        wstep = Signal(16)  # weight step group of the block: (ii * kh + ky) * kw + kx
        wb_base = Signal(WB_ADDR_BITS)
        chl_start = Mux(dw, self.o0[:lcb], self.i0[:lcb]) if lcb else 0
        chl_next = Signal(lcb + 1)
        m.d.comb += chl_next.eq(chl[:lcb] + ch_inc)

        def step_channel(reset):
            with m.If(reset):
                m.d.sync += [chl.eq(chl_start), blk_off.eq(0)]
            with m.Else():
                m.d.sync += chl.eq(chl_next[:lcb] if lcb else 0)
                with m.If(chl_next[lcb] if lcb else 1):
                    m.d.sync += blk_off.eq(blk_off + self.in_cols)

        with m.If(self.start):
            m.d.sync += [running.eq(1), kx.eq(0), ky.eq(0), ii.eq(0), slot.eq(0), ob.eq(0), pg.eq(0), px.eq(0),
                         px_next_pg.eq(P), ai.eq(self.acc_base), rslot.eq(self.rslot_base), chl.eq(chl_start),
                         blk_off.eq(0), col_pg.eq(0), col_slot.eq(0), wstep.eq(0), wb_base.eq(0),
                         ii_last.eq(one_step), slot_last.eq((P == 1) | one_col), ob_last.eq(one_block),
                         pg_last.eq(one_group)]
        with m.Elif(running):
            m.d.sync += [kx.eq(kx + 1), wstep.eq(wstep + 1)]
            with m.If(kx_last):
                m.d.sync += [kx.eq(0), ky.eq(ky + 1),
                             rslot.eq(Mux(rslot + 1 == self.n_slots, 0, rslot + 1))]
                with m.If(ky_last):
                    m.d.sync += [ky.eq(0), ii.eq(ii + 1), rslot.eq(self.rslot_base), ii_last.eq(ii == it_w_m2)]
            with m.If(~dw & window_end):
                step_channel(ii_last)
            with m.If(pixel_end):
                m.d.sync += [ii.eq(0), slot.eq(slot + 1), px.eq(px + 1), col_slot.eq(col_slot + s), wstep.eq(0),
                             ii_last.eq(one_step), slot_last.eq(((slot == P - 2) if P > 1 else 1) | (px == sw_m2))]
            with m.If(block_end):
                m.d.sync += [ai.eq(ai + 1), slot.eq(0), px.eq(pg << lp), col_slot.eq(0), ob.eq(ob + 1),
                             wb_base.eq(wb_base + self.n_steps), ob_last.eq(ob == obs_m2),
                             slot_last.eq((P == 1) | ((pg << lp) == self.sw_m1))]
                with m.If(dw):
                    step_channel(ob_last)
                with m.If(ob_last):
                    m.d.sync += [ob.eq(0), wb_base.eq(0), pg.eq(pg + 1), px.eq(px_next_pg),
                                 px_next_pg.eq(px_next_pg + P), col_pg.eq(col_pg + Mux(s[1], 2 * P, P)),
                                 ob_last.eq(one_block), pg_last.eq(pg == pgs_m2),
                                 slot_last.eq((P == 1) | (px_next_pg == self.sw_m1))]
                    with m.If(pg_last):
                        m.d.sync += running.eq(0)

        # -- C1, C2: buffer addresses --
        tag = data.StructLayout({"en": 1, "first": 1, "block_end": 1, "slot": range(P), "chl": max(1, lcb),
                                 "ai": self.acc_base.shape()})
        tags = [Signal(tag, name="c0_tag")]
        m.d.comb += [tags[0].en.eq(running), tags[0].first.eq((ii == 0) & (ky == 0) & (kx == 0)),
                     tags[0].block_end.eq(running & block_end), tags[0].slot.eq(slot),
                     tags[0].chl.eq(chl[:lcb] if lcb else 0), tags[0].ai.eq(ai)]
        for stage in range(1, CONV_COMPUTE_LATENCY + 2):
            t = Signal(tag, name=f"c{stage}_tag")
            m.d.sync += t.eq(tags[-1])
            tags.append(t)
        lb_row, lb_col = Signal.like(self.lb_rd_addr), Signal.like(self.lb_rd_addr)
        wb_addr1 = Signal(WB_ADDR_BITS)
        lb_addr, wb_addr = Signal.like(self.lb_rd_addr), Signal(WB_ADDR_BITS)
        m.d.sync += [
            lb_row.eq(self.slot_base[rslot] + blk_off),
            lb_col.eq(col_pg + Mux(ic_mode, col_slot, 0) + kx),
            wb_addr1.eq(wb_base + Mux(ic_mode, wstep << lp, Mux(dw, wstep, wstep << ll))),
            lb_addr.eq(lb_row + lb_col),
            wb_addr.eq(wb_addr1),
        ]
        m.d.comb += [self.lb_rd_addr.eq(lb_addr), self.lb_rd_stride.eq(s), self.wb_rd_addr.eq(wb_addr)]

        # -- C6: operands. Each column's word rotated so that byte t holds channel lane + t (mod cb): PIXEL takes
        # bytes 0 .. pe_ic - 1 of its column (one per lane), DEPTHWISE byte r for row r, INPUT_CHANNEL byte j of the
        # one pixel's word for column j; lanes 1 .. pe_ic - 1 get zero codes outside PIXEL --
        t5 = tags[5]
        codes = data.View(data.ArrayLayout(data.ArrayLayout(unsigned(cfg.weight_code.bits), PO), p.wb_read_steps),
                          self.wb_rd_data)
        rot = []
        for j in range(P):
            col_bytes = [self.lb_rd_data[j].word_select(b, 8) for b in range(CB)]
            rot.append(Cat(*rotate_words(m, col_bytes, t5.chl, 8, f"col{j}")) if lcb else self.lb_rd_data[j])

        def act(byte):
            return Mux(i.in_signed, byte.as_signed(), byte)

        for r in range(PO):
            for j in range(P):
                byte = Mux(ic_mode, rot[0].word_select(j % CB, 8),
                           Mux(dw, rot[j].word_select(r % CB, 8), rot[j].word_select(0, 8)))
                a = Signal(signed(ACT_WIDTH), name=f"act_{r}_{j}")
                c = Signal(cfg.weight_code.bits, name=f"code_{r}_{j}")
                m.d.sync += [a.eq(act(byte)), c.eq(Mux(ic_mode, codes[j][r], codes[0][r]))]
                m.d.comb += [pe.acts[r * P + j].eq(a), pe.codes[r * P + j].eq(c)]
        pixel_mode = ~ic_mode & ~dw
        for lane in range(1, L):
            for j in range(P):
                a = Signal(signed(ACT_WIDTH), name=f"act_col{j}_l{lane}")
                m.d.sync += a.eq(act(rot[j].word_select(lane, 8)))
                m.d.comb += pe.lane_acts[j * (L - 1) + lane - 1].eq(a)
            for r in range(PO):
                c = Signal(cfg.weight_code.bits, name=f"code_row{r}_l{lane}")
                m.d.sync += c.eq(Mux(pixel_mode, codes[lane][r], 0))
                m.d.comb += pe.lane_codes[r * (L - 1) + lane - 1].eq(c)

        # -- C7 .. C9: the PE array (terms, then the row adder tree's stages); C9: accumulate (partial sums read
        # in C8 arrive now); C10: a finished block goes to the buffer --
        acc_stage = 6 + ARRAY_LATENCY
        t_acc, t_wr = tags[acc_stage], tags[acc_stage + 1]
        assert CONV_COMPUTE_LATENCY == acc_stage, "the stages above are the latency the cycle model counts"
        m.d.comb += [
            self.acc_rd_addr.eq(tags[acc_stage - 1].ai),
            pe.init.eq(Mux(self.add_partials, self.acc_rd_data, 0)),
            pe.en.eq(t_acc.en), pe.first.eq(t_acc.first), pe.reduce.eq(ic_mode), pe.slot.eq(t_acc.slot),
            self.acc_wr_en.eq(t_wr.block_end), self.acc_wr_addr.eq(t_wr.ai), self.acc_wr_data.eq(pe.acc.as_value()),
        ]
        # done: the last step is accumulating (its block is written in the next cycle, the engine's STORE)
        earlier = Cat(running, *(t.en for t in tags[1:acc_stage]))
        m.d.comb += self.done.eq(t_acc.en & ~earlier.any())
        return m
