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


def test_sequential_conv_cost_by_hand():
    # fetch 1 + L_r 2 + 8 beats + latch, decode, retire 3; engine start 1, write drain 4     = 19
    # strip/tile: TILE, QP_CHECK, QP_CMD 3 + L_r 2 + 8 table words                            = 13
    # per row: ROW 1 + IC/IC_CHECK 2 + W_CHECK 1 + COMPUTE_INIT 1 + compute 1*1*16*9
    #          + DRAIN 1 + STORE 1                                                            = 151
    #          + output 1 group x (1 + 8 beats) + NEXT_ROW 1                                  = 10
    # line buffer (one input tile: K-row reuse): row 0 loads 3 rows, rows 1..7 one each = 10 rows
    #          x 2 blocks x (LB_ROW 1 + 10 cols)                                              = 220
    # read wait max(0, L_r 2 - 1 leading pad column) for the 8 loaded rows inside the tensor
    # (row 0: kernel rows 1, 2; rows 1..6: kernel row 2) x 2 blocks                          = 16
    # weights once: W_CMD 1 + L_r 2 + 144 steps x 32 bits / 64-bit beats                     = 75
    c = instruction_cost(_conv(), CFG, 8.0)
    assert c == InstrCost(cycles=19 + 13 + 8 * (151 + 10) + 220 + 16 + 75, compute_cycles=1152, stall_cycles=479,
                          read_bytes=10 * 2 * 10 * 8 + 64, write_bytes=512, macs=73728)


def test_several_input_tiles_reload_every_kernel_row():
    # ic_tile 8 < in_c 16: two input tiles share the line buffer, so every output row loads all 3 kernel rows
    two = dataclasses.replace(_conv(), ic_tile=8)
    c = instruction_cost(two, CFG, 8.0)
    assert c.read_bytes == 8 * 3 * 2 * 10 * 8 + 64


def test_sequential_add_cost_by_hand():
    add = Instruction(Opcode.ADD, in_h=8, in_w=8, in_c=16, out_h=8, out_w=8, out_c=16)
    # fetch 14 + finish 2; 16 segments (8 rows x 2 blocks) of SEG 1, LOAD 1 + L_r 2 + 8, B_CMD 1,
    # OUT_CMD 1 + remaining B latency 1 + 8 beats, NEXT 1
    assert instruction_cost(add, CFG, 8.0) == InstrCost(16 + 16 * 24, 128, 272, 2048, 1024, 0)


def test_sequential_program_overhead_by_hand():
    # header: command 1 + L_r 2 + 8 beats + check 1; END: fetch 14 + 2
    assert program_overhead(CFG, 8.0) == 12
    assert instruction_cost(Instruction(Opcode.END), CFG, 8.0).cycles == 16


def test_left_padding_hides_the_read_latency():
    padded = _conv()
    unpadded = dataclasses.replace(padded, pad_l=0, pad_r=2)
    # same geometry, the 16 (loaded row, block) reads wait 2 instead of 1 cycle
    assert instruction_cost(unpadded, CFG, 8.0).cycles - instruction_cost(padded, CFG, 8.0).cycles == 16


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
