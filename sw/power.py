"""Power of a run: measured from the board's PMBus rails where it has them, else estimated.

Estimate (watts) = board static power (fabric idle, from the board file)
                 + fabric dynamic power: ``DYNAMIC_W_PER_GOPS`` x achieved shift-add throughput (GOP/s),
i.e. an energy per operation (20 pJ): a larger array doing the same work per second switches the same logic
(its clock tree and idle registers are not modelled).
The coefficient is a planning figure for a shift-add array at 16 nm / 28 nm (not a measurement); the
result is always labelled "estimated". The throughput is MACs per frame x a frame rate
(:func:`estimate_power_at_fps`), so two estimates of one model differ only by the frame rate they are taken at:
the performance model's (the demo's board table, the report's power line) or the one a pipeline run reached
(`shiftpu bench`, on whatever backend ran it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum

from shiftpu.boards import Board

#: Dynamic fabric power per GOP/s of shift-add work (planning figure, watts).
DYNAMIC_W_PER_GOPS = 0.02


class PowerSource(str, Enum):
    MEASURED = "measured"  #: PYNQ PMBus rails, averaged over the run
    ESTIMATED = "estimated"  #: the formula in this module's docstring


@dataclass(frozen=True)
class PowerReport:
    watts: float
    source: PowerSource
    detail: str
    static_w: float | None = None  #: estimated only: the board with the fabric idle (board file)
    dynamic_w: float | None = None  #: estimated only: the fabric's shift-add activity


def estimate_power(board: Board, gops: float) -> PowerReport:
    """Static power of the board plus dynamic power for ``gops`` GOP/s of shift-add work."""
    dynamic = DYNAMIC_W_PER_GOPS * gops
    return PowerReport(round(board.static_power_w + dynamic, 3), PowerSource.ESTIMATED,
                       f"static {board.static_power_w} W (board file) + dynamic {dynamic:.3f} W "
                       f"({DYNAMIC_W_PER_GOPS} W per GOP/s x {gops:.2f} GOP/s)",
                       static_w=board.static_power_w, dynamic_w=round(dynamic, 3))


def estimate_power_at_fps(board: Board, macs_per_frame: float, fps: float) -> PowerReport:
    """The estimate with the fabric running ``fps`` frames of ``macs_per_frame`` shift-adds each per second."""
    return estimate_power(board, macs_per_frame * fps / 1e9)


class RailSampler:
    """Samples the board's power rails (``pynq.get_rails()``) in a thread while a run is going on."""

    def __init__(self, board: Board, period_s: float = 0.1):
        self.board = board
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rails = self._open()

    def _open(self) -> dict:
        if not self.board.power_rails:
            return {}
        try:
            import warnings

            import pynq
            with warnings.catch_warnings():  # off-board, pynq warns that libsensors is missing
                warnings.simplefilter("ignore")
                rails = pynq.get_rails()
        except Exception:  # noqa: BLE001 - no PMBus here: the estimate is used instead
            return {}
        return {name: rails[name] for name in self.board.power_rails
                if name in rails and getattr(rails[name], "power", None) is not None}

    @property
    def available(self) -> bool:
        return bool(self._rails)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append(sum(float(r.power.value) for r in self._rails.values()))
            self._stop.wait(self.period_s)

    def __enter__(self) -> RailSampler:
        if self.available:
            self._thread = threading.Thread(target=self._sample, name="shiftpu-power", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def report(self, fallback_gops: float) -> PowerReport:
        if self.samples:
            watts = sum(self.samples) / len(self.samples)
            return PowerReport(round(watts, 3), PowerSource.MEASURED,
                               f"mean of {len(self.samples)} samples of rails {', '.join(self._rails)} "
                               f"every {self.period_s * 1e3:.0f} ms")
        return estimate_power(self.board, fallback_gops)
