"""The driver's watchdog: how long a run may take before the accelerator counts as hung.

On a device that runs the accelerator at its clock (the board) the limit follows the program: the performance
model's cycle estimate of it at the accelerator's clock, times :data:`WATCHDOG_MARGIN`, never under
:data:`WATCHDOG_FLOOR_S` (the operating system's scheduling, PYNQ's register polling and cache maintenance take
milliseconds whatever the program). A device that simulates the accelerator in software (the golden model, the
simulated PYNQ device, the RTL simulation behind it) has no time per cycle: there the limit is the backend's
default. A limit the user gives (``--timeout``) replaces both.
"""

from __future__ import annotations

from dataclasses import dataclass

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Instruction
from shiftpu.compiler.perf import Schedule, instruction_cost, program_overhead

#: Seconds a run may take on a device without a clock of its own (a simulation) unless told otherwise.
DEFAULT_TIMEOUT_S = 10.0
#: How many times the performance model's time a run may take on the board (the model is within ~2% of the RTL;
#: the rest covers DDR shared with the CPU and a board clock below the design's).
WATCHDOG_MARGIN = 8.0
#: The shortest limit on the board, seconds.
WATCHDOG_FLOOR_S = 1.0


@dataclass(frozen=True)
class WatchdogLimit:
    """The limit of one run and where it comes from, for the error message."""

    seconds: float
    basis: str


@dataclass(frozen=True)
class Watchdog:
    """The policy: a fixed limit if the user gave one, else one derived from the program where the device has a
    clock, else the backend's default."""

    fixed_s: float | None = None  #: the user's limit (``--timeout``)
    default_s: float = DEFAULT_TIMEOUT_S  #: for devices without a clock of their own
    margin: float = WATCHDOG_MARGIN
    floor_s: float = WATCHDOG_FLOOR_S

    def limit(self, estimated_cycles: int | None, clock_hz: float | None) -> WatchdogLimit:
        """The limit of a run of a program the model puts at ``estimated_cycles`` on a device clocked at
        ``clock_hz`` (None: a simulation)."""
        if self.fixed_s is not None:
            return WatchdogLimit(self.fixed_s, "the limit given (--timeout)")
        if estimated_cycles is None or clock_hz is None:
            return WatchdogLimit(self.default_s, "this backend's default limit")
        seconds = self.margin * estimated_cycles / clock_hz
        return WatchdogLimit(max(self.floor_s, seconds),
                             f"{self.margin:g} x the performance model's {estimated_cycles:,} cycles at "
                             f"{clock_hz / 1e6:g} MHz = {seconds:.3g} s, at least {self.floor_s:g} s")


def program_cycles(instructions: list[Instruction], cfg: AccelConfig, ddr_bytes_per_cycle: float,
                   read_latency: int) -> int:
    """The performance model's cycles for one program (header fetch, every instruction, END) on a memory of
    ``ddr_bytes_per_cycle`` and ``read_latency`` cycles."""
    return program_overhead(cfg, ddr_bytes_per_cycle, Schedule.RTL, read_latency) + sum(
        instruction_cost(i, cfg, ddr_bytes_per_cycle, Schedule.RTL, read_latency).cycles for i in instructions)
