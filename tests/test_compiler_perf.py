"""The performance model's formulas on hand-computed cases, and the dataflow choice it drives."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from qdq_graphs import QdqBuilder

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.perf import InstrCost, Schedule, conv_compute, instruction_cost

OVERLAPPED = Schedule.OVERLAPPED

CFG = AccelConfig()  # 8x8 PEs, 8-byte channel blocks, 4-bit weights


def _conv(dataflow=Dataflow.PIXEL):
    return Instruction(Opcode.CONV, dataflow=dataflow, kh=3, kw=3, pad_t=1, pad_l=1, pad_b=1, pad_r=1, in_h=8,
                       in_w=8, in_c=16, out_h=8, out_w=8, out_c=8, strip_w=8, ic_tile=16, oc_tile=8)


def test_rtl_conv_cost_counts():
    # The cycles themselves are held to the RTL's by tests/test_perf_model_rtl.py; here what follows from the
    # contract alone. The compute is the PIXEL formula: pgs 1 x obs 1 x it 16 x 3 x 3 = 144 per row, 8 rows.
    # Reads: 2 blocks x 10 columns x 8 bytes for each of 10 loaded rows (3 for row 0, 1 for rows 1-7, except
    # row 7's padding row), the 64-byte bias table, the weights once (144 steps x 32 bits = 72 beats of 8 bytes).
    c = instruction_cost(_conv(), CFG, 8.0)
    assert (c.compute_cycles, c.read_bytes, c.write_bytes, c.macs) == (1152, 10 * 2 * 10 * 8 + 64 + 72 * 8, 512,
                                                                       73728)
    assert c.stall_cycles == c.cycles - c.compute_cycles > 0


def test_rtl_conv_cost_without_prefetch_or_double_buffer_is_higher():
    # the same layer on 512 bytes of line buffer (3 row slots: no prefetch) and one accumulator entry (the PE
    # array waits for the store): every later row's load and the previous row's store are on the critical path
    cfg = AccelConfig(strip_width=8, line_buffer_bytes=512, acc_buffer_words=64)
    fast, slow = instruction_cost(_conv(), CFG, 8.0), instruction_cost(_conv(), cfg, 8.0)
    assert (slow.compute_cycles, slow.read_bytes) == (fast.compute_cycles, fast.read_bytes)
    # rows 1-7 each wait at least for their kernel row's 2 blocks of 1 + 10 columns
    assert slow.cycles - fast.cycles >= 7 * 2 * 11


def test_several_input_tiles_reload_every_kernel_row():
    # ic_tile 8 < in_c 16: two input tiles share the line buffer, so every output row loads all 3 kernel rows
    # (1 block each) and both tiles' weights (8 x 9 steps of 32 bits: 36 beats of 8 bytes), + the table
    two = dataclasses.replace(_conv(), ic_tile=8)
    c = instruction_cost(two, CFG, 8.0)
    assert c.read_bytes == 8 * 2 * 3 * 10 * 8 + 8 * 2 * 36 * 8 + 64


def test_rtl_add_cost_counts_and_the_ddr_bound():
    add = Instruction(Opcode.ADD, in_h=8, in_w=8, in_c=16, out_h=8, out_w=8, out_c=16)
    fast = instruction_cost(add, CFG, 16.0)
    assert (fast.compute_cycles, fast.read_bytes, fast.write_bytes, fast.macs) == (128, 2048, 1024, 0)
    # 16 segments (8 rows x 2 blocks), each at least its 8 columns loaded and its 8 beats issued
    assert fast.cycles > 16 * (8 + 8)
    # with 4 bytes per cycle in all, the 3072 bytes read and written take 768 cycles: the DDR bounds it
    assert instruction_cost(add, CFG, 4.0) == InstrCost(768, 128, 640, 2048, 1024, 0)


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


def test_dataflow_choice_follows_the_shape(tmp_path):
    # the PYNQ-Z2 without input-channel lanes (with pe_ic >= pe_px, PIXEL is never slower than INPUT_CHANNEL)
    board = json.loads((Path(__file__).parents[1] / "boards" / "pynq-z2.json").read_text())
    board["name"] = "pynq-z2-no-lanes"
    board["accel"].update(pe_oc=8, pe_px=8, pe_ic=1, dsp_lanes=0)
    path = tmp_path / "pynq-z2-no-lanes.json"
    path.write_text(json.dumps(board))
    b = QdqBuilder((3, 64, 64), seed=0)
    wide = b.conv(b.x, 16, 3, act="relu")  # 3 input channels, wide map: pixel-parallel
    narrow = QdqBuilder((256, 2, 2), seed=0)
    deep = narrow.conv(narrow.x, 64, 1, act="relu")  # many input channels, tiny map: input-channel-parallel
    b.output(wide)
    narrow.output(deep)
    r1 = compile_model(b.model(), str(path))
    r2 = compile_model(narrow.model(), str(path))
    (c1,), (c2,) = r1.graph.fabric_ops(), r2.graph.fabric_ops()
    assert c1.dataflow is Dataflow.PIXEL and c1.options[Dataflow.PIXEL] > c1.options[Dataflow.INPUT_CHANNEL]
    assert c2.dataflow is Dataflow.INPUT_CHANNEL
    assert c2.options[Dataflow.INPUT_CHANNEL] > 1.5 * c2.options[Dataflow.PIXEL]


def test_board_read_latency_adds_to_every_serial_read():
    # a memory 40 instead of 2 cycles from read command to first beat: the instruction fetch, the bias table,
    # the one weight run and the write response at FINISH each wait 38 cycles more, one after the other; row
    # 0's first read inside the tensor waits too (the later rows' loads hide behind the compute)
    slow = instruction_cost(_conv(), CFG, 8.0, read_latency=40)
    assert slow.cycles - instruction_cost(_conv(), CFG, 8.0).cycles > 38 * 4
