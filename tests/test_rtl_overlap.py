"""The CONV engine's overlap modes on the RTL: each one bit-exact against the golden model and timed by the model.

The line-buffer loader prefetches the next row when ``kh + min(stride, kh)`` row slots fit, the store drains a
row from one accumulator half while the next computes into the other when a row fits half the buffer, and a
later input tile waits for the store (shared read port). Each case below is built to take one of these paths
(asserted with the same predicates the RTL implements), so that a regression in one of them shows here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL, assert_bit_exact, square_conv  # noqa: E402

from shiftpu.arch import limits  # noqa: E402
from shiftpu.arch.isa import Dataflow, Instruction, encode_program  # noqa: E402
from shiftpu.arch.layout import ceil_div  # noqa: E402
from shiftpu.compiler.perf import Schedule, instruction_cost  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, cases  # noqa: E402

pytestmark = pytest.mark.rtl


def _modes(i: Instruction) -> tuple[bool, bool]:
    """(prefetch, double-buffered accumulators) of the first strip and output tile."""
    cb = SMALL.channel_block
    sw, ot = min(i.strip_w, i.out_w), min(i.oc_tile, i.out_c)
    it = ot if i.depthwise else min(i.ic_tile, i.in_c)
    cols = (sw - 1) * i.stride + i.kw
    single = i.depthwise or i.ic_tile >= i.in_c
    pf = limits.prefetches_rows(i.kh, i.stride, ceil_div(it, cb), cols, single, SMALL)
    return pf, limits.double_buffers_acc(ceil_div(ot, SMALL.pe_oc), ceil_div(sw, SMALL.pe_px), SMALL)


CASES = {
    # 3x3 s1, one input tile: next rows prefetched, rows alternate accumulator halves
    "prefetch+double": (square_conv(3, 1, 1, 8, 12, 20, 8, 16, 8, 8), (True, True)),
    # 1x1 s2 (kernel shorter than the stride: every row new, two slots alternate)
    "1x1-s2": (square_conv(1, 2, 0, 8, 10, 20, 8, 16, 8, 8), (True, True)),
    # three input tiles: no prefetch; a later tile reads partial sums, so it waits for the store
    "input-tiles": (square_conv(3, 2, 1, 20, 11, 23, 12, 16, 8, 12), (False, True)),
    # 5x5 s2 over 5 channel blocks: 5 row slots fit the line buffer, 7 do not
    "no-prefetch": (square_conv(5, 2, 2, 40, 12, 35, 8, 16, 40, 8), (False, True)),
    # 5 pe_oc blocks x 4 pixel groups = 20 entries > half of 32: the PE array waits for the store
    "single-acc": (square_conv(3, 1, 1, 8, 9, 16, 20, 16, 8, 20), (True, False)),
    # depthwise, two output tiles (each its own channel block in the line buffer)
    "depthwise": (square_conv(3, 1, 1, 16, 10, 20, 16, 16, 8, 8, Dataflow.DEPTHWISE), (True, True)),
}


@pytest.fixture(scope="module")
def rtl():
    return RtlAccelerator(SMALL)


@pytest.fixture(scope="module")
def empty_cycles(rtl) -> int:
    empty = np.frombuffer(encode_program([], SMALL.config_hash()), dtype=np.uint8)
    return rtl.run_program(empty, np.zeros(64, np.uint8)).cycles


@pytest.mark.parametrize("name", list(CASES))
def test_overlap_mode_is_bit_exact_and_timed(rtl, empty_cycles, name):
    template, modes = CASES[name]
    assert _modes(template) == modes, "the case no longer takes the path it is named for"
    b = cases.ProgramBuilder(SMALL)
    instr = cases.add_conv(b, np.random.default_rng(7), template)
    stats = assert_bit_exact(rtl, b.image())
    measured = stats.cycles - empty_cycles
    modelled = instruction_cost(instr, SMALL, ddr_bytes_per_cycle=2 * SMALL.axi_bytes, schedule=Schedule.RTL).cycles
    print(f"{name}: measured {measured} cycles (RTL), modelled {modelled} cycles (estimate)")
    assert abs(modelled - measured) <= 0.05 * measured
