"""The performance model's cycles against the RTL's, on the cases the model's docs walk through by hand.

The model counts the pipeline depths of ``shiftpu/arch/latency.py``; these cases hold its cycle counts to
the Verilator simulation of the generated RTL (4x4 config, the simulated memory moving a read and a write
beat per cycle), so a change of the RTL's timing that the model does not follow fails here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL, assert_bit_exact, conv_3x3  # noqa: E402

from shiftpu.arch.isa import Dataflow, Instruction, Opcode, encode_program  # noqa: E402
from shiftpu.compiler.perf import Schedule, instruction_cost, program_overhead  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, cases  # noqa: E402

pytestmark = pytest.mark.rtl

#: Largest relative difference between the model and the RTL accepted on one instruction.
TOLERANCE = 0.02
#: Bytes per cycle of the simulated memory: a read and a write beat per cycle.
SIM_BANDWIDTH = 2 * SMALL.axi_bytes




CASES = {
    "conv3x3": lambda: conv_3x3(),
    "conv3x3-no-left-pad": lambda: conv_3x3(pad_l=0, pad_r=2),
    "conv3x3-two-input-tiles": lambda: conv_3x3(ic_tile=8),
    "conv3x3-input-channel": lambda: conv_3x3(dataflow=Dataflow.INPUT_CHANNEL),
    "depthwise": lambda: conv_3x3(dataflow=Dataflow.DEPTHWISE, depthwise=1, out_c=16, ic_tile=16, oc_tile=16),
    "add": lambda: Instruction(Opcode.ADD, in_h=8, in_w=8, in_c=16, out_h=8, out_w=8, out_c=16),
    "pool": lambda: Instruction(Opcode.POOL, kh=3, kw=3, stride=2, pad_t=1, pad_l=1, pad_b=1, pad_r=1, in_h=9,
                                in_w=9, in_c=16, out_h=5, out_w=5, out_c=16),
}


def _add_eltwise(b: cases.ProgramBuilder, rng: np.random.Generator, instr: Instruction) -> Instruction:
    """Append the POOL or ADD ``instr`` with random uint8 inputs."""
    def tensor():
        return b.tensor(rng.integers(0, 256, size=(instr.in_c, instr.in_h, instr.in_w), dtype=np.uint8),
                        instr.in_c, instr.in_h, instr.in_w)

    instr = dataclasses.replace(instr, in_addr=tensor(), in2_addr=tensor() if instr.opcode is Opcode.ADD else 0,
                                out_addr=b.tensor(None, instr.out_c, instr.out_h, instr.out_w))
    b.instrs.append(instr)
    return instr


@pytest.fixture(scope="module")
def rtl():
    return RtlAccelerator(SMALL)


def _empty_program_cycles(rtl) -> int:
    empty = np.frombuffer(encode_program([], SMALL.config_hash()), dtype=np.uint8)
    return rtl.run_program(empty, np.zeros(64, np.uint8)).cycles


def test_empty_program_as_modelled(rtl):
    """The header and the END instruction: the model's program overhead and END cost, exactly."""
    modelled = program_overhead(SMALL, SIM_BANDWIDTH) + instruction_cost(Instruction(Opcode.END), SMALL,
                                                                         SIM_BANDWIDTH, Schedule.RTL).cycles
    assert _empty_program_cycles(rtl) == modelled


@pytest.mark.parametrize("name", list(CASES))
def test_instruction_cycles_as_modelled(rtl, name):
    instr = CASES[name]()
    b = cases.ProgramBuilder(SMALL)
    rng = np.random.default_rng(5)
    if instr.opcode is Opcode.CONV:
        instr = cases.add_conv(b, rng, instr)
    else:
        instr = _add_eltwise(b, rng, instr)
    measured = assert_bit_exact(rtl, b.image()).cycles - _empty_program_cycles(rtl)
    modelled = instruction_cost(instr, SMALL, SIM_BANDWIDTH, Schedule.RTL).cycles
    print(f"{name}: measured {measured} cycles (RTL), modelled {modelled}")
    assert abs(modelled - measured) <= TOLERANCE * measured
