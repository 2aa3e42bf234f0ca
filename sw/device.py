"""The register-level device interface the driver talks to, and the plain simulated device.

One driver, three devices: the board through PYNQ (:mod:`shiftpu.sw.pynq_device`), the simulated PYNQ
device (:mod:`shiftpu.sw.pynq_sim`, the same PYNQ code path on any machine), and :class:`SimDevice`
here, the register model on plain numpy memory without PYNQ.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.layout import ALIGN, align
from shiftpu.arch.regmap import OFFSET
from shiftpu.sim.accelerator import Accelerator
from shiftpu.sim.regmodel import RegisterModel


class DeviceBuffer(Protocol):
    """A physically contiguous uint8 buffer the accelerator can master."""

    array: np.ndarray  #: 1-D uint8 view the CPU reads and writes
    physical_address: int  #: the address the accelerator sees

    def flush(self) -> None:
        """Write CPU caches back so the accelerator sees the CPU's writes."""

    def invalidate(self) -> None:
        """Drop CPU caches so the CPU sees the accelerator's writes."""

    def free(self) -> None:
        """Give the memory back; the buffer must not be used afterwards."""


class Device(Protocol):
    """What the driver needs from a device: registers, buffers, the interrupt, a reset."""

    name: str  #: backend name: "board", "pynq-sim", "sim"
    #: the accelerator's clock where the device runs it in real time (the board), for the watchdog; None for a
    #: simulation, which has no time per cycle
    clock_hz: float | None

    def read_register(self, offset: int) -> int: ...

    def write_register(self, offset: int, value: int) -> None: ...

    def allocate(self, nbytes: int) -> DeviceBuffer: ...

    def wait_interrupt(self, timeout_s: float) -> bool:
        """Block until the accelerator's interrupt is raised; False on timeout. Devices without an
        interrupt line poll STATUS instead."""
        ...

    def reset(self) -> str:
        """Bring the accelerator back to its power-on state the hard way; returns how, in words. The driver resets
        through ``CTRL.SOFT_RESET`` first and comes here only when that does not bring the accelerator back (on a
        board this downloads the bitstream again)."""
        ...


class HostBuffer:
    """A buffer in :class:`HostMemory`: coherent, so flush and invalidate do nothing."""

    def __init__(self, memory: HostMemory, array: np.ndarray, physical_address: int):
        self._memory = memory
        self.array = array
        self.physical_address = physical_address

    def flush(self) -> None:
        pass

    def invalidate(self) -> None:
        pass

    def free(self) -> None:
        self._memory.release(self.physical_address)


class HostMemory:
    """Numpy buffers at made-up, 64-byte aligned physical addresses (never reused, never 0)."""

    BASE = 0x1000_0000

    def __init__(self) -> None:
        self._buffers: dict[int, np.ndarray] = {}
        self._next = self.BASE
        self._lock = threading.Lock()

    def allocate(self, nbytes: int) -> HostBuffer:
        array = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        with self._lock:
            address = self._next
            self._next = align(address + array.size + ALIGN)
            self._buffers[address] = array
        return HostBuffer(self, array, address)

    def release(self, address: int) -> None:
        with self._lock:
            self._buffers.pop(address, None)

    @property
    def allocated_bytes(self) -> int:
        with self._lock:
            return sum(b.size for b in self._buffers.values())

    def segment(self, address: int) -> np.ndarray:
        with self._lock:
            for base, array in self._buffers.items():
                if base <= address < base + array.size:
                    return array[address - base:]
        raise KeyError(address)


class SimDevice:
    """The register model of the accelerator on host memory: the driver's code path without PYNQ."""

    name = "sim"
    clock_hz = None

    def __init__(self, backend: Accelerator):
        self.config: AccelConfig = backend.config
        self.memory = HostMemory()
        self._done = threading.Event()
        self.model = RegisterModel(backend, self.memory, on_finish=self._done.set)

    def read_register(self, offset: int) -> int:
        return self.model.read(offset)

    def write_register(self, offset: int, value: int) -> None:
        if offset == OFFSET["CTRL"]:
            self._done.clear()
        self.model.write(offset, value)

    def allocate(self, nbytes: int) -> HostBuffer:
        return self.memory.allocate(nbytes)

    def wait_interrupt(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.model.irq and self.model.failure is None:
            if not self._done.wait(max(0.0, deadline - time.monotonic())) and not self.model.irq:
                return False
            self._done.clear()
        return True

    def reset(self) -> str:
        self.model.reset()
        return "register model back to its power-on state"
