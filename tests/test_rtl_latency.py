"""The RTL under a board-like DDR read latency: the compiled RAM delays every read burst by X cycles.

A board's DDR answers a read some 200 ns after its address (40-50 accelerator cycles); the performance
model charges that latency for the board estimates. Here the same programs run with X = 0 and X = 50 extra
cycles of read latency: results stay bit-exact, and the cycles measured follow the model evaluated at the
RAM's latency (``BASE_READ_LATENCY + X``), so the board estimates rest on a measured treatment of latency.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL, assert_bit_exact, square_conv  # noqa: E402

from shiftpu.arch.isa import Dataflow, Opcode, encode_program  # noqa: E402
from shiftpu.compiler.perf import Schedule, instruction_cost  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, SimMemory, cases  # noqa: E402
from shiftpu.sim.rtl.sim_ram import BASE_READ_LATENCY  # noqa: E402

pytestmark = pytest.mark.rtl

EXTRA = 50
TOLERANCE = 0.05


CASES = {
    "conv3x3": lambda b, rng: cases.add_conv(b, rng, square_conv(3, 1, 1, 8, 12, 20, 8, 16, 8, 8)),
    "conv3x3-s2-tiles": lambda b, rng: cases.add_conv(b, rng, square_conv(3, 2, 1, 20, 11, 23, 12, 16, 8, 12)),
    "depthwise": lambda b, rng: cases.add_conv(b, rng, square_conv(3, 1, 1, 16, 10, 20, 16, 16, 8, 8,
                                                             Dataflow.DEPTHWISE)),
    "pool": lambda b, rng: cases.add_random_eltwise(b, rng, Opcode.POOL, max_hw=16, max_c=24),
    "add": lambda b, rng: cases.add_random_eltwise(b, rng, Opcode.ADD, max_hw=16, max_c=24),
}


def _measure(extra: int, image) -> int:
    rtl = RtlAccelerator(SMALL, memory=SimMemory.COMPILED, extra_read_latency=extra)
    empty = np.frombuffer(encode_program([], SMALL.config_hash()), dtype=np.uint8)
    base = rtl.run_program(empty, np.zeros(64, np.uint8)).cycles
    return assert_bit_exact(rtl, image).cycles - base


@pytest.mark.parametrize("name", list(CASES))
def test_read_latency_measured_as_modelled(name):
    b = cases.ProgramBuilder(SMALL)
    instr = CASES[name](b, np.random.default_rng(7))
    image = b.image()
    fast, slow = _measure(0, image), _measure(EXTRA, image)

    def model(lr: int) -> int:
        # the simulated DDR moves a read and a write beat per cycle
        return instruction_cost(instr, SMALL, 2 * SMALL.axi_bytes, Schedule.RTL, read_latency=lr).cycles

    m_fast, m_slow = model(BASE_READ_LATENCY), model(BASE_READ_LATENCY + EXTRA)
    print(f"{name}: measured {fast} -> {slow} cycles (RTL, +{EXTRA} cycles read latency), "
          f"modelled {m_fast} -> {m_slow} (estimate)")
    assert slow > fast, "the extra read latency had no effect"
    assert abs(m_slow - slow) <= TOLERANCE * slow
    assert abs((m_slow - m_fast) - (slow - fast)) <= 0.1 * (slow - fast)


def test_extra_latency_needs_the_compiled_ram():
    with pytest.raises(ValueError, match="compiled RAM"):
        RtlAccelerator(SMALL, extra_read_latency=10)
    with pytest.raises(ValueError, match="whole number"):
        RtlAccelerator(SMALL, memory=SimMemory.COMPILED, extra_read_latency=-1)
