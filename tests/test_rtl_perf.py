"""The performance model (compiler.perf, rtl schedule) against cycles measured on the RTL.

Each layer runs as its own program; its measured cost is the program's CYCLES minus those of the
empty program (header + END), so it includes the layer's fetch and decode as the model does.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL  # noqa: E402

from shiftpu.arch.isa import Dataflow, Opcode, encode_program  # noqa: E402
from shiftpu.compiler.perf import Schedule, instruction_cost  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, cases  # noqa: E402

pytestmark = pytest.mark.rtl

#: Agreement required between modelled and measured cycles.
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def rtl():
    return RtlAccelerator(SMALL)


@pytest.fixture(scope="module")
def empty_cycles(rtl) -> int:
    """Measured cycles of the program without layers (header and END)."""
    empty = np.frombuffer(encode_program([], SMALL.config_hash()), dtype=np.uint8)
    return rtl.run_program(empty, np.zeros(64, np.uint8)).cycles


LAYERS = [("conv", Dataflow.PIXEL), ("conv", Dataflow.INPUT_CHANNEL), ("conv", Dataflow.DEPTHWISE),
          ("pool", None), ("add", None), ("move", None)]


@pytest.mark.parametrize("seed", [31])
@pytest.mark.parametrize("kind,dataflow", LAYERS)
def test_model_within_5_percent_of_rtl(rtl, empty_cycles, seed, kind, dataflow):
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    b = cases.ProgramBuilder(SMALL)
    if kind == "conv":
        instr = cases.add_random_conv(b, rng, dataflow=dataflow, max_hw=16, max_c=24)
    else:
        instr = cases.add_random_eltwise(b, rng, Opcode[kind.upper()], max_hw=16, max_c=24)
    image = b.image()
    measured = rtl.run_program(image.const, image.act.copy()).cycles - empty_cycles
    modelled = instruction_cost(instr, SMALL, ddr_bytes_per_cycle=2 * SMALL.axi_bytes, schedule=Schedule.RTL).cycles
    print(f"{kind} {dataflow}: measured {measured} cycles (RTL), modelled {modelled} cycles (estimate), "
          f"{instr}")
    assert abs(modelled - measured) <= TOLERANCE * measured


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40, 52))
@pytest.mark.parametrize("kind,dataflow", LAYERS)
def test_model_within_5_percent_of_rtl_regression(rtl, empty_cycles, seed, kind, dataflow):
    test_model_within_5_percent_of_rtl(rtl, empty_cycles, seed, kind, dataflow)
