"""The performance model's formulas on hand-computed cases, and the dataflow choice it drives."""

from __future__ import annotations

import dataclasses

import pytest
from qdq_graphs import QdqBuilder

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.perf import InstrCost, Schedule, conv_compute, instruction_cost, program_overhead

OVERLAPPED = Schedule.OVERLAPPED

CFG = AccelConfig()  # 8x8 PEs, 8-byte channel blocks, 4-bit weights


def _conv(dataflow=Dataflow.PIXEL):
    return Instruction(Opcode.CONV, dataflow=dataflow, kh=3, kw=3, pad_t=1, pad_l=1, pad_b=1, pad_r=1, in_h=8,
                       in_w=8, in_c=16, out_h=8, out_w=8, out_c=8, strip_w=8, ic_tile=16, oc_tile=8)


def test_rtl_conv_cost_by_hand():
    # Derived by hand from the RTL's cycle model (docs/rtl.md) with the pipeline depths of arch/latency.py:
    # SETUP 3, TILE_SETUP 3, IC_SETUP 5 (1 for later rows of one input tile), W_SETUP 4, issuer 3 + 1 per row,
    # compute pipeline 7, store setup 4 per group and store pipeline 7.
    # L_r: 3 cycles from a read command to its first beat (the reader's address stage 2, the memory model's 1).
    # fetch 1 + L_r 3 + 8 beats + latch 1, CHECK 4, decode 1, retire 1; engine start 1; SETUP 3; FINISH: start 1,
    # store pipeline 7, write drain 4 + the writer's registered idle 1, registered done 1        = 37
    # strip/tile: TILE 1, TILE_SETUP 3, QP_CMD 1 + L_r 3 + 8 table words                          = 16
    # 2 blocks x 10 input columns; 4 row slots fit the line buffer (prefetch), a row's 1 accumulator entry
    # fits half the buffer (double-buffered store). Loader: L_START 1, (1 + 10) per row and block; a row
    # inside the tensor streams no earlier than its read, issued after 5 cycles per row up to it, plus
    # max(0, L_r 3 - 1 leading pad column) = 2. Row 0 kernel rows 0-2 (row 0 outside: the first inside row
    # would start at 24, its data at 3 x 5 + 2 = 17) = 67; rows 1-6 kernel row 2: data at 5 + 2 = 7 instead of
    # 2, so 28; row 7 (input row 8 outside) = 23. Store: 1 group x (4 + 1 + 8 beats) = 13.
    # row 0: ROW, IC, IC_SETUP 5 (loader started) at 7, LB_WAIT until the loader is done (7 + 67 + 1),
    #        W_CHECK, weights W_SETUP 4 + W_CMD 1 + L_r 3 + 144 steps x 32 bits / 64-bit beats 72 = 80,
    #        COMPUTE_INIT (starts row 1's load) at 156, compute 144 + pipeline 7, STORE at 308 (store busy
    #        until 322), NEXT_ROW: 310
    # rows 1-6: ROW, IC, IC_SETUP 1, LB_WAIT 1 (loaded ahead), W_CHECK, COMPUTE_INIT, 144 + 7, STORE,
    #        NEXT_ROW: 159 each (loads of 28 and the store of 13 hidden)
    # row 7: STORE at 6 x 159 + 310 + 157 = 1421, NEXT_ROW waits for the store (1421 + 1 + 13), exit = 1436
    c = instruction_cost(_conv(), CFG, 8.0)
    assert c == InstrCost(cycles=37 + 16 + 1436, compute_cycles=1152, stall_cycles=337,
                          read_bytes=10 * 2 * 10 * 8 + 64 + 72 * 8, write_bytes=512, macs=73728)


def test_rtl_conv_cost_by_hand_without_prefetch_or_double_buffer():
    # the same layer on 512 bytes of line buffer (3 row slots: no prefetch) and one accumulator entry
    # (the PE array waits for the store): every later row loads its kernel row after IC_SETUP (LB_WAIT
    # 28 + 1, row 7 23 + 1) and COMPUTE_INIT waits for the store of the previous row (done by then):
    # rows 1-6: 159 + 28 = 187 each; row 7 starts at 310 + 6 x 187 = 1432, STORE at 1432 + 3 + 24 + 2 + 152,
    # NEXT_ROW waits for the store: + 1 + 13 + 1                                                   = 1627
    cfg = AccelConfig(strip_width=8, line_buffer_bytes=512, acc_buffer_words=64)
    c = instruction_cost(_conv(), cfg, 8.0)
    assert c.cycles == 37 + 16 + 1627


def test_several_input_tiles_reload_every_kernel_row():
    # ic_tile 8 < in_c 16: two input tiles share the line buffer, so every output row loads all 3 kernel rows
    # (1 block each) and both tiles' weights (8 x 9 steps of 32 bits: 36 beats of 8 bytes), + the table
    two = dataclasses.replace(_conv(), ic_tile=8)
    c = instruction_cost(two, CFG, 8.0)
    assert c.read_bytes == 8 * 2 * 3 * 10 * 8 + 8 * 2 * 36 * 8 + 64


def test_rtl_add_cost_by_hand():
    add = Instruction(Opcode.ADD, in_h=8, in_w=8, in_c=16, out_h=8, out_w=8, out_c=16)
    # fetch 19 + engine start 1 + finish 12 (the last beat's 7 pipeline stages, the queue, the write response and
    # the writer's registered idle) + registered done 1; 16 segments
    # (8 rows x 2 blocks) of SEG 1, SETTLE 3, LOAD 1 + 8, OUT_CMD 1 + 8 beats issued (B taken with each), NEXT 1;
    # every read is queued ahead, so only the first waits: L_r 3, its issuer's Q_CALC 4 against SEG 1 and
    # SETTLE 3; on a DDR that moves a read and a write beat per cycle (16 bytes)
    assert instruction_cost(add, CFG, 16.0) == InstrCost(33 + 16 * 23 + 3, 128, 276, 2048, 1024, 0)
    # with 8 bytes per cycle in all, the 3072 bytes read and written take 384 cycles: still under the engine's
    # 404; with 4 bytes per cycle the DDR bounds it (768)
    assert instruction_cost(add, CFG, 8.0).cycles == 404
    assert instruction_cost(add, CFG, 4.0) == InstrCost(768, 128, 640, 2048, 1024, 0)


