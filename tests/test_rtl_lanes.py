"""PEs with input-channel lanes (``pe_ic``): the PIXEL dataflow sums pe_ic input channels per PE per cycle.

One Verilator build of the small config with 4 lanes per PE: random programs of every layer kind against the
golden model (whole arena), and the performance model's cycles against the RTL's on PIXEL convolutions whose
input channels fill the lanes, leave some empty, or come in two input tiles.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import LAYER_KINDS, SMALL, assert_bit_exact, conv_3x3, random_program  # noqa: E402

from shiftpu.arch.isa import Dataflow, encode_program  # noqa: E402
from shiftpu.arch.numerics import NEGATIVE_ZERO_CODE, SHIFT4_VALUES, WeightCode, decode_weights  # noqa: E402
from shiftpu.compiler.perf import Schedule, instruction_cost  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, cases  # noqa: E402

pytestmark = pytest.mark.rtl

#: The small config with 4 input-channel lanes per PE (64 MACs per cycle on a 4x4 array), one of them a DSP
#: multiplier.
LANES = SMALL.with_(pe_ic=4, dsp_lanes=1)
#: Bytes per cycle of the simulated memory: a read and a write beat per cycle.
SIM_BANDWIDTH = 2 * LANES.axi_bytes


@pytest.fixture(scope="module")
def rtl():
    return RtlAccelerator(LANES)


@pytest.mark.parametrize("seed", range(6))
def test_random_programs_are_bit_exact(rtl, seed):
    kinds = [LAYER_KINDS[(seed + k) % len(LAYER_KINDS)] for k in range(4)] + ["conv"]
    assert_bit_exact(rtl, random_program(LANES, seed, kinds, max_hw=12, max_c=20))




CASES = {
    "lanes-full": lambda: conv_3x3(),
    "lanes-partly-empty": lambda: conv_3x3(in_c=6, ic_tile=6),
    "two-input-tiles": lambda: conv_3x3(ic_tile=8),
    "pointwise": lambda: conv_3x3(kh=1, kw=1, pad_t=0, pad_l=0, pad_b=0, pad_r=0, in_c=20, ic_tile=20, out_c=12,
                               oc_tile=12),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pixel_conv_cycles_as_modelled(rtl, name):
    empty = np.frombuffer(encode_program([], LANES.config_hash()), dtype=np.uint8)
    overhead = rtl.run_program(empty, np.zeros(64, np.uint8)).cycles
    b = cases.ProgramBuilder(LANES)
    instr = cases.add_conv(b, np.random.default_rng(7), CASES[name]())
    measured = assert_bit_exact(rtl, b.image()).cycles - overhead
    modelled = instruction_cost(instr, LANES, SIM_BANDWIDTH, Schedule.RTL).cycles
    print(f"{name}: measured {measured} cycles (RTL), modelled {modelled}")
    assert abs(modelled - measured) <= 0.02 * measured


def test_lanes_divide_the_pixel_compute():
    """The PIXEL dataflow's compute cycles shrink by pe_ic; the others do not use the lanes."""
    one = SMALL
    conv = conv_3x3()
    for dataflow, ratio in ((Dataflow.PIXEL, 4), (Dataflow.INPUT_CHANNEL, 1)):
        i = dataclasses.replace(conv, dataflow=dataflow)
        a = instruction_cost(i, one, SIM_BANDWIDTH, Schedule.RTL).compute_cycles
        b = instruction_cost(i, LANES, SIM_BANDWIDTH, Schedule.RTL).compute_cycles
        assert a == ratio * b


@pytest.mark.parametrize("weight_code", list(WeightCode))
def test_dsp_lane_multiplicand_is_the_codes_value(weight_code):
    """The DSP lanes multiply by the code's value, decoded bit by bit (no negation): every legal code."""
    from amaranth import Module, Signal, signed
    from amaranth.sim import Simulator

    from shiftpu.hw.pe import code_value

    m = Module()
    code, value = Signal(weight_code.bits), Signal(signed(10))
    m.d.comb += value.eq(code_value(code, weight_code))
    legal = [c for c in range(1 << weight_code.bits)
             if all((c >> (4 * t)) & 15 != NEGATIVE_ZERO_CODE for t in range(weight_code.bits // 4))]
    got = {}

    async def bench(ctx):
        for c in legal:
            ctx.set(code, c)
            got[c] = ctx.get(value)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = decode_weights(np.array(legal, dtype=np.uint8), weight_code) if weight_code is WeightCode.SHIFT4 else [
        int(SHIFT4_VALUES[c & 15]) + int(SHIFT4_VALUES[c >> 4]) for c in legal]
    assert [got[c] for c in legal] == [int(v) for v in want]
