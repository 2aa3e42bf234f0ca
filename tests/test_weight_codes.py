"""An illegal weight code is refused on every backend with the golden model's error, before anything runs.

The runtime checks the weights of every CONV when a program goes to a backend that does not run the golden
model: the RTL simulation (before Verilator starts) and the driver (when it uploads a program, for the board and
the simulated devices), so that nothing runs. The RTL checks them too, as they stream in (a code spoiled in memory
after the upload): the instruction fails with the same error at the same instruction.
"""

from __future__ import annotations

import numpy as np
import pytest

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTR_BYTES, Instruction, Opcode
from shiftpu.arch.numerics import NEGATIVE_ZERO_CODE
from shiftpu.arch.regmap import ErrorCode
from shiftpu.sim.accelerator import AcceleratorError, RunStats
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.rtl import RtlAccelerator, cases
from shiftpu.sw.device import SimDevice
from shiftpu.sw.driver import Driver, DriverAccelerator

CFG = AccelConfig(pe_oc=4, pe_px=4, strip_width=16, line_buffer_bytes=8192, weight_buffer_bytes=4096,
                  acc_buffer_words=512)
MESSAGE = "accelerator error BAD_FIELD at instruction 1: weights: illegal shift code 0b1000 (negative zero)"


class LenientAccelerator:
    """A backend that runs anything, as the RTL does with an illegal code: it reports success."""

    name = "lenient"

    def __init__(self, config: AccelConfig):
        self.config = config
        self.runs = 0

    def run_program(self, const: np.ndarray, act: np.ndarray) -> RunStats:
        self.runs += 1
        return RunStats(backend=self.name, instructions=3)


def program(seed: int = 3) -> cases.ProgramImage:
    """Two convolutions (seed printed); the second one's weights are the ones spoiled."""
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    b = cases.ProgramBuilder(CFG)
    cases.add_random_conv(b, rng)
    cases.add_random_conv(b, rng)
    return b.image()


def with_illegal_code(const: np.ndarray, pc: int) -> np.ndarray:
    """``const`` with the first weight code of instruction ``pc`` set to the illegal code."""
    instr = Instruction.decode(const[INSTR_BYTES * (pc + 1): INSTR_BYTES * (pc + 2)].tobytes())
    assert instr.opcode is Opcode.CONV
    bad = const.copy()
    bad[instr.w_addr] = (bad[instr.w_addr] & 0xF0) | NEGATIVE_ZERO_CODE
    return bad


def _error(backend, const: np.ndarray, arena: np.ndarray) -> AcceleratorError:
    with pytest.raises(AcceleratorError) as e:
        backend.run_program(const, arena.copy())
    return e.value


def test_the_golden_model_refuses_an_illegal_code():
    image = program()
    e = _error(GoldenAccelerator(CFG), with_illegal_code(image.const, 1), image.act)
    assert (e.code, e.pc, str(e)) == (ErrorCode.BAD_FIELD, 1, MESSAGE)


def test_the_rtl_simulation_refuses_it_before_it_starts(monkeypatch):
    def simulate(self, const, act):
        raise AssertionError("the simulation was started")

    monkeypatch.setattr(RtlAccelerator, "run_raw", simulate)
    image = program()
    e = _error(RtlAccelerator(CFG), with_illegal_code(image.const, 1), image.act)
    assert (e.code, e.pc, str(e)) == (ErrorCode.BAD_FIELD, 1, MESSAGE)


@pytest.mark.rtl
@pytest.mark.parametrize("pc", [0, 1])
def test_the_rtl_itself_fails_the_instruction_with_the_code(pc):
    """Past the software check (a weight spoiled in memory after the upload), the CONV engine finds the code as
    the weights stream in and fails the instruction with the golden model's error at its instruction."""
    from shiftpu.arch.regmap import Status

    image = program()
    rtl = RtlAccelerator(CFG)
    result = rtl.run_raw(with_illegal_code(image.const, pc), image.act.copy())
    assert result["STATUS"] >> Status.ERROR & 1
    assert (ErrorCode(result["ERROR_CODE"]), result["PC"]) == (ErrorCode.BAD_FIELD, pc)
    assert rtl.run_raw(image.const, image.act.copy())["STATUS"] >> Status.ERROR & 1 == 0


def test_the_driver_refuses_it_when_it_loads_the_program():
    image = program()
    lenient = LenientAccelerator(CFG)
    accel = DriverAccelerator(Driver(SimDevice(lenient)), CFG)
    assert accel.run_program(image.const, image.act.copy()).instructions == 3  # the legal program runs
    e = _error(accel, with_illegal_code(image.const, 1), image.act)
    assert (e.code, e.pc, str(e)) == (ErrorCode.BAD_FIELD, 1, MESSAGE)
    assert lenient.runs == 1


def test_what_the_hardware_refuses_itself_is_left_to_it():
    """A program the accelerator stops earlier (here: an illegal opcode at instruction 0) passes the check, so the
    backend reports its own error at its own instruction, as the golden model would."""
    image = program()
    const = with_illegal_code(image.const, 1)
    const[INSTR_BYTES] = (const[INSTR_BYTES] & 0xF0) | 0x0F
    GoldenAccelerator(CFG).check_weight_codes(const)
    e = _error(GoldenAccelerator(CFG), const, image.act)
    assert (e.code, e.pc) == (ErrorCode.ILLEGAL_OPCODE, 0)
    GoldenAccelerator(CFG).check_weight_codes(image.const)
