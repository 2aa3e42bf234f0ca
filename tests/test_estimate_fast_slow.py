"""(slow) The fast resource estimate against the flat synthesis: within 5% on LUT, FF, DSP and BRAM for every
board's default config and three other configs (bench/estimate_speed.py's designs).

The flat estimates come from ``build/estimate`` (shared with bench/resources.py, bench/estimate_speed.py and
tests/test_estimate.py), the units from ``build/estimate-units``: a design whose flat estimate is not cached costs
a flat run of minutes to an hour.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks live next to the package, not in it

from bench.estimate_speed import CHECKED_KINDS, DESIGNS, TOLERANCE, design, differences  # noqa: E402
from shiftpu.boards.estimate import EstimateMethod, estimate_resources  # noqa: E402
from shiftpu.boards.fast_estimate import fast_estimate  # noqa: E402
from shiftpu.boards.rtl import generator_available  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not generator_available(), reason="the hardware generator needs Amaranth (the hw extra)")
@pytest.mark.parametrize("label", DESIGNS)
def test_fast_estimate_is_within_tolerance_of_flat(label):
    board, cfg = design(label)
    fast = fast_estimate(board, cfg, cache_dir=ROOT / "build" / "estimate-units")
    flat = estimate_resources(board, cfg, ROOT / "build" / "estimate")
    assert (fast.estimate.method, flat.method) == (EstimateMethod.HIERARCHICAL, EstimateMethod.FLAT)
    diff = differences(fast.estimate.used, flat.used)
    print(label, json.dumps({k: [fast.estimate.used[k], flat.used[k], round(diff[k], 4)] for k in CHECKED_KINDS}))
    assert all(abs(d) <= TOLERANCE for d in diff.values()), f"{label}: fast vs flat {diff}"
