"""The board device: the accelerator through PYNQ's unmodified ``Overlay``, ``DefaultIP``/MMIO and ``allocate``.

Works on any PYNQ device: the board's own, or the simulated one of :mod:`shiftpu.sw.pynq_sim`. PYNQ is
an optional extra (``pip install shiftpu[board]``), imported when a device is opened.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.arch.regmap import OFFSET, Status
from shiftpu.errors import ShiftpuError
from shiftpu.sw.device_hwh import ACCEL_VLNV, CONFIG_PARAMETER

_IP_CLASS: type | None = None


class OverlayError(ShiftpuError):
    """The bitstream or its hardware handoff cannot be used."""


def import_pynq() -> ModuleType:
    """PYNQ, or a clear error naming the extra that provides it."""
    try:
        import pynq
    except ImportError as e:
        raise OverlayError(f"the board backend needs PYNQ, which is not installed ({e}): "
                           "pip install 'shiftpu[board]'") from None
    return pynq


def accelerator_ip_class(pynq: ModuleType) -> type:
    """The ``DefaultIP`` driver PYNQ binds to the accelerator IP (registered once, by VLNV)."""
    global _IP_CLASS
    if _IP_CLASS is None:
        class ShiftpuIP(pynq.DefaultIP):
            """PYNQ driver of the shiftpu accelerator: register access for :class:`PynqDevice`."""

            bindto = [ACCEL_VLNV]

        _IP_CLASS = ShiftpuIP
    return _IP_CLASS


class PynqBufferHandle:
    """A ``pynq.allocate`` buffer seen as a :class:`~shiftpu.sw.device.DeviceBuffer`."""

    def __init__(self, buffer: Any):
        self._buffer = buffer
        self.array: np.ndarray = buffer
        self.physical_address = int(buffer.physical_address)

    def flush(self) -> None:
        if self._buffer is not None:
            self._buffer.flush()

    def invalidate(self) -> None:
        if self._buffer is not None:
            self._buffer.invalidate()

    def free(self) -> None:
        if self._buffer is None:
            return
        self._buffer.freebuffer()
        self.array = np.zeros(0, dtype=np.uint8)
        self._buffer = None


class PynqDevice:
    """The accelerator in a loaded overlay. ``pynq_device`` defaults to PYNQ's active device (the board)."""

    POLL_MAX_S = 1e-3  #: longest sleep between STATUS polls (the default wait; ``use_interrupt`` waits on ``irq``)

    def __init__(self, bitstream: str | Path, pynq_device: Any = None, download: bool = True,
                 name: str = "board", use_interrupt: bool = False):
        bitstream = Path(bitstream)
        if not bitstream.is_file():
            raise OverlayError(f"bitstream {bitstream} does not exist")
        hwh = bitstream.with_suffix(".hwh")
        if not hwh.is_file():
            raise OverlayError(f"{hwh} is missing: PYNQ needs the hardware handoff (.hwh) written by Vivado "
                               "next to the bitstream, with the same name")
        pynq = import_pynq()
        accelerator_ip_class(pynq)
        self.name = name
        self._pynq = pynq
        try:
            self.overlay = pynq.Overlay(str(bitstream.resolve()), download=download, device=pynq_device)
        except (RuntimeError, OSError, ValueError) as e:
            raise OverlayError(f"PYNQ cannot load {bitstream}: {e}") from None
        self.ip_name = self._find_ip()
        self.config = self._config()
        #: a board runs the accelerator at the clock it was built for; the simulated PYNQ device has no clock
        self.clock_hz: float | None = None if getattr(self.overlay.device, "simulated", False) or \
            self.config is None else self.config.clock_mhz * 1e6
        self.use_interrupt = use_interrupt
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bind()

    def _bind(self) -> None:
        """(Re)create the IP driver; PYNQ invalidates interrupt objects when the overlay is downloaded again."""
        self.ip = getattr(self.overlay, self.ip_name)
        self._irq = getattr(self.ip, "irq", None) if self.use_interrupt else None

    def _find_ip(self) -> str:
        vln = ACCEL_VLNV.rsplit(":", 1)[0]
        names = [k for k, v in self.overlay.ip_dict.items() if str(v.get("type", "")).rsplit(":", 1)[0] == vln]
        if len(names) != 1:
            found = ", ".join(f"{k} ({v.get('type')})" for k, v in self.overlay.ip_dict.items()) or "none"
            raise OverlayError(f"the overlay has {len(names)} shiftpu accelerators ({vln}), expected one; "
                               f"its IP: {found}")
        return names[0]

    def _config(self) -> AccelConfig | None:
        """The accelerator config the .hwh records (None for a handoff without it)."""
        text = self.overlay.ip_dict[self.ip_name].get("parameters", {}).get(CONFIG_PARAMETER)
        if not text:
            return None
        try:
            return AccelConfig.from_dict(json.loads(text), source=f"{self.ip_name}.{CONFIG_PARAMETER}")
        except (ValueError, ConfigError) as e:
            raise OverlayError(f"the .hwh records an unreadable accelerator config: {e}") from None

    def read_register(self, offset: int) -> int:
        return int(self.ip.read(offset))

    def write_register(self, offset: int, value: int) -> None:
        self.ip.write(offset, int(value))

    def allocate(self, nbytes: int) -> PynqBufferHandle:
        buf = self._pynq.allocate((max(int(nbytes), 1),), dtype=np.uint8, target=self.overlay.device)
        return PynqBufferHandle(buf)

    def wait_interrupt(self, timeout_s: float) -> bool:
        if self._irq is not None:  # the .hwh wires `irq` to the PS and the caller asked for it
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(asyncio.wait_for(self._irq.wait(), timeout_s))
                return True
            except asyncio.TimeoutError:
                return False
        deadline = time.monotonic() + timeout_s
        sleep = 1e-5
        finished = (1 << Status.DONE) | (1 << Status.ERROR)
        while not self.read_register(OFFSET["STATUS"]) & finished:
            if time.monotonic() > deadline:
                return False
            time.sleep(sleep)
            sleep = min(sleep * 2, self.POLL_MAX_S)
        return True

    def reset(self) -> str:
        """Download the bitstream again: the reset of an accelerator that ``CTRL.SOFT_RESET`` does not bring back
        (a bitstream older than the bit, or an AXI4 slave that never completes the bursts in flight)."""
        self.overlay.download()
        self._bind()
        return "bitstream downloaded again"
