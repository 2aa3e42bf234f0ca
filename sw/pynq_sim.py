"""A simulated PYNQ device: the accelerator's register model behind PYNQ's own device plugin interface.

PYNQ enumerates devices through subclasses of ``pynq.pl_server.device.Device``; this module adds one, so
PYNQ's unmodified ``Overlay`` (reading a .hwh), ``DefaultIP``/``MMIO`` (register reads and writes) and
``allocate`` (physically addressed buffers) run on any machine. Behind the registers sits
:class:`~shiftpu.sim.regmodel.RegisterModel` running the golden model or, when asked, the RTL simulation.
It answers the processing system's clock registers the way a Zynq-7000 does (fabric clocks are set from
a 1000 MHz IO PLL), so ``Overlay(download=True)`` runs its clock setup unchanged.

Importing this module needs PYNQ; nothing imports it unless the "pynq-sim" backend is asked for.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device
from pynq.ps import ZYNQ_ARCH, ZYNQ_SLCR_REGISTERS

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.layout import ALIGN, align
from shiftpu.boards import Board
from shiftpu.sim.accelerator import Accelerator
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.regmodel import RegisterModel
from shiftpu.sw.device_hwh import ACCEL_VLNV, CONFIG_PARAMETER, write_hwh
from shiftpu.sw.device_pynq import OverlayError

_SLCR_BASE = 0xF800_0000
#: IO PLL feedback divisor: 50 MHz PS reference x 20 = 1000 MHz.
_IO_PLL_FDIV = 20
#: First word of a simulation bitstream (it configures nothing; the .hwh describes the design).
SIM_BITSTREAM_MAGIC = b"shiftpu simulated bitstream\n"


class SimulatedDdr:
    """DDR of the simulated device: ``pynq.allocate`` buffers at 64-byte aligned physical addresses."""

    BASE = 0x1000_0000

    def __init__(self, device: SimulatedPynqDevice):
        self._device = device
        self._next = self.BASE
        self._live: weakref.WeakValueDictionary[int, PynqBuffer] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def allocate(self, shape: Any, dtype: Any = np.uint32, **kwargs: Any) -> PynqBuffer:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with self._lock:
            address = self._next
            self._next = align(address + max(nbytes, 1) + ALIGN)
        buf = PynqBuffer(shape, dtype, device_address=address, coherent=True, device=self._device)
        buf.fill(0)
        with self._lock:
            self._live[address] = buf
        return buf

    @property
    def allocated_bytes(self) -> int:
        with self._lock:
            return sum(b.nbytes for b in self._live.values())

    def segment(self, address: int) -> np.ndarray:
        with self._lock:
            items = list(self._live.items())
        for base, buf in items:
            if base <= address < base + buf.nbytes:
                return buf.reshape(-1).view(np.uint8)[address - base:]
        raise KeyError(address)


class SimulatedPynqDevice(Device):
    """A PYNQ device whose fabric is the register model of the accelerator described by the loaded .hwh."""

    _probe_priority_ = 900  # after every real device: on a board, the board stays PYNQ's active device
    simulated = True  #: no clock of its own: the driver's watchdog uses the backend's default limit

    @classmethod
    def _probe_(cls) -> list[SimulatedPynqDevice]:
        return [cls("shiftpu-sim")]

    def __init__(self, tag: str):
        super().__init__(tag)
        self.name = tag
        self.arch = ZYNQ_ARCH
        self.capabilities = {"REGISTER_RW": True}
        self.default_memory = SimulatedDdr(self)
        self.timestamp = ""
        self.bitfile_name = ""
        #: builds the accelerator backend from the config in the .hwh (golden model unless set otherwise)
        self.backend_factory: Callable[[AccelConfig], Accelerator] = GoldenAccelerator
        self.model: RegisterModel | None = None
        self._window = (0, 0)
        self._ps: dict[int, int] = {}

    # -- PYNQ's device interface -----------------------------------------------------------------------

    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False) -> Any:
        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError(f"Unable to find metadata for bitstream: {hwh} is missing")
        return RuntimeMetadataParser(Metadata(input=hwh))

    def download(self, bitstream: Any, parser: Any = None) -> None:
        """Configure the fabric: a fresh accelerator built from the config the .hwh records. As on the board, the
        accelerator configured before is gone: a run still in flight in it never writes memory or registers."""
        if self.model is not None:
            self.model.reset()
        parser = parser or self.get_bitfile_metadata(bitstream.bitfile_name)
        name, ip = self._accelerator_ip(parser.ip_dict)
        config = AccelConfig.from_dict(json.loads(ip["parameters"][CONFIG_PARAMETER]),
                                       source=f"{name}.{CONFIG_PARAMETER}")
        self._window = (int(ip["phys_addr"]), int(ip["addr_range"]))
        self.model = RegisterModel(self.backend_factory(config), self.default_memory)
        self.post_download(bitstream, parser, self.name)

    def read_registers(self, address: int, length: int) -> bytes:
        words = [self._read_word(address + 4 * i) for i in range((length + 3) // 4)]
        return b"".join(w.to_bytes(4, "little") for w in words)[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        data = bytes(data) + b"\0" * (-len(data) % 4)
        for i in range(0, len(data), 4):
            self._write_word(address + i, int.from_bytes(data[i: i + 4], "little"))

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _accelerator_ip(ip_dict: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        vln = ACCEL_VLNV.rsplit(":", 1)[0]
        for name, ip in ip_dict.items():
            if str(ip.get("type", "")).rsplit(":", 1)[0] == vln and CONFIG_PARAMETER in ip.get("parameters", {}):
                return name, ip
        raise OverlayError(f"the .hwh has no shiftpu accelerator ({vln}) with a {CONFIG_PARAMETER} parameter")

    def _read_word(self, address: int) -> int:
        base, size = self._window
        if self.model is not None and base <= address < base + size:
            return self.model.read(address - base)
        if address not in self._ps and address == _SLCR_BASE + ZYNQ_SLCR_REGISTERS["IO_PLL_CTRL"]["address_offset"]:
            return _IO_PLL_FDIV << 12
        return self._ps.get(address, 0)

    def _write_word(self, address: int, value: int) -> None:
        base, size = self._window
        if self.model is not None and base <= address < base + size:
            self.model.write(address - base, value)
        else:
            self._ps[address] = value


def simulated_device(backend_factory: Callable[[AccelConfig], Accelerator] = GoldenAccelerator
                     ) -> SimulatedPynqDevice:
    """PYNQ's simulated device (found through PYNQ's device enumeration) with the given backend."""
    device = next((d for d in Device.devices if isinstance(d, SimulatedPynqDevice)), None)
    if device is None:  # PYNQ enumerated its devices before this module registered the simulated one
        device = SimulatedPynqDevice._probe_()[0]
        Device.devices.append(device)
    device.backend_factory = backend_factory
    return device


def write_sim_overlay(folder: str | Path, board: Board, config: AccelConfig, name: str = "shiftpu") -> Path:
    """A simulation overlay: ``<name>.hwh`` describing the accelerator and a placeholder ``<name>.bit``.

    Returns the .bit path, to pass to :class:`~shiftpu.sw.device_pynq.PynqDevice`.
    """
    folder = Path(folder)
    write_hwh(folder / f"{name}.hwh", board, config)
    bit = folder / f"{name}.bit"
    bit.write_bytes(SIM_BITSTREAM_MAGIC)
    return bit
