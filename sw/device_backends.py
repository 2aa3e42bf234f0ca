"""The one registry of accelerator backends, by name: "golden", "pynq-sim", "rtl", "board".

:func:`open_accelerator` opens each as a :class:`~shiftpu.sw.driver.DriverAccelerator`, so the same
register-level code path runs whatever the device (:func:`open_model` gives the executor the golden model and
the RTL simulation without the driver):

* ``golden``: the register model on host memory, golden model behind it (no PYNQ needed);
* ``pynq-sim``: PYNQ's unmodified Overlay/MMIO/allocate on the simulated PYNQ device, golden model behind it;
* ``rtl``: the same simulated PYNQ device with the RTL simulation (Verilator) behind its registers;
* ``board``: the accelerator in the bitstream loaded on a Zynq board through PYNQ.
"""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path

from shiftpu.arch.config import AccelConfig
from shiftpu.boards import load_board
from shiftpu.errors import ShiftpuError
from shiftpu.sim.accelerator import Accelerator
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sw.device import SimDevice
from shiftpu.sw.driver import DEFAULT_TIMEOUT_S, Driver, DriverAccelerator
from shiftpu.sw.watchdog import Watchdog


class RuntimeBackend(str, Enum):
    """Where the fabric part of a model runs."""

    GOLDEN = "golden"
    PYNQ_SIM = "pynq-sim"
    RTL = "rtl"
    BOARD = "board"


#: Seconds before a run counts as hung, per backend (the RTL simulation runs ~10^5 cycles/s).
DEFAULT_TIMEOUTS_S = {RuntimeBackend.GOLDEN: DEFAULT_TIMEOUT_S, RuntimeBackend.PYNQ_SIM: DEFAULT_TIMEOUT_S,
                      RuntimeBackend.RTL: 3600.0, RuntimeBackend.BOARD: DEFAULT_TIMEOUT_S}


class BackendError(ShiftpuError):
    """A backend cannot be opened here."""


def _rtl_factory(config: AccelConfig):
    try:
        from shiftpu.sim.rtl import RtlAccelerator
    except ImportError as e:
        raise BackendError(f"the RTL simulation backend is not available: {e}") from None
    return RtlAccelerator(config)


def open_accelerator(backend: RuntimeBackend, config: AccelConfig, board: str, bitstream: Path | None = None,
                     timeout_s: float | None = None, workdir: Path | None = None) -> DriverAccelerator:
    """The driver on the named device, checked against ``config`` (refuses a bitstream for another config).

    ``timeout_s``: a fixed limit for every run; None: the driver's watchdog, which on the board follows each
    program's estimated cycles and elsewhere is the backend's default from :data:`DEFAULT_TIMEOUTS_S`."""
    watchdog = Watchdog(fixed_s=timeout_s, default_s=DEFAULT_TIMEOUTS_S[backend])
    figures = load_board(board)  # its DDR figures feed the watchdog's estimate of each program
    if backend is RuntimeBackend.GOLDEN:
        return DriverAccelerator(Driver(SimDevice(GoldenAccelerator(config)), watchdog=watchdog), config, figures)
    from shiftpu.sw.device_pynq import PynqDevice

    if backend is RuntimeBackend.BOARD:
        if bitstream is None:
            raise BackendError("the board backend needs the bitstream: pass --bitstream path/to/shiftpu.bit "
                               "(the .hwh must lie next to it)")
        return DriverAccelerator(Driver(PynqDevice(bitstream, name="board"), watchdog=watchdog), config, figures)
    from shiftpu.sw.device_pynq import import_pynq

    import_pynq()
    from shiftpu.sw.pynq_sim import simulated_device, write_sim_overlay

    folder = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="shiftpu-overlay-"))
    bit = bitstream or write_sim_overlay(folder, load_board(board), config)
    factory = _rtl_factory if backend is RuntimeBackend.RTL else GoldenAccelerator
    device = PynqDevice(bit, pynq_device=simulated_device(factory), name=backend.value)
    return DriverAccelerator(Driver(device, watchdog=watchdog), config, figures)


def open_backend(name: str, config: AccelConfig, board: str, bitstream: Path | None = None,
                 timeout_s: float | None = None, workdir: Path | None = None) -> DriverAccelerator:
    """:func:`open_accelerator` by backend name, with a clear error for an unknown one."""
    try:
        backend = RuntimeBackend(name)
    except ValueError:
        raise BackendError(f"unknown backend '{name}': choose one of "
                           f"{', '.join(b.value for b in RuntimeBackend)}") from None
    return open_accelerator(backend, config, board, bitstream, timeout_s, workdir)


def open_model(name: str, config: AccelConfig, board: str) -> Accelerator:
    """The accelerator the executor runs on for a backend name: the golden model and the RTL simulation bare
    (no driver, so their :class:`~shiftpu.sim.accelerator.RunStats` keep per-layer cycles), the others through
    :func:`open_backend` on ``board``."""
    try:
        backend = RuntimeBackend(name)
    except ValueError:
        raise BackendError(f"unknown backend '{name}': choose one of "
                           f"{', '.join(b.value for b in RuntimeBackend)}") from None
    if backend is RuntimeBackend.GOLDEN:
        return GoldenAccelerator(config)
    if backend is RuntimeBackend.RTL:
        return _rtl_factory(config)
    return open_accelerator(backend, config, board)
