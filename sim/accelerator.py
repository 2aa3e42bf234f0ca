"""The one interface every accelerator backend implements: golden model, RTL simulation, board.

A backend runs the program found at offset 0 of the constant segment (register CONST_BASE) against the
activation arena (register ACT_BASE), as one START of the hardware does. The runtime above it is the same
for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.regmap import ErrorCode
from shiftpu.errors import ShiftpuError


class AcceleratorError(ShiftpuError):
    """A run stopped with STATUS.ERROR: carries the ERROR_CODE and the failing instruction index (PC)."""

    def __init__(self, code: ErrorCode, pc: int, detail: str = ""):
        self.code = ErrorCode(code)
        self.pc = pc
        self.detail = detail
        text = f"accelerator error {self.code.name} at instruction {pc}"
        super().__init__(f"{text}: {detail}" if detail else text)


@dataclass
class RunStats:
    """What one run reports. Cycle figures are measured on RTL/board backends, absent on the golden model."""

    backend: str
    instructions: int  #: instructions retired, END included
    cycles: int | None = None  #: clock cycles from START to DONE (measured), None if the backend has no clock
    stall_cycles: int | None = None  #: cycles the PE array waited on memory (measured)
    read_beats: int | None = None
    write_beats: int | None = None
    layer_cycles: dict[int, int] = field(default_factory=dict)  #: layer_id -> measured cycles, where known

    @property
    def measured(self) -> bool:
        return self.cycles is not None


@runtime_checkable
class Accelerator(Protocol):
    """An accelerator backend."""

    name: str
    config: AccelConfig

    def run_program(self, const: np.ndarray, act: np.ndarray) -> RunStats:
        """Run the program at offset 0 of ``const`` (uint8) on ``act`` (uint8, modified in place)."""
        ...
