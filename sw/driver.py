"""The register-level driver: one code path for the board, the simulated PYNQ device and the plain simulation.

A run follows docs/architecture.md "A run": check the accelerator's identity against the program, write
``CONST_BASE`` and ``ACT_BASE``, enable and acknowledge the interrupt, write ``CTRL.START``, wait for the
interrupt (or poll ``STATUS``) under the watchdog's limit (:mod:`shiftpu.sw.watchdog`), and map ``ERROR_CODE`` to
an :class:`AcceleratorError`.

What the driver can tell of a faulty run, and does: no DONE in time (:class:`AcceleratorTimeout`), DONE after fewer
instructions than the program has (:class:`IncompleteRun`), and a write outside the program or the activation
arena, caught by guard bytes around every buffer it hands the accelerator (:class:`OutOfBoundsWrite`). Each dumps
the registers, resets the device, frees the driver's own buffers (programs, staging arenas; the arenas the caller
holds stay, their guards restored) and raises, so that the run's output is never used and the next run starts on a
clean device. The reset is ``CTRL.SOFT_RESET`` on every device (the run cut off, the AXI4 master drained, STATUS
reading ABORTED once idle); a device on which it does not come back within :data:`SOFT_RESET_TIMEOUT_S` (a
bitstream older than the bit, a memory that never answers) gets the device's own power-on reset, on a board the
bitstream downloaded again. A wrong value written inside the arena is not detectable here: only a comparison with
the golden model finds it (``shiftpu run --compare``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTR_BYTES, ISA_VERSION, IsaError, ProgramHeader, decode_program
from shiftpu.arch.regmap import IP_MAGIC, OFFSET, REGISTERS, Ctrl, ErrorCode, Irq, Status
from shiftpu.boards import Board
from shiftpu.errors import ShiftpuError
from shiftpu.sim.accelerator import AcceleratorError, RunStats
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sw.device import Device, DeviceBuffer
from shiftpu.sw.watchdog import DEFAULT_TIMEOUT_S, Watchdog, WatchdogLimit, program_cycles

__all__ = ["DEFAULT_TIMEOUT_S", "SOFT_RESET_DONE", "SOFT_RESET_TIMEOUT_S", "AcceleratorFault", "AcceleratorTimeout",
           "ConfigMismatchError", "Driver", "DriverAccelerator", "DriverError", "GuardedBuffer", "IncompleteRun",
           "OutOfBoundsWrite"]

#: Bytes of a known pattern before and after every buffer the driver hands the accelerator (the layout's 64-byte
#: alignment, so the payload stays aligned): a write just outside a program or an arena lands in them.
GUARD_BYTES = 64
GUARD_PATTERN = np.frombuffer(bytes((0xA5 + 37 * i) & 0xFF for i in range(GUARD_BYTES)), dtype=np.uint8)
#: Registers an error message shows (all of them are in the exception's ``registers``).
_DUMPED = ("STATUS", "ERROR_CODE", "PC", "INSTR_RETIRED", "CYCLES_LO")
#: Seconds a soft reset may take to bring the accelerator back to idle before the driver resets the device the hard
#: way. The drain takes the memory's outstanding bursts, microseconds on a board; the simulated devices need none.
SOFT_RESET_TIMEOUT_S = 0.5
#: How the recovery describes a soft reset that worked.
SOFT_RESET_DONE = "CTRL.SOFT_RESET: the run was cut off, the AXI4 master drained, the accelerator idle again"


class DriverError(ShiftpuError):
    """The accelerator cannot be used for this program."""


class ConfigMismatchError(DriverError):
    """The hardware was generated for another accelerator config or ISA version than the program."""


class AcceleratorFault(DriverError):
    """A run went wrong in a way the driver detected; its output was not used, the device was reset and the
    driver's buffers freed. Carries the register dump taken before the reset."""

    def __init__(self, what: str, registers: dict[str, int], reset: str):
        self.registers = registers
        dump = ", ".join(f"{k}=0x{registers[k]:x}" for k in _DUMPED)
        super().__init__(f"{what}; registers {dump}; the device was reset ({reset}) and the driver's buffers freed")


