"""Register-level model of the accelerator: its AXI4-Lite register file and run sequencing.

The simulated devices put this behind their register reads and writes. On ``CTRL.START`` it finds the
constant and activation segments at ``CONST_BASE`` and ``ACT_BASE`` in a :class:`PhysicalMemory`, runs
an :class:`~shiftpu.sim.accelerator.Accelerator` backend (golden model or RTL simulation) on them in a
worker thread, then sets ``STATUS``, ``ERROR_CODE``, ``PC``, the counters and ``IRQ_STATUS`` as
docs/architecture.md "A run" describes. ``CTRL.SOFT_RESET`` cuts the run off as the hardware does
(``shiftpu.arch.regmap.SOFT_RESET_SEMANTICS``; the drain takes no time here). The driver above it cannot tell it
from the hardware.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from shiftpu.arch.isa import ISA_VERSION
from shiftpu.arch.regmap import IP_MAGIC, OFFSET, REG, Access, Ctrl, ErrorCode, Irq, Status
from shiftpu.sim.accelerator import Accelerator, AcceleratorError, RunStats

_MASK32 = 0xFFFF_FFFF
_BY_OFFSET = {r.offset: r for r in REG.values()}


class PhysicalMemory(Protocol):
    """Memory the accelerator masters: resolves a physical address to the bytes from there on."""

    def segment(self, address: int) -> np.ndarray:
        """uint8 view from ``address`` to the end of the buffer holding it; KeyError if unmapped."""
        ...


class RegisterModel:
    """The accelerator's registers; START runs ``backend`` on ``memory`` in a worker thread.

    ``hang_next_run`` makes the next START set BUSY and never finish (a hung accelerator, for
    testing timeouts); ``CTRL.SOFT_RESET`` or :meth:`reset` (re-downloading the bitstream) recovers from it, as on
    hardware. The backend works on a copy of the activation segment, written back when the run ends unless the
    model was reset meanwhile: as on hardware, a run cut off by a reset never writes memory afterwards.
    """

    def __init__(self, backend: Accelerator, memory: PhysicalMemory,
                 on_finish: Callable[[], None] | None = None):
        self.backend = backend
        self.memory = memory
        self.on_finish = on_finish
        self.hang_next_run = False
        self.last_detail = ""  #: the backend's explanation of the last error, for logs
        #: an exception the backend raised that is not an accelerator error (e.g. the simulator crashed);
        #: the next register read raises it, since the hardware it models would just never finish
        self.failure: Exception | None = None
        self._lock = threading.Lock()
        self._regs: dict[int, int] = {}
        self._worker: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        """Power-on state: identity registers set, everything else 0."""
        with self._lock:
            self._regs = {r.offset: 0 for r in REG.values()}
            self.failure = None
            self._regs[OFFSET["IP_ID"]] = IP_MAGIC
            self._regs[OFFSET["ISA_VERSION"]] = ISA_VERSION
            self._regs[OFFSET["CONFIG_HASH"]] = self.backend.config.config_hash()
            self._generation = getattr(self, "_generation", 0) + 1

    @property
    def irq(self) -> bool:
        """Level of the interrupt line: IRQ_STATUS & IRQ_ENABLE."""
        with self._lock:
            return bool(self._regs[OFFSET["IRQ_STATUS"]] & self._regs[OFFSET["IRQ_ENABLE"]] & (1 << Irq.DONE))

    def read(self, offset: int) -> int:
        with self._lock:
            failure, self.failure = self.failure, None
            if failure is not None:
                raise failure
            return self._regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        value &= _MASK32
        reg = _BY_OFFSET.get(offset)
        if reg is None or reg.access is Access.RO:
            return  # writes to read-only or undecoded addresses are ignored, as by the AXI4-Lite slave
        with self._lock:
            if reg.access is Access.W1C:
                self._regs[offset] &= ~value & _MASK32
                return
            if reg.access is Access.RW:
                self._regs[offset] = value
                return
            if reg.name == "CTRL" and value & (1 << Ctrl.SOFT_RESET):
                self._soft_reset()
                return  # START written with it is ignored
            start = reg.name == "CTRL" and value & (1 << Ctrl.START)
            if not start or self._regs[OFFSET["STATUS"]] & (1 << Status.BUSY):
                return  # START is ignored while busy
            self._regs[OFFSET["STATUS"]] = 1 << Status.BUSY
            const_base, act_base = self._regs[OFFSET["CONST_BASE"]], self._regs[OFFSET["ACT_BASE"]]
            if self.hang_next_run:
                self.hang_next_run = False
                return
            generation = self._generation
        self._worker = threading.Thread(target=self._run, args=(const_base, act_base, generation),
                                        name="shiftpu-accelerator", daemon=True)
        self._worker.start()

    def _soft_reset(self) -> None:
        """CTRL.SOFT_RESET (lock held): the run in flight is cut off and never writes memory or registers; DONE,
        ERROR, ERROR_CODE and PC cleared, ABORTED set; the base registers, IRQ_ENABLE, IRQ_STATUS and the counters
        kept."""
        self._generation += 1
        self.failure = None
        self._regs[OFFSET["STATUS"]] = 1 << Status.ABORTED
        self._regs[OFFSET["ERROR_CODE"]] = 0
        self._regs[OFFSET["PC"]] = 0

    def _run(self, const_base: int, act_base: int, generation: int) -> None:
        stats: RunStats | None = None
        code, pc = ErrorCode.NONE, 0
        work: np.ndarray | None = None  #: the backend's copy of the activation segment
        try:
            const = self.memory.segment(const_base)
            act = self.memory.segment(act_base)
        except KeyError as e:
            code, detail = ErrorCode.AXI_READ, f"address 0x{e.args[0]:x} is not mapped"
        else:
            work = act.copy()
            try:
                stats = self.backend.run_program(const, work)
                detail = ""
            except AcceleratorError as e:
                code, pc, detail = e.code, e.pc, e.detail
            except Exception as e:  # noqa: BLE001 - handed to the next register read
                with self._lock:
                    if generation == self._generation:
                        self.failure = e
                if self.on_finish is not None:
                    self.on_finish()
                return
        with self._lock:
            if generation != self._generation:
                return  # the device was reset while this run was in flight
            if work is not None:
                act[:] = work  # what the run wrote, errors included (a run stops where it failed)
            self.last_detail = detail
            regs = self._regs
            if stats is not None:
                regs[OFFSET["INSTR_RETIRED"]] = stats.instructions
                regs[OFFSET["PC"]] = stats.instructions - 1
                _set64(regs, "CYCLES", stats.cycles or 0)
                _set64(regs, "STALL", stats.stall_cycles or 0)
                regs[OFFSET["RD_BEATS"]] = (stats.read_beats or 0) & _MASK32
                regs[OFFSET["WR_BEATS"]] = (stats.write_beats or 0) & _MASK32
                regs[OFFSET["STATUS"]] = 1 << Status.DONE
            else:
                regs[OFFSET["PC"]] = pc
                regs[OFFSET["STATUS"]] = 1 << Status.ERROR
            regs[OFFSET["ERROR_CODE"]] = int(code)
            regs[OFFSET["IRQ_STATUS"]] |= 1 << Irq.DONE
        if self.on_finish is not None:
            self.on_finish()


def _set64(regs: dict[int, int], name: str, value: int) -> None:
    regs[OFFSET[f"{name}_LO"]] = value & _MASK32
    regs[OFFSET[f"{name}_HI"]] = (value >> 32) & _MASK32
