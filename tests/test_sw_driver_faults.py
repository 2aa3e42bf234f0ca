"""What the driver detects of a faulty run and how it recovers: the watchdog's limit (from the performance model on a
clocked device), a spurious interrupt, DONE before the last instruction, writes outside the program or the arena,
a run cut off by the reset that never writes afterwards; each leaves the next run working."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_sw_driver import ARENA, CFG, C, H, W, arena_with, halve_program, read_out

from shiftpu.arch.isa import decode_program
from shiftpu.arch.regmap import OFFSET, Irq
from shiftpu.boards import load_board
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sw.device import SimDevice
from shiftpu.sw.driver import (
    GUARD_BYTES,
    SOFT_RESET_DONE,
    AcceleratorTimeout,
    Driver,
    DriverAccelerator,
    IncompleteRun,
    OutOfBoundsWrite,
)
from shiftpu.sw.watchdog import DEFAULT_TIMEOUT_S, WATCHDOG_FLOOR_S, WATCHDOG_MARGIN, Watchdog, program_cycles

BOARD = load_board("pynq-z2")
X = np.full((C, H, W), 9, dtype=np.int8)  # 9 / 2 = 4.5: every output 4 (half to even)


class Faulty(GoldenAccelerator):
    """The golden model, misbehaving once in the way ``next_fault`` says."""

    def __init__(self, config):
        super().__init__(config)
        self.next_fault: str | None = None
        self.release = threading.Event()
        self.late_write_done = threading.Event()

    def run_program(self, const, act):
        fault, self.next_fault = self.next_fault, None
        if fault == "hang_then_write":  # hangs; once released, writes garbage and reports DONE
            self.release.wait()
            act[:] = 0x77
            stats = super().run_program(const, act.copy())
            self.late_write_done.set()
            return stats
        if fault == "slow":  # finishes once released
            self.release.wait()
        stats = super().run_program(const, act)
        if fault == "early_done":
            return type(stats)(backend=stats.backend, instructions=stats.instructions - 1)
        if fault == "past_arena":
            act[ARENA + 3] ^= 0xFF  # the segment runs on into the arena's end guard
        if fault == "past_program":
            const[-1] ^= 0xFF  # the last guard byte after the program
        return stats


def _accel(device: SimDevice, **driver_kwargs) -> DriverAccelerator:
    return DriverAccelerator(Driver(device, **driver_kwargs), CFG, BOARD)


def _run_ok(accel: DriverAccelerator, act: np.ndarray | None = None) -> np.ndarray:
    act = arena_with(X) if act is None else act
    accel.run_program(halve_program(), act)
    assert np.all(read_out(act) == 4)
    return act


def test_watchdog_limits():
    assert Watchdog(fixed_s=0.2).limit(10**9, 200e6).seconds == 0.2
    assert Watchdog().limit(None, 200e6).seconds == DEFAULT_TIMEOUT_S
    assert Watchdog().limit(10**6, None).seconds == DEFAULT_TIMEOUT_S  # a simulation has no time per cycle
    assert Watchdog().limit(10**6, 200e6).seconds == WATCHDOG_FLOOR_S  # 8 x 5 ms is under the floor
    big = Watchdog().limit(10**9, 200e6)
    assert big.seconds == pytest.approx(WATCHDOG_MARGIN * 5.0)
    assert big.basis == "8 x the performance model's 1,000,000,000 cycles at 200 MHz = 40 s, at least 1 s"


def test_on_a_clocked_device_the_limit_follows_the_program():
    """A device running the accelerator in real time at 5 kHz: the cycles the model gives the program (some 250)
    make a limit of 8 x cycles / 5000 s; a hang is reported with that basis and the next run works."""

    class Clocked(SimDevice):
        clock_hz = 5e3

    device = Clocked(GoldenAccelerator(CFG))
    accel = _accel(device, watchdog=Watchdog(floor_s=0.1))
    _, instrs = decode_program(halve_program().tobytes())
    cycles = program_cycles(instrs, CFG, BOARD.ddr_bytes_per_cycle, BOARD.ddr_read_latency_cycles)
    assert 200 < cycles < 300
    _run_ok(accel)
    device.model.hang_next_run = True
    with pytest.raises(AcceleratorTimeout) as e:
        accel.run_program(halve_program(), arena_with(X))
    limit = 8 * cycles / 5e3
    assert e.value.limit.seconds == pytest.approx(limit)
    assert str(e.value).startswith(f"accelerator did not finish within {limit:g} s (8 x the performance model's "
                                   f"{cycles} cycles at 0.005 MHz = {limit:.3g} s, at least 0.1 s); registers "
                                   "STATUS=0x1, ")
    _run_ok(accel)


def test_a_spurious_interrupt_is_waited_past():
    class Spurious(SimDevice):
        """Raises the interrupt line once, at once, before the run has finished."""

        spurious = True

        def wait_interrupt(self, timeout_s: float) -> bool:
            if self.spurious:
                self.spurious = False
                return True
            return super().wait_interrupt(timeout_s)

    backend = Faulty(CFG)
    device = Spurious(backend)
    accel = _accel(device, timeout_s=5.0)
    backend.next_fault = "slow"
    threading.Timer(0.05, backend.release.set).start()  # the run ends soon after the false alarm
    stats = accel.run_program(halve_program(), act := arena_with(X))
    assert stats.instructions == 2 and np.all(read_out(act) == 4)
    assert device.read_register(OFFSET["IRQ_STATUS"]) & (1 << Irq.DONE) == 0


@pytest.mark.parametrize(("fault", "error", "message"), [
    ("early_done", IncompleteRun, "the accelerator reported DONE after 1 of the program's 2 instructions: its output "
                                  "is incomplete; registers STATUS=0x2, "),
    ("past_arena", OutOfBoundsWrite, f"the accelerator wrote 1 byte(s) outside the activation arena of {ARENA} bytes "
                                     "it was given (at offsets +{off} from its start): the run's output is not used"),
    ("past_program", OutOfBoundsWrite, "the accelerator wrote 1 byte(s) outside the program of {size} bytes it was "
                                       "given (at offsets +{end} from its start)"),
])
def test_a_detected_fault_resets_frees_and_the_next_run_works(fault, error, message):
    backend = Faulty(CFG)
    device = SimDevice(backend)
    accel = _accel(device, timeout_s=5.0)
    _run_ok(accel)
    kept = accel.arena(ARENA)
    programs_and_staging = device.memory.allocated_bytes - (ARENA + 2 * GUARD_BYTES)
    assert programs_and_staging > 0
    backend.next_fault = fault
    kept[:] = arena_with(X)
    with pytest.raises(error) as e:
        accel.run_program(halve_program(), kept)
    size = halve_program().size
    assert message.format(off=ARENA + 3, size=size, end=size + GUARD_BYTES - 1) in str(e.value)
    assert str(e.value).endswith(f"the device was reset ({SOFT_RESET_DONE}) and the driver's buffers freed")
    assert e.value.registers["IP_ID"] == 0x55504853
    assert device.memory.allocated_bytes == ARENA + 2 * GUARD_BYTES  # the caller's arena stays, nothing else
    kept[:] = arena_with(X)
    _run_ok(accel, kept)  # its guards were restored: no false alarm
    _run_ok(accel)


def test_a_run_cut_off_by_the_reset_never_writes_afterwards():
    backend = Faulty(CFG)
    device = SimDevice(backend)
    accel = _accel(device, timeout_s=1.0)
    arena = accel.arena(ARENA)
    arena[:] = arena_with(X)
    backend.next_fault = "hang_then_write"
    with pytest.raises(AcceleratorTimeout):
        accel.run_program(halve_program(), arena)
    arena[:] = arena_with(X)
    _run_ok(accel, arena)
    good = arena.copy()
    backend.release.set()  # the hung run wakes up, writes garbage into its copy and reports DONE
    assert backend.late_write_done.wait(10)
    device.model._worker.join(10)
    assert np.array_equal(arena, good)
    assert device.read_register(OFFSET["STATUS"]) == 2  # DONE of the good run, not touched by the stale one
    _run_ok(accel, arena)


def test_hang_on_pynq_sim_keeps_the_callers_arena_and_soft_resets(tmp_path):
    pytest.importorskip("pynq")
    from shiftpu.sw.device_pynq import PynqDevice
    from shiftpu.sw.pynq_sim import simulated_device, write_sim_overlay

    bit = write_sim_overlay(tmp_path, BOARD, CFG)
    device = PynqDevice(bit, pynq_device=simulated_device(), name="pynq-sim")
    assert device.clock_hz is None  # simulated: the backend's default limit applies
    accel = _accel(device, timeout_s=1.0)
    arena = accel.arena(ARENA)
    arena[:] = arena_with(X)
    _run_ok(accel, arena)
    before = device.overlay.device.model
    before.hang_next_run = True
    with pytest.raises(AcceleratorTimeout, match=r"the device was reset \(CTRL\.SOFT_RESET: "):
        accel.run_program(halve_program(), arena)
    assert device.overlay.device.model is before  # no new configuration: the soft reset sufficed
    arena[:] = arena_with(X)
    _run_ok(accel, arena)
    ddr = device.overlay.device.default_memory
    accel.driver.free_buffers()
    del arena
    import gc

    gc.collect()
    assert ddr.allocated_bytes == 0