class AcceleratorTimeout(AcceleratorFault):
    """A run did not finish (no DONE, no ERROR) within the watchdog's limit."""

    def __init__(self, limit: WatchdogLimit, registers: dict[str, int], reset: str):
        self.limit = limit
        super().__init__(f"accelerator did not finish within {limit.seconds:g} s ({limit.basis})", registers, reset)


class IncompleteRun(AcceleratorFault):
    """The accelerator reported DONE before it had retired every instruction of the program."""


class OutOfBoundsWrite(AcceleratorFault):
    """The accelerator wrote outside the program or the activation arena it was given."""


class GuardedBuffer:
    """A device buffer with :data:`GUARD_BYTES` of :data:`GUARD_PATTERN` before and after its payload; ``array``
    and ``physical_address`` are the payload's."""

    def __init__(self, raw: DeviceBuffer, nbytes: int):
        self.raw = raw
        self.nbytes = nbytes
        self.array = raw.array[GUARD_BYTES: GUARD_BYTES + nbytes]
        self.physical_address = raw.physical_address + GUARD_BYTES
        self.restore_guards()

    def _guards(self) -> tuple[np.ndarray, np.ndarray]:
        return self.raw.array[:GUARD_BYTES], self.raw.array[GUARD_BYTES + self.nbytes: 2 * GUARD_BYTES + self.nbytes]

    def restore_guards(self) -> None:
        for guard in self._guards():
            guard[:] = GUARD_PATTERN

    def damaged_guards(self) -> list[int]:
        """Offsets from the payload's start of the guard bytes that changed (negative: before it)."""
        before, after = self._guards()
        return ([int(i) - GUARD_BYTES for i in np.flatnonzero(before != GUARD_PATTERN)]
                + [self.nbytes + int(i) for i in np.flatnonzero(after != GUARD_PATTERN)])

    def flush(self) -> None:
        self.raw.flush()

    def invalidate(self) -> None:
        self.raw.invalidate()

    def free(self) -> None:
        self.raw.free()
        self.array = np.zeros(0, dtype=np.uint8)


@dataclass(frozen=True)
class ProgramFacts:
    """What the driver checks a run of one program against."""

    instructions: int  #: the header's n_instr, END included: what INSTR_RETIRED must read after DONE
    estimated_cycles: int | None  #: the performance model's, for the watchdog (None: no board figures)


@dataclass(frozen=True)
class Identity:
    """What the accelerator's read-only identity registers say."""

    ip_id: int
    isa_version: int
    config_hash: int


