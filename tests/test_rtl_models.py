"""Whole compiled models on the RTL simulation: equal to the golden model and to onnxruntime, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from qdq_graphs import detector, random_input, run_onnxruntime  # noqa: E402

from shiftpu.compiler.driver import compile_model  # noqa: E402
from shiftpu.sw.executor import Executor  # noqa: E402

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


@pytest.mark.parametrize("seed", [4])
def test_detector_on_rtl_equals_golden_and_onnxruntime(tmp_path, seed):
    print(f"seed {seed}")
    model = detector(size=32, width=8)
    compile_model(model, "pynq-z2", tmp_path / "det")
    x = random_input(model, seed=seed)
    golden = Executor(tmp_path / "det", "golden").run(x)
    rtl = Executor(tmp_path / "det", "rtl")
    frame = rtl.execute(rtl.prepare(x))
    got = rtl.finish(frame)
    ref = run_onnxruntime(model, x)
    for a, b, r in zip(got, golden, ref, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, r)
    cycles = sum(s.cycles for s in frame.stats)
    print(f"measured on the RTL: {cycles} cycles in {len(frame.stats)} accelerator segment(s)")
    assert cycles > 0
