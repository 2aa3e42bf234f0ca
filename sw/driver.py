"""The register-level driver: one code path for the board, the simulated PYNQ device and the plain simulation.

A run follows docs/architecture.md "A run": check the accelerator's identity against the program, write
``CONST_BASE`` and ``ACT_BASE``, enable and acknowledge the interrupt, write ``CTRL.START``, wait for the
interrupt (or poll ``STATUS``) with a timeout, and map ``ERROR_CODE`` to an :class:`AcceleratorError`.
A run that never finishes gets its registers dumped, the device reset, the driver's buffers freed,
and an :class:`AcceleratorTimeout`; the next run starts on a clean device.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTR_BYTES, ISA_VERSION, IsaError, ProgramHeader
from shiftpu.arch.regmap import IP_MAGIC, OFFSET, REGISTERS, Ctrl, ErrorCode, Irq, Status
from shiftpu.errors import ShiftpuError
from shiftpu.sim.accelerator import AcceleratorError, RunStats
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sw.device import Device, DeviceBuffer

#: Seconds a run may take before the driver declares the accelerator hung.
DEFAULT_TIMEOUT_S = 10.0


class DriverError(ShiftpuError):
    """The accelerator cannot be used for this program."""


class ConfigMismatchError(DriverError):
    """The hardware was generated for another accelerator config or ISA version than the program."""


class AcceleratorTimeout(DriverError):
    """A run did not finish in time; carries the register dump taken before the reset."""

    def __init__(self, timeout_s: float, registers: dict[str, int]):
        self.registers = registers
        dump = ", ".join(f"{k}=0x{registers[k]:x}" for k in ("STATUS", "ERROR_CODE", "PC", "CYCLES_LO"))
        super().__init__(f"accelerator did not finish within {timeout_s:g} s ({dump}); "
                         "the device was reset and the driver's buffers freed")


@dataclass(frozen=True)
class Identity:
    """What the accelerator's read-only identity registers say."""

    ip_id: int
    isa_version: int
    config_hash: int


class Driver:
    """Runs programs on one device. Thread-safe: one run at a time."""

    def __init__(self, device: Device, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.device = device
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._owned: list[DeviceBuffer] = []
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

    def allocate(self, nbytes: int) -> DeviceBuffer:
        """A device buffer owned by the driver (freed by :meth:`free_buffers` or a timeout)."""
        buf = self.device.allocate(nbytes)
        self._owned.append(buf)
        return buf

    def upload(self, data: np.ndarray) -> DeviceBuffer:
        """Copy bytes into a new device buffer and flush them to memory."""
        data = np.asarray(data, dtype=np.uint8).reshape(-1)
        buf = self.allocate(data.size)
        buf.array[: data.size] = data
        buf.flush()
        return buf

    def free_buffers(self) -> None:
        for buf in self._owned:
            buf.free()
        self._owned.clear()

    # -- runs -----------------------------------------------------------------------------------------

    def run(self, const: DeviceBuffer, act: DeviceBuffer) -> RunStats:
        """One START on buffers already in device memory (flushed); the caller invalidates ``act`` after."""
        for buf in (const, act):
            if buf.physical_address >> 32:
                raise DriverError(f"buffer at physical address 0x{buf.physical_address:x} is beyond the 32-bit "
                                  "CONST_BASE/ACT_BASE registers")
        with self._lock:
            w = self.device.write_register
            w(OFFSET["CONST_BASE"], const.physical_address)
            w(OFFSET["ACT_BASE"], act.physical_address)
            w(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
            w(OFFSET["IRQ_ENABLE"], 1 << Irq.DONE)
            w(OFFSET["CTRL"], 1 << Ctrl.START)
            if not self.device.wait_interrupt(self.timeout_s):
                self._recover()
            status = self.device.read_register(OFFSET["STATUS"])
            w(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
            if status & (1 << Status.ERROR):
                code = self.device.read_register(OFFSET["ERROR_CODE"])
                pc = self.device.read_register(OFFSET["PC"])
                if code not in {c.value for c in ErrorCode}:
                    raise DriverError(f"accelerator stopped at instruction {pc} with ERROR_CODE {code}, "
                                      f"which ISA version {ISA_VERSION} does not define")
                raise AcceleratorError(ErrorCode(code), pc)
            return self._stats()

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

    def _recover(self) -> None:
        dump = self.dump_registers()
        self.device.reset()
        self.free_buffers()
        self.identity = self.read_identity()
        raise AcceleratorTimeout(self.timeout_s, dump)


class DriverAccelerator:
    """The driver as an :class:`~shiftpu.sim.accelerator.Accelerator`, so the executor runs on any device.

    The constant image is uploaded once per distinct program. ``act`` is used in place when it is one
    of this accelerator's device arenas (:meth:`arena`, zero copy); otherwise it is staged through two
    alternating device arenas (``ACT_BASE`` switches between them).
    """

    def __init__(self, driver: Driver, config: AccelConfig):
        driver.check(config.config_hash(), what="the compiled model")
        self.driver = driver
        self.config = config
        self.name = driver.device.name
        self._consts: dict[tuple[int, int], tuple[np.ndarray, DeviceBuffer]] = {}
        self._arenas: dict[int, DeviceBuffer] = {}
        self._staging: list[DeviceBuffer] = []
        self._turn = 0
        self._lock = threading.Lock()

    def arena(self, nbytes: int) -> np.ndarray:
        """A device buffer to use as an activation arena without copies."""
        buf = self.driver.allocate(nbytes)
        self._arenas[buf.array.ctypes.data] = buf
        return buf.array[:nbytes]

    def run_program(self, const: np.ndarray, act: np.ndarray) -> RunStats:
        if act.dtype != np.uint8 or act.ndim != 1:
            raise TypeError("the activation arena must be a 1-D uint8 array")
        with self._lock:
            const_buf = self._const(const)
            own = self._arenas.get(act.ctypes.data)
            if own is not None:
                own.flush()
                try:
                    return self.driver.run(const_buf, own)
                finally:
                    own.invalidate()
            stage = self._stage(act.size)
            stage.array[: act.size] = act
            stage.flush()
            try:
                stats = self.driver.run(const_buf, stage)
            finally:
                stage.invalidate()
            act[:] = stage.array[: act.size]
            return stats

    def _const(self, const: np.ndarray) -> DeviceBuffer:
        key = (const.ctypes.data, const.size)
        hit = self._consts.get(key)
        if hit is not None and not _freed(hit[1], self.driver):
            return hit[1]
        self.driver.check_program(const)
        GoldenAccelerator(self.config).check_weight_codes(const)  # the hardware reads an illegal code as a weight
        buf = self.driver.upload(const)
        self._consts[key] = (const, buf)
        return buf

    def _stage(self, nbytes: int) -> DeviceBuffer:
        self._staging = [b for b in self._staging if not _freed(b, self.driver)]
        while len(self._staging) < 2:
            self._staging.append(self.driver.allocate(nbytes))
        self._turn ^= 1
        buf = self._staging[self._turn]
        if buf.array.size < nbytes:
            buf = self._staging[self._turn] = self.driver.allocate(nbytes)
        return buf


def _freed(buf: DeviceBuffer, driver: Driver) -> bool:
    """True once the driver freed the buffer (after a timeout)."""
    return all(b is not buf for b in driver._owned)