class Driver:
    """Runs programs on one device. Thread-safe: one run at a time.

    ``timeout_s``: a fixed limit for every run (the user's ``--timeout``); without it the ``watchdog`` (default:
    :class:`~shiftpu.sw.watchdog.Watchdog`) derives one per program.
    """

    def __init__(self, device: Device, timeout_s: float | None = None, watchdog: Watchdog | None = None):
        if watchdog is not None and timeout_s is not None:
            raise ValueError("give a fixed timeout_s or a watchdog, not both")
        self.device = device
        self.watchdog = watchdog if watchdog is not None else Watchdog(fixed_s=timeout_s)
        self._lock = threading.Lock()
        self._owned: list[GuardedBuffer] = []
        self._kept: list[GuardedBuffer] = []  #: buffers the caller holds (arenas): not freed by a reset
        self.identity = self.read_identity()
        if self.identity.ip_id != IP_MAGIC:
            raise DriverError(f"the IP at this address is not a shiftpu accelerator: IP_ID reads "
                              f"0x{self.identity.ip_id:08x}, expected 0x{IP_MAGIC:08x}")

    def read_identity(self) -> Identity:
        r = self.device.read_register
        return Identity(r(OFFSET["IP_ID"]), r(OFFSET["ISA_VERSION"]), r(OFFSET["CONFIG_HASH"]))

    def check(self, config_hash: int, isa_version: int = ISA_VERSION, what: str = "the program") -> None:
        """Refuse a program compiled for another config or ISA version than the hardware."""
        hw = self.identity
        if isa_version != hw.isa_version:
            raise ConfigMismatchError(f"{what} is for ISA version {isa_version}, the accelerator decodes "
                                      f"version {hw.isa_version}")
        if config_hash != hw.config_hash:
            raise ConfigMismatchError(f"{what} was compiled for config hash 0x{config_hash:08x}, the bitstream "
                                      f"implements config hash 0x{hw.config_hash:08x}: load the matching "
                                      "bitstream or recompile for this accelerator")

    def check_program(self, const: np.ndarray) -> None:
        """Check the program header at offset 0 of a constant image against the hardware."""
        try:
            header = ProgramHeader.decode(np.asarray(const, dtype=np.uint8)[:INSTR_BYTES].tobytes())
        except IsaError as e:
            raise DriverError(f"not a loadable program: {e}") from None
        self.check(header.config_hash, header.isa_version)

    # -- buffers --------------------------------------------------------------------------------------

    def allocate(self, nbytes: int, keep: bool = False) -> GuardedBuffer:
        """A guarded device buffer owned by the driver, freed by :meth:`free_buffers` and, unless ``keep`` (an
        arena the caller holds on to), by the recovery from a faulty run."""
        buf = GuardedBuffer(self.device.allocate(nbytes + 2 * GUARD_BYTES), nbytes)
        (self._kept if keep else self._owned).append(buf)
        return buf

    def release(self, buf: GuardedBuffer) -> None:
        """Free one of the driver's buffers now."""
        self._owned = [b for b in self._owned if b is not buf]
        self._kept = [b for b in self._kept if b is not buf]
        buf.free()

    def owns(self, buf: GuardedBuffer) -> bool:
        """Whether ``buf`` is still allocated (not freed by a recovery or :meth:`free_buffers`)."""
        return any(b is buf for b in self._owned) or any(b is buf for b in self._kept)

    def upload(self, data: np.ndarray) -> DeviceBuffer:
        """Copy bytes into a new device buffer and flush them to memory."""
        data = np.asarray(data, dtype=np.uint8).reshape(-1)
        buf = self.allocate(data.size)
        buf.array[: data.size] = data
        buf.flush()
        return buf

    def free_buffers(self) -> None:
        """Free every buffer of the driver, the caller's arenas included."""
        self._free_owned()
        for buf in self._kept:
            buf.free()
        self._kept.clear()

    def _free_owned(self) -> None:
        for buf in self._owned:
            buf.free()
        self._owned.clear()

    # -- runs -----------------------------------------------------------------------------------------

    def run(self, const: GuardedBuffer, act: GuardedBuffer, program: ProgramFacts | None = None) -> RunStats:
        """One START on buffers already in device memory (flushed); the caller invalidates ``act`` after.

        ``program`` (the facts of the program in ``const``) lets the watchdog follow the program and the driver
        check that every instruction retired; the guards of both buffers are checked after every run.
        """
        for buf in (const, act):
            if buf.physical_address >> 32:
                raise DriverError(f"buffer at physical address 0x{buf.physical_address:x} is beyond the 32-bit "
                                  "CONST_BASE/ACT_BASE registers")
        limit = self.watchdog.limit(program.estimated_cycles if program else None,
                                    getattr(self.device, "clock_hz", None))
        with self._lock:
            w = self.device.write_register
            w(OFFSET["CONST_BASE"], const.physical_address)
            w(OFFSET["ACT_BASE"], act.physical_address)
            w(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
            w(OFFSET["IRQ_ENABLE"], 1 << Irq.DONE)
            w(OFFSET["CTRL"], 1 << Ctrl.START)
            status = self._wait(limit)
            w(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
            self._check_guards(const, act)
            if status & (1 << Status.ERROR):
                code = self.device.read_register(OFFSET["ERROR_CODE"])
                pc = self.device.read_register(OFFSET["PC"])
                if code not in {c.value for c in ErrorCode}:
                    raise DriverError(f"accelerator stopped at instruction {pc} with ERROR_CODE {code}, "
                                      f"which ISA version {ISA_VERSION} does not define")
                raise AcceleratorError(ErrorCode(code), pc)
            stats = self._stats()
            if program is not None and stats.instructions != program.instructions:
                self._recover(IncompleteRun, f"the accelerator reported DONE after {stats.instructions} of the "
                                             f"program's {program.instructions} instructions: its output is incomplete")
            return stats

    def _wait(self, limit: WatchdogLimit) -> int:
        """STATUS once the run finished (DONE or ERROR); an interrupt without either (spurious) is waited past.
        A run still going at the limit is recovered from (:class:`AcceleratorTimeout`)."""
        finished = (1 << Status.DONE) | (1 << Status.ERROR)
        deadline = time.monotonic() + limit.seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.device.wait_interrupt(remaining):
                status = self.device.read_register(OFFSET["STATUS"])
                if status & finished:  # it finished as the limit passed
                    return status
                self._recover(AcceleratorTimeout, limit)
            status = self.device.read_register(OFFSET["STATUS"])
            if status & finished:
                return status
            self.device.write_register(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)  # acknowledge the spurious interrupt

    def _check_guards(self, const: GuardedBuffer, act: GuardedBuffer) -> None:
        """Raise :class:`OutOfBoundsWrite` (after the recovery) if the run wrote into a guard."""
        for buf, what in ((act, "activation arena"), (const, "program")):
            if not isinstance(buf, GuardedBuffer):
                continue
            buf.invalidate()
            damaged = buf.damaged_guards()
            if damaged:
                where = ", ".join(f"{d:+d}" for d in damaged[:4]) + (", ..." if len(damaged) > 4 else "")
                self._recover(OutOfBoundsWrite,
                              f"the accelerator wrote {len(damaged)} byte(s) outside the {what} of {buf.nbytes} "
                              f"bytes it was given (at offsets {where} from its start): the run's output is not "
                              "used")

    def _stats(self) -> RunStats:
        r = self.device.read_register
        cycles = r(OFFSET["CYCLES_LO"]) | r(OFFSET["CYCLES_HI"]) << 32
        measured = cycles > 0  # a backend without a clock (the golden model) leaves the counters at 0
        return RunStats(
            backend=self.device.name,
            instructions=r(OFFSET["INSTR_RETIRED"]),
            cycles=cycles if measured else None,
            stall_cycles=(r(OFFSET["STALL_LO"]) | r(OFFSET["STALL_HI"]) << 32) if measured else None,
            read_beats=r(OFFSET["RD_BEATS"]) if measured else None,
            write_beats=r(OFFSET["WR_BEATS"]) if measured else None,
        )

    def dump_registers(self) -> dict[str, int]:
        return {reg.name: self.device.read_register(reg.offset) for reg in REGISTERS}

    def soft_reset(self, timeout_s: float = SOFT_RESET_TIMEOUT_S) -> str:
        """Write ``CTRL.SOFT_RESET`` and wait until STATUS reads ABORTED with BUSY clear; if it does not within
        ``timeout_s``, reset the device the hard way (:meth:`~shiftpu.sw.device.Device.reset`). Returns how it was
        reset, in words."""
        self.device.write_register(OFFSET["CTRL"], 1 << Ctrl.SOFT_RESET)
        deadline = time.monotonic() + timeout_s
        sleep = 1e-5
        while True:
            status = self.device.read_register(OFFSET["STATUS"])
            if status == 1 << Status.ABORTED:
                return SOFT_RESET_DONE
            if time.monotonic() > deadline:
                break
            time.sleep(sleep)
            sleep = min(sleep * 2, 1e-2)
        return (f"CTRL.SOFT_RESET left STATUS at 0x{status:x} after {timeout_s:g} s, so the device's own reset: "
                f"{self.device.reset()}")

    def _recover(self, fault: type[AcceleratorFault], detail: str | WatchdogLimit) -> None:
        """Dump the registers, reset the device (:meth:`soft_reset`), free the driver's own buffers, restore the
        guards of the caller's arenas, and raise ``fault``."""
        dump = self.dump_registers()
        how = self.soft_reset()
        self._free_owned()
        for buf in self._kept:
            buf.restore_guards()
        self.identity = self.read_identity()
        if fault is AcceleratorTimeout:
            assert isinstance(detail, WatchdogLimit)
            raise AcceleratorTimeout(detail, dump, how)
        raise fault(str(detail), dump, how)


class DriverAccelerator:
    """The driver as an :class:`~shiftpu.sim.accelerator.Accelerator`, so the executor runs on any device.

    The constant image is uploaded once per distinct program (again after a recovery freed it). ``act`` is used
    in place when it is one of this accelerator's device arenas (:meth:`arena`, zero copy; a recovery keeps them);
    otherwise it is staged through two alternating device arenas (``ACT_BASE`` switches between them). ``board``
    gives the performance model the DDR figures for the watchdog's estimate of each program.
    """

    def __init__(self, driver: Driver, config: AccelConfig, board: Board | None = None):
        driver.check(config.config_hash(), what="the compiled model")
        self.driver = driver
        self.config = config
        self.board = board
        self.name = driver.device.name
        self._consts: dict[tuple[int, int], tuple[np.ndarray, GuardedBuffer, ProgramFacts]] = {}
        self._arenas: dict[int, GuardedBuffer] = {}
        self._staging: list[GuardedBuffer] = []
        self._turn = 0
        self._lock = threading.Lock()

    def arena(self, nbytes: int) -> np.ndarray:
        """A device buffer to use as an activation arena without copies (kept across recoveries)."""
        buf = self.driver.allocate(nbytes, keep=True)
        self._arenas[buf.array.ctypes.data] = buf
        return buf.array[:nbytes]

    def run_program(self, const: np.ndarray, act: np.ndarray) -> RunStats:
        if act.dtype != np.uint8 or act.ndim != 1:
            raise TypeError("the activation arena must be a 1-D uint8 array")
        with self._lock:
            const_buf, facts = self._const(const)
            own = self._arenas.get(act.ctypes.data)
            if own is not None and self.driver.owns(own) and own.nbytes == act.size:
                own.flush()
                try:
                    return self.driver.run(const_buf, own, facts)
                finally:
                    own.invalidate()
            stage = self._stage(act.size)
            stage.array[: act.size] = act
            stage.flush()
            try:
                stats = self.driver.run(const_buf, stage, facts)
            finally:
                stage.invalidate()
            act[:] = stage.array[: act.size]
            return stats

    def _const(self, const: np.ndarray) -> tuple[GuardedBuffer, ProgramFacts]:
        key = (const.ctypes.data, const.size)
        hit = self._consts.get(key)
        if hit is not None and self.driver.owns(hit[1]):
            return hit[1], hit[2]
        self.driver.check_program(const)
        GoldenAccelerator(self.config).check_weight_codes(const)  # the hardware reads an illegal code as a weight
        facts = hit[2] if hit is not None else self._facts(const)
        buf = self.driver.upload(const)
        self._consts[key] = (const, buf, facts)
        return buf, facts

    def _facts(self, const: np.ndarray) -> ProgramFacts:
        header = ProgramHeader.decode(const[:INSTR_BYTES].tobytes())
        cycles = None
        if self.board is not None:
            _, instrs = decode_program(const[: INSTR_BYTES * (1 + header.n_instr)].tobytes())
            cycles = program_cycles(instrs, self.config, self.board.ddr_bytes_per_cycle,
                                    self.board.ddr_read_latency_cycles)
        return ProgramFacts(header.n_instr, cycles)

    def _stage(self, nbytes: int) -> GuardedBuffer:
        self._staging = [b for b in self._staging if self.driver.owns(b)]
        while len(self._staging) < 2:
            self._staging.append(self.driver.allocate(nbytes))
        self._turn ^= 1
        buf = self._staging[self._turn]
        if buf.nbytes != nbytes:  # exactly the arena's size, so that its end guard is right behind it
            self.driver.release(buf)
            buf = self._staging[self._turn] = self.driver.allocate(nbytes)
        return buf
