"""Shared helpers of the RTL tests: the small test config and golden-vs-RTL comparison of programs."""

from __future__ import annotations

import dataclasses

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.rtl import cases

#: The config the fast RTL tests build (one Verilator build, about a minute).
SMALL = AccelConfig(pe_oc=4, pe_px=4, strip_width=16, line_buffer_bytes=8192, weight_buffer_bytes=4096,
                    acc_buffer_words=512)

LAYER_KINDS = ("conv", "dw", "pool", "ic", "add", "move")
_DATAFLOWS = {"conv": Dataflow.PIXEL, "dw": Dataflow.DEPTHWISE, "ic": Dataflow.INPUT_CHANNEL}


def square_conv(kh: int, stride: int, pad: int, in_c: int, in_h: int, in_w: int, out_c: int, strip_w: int,
                ic_tile: int, oc_tile: int, dataflow: Dataflow = Dataflow.PIXEL) -> Instruction:
    """A CONV with a square kernel and the same padding on every side (signed 8-bit in and out)."""
    out_h = (in_h + 2 * pad - kh) // stride + 1
    out_w = (in_w + 2 * pad - kh) // stride + 1
    return Instruction(Opcode.CONV, dataflow=dataflow, kh=kh, kw=kh, stride=stride, pad_t=pad, pad_l=pad, pad_b=pad,
                       pad_r=pad, in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c,
                       strip_w=strip_w, ic_tile=ic_tile, oc_tile=oc_tile, in_signed=True, out_bits=8,
                       depthwise=dataflow is Dataflow.DEPTHWISE)


def conv_3x3(**changes) -> Instruction:
    """A padded 3x3 PIXEL CONV, 16 -> 8 channels on 8x8 (one strip, one output tile, one input tile), with
    ``changes``: the base case of the cycle-model tests."""
    base = Instruction(Opcode.CONV, dataflow=Dataflow.PIXEL, kh=3, kw=3, pad_t=1, pad_l=1, pad_b=1, pad_r=1,
                       in_h=8, in_w=8, in_c=16, out_h=8, out_w=8, out_c=8, strip_w=8, ic_tile=16, oc_tile=8)
    return dataclasses.replace(base, **changes)


def random_program(cfg: AccelConfig, seed: int, kinds, max_hw: int = 10, max_c: int = 12) -> cases.ProgramImage:
    """A program with one random layer per entry of ``kinds``."""
    print(f"seed {seed}: {','.join(kinds)}")
    rng = np.random.default_rng(seed)
    b = cases.ProgramBuilder(cfg)
    for kind in kinds:
        if kind in _DATAFLOWS:
            cases.add_random_conv(b, rng, dataflow=_DATAFLOWS[kind], max_hw=max_hw, max_c=max_c)
        else:
            cases.add_random_eltwise(b, rng, Opcode[kind.upper()], max_hw=max_hw, max_c=max_c)
    return b.image()


def assert_bit_exact(rtl, image: cases.ProgramImage):
    """Run on the golden model and on ``rtl``; the whole arena must agree. Returns the RTL's RunStats."""
    golden_act = image.act.copy()
    golden = GoldenAccelerator(rtl.config).run_program(image.const, golden_act)
    rtl_act = image.act.copy()
    stats = rtl.run_program(image.const, rtl_act)
    diff = np.nonzero(golden_act != rtl_act)[0]
    assert diff.size == 0, f"{diff.size} bytes differ, first at arena offset {diff[0]}"
    assert stats.instructions == golden.instructions
    run = rtl.last_run
    print(f"measured: {stats.cycles} cycles, {stats.stall_cycles} stall cycles, "
          f"{run.cycles_per_second:.0f} simulated cycles/s (wall {run.wall_seconds:.2f} s)")
    return stats
