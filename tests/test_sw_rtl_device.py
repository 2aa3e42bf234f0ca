"""The RTL simulation behind the simulated PYNQ device gives the golden device's outputs, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from qdq_graphs import detector, random_input

from shiftpu.compiler.driver import compile_model
from shiftpu.sw.device_backends import RuntimeBackend, open_accelerator
from shiftpu.sw.executor import Executor

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


def test_rtl_pynq_device_matches_golden_device(tmp_path):
    pytest.importorskip("pynq")
    pytest.importorskip("cocotb")
    model = detector(size=32, width=8)
    compile_model(model, "pynq-z2", tmp_path / "det")
    x = random_input(model, seed=4)
    print("seed 4")
    probe = Executor(tmp_path / "det")
    cfg = probe.compiled.config
    golden = Executor(probe.compiled, open_accelerator(RuntimeBackend.GOLDEN, cfg, "pynq-z2")).run(x)
    rtl_accel = open_accelerator(RuntimeBackend.RTL, cfg, "pynq-z2", workdir=tmp_path / "ov")
    executor = Executor(probe.compiled, rtl_accel)
    frame = executor.execute(executor.prepare(x))
    for a, b in zip(executor.finish(frame), golden, strict=True):
        assert np.array_equal(a, b)
    # the cycle counters come through the accelerator's registers, as on the board
    assert all(s.backend == "rtl" and s.cycles and s.cycles > 0 for s in frame.stats)
    print("measured cycles per segment (RTL simulation):", [s.cycles for s in frame.stats])
