"""The native RTL simulation (clock, AXI4-Lite master and memory in C++) against the cocotb path it replaces.

Both backends run the same Verilator model of the generated RTL; the native one must give the same arena bytes,
the same registers (cycles, stall cycles, beats, retired instructions, status) and so the same cycle counts as the
cocotb testbench with cocotbext-axi's AxiRam and with the compiled RAM (with and without a read latency), on random
multi-layer programs. The performance model is calibrated on the cocotb path's cycles.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL, assert_bit_exact, random_program  # noqa: E402

from shiftpu.arch.isa import Instruction, Opcode, encode_program  # noqa: E402
from shiftpu.arch.regmap import Status  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, SimBackend, SimMemory, cases  # noqa: E402
from shiftpu.sim.rtl.sim_ram import RAM_BYTES  # noqa: E402

pytestmark = pytest.mark.rtl

#: Registers and flags of a run record that the two backends must agree on (the wall time is not one).
RECORD = ("STATUS", "ERROR_CODE", "PC", "INSTR_RETIRED", "CYCLES_LO", "CYCLES_HI", "STALL_LO", "STALL_HI", "RD_BEATS",
          "WR_BEATS", "IRQ_STATUS", "CONFIG_HASH", "ISA_VERSION", "IP_ID", "timeout", "irq_after_ack", "busy",
          "axi_protocol_errors")
#: (memory, extra read latency) of the compiled RAM or AxiRam.
MEMORIES = [(SimMemory.AXI_RAM, 0), (SimMemory.COMPILED, 0), (SimMemory.COMPILED, 23)]


def _run(backend: SimBackend, memory: SimMemory, latency: int, image) -> tuple[dict, np.ndarray]:
    act = image.act.copy()
    record = RtlAccelerator(SMALL, memory=memory, extra_read_latency=latency, backend=backend).run_raw(image.const,
                                                                                                        act)
    return {k: record[k] for k in RECORD}, act


@pytest.mark.parametrize("memory,latency", MEMORIES, ids=["axiram", "compiled", "compiled-latency23"])
@pytest.mark.parametrize("seed,kinds", [(41, ["conv", "pool", "ic", "add", "dw", "move"]),
                                        (42, ["ic", "conv", "move", "dw", "add", "pool", "conv"])])
def test_native_equals_cocotb(seed, kinds, memory, latency):
    image = random_program(SMALL, seed, kinds, max_hw=12, max_c=16)
    native, native_act = _run(SimBackend.NATIVE, memory, latency, image)
    cocotb, cocotb_act = _run(SimBackend.COCOTB, memory, latency, image)
    print(f"{memory.value} +{latency}: native {native['CYCLES_LO']} cycles, cocotb {cocotb['CYCLES_LO']} cycles")
    assert native == cocotb
    diff = np.nonzero(native_act != cocotb_act)[0]
    assert diff.size == 0, f"{diff.size} bytes differ, first at arena offset {diff[0]}"


@pytest.mark.parametrize("field", ["in_addr", "out_addr"])
def test_native_equals_cocotb_on_a_bus_error(field):
    """A tensor beyond the compiled RAM: SLVERR on the read or the write, the run stopped with the AXI error, at the
    same cycle on both backends."""
    move = Instruction(Opcode.MOVE, in_h=2, in_w=2, in_c=3, out_h=2, out_w=2, out_c=3, out_addr=64)
    bad = Instruction(Opcode.MOVE, in_h=2, in_w=2, in_c=3, out_h=2, out_w=2, out_c=3,
                      **({"out_addr": 64} | {field: RAM_BYTES}))
    const = np.frombuffer(encode_program([move, bad], SMALL.config_hash()), dtype=np.uint8)
    image = cases.ProgramImage(const=const, act=np.zeros(256, np.uint8))
    native, native_act = _run(SimBackend.NATIVE, SimMemory.COMPILED, 0, image)
    cocotb, cocotb_act = _run(SimBackend.COCOTB, SimMemory.COMPILED, 0, image)
    assert native["STATUS"] >> Status.ERROR & 1 and native["PC"] == 1
    assert native == cocotb and np.array_equal(native_act, cocotb_act)


def test_one_library_serves_runs_in_any_order():
    """Every run starts from a fresh model in the loaded library: a program gives the same registers and bytes before
    and after another program, on either memory."""
    first = random_program(SMALL, 43, ["conv", "add"])
    second = random_program(SMALL, 44, ["dw", "pool", "ic"])
    for memory in (SimMemory.AXI_RAM, SimMemory.COMPILED):
        before, act_before = _run(SimBackend.NATIVE, memory, 0, first)
        _run(SimBackend.NATIVE, memory, 0, second)
        after, act_after = _run(SimBackend.NATIVE, memory, 0, first)
        assert before["STATUS"] == 2 and before["CYCLES_LO"] > 0
        assert before == after and np.array_equal(act_before, act_after)


def test_native_is_bit_exact_with_the_golden_model():
    stats = assert_bit_exact(RtlAccelerator(SMALL), random_program(SMALL, 45, ["conv", "ic", "dw", "pool", "move"]))
    assert stats.cycles > 0
