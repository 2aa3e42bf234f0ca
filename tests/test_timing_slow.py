"""Every board's default accelerator held to its board clock under the delay model (slow: a full synthesis each).

A board clock is expected to be met when the estimated Fmax (logic depth of the Yosys netlist under the family's
delay model, not Vivado timing) is at least 1.25 x the clock. Netlists are cached in build/timing/ by a digest of
the Verilog, so only a changed design is synthesised again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shiftpu.boards import board_names, load_board
from shiftpu.boards.rtl import generator_available
from shiftpu.boards.timing import CLOCK_MARGIN, timing_estimate

CACHE = Path(__file__).resolve().parent.parent / "build"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not generator_available(), reason="the hardware generator needs Amaranth (the hw extra)")]


@pytest.mark.parametrize("board", board_names())
def test_default_config_meets_its_board_clock(board):
    b = load_board(board)
    start = time.perf_counter()
    report = timing_estimate(b, b.accel, CACHE, progress=print)
    print(f"{board}: {time.perf_counter() - start:.0f} s; " + json.dumps(report.to_json()["paths"][:3], indent=1))
    worst = report.paths[0]
    assert report.fmax_mhz_estimated is not None and report.meets_board_clock, (
        f"{board}: estimated Fmax {report.fmax_mhz_estimated} MHz < {CLOCK_MARGIN} x {b.fabric_clock_mhz:g} MHz; "
        f"worst path {worst.delay_ns} ns {worst.start} -> {worst.end} ({worst.lut_levels} LUT levels, "
        f"{worst.carry_cells} carry cells, {worst.dsp_stages} DSP stages)")
