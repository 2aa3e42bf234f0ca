"""CTRL.SOFT_RESET in the device models and the driver: the register model implements the bit as the RTL does, the
driver recovers from a hang with it on every simulated backend (a clear message, no partial output, the next frame
right), and falls back to the device's own reset where the bit does nothing (a bitstream older than it)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from qdq_graphs import compile_one_conv
from test_cli_bad_input import listing, one_error, shiftpu
from test_sw_driver import ARENA, CFG, C, H, W, arena_with, halve_program, read_out

from shiftpu.arch.regmap import OFFSET, Ctrl, Irq, Status
from shiftpu.boards import load_board
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.regmodel import RegisterModel
from shiftpu.sw.device import HostMemory, SimDevice
from shiftpu.sw.driver import SOFT_RESET_DONE, SOFT_RESET_TIMEOUT_S, AcceleratorTimeout, Driver, DriverAccelerator

BOARD = load_board("pynq-z2")
X = np.full((C, H, W), 9, dtype=np.int8)  # 9 / 2 = 4.5: every output 4 (half to even)
BUSY, DONE, ABORTED = 1 << Status.BUSY, 1 << Status.DONE, 1 << Status.ABORTED


class HangsOnce(GoldenAccelerator):
    """The golden model; its next run writes a partial output into its copy of the arena and hangs until cut off."""

    def __init__(self, config):
        super().__init__(config)
        self.hang_next = False
        self.release = threading.Event()

    def run_program(self, const, act):
        if self.hang_next:
            self.hang_next = False
            act[len(act) // 2:] = 0x5A  # half an output
            self.release.wait()
            raise RuntimeError("cut off")
        return super().run_program(const, act)


def _started_model() -> tuple[RegisterModel, threading.Event]:
    done = threading.Event()
    mem = HostMemory()
    model = RegisterModel(GoldenAccelerator(CFG), mem, on_finish=done.set)
    const, act = mem.allocate(4096), mem.allocate(ARENA)
    const.array[: halve_program().size] = halve_program()
    act.array[:] = arena_with(X)
    model.write(OFFSET["CONST_BASE"], const.physical_address)
    model.write(OFFSET["ACT_BASE"], act.physical_address)
    model.write(OFFSET["IRQ_ENABLE"], 1 << Irq.DONE)
    return model, done


def test_register_model_soft_reset_contract():
    model, done = _started_model()
    bases = (model.read(OFFSET["CONST_BASE"]), model.read(OFFSET["ACT_BASE"]))
    model.hang_next_run = True
    model.write(OFFSET["CTRL"], 1 << Ctrl.START)
    assert model.read(OFFSET["STATUS"]) == BUSY
    model.write(OFFSET["CTRL"], 1 << Ctrl.SOFT_RESET)
    assert model.read(OFFSET["STATUS"]) == ABORTED  # idle again at once: the model has nothing to drain
    assert (model.read(OFFSET["ERROR_CODE"]), model.read(OFFSET["PC"]), model.read(OFFSET["CTRL"])) == (0, 0, 0)
    assert (model.read(OFFSET["CONST_BASE"]), model.read(OFFSET["ACT_BASE"])) == bases
    assert model.read(OFFSET["IRQ_ENABLE"]) == 1 << Irq.DONE and not model.irq  # no interrupt for a reset
    model.write(OFFSET["CTRL"], 1 << Ctrl.START | 1 << Ctrl.SOFT_RESET)  # START with it is ignored
    assert not done.wait(0.1) and model.read(OFFSET["STATUS"]) == ABORTED
    model.write(OFFSET["CTRL"], 1 << Ctrl.START)  # a run after the reset: ABORTED cleared, DONE at its end
    assert done.wait(10)
    assert model.read(OFFSET["STATUS"]) == DONE and model.read(OFFSET["INSTR_RETIRED"]) == 2
    model.write(OFFSET["CTRL"], 1 << Ctrl.SOFT_RESET)  # while idle: only ABORTED
    assert model.read(OFFSET["STATUS"]) == ABORTED and model.read(OFFSET["INSTR_RETIRED"]) == 2


def _pynq_sim(tmp_path: Path, backend_factory):
    pytest.importorskip("pynq")
    from shiftpu.sw.device_pynq import PynqDevice
    from shiftpu.sw.pynq_sim import simulated_device, write_sim_overlay

    bit = write_sim_overlay(tmp_path, BOARD, CFG)
    device = PynqDevice(bit, pynq_device=simulated_device(backend_factory), name="pynq-sim")
    return device, device.overlay.device.model


@pytest.mark.parametrize("backend", ["golden", "pynq-sim"])
def test_a_hang_is_recovered_by_the_soft_reset_and_the_next_frame_is_right(backend, tmp_path):
    faulty = HangsOnce(CFG)
    if backend == "golden":
        device = SimDevice(faulty)
        registers = device.model
    else:
        device, registers = _pynq_sim(tmp_path, lambda config: faulty)
    hard_resets = []
    reset = device.reset
    device.reset = lambda: hard_resets.append(1) or reset()
    accel = DriverAccelerator(Driver(device, timeout_s=0.3), CFG, BOARD)
    arena = accel.arena(ARENA)
    arena[:] = arena_with(X)
    before = arena.copy()
    faulty.hang_next = True
    with pytest.raises(AcceleratorTimeout) as e:
        accel.run_program(halve_program(), arena)
    message = str(e.value)
    assert message.startswith("accelerator did not finish within 0.3 s (the limit given (--timeout)); registers "
                              "STATUS=0x1, ERROR_CODE=0x0, PC=0x0, INSTR_RETIRED=0x0, CYCLES_LO=0x0; ")
    assert message.endswith(f"; the device was reset ({SOFT_RESET_DONE}) and the driver's buffers freed")
    assert e.value.registers["STATUS"] == BUSY
    assert device.read_register(OFFSET["STATUS"]) == ABORTED
    assert not hard_resets and (device.model if backend == "golden" else device.overlay.device.model) is registers
    assert np.array_equal(arena, before)  # the half-written output of the cut-off run never reached the arena
    faulty.release.set()  # the cut-off run ends; it must not write or set a register afterwards
    registers._worker.join(10)
    assert np.array_equal(arena, before) and device.read_register(OFFSET["STATUS"]) == ABORTED
    accel.run_program(halve_program(), arena)  # the next frame, in place
    assert np.all(read_out(arena) == 4)
    assert device.read_register(OFFSET["STATUS"]) == DONE
    staged = arena_with(np.full((C, H, W), -3, dtype=np.int8))
    accel.run_program(halve_program(), staged)  # and one through the re-allocated staging arenas
    assert np.all(read_out(staged) == -2)  # -1.5 rounds to even


def test_a_device_without_the_bit_falls_back_to_its_own_reset():
    class OlderBitstream(SimDevice):
        """An accelerator built before CTRL.SOFT_RESET: the bit is not decoded."""

        def write_register(self, offset: int, value: int) -> None:
            if offset == OFFSET["CTRL"]:
                value &= ~(1 << Ctrl.SOFT_RESET)
            super().write_register(offset, value)

    device = OlderBitstream(GoldenAccelerator(CFG))
    accel = DriverAccelerator(Driver(device, timeout_s=0.2), CFG, BOARD)
    device.model.hang_next_run = True
    with pytest.raises(AcceleratorTimeout) as e:
        accel.run_program(halve_program(), arena_with(X))
    assert str(e.value).endswith(f"; the device was reset (CTRL.SOFT_RESET left STATUS at 0x1 after "
                                 f"{SOFT_RESET_TIMEOUT_S:g} s, so the device's own reset: register model back to its "
                                 "power-on state) and the driver's buffers freed")
    act = arena_with(X)
    accel.run_program(halve_program(), act)
    assert np.all(read_out(act) == 4)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return compile_one_conv(tmp_path_factory.mktemp("soft_reset"))


@pytest.mark.parametrize("backend", ["golden", "pynq-sim"])
def test_run_recovers_from_a_hang_with_no_partial_output(backend, compiled, tmp_path, monkeypatch, capsys):
    """`shiftpu run`: the first run hangs after writing half its output; the command fails with one line naming the
    soft reset and leaves no output file (nor a hidden partial one); the next run writes the right output."""
    if backend == "pynq-sim":
        pytest.importorskip("pynq")
    out, x = compiled
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "-o", tmp_path / "reference.npy")
    assert rc == 0, err
    reference = np.load(tmp_path / "reference.npy")
    (tmp_path / "reference.npy").unlink()
    release = threading.Event()
    original = GoldenAccelerator.run_program
    calls = []

    def hang_first(self, const, act):
        calls.append(1)
        if len(calls) == 1:
            act[len(act) // 2:] = 0x5A
            release.wait()
            raise RuntimeError("cut off")
        return original(self, const, act)

    monkeypatch.setattr(GoldenAccelerator, "run_program", hang_first)
    try:
        rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "--backend", backend, "--timeout", "0.3",
                             "-o", tmp_path / "y.npy")
        line = one_error(rc, err)
        assert line.startswith("error: accelerator did not finish within 0.3 s (the limit given (--timeout)); "
                               "registers STATUS=0x1, ERROR_CODE=0x0, PC=0x0, ")
        assert line.endswith(f"the device was reset ({SOFT_RESET_DONE}) and the driver's buffers freed")
        assert listing(tmp_path) == []
        rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "--backend", backend, "--timeout", "60",
                             "-o", tmp_path / "y.npy")
        assert rc == 0, err
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), reference)
    finally:
        release.set()