def test_rtl_program_overhead_by_hand():
    # header: command 1 + L_r 3 + 8 beats + check 1; END: fetch 19 + 2
    assert program_overhead(CFG, 8.0) == 13
    assert instruction_cost(Instruction(Opcode.END), CFG, 8.0).cycles == 21


def test_left_padding_hides_the_read_latency():
    padded = _conv()
    unpadded = dataclasses.replace(padded, pad_l=0, pad_r=2)
    # same geometry, the first read of each of rows 1-6's loads waits 2 instead of 1 cycle: on the critical path
    # without prefetch, hidden behind the PE array with it; row 0's first read inside the tensor comes after the
    # 2 x 10 columns of the padding row above it (no wait either way)
    no_prefetch = AccelConfig(strip_width=8, line_buffer_bytes=512, acc_buffer_words=64)
    assert instruction_cost(unpadded, no_prefetch, 8.0).cycles - instruction_cost(padded, no_prefetch, 8.0).cycles == 6
    assert instruction_cost(unpadded, CFG, 8.0).cycles == instruction_cost(padded, CFG, 8.0).cycles


def test_conv_cost_by_hand():
    # row compute ceil(8/8)*ceil(8/8)*16*9 = 144; prologue 3 rows*8 cols*16 B + 576 B weights + 64 B table = 1024 B
    # = 128 cycles at 8 B/cycle; rows: 8 * max(144, (5*8*16/8 + 64) / 8) = 1152; + FILL 8 + INSTR_OVERHEAD 16
    c = instruction_cost(_conv(), CFG, 8.0, OVERLAPPED)
    assert c == InstrCost(cycles=1304, compute_cycles=1152, stall_cycles=152, read_bytes=1664, write_bytes=512,
                          macs=73728)
    assert c.utilization(CFG) == pytest.approx(73728 / (1304 * 64))


def test_conv_cost_memory_bound():
    # at 1 B/cycle: prologue 1024 cycles, rows 8 * max(144, 144) = 1152
    assert instruction_cost(_conv(), CFG, 1.0, OVERLAPPED).cycles == 16 + 8 + 1024 + 1152


def test_axi_port_caps_the_bandwidth():
    for sched in Schedule:
        assert instruction_cost(_conv(), CFG, 100.0, sched) == instruction_cost(_conv(), CFG, 8.0, sched)
    assert instruction_cost(_conv(), CFG, 4.0).cycles > instruction_cost(_conv(), CFG, 8.0).cycles


def test_dataflow_compute_formulas():
    assert conv_compute(Dataflow.PIXEL, 32, 16, 3, 3, 3, CFG) == 4 * 2 * 3 * 9
    assert conv_compute(Dataflow.INPUT_CHANNEL, 32, 16, 3, 3, 3, CFG) == 32 * 2 * 1 * 9
    assert conv_compute(Dataflow.DEPTHWISE, 5, 16, 16, 3, 3, CFG) == 1 * 2 * 9


def test_streaming_add_cost():
    add = Instruction(Opcode.ADD, in_h=8, in_w=8, in_c=16, out_h=8, out_w=8, out_c=16)
    # 128 output beats; 2048 B read + 1024 B written = 384 cycles at 8 B/cycle
    assert instruction_cost(add, CFG, 8.0, OVERLAPPED) == InstrCost(408, 128, 280, 2048, 1024, 0)


def test_dataflow_choice_follows_the_shape():
    b = QdqBuilder((3, 64, 64), seed=0)
    wide = b.conv(b.x, 16, 3, act="relu")  # 3 input channels, wide map: pixel-parallel
    narrow = QdqBuilder((256, 2, 2), seed=0)
    deep = narrow.conv(narrow.x, 64, 1, act="relu")  # many input channels, tiny map: input-channel-parallel
    b.output(wide)
    narrow.output(deep)
    r1 = compile_model(b.model(), "pynq-z2")
    r2 = compile_model(narrow.model(), "pynq-z2")
    (c1,), (c2,) = r1.graph.fabric_ops(), r2.graph.fabric_ops()
    assert c1.dataflow is Dataflow.PIXEL and c1.options[Dataflow.PIXEL] > c1.options[Dataflow.INPUT_CHANNEL]
    assert c2.dataflow is Dataflow.INPUT_CHANNEL
    assert c2.options[Dataflow.INPUT_CHANNEL] > 1.5 * c2.options[Dataflow.PIXEL]


def test_board_read_latency_by_hand():
    # a memory 40 instead of 2 cycles from read command to first beat (L_r 41 instead of 3 with the reader's
    # address stage), 38 more for: the instruction fetch, the bias table, the one weight run and the write response
    # at FINISH; row 0's first read inside the tensor (its third row, issued at 3 x 5) brings data at
    # 15 + 41 - 1 leading pad column = 55, where the loader would be at 24 (31 more than with L_r 3): on the
    # critical path; the later rows' loads (5 + 40 + 2 x 11 - 1 = 66 cycles) still hide behind 151 of compute
    # and pipeline
    slow = instruction_cost(_conv(), CFG, 8.0, read_latency=40)
    assert slow.cycles - instruction_cost(_conv(), CFG, 8.0).cycles == 38 * 4 + 31
