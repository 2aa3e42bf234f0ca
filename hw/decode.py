"""Instruction and header decoding: Amaranth layouts generated from the ISA's one bit-field declaration.

``INSTRUCTION`` and ``HEADER`` are ``StructLayout`` s built field by field from
``shiftpu.arch.isa.INSTRUCTION_LAYOUT`` / ``HEADER_LAYOUT`` (same names, widths, signedness and
offsets; the unused top bits become ``reserved``). :func:`instruction_checks` states, in hardware, the
checks of ``Instruction`` and ``shiftpu.arch.limits.violation`` that decide ILLEGAL_OPCODE and BAD_FIELD,
as a pipeline of DECODE_CHECK register stages (the buffer needs are products of several fields).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data

from shiftpu.arch.bitfield import BitLayout
from shiftpu.arch.isa import HEADER_LAYOUT, INSTRUCTION_LAYOUT, Dataflow, Opcode
from shiftpu.arch.latency import DECODE_CHECK
from shiftpu.arch.numerics import Activation
from shiftpu.hw.arith import PRODUCT_LATENCY, pipelined_product, small_product
from shiftpu.hw.params import HwParams


def struct_layout(bits: BitLayout) -> data.StructLayout:
    """The Amaranth view of a BitLayout word (fields at the same offsets, then ``reserved``)."""
    fields = {f.name: signed(f.bits) if f.signed else unsigned(f.bits) for f in bits.fields}
    fields["reserved"] = unsigned(bits.width - bits.used_bits)
    layout = data.StructLayout(fields)
    for f in bits.fields:
        assert layout[f.name].offset == bits.offsets[f.name], f"{bits.name}.{f.name} offset mismatch"
    return layout


INSTRUCTION = struct_layout(INSTRUCTION_LAYOUT)
HEADER = struct_layout(HEADER_LAYOUT)


def _in_set(value, allowed) -> object:
    cond = 0
    for a in allowed:
        cond = cond | (value == int(a))
    return cond


def instruction_checks(m: Module, i, p: HwParams) -> tuple[Signal, Signal]:
    """(illegal_opcode, bad_field) of the decoded instruction view ``i``, registered: both are valid
    DECODE_CHECK cycles after ``i`` changes (and while it holds)."""
    cfg = p.cfg
    illegal = Signal()
    bad = Signal()
    is_end = i.opcode == Opcode.END
    is_conv = i.opcode == Opcode.CONV
    is_pool = i.opcode == Opcode.POOL
    is_move = i.opcode == Opcode.MOVE
    windowed = is_conv | is_pool
    up2 = is_move & (i.upsample == 2)  # MOVE's upsampling by 2 (any other factor but 1 is refused)

    exp_h = Signal(signed(18))
    exp_w = Signal(signed(18))
    m.d.sync += [
        exp_h.eq(((i.in_h + i.pad_t + i.pad_b - i.kh).as_signed() >> (i.stride == 2)) + 1),
        exp_w.eq(((i.in_w + i.pad_l + i.pad_r - i.kw).as_signed() >> (i.stride == 2)) + 1),
    ]
    dw = i.depthwise
    channels = Mux(dw, i.oc_tile, i.ic_tile)
    cb_shift = (p.cb - 1).bit_length()
    px_shift = (cfg.pe_px - 1).bit_length()
    # the buffer needs of shiftpu.arch.limits: registered operands and pipelined products (PRODUCT_LATENCY
    # cycles each), at most two in a row: wb_need settles in cycle 2 + 2 x PRODUCT_LATENCY
    cols, ch_r, khkw = Signal(20), Signal(17), Signal(6)
    lb_rows, wb_need = Signal(24), Signal(48)
    over = Signal()
    m.d.sync += [
        cols.eq(Mux(i.stride == 2, (i.strip_w - 1) << 1, i.strip_w - 1) + i.kw),
        ch_r.eq(((channels + p.cb - 1) >> cb_shift) << cb_shift),
        khkw.eq(small_product(i.kw, i.kh)),
    ]
    oc_ic = pipelined_product(m, i.oc_tile, Mux(dw, 1, i.ic_tile), "oc_ic")
    acc_need = pipelined_product(m, i.oc_tile, ((i.strip_w + cfg.pe_px - 1) >> px_shift) << px_shift, "acc_need")
    m.d.sync += lb_rows.eq(small_product(cols, i.kh))
    lb_need = pipelined_product(m, lb_rows, ch_r, "lb_need")
    w_steps = pipelined_product(m, oc_ic, khkw, "w_steps")
    m.d.sync += wb_need.eq((w_steps * cfg.weight_code.bits + 7) >> 3)
    m.d.comb += over.eq((lb_need > cfg.line_buffer_bytes) | (wb_need > cfg.weight_buffer_bytes)
                        | (acc_need > cfg.acc_buffer_words))
    problems = [
        i.reserved != 0,
        ~_in_set(i.dataflow, Dataflow),
        ~_in_set(i.act, Activation),
        ~is_end & ((i.out_bits != 4) & (i.out_bits != 8)),
        ~is_end & ((i.in_h == 0) | (i.in_w == 0) | (i.in_c == 0) | (i.out_h == 0) | (i.out_w == 0) | (i.out_c == 0)),
        windowed & ((i.kh == 0) | (i.kw == 0) | (i.stride == 0) | (i.stride == 3)),
        is_conv & dw & (i.in_c != i.out_c),
        is_conv & (dw != (i.dataflow == Dataflow.DEPTHWISE)),
        is_conv & ((i.strip_w == 0) | (i.ic_tile == 0) | (i.oc_tile == 0)),
        (is_pool | is_move | (i.opcode == Opcode.ADD)) & (i.in_c != i.out_c),
        is_move & (i.upsample != 1) & (i.upsample != 2),
        # shiftpu.arch.limits.violation
        ~is_end & (i.out_bits > cfg.act_bits),
        windowed & ((i.kh > cfg.max_kernel) | (i.kw > cfg.max_kernel)),
        is_conv & (i.strip_w > cfg.strip_width),
        is_conv & (i.oc_tile[: (cfg.pe_oc - 1).bit_length()] != 0) if cfg.pe_oc > 1 else 0,
        is_conv & dw & (i.ic_tile != i.oc_tile),
        is_conv & (i.ic_tile < i.in_c) & (i.ic_tile[:cb_shift] != 0) if p.cb > 1 else 0,
        is_conv & (i.dataflow == Dataflow.INPUT_CHANNEL) & (i.ic_tile < i.in_c)
        & (i.ic_tile[:px_shift] != 0) if cfg.pe_px > 1 else 0,
        is_conv & dw & (cfg.pe_oc > p.cb),
        is_conv & (i.dataflow == Dataflow.INPUT_CHANNEL) & (cfg.pe_px > p.cb),
    ]
    # stage 1: each check in a register of its own (and the expected output size); stage 2: their OR
    flags = []
    for k, c in enumerate(problems):
        flag = Signal(name=f"field_problem{k}")
        m.d.sync += flag.eq(c)
        flags.append(flag)
    windowed1 = Signal()
    m.d.sync += windowed1.eq(windowed)
    # MOVE and ADD: the output is the input (upsampled by 2 for MOVE's factor 2), compared a stage later too
    same_size1 = Signal()
    move_h, move_w = Signal(14), Signal(14)
    m.d.sync += [same_size1.eq(is_move | (i.opcode == Opcode.ADD)),
                 move_h.eq(Mux(up2, i.in_h << 1, i.in_h)), move_w.eq(Mux(up2, i.in_w << 1, i.in_w))]
    cond = ((windowed1 & ((exp_h != i.out_h) | (exp_w != i.out_w)))
            | (same_size1 & ((move_h != i.out_h) | (move_w != i.out_w))))
    for flag in flags:
        cond = cond | flag
    # the checks and the opcode wait in registers for the buffer needs
    cheap = [Signal(name=f"field_check{k}") for k in range(DECODE_CHECK - 2)]
    conv = [Signal(name=f"conv_check{k}") for k in range(DECODE_CHECK - 1)]
    ill = [Signal(name=f"opcode_check{k}") for k in range(DECODE_CHECK - 1)]
    m.d.sync += [cheap[0].eq(cond), conv[0].eq(is_conv), ill[0].eq(~_in_set(i.opcode, Opcode))]
    for k in range(1, DECODE_CHECK - 1):
        m.d.sync += [conv[k].eq(conv[k - 1]), ill[k].eq(ill[k - 1])]
    for k in range(1, DECODE_CHECK - 2):
        m.d.sync += cheap[k].eq(cheap[k - 1])
    m.d.sync += [illegal.eq(ill[-1]), bad.eq(~ill[-1] & (cheap[-1] | (conv[-1] & over)))]
    assert DECODE_CHECK == 2 + 2 * PRODUCT_LATENCY, "the stages above (two products in a row, the bytes, the " \
        "comparison) are the latency the cycle model counts"
    return illegal, bad
