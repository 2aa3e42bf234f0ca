"""The performance model (rtl schedule) against cycles measured in the RTL simulation."""

from __future__ import annotations

import numpy as np
import pytest
from qdq_graphs import QdqBuilder, random_input, run_onnxruntime

from shiftpu.arch.isa import Dataflow
from shiftpu.compiler.driver import compile_model
from shiftpu.sw.executor import Executor

pytestmark = [pytest.mark.slow, pytest.mark.rtl]


def _simulated(r) -> int:
    """Estimated cycles of the compiled programs on the simulation's memory (not the board's DDR)."""
    return r.simulation_estimate()["cycles"]


@pytest.mark.parametrize("case", ["conv3x3", "conv5x5_s2", "depthwise", "maxpool", "upsample", "ic_conv3x3",
                                  "ic_conv1x1"])
def test_estimate_within_5_percent_of_rtl(tmp_path, case):
    shapes = {"conv3x3": (16, 32, 32), "conv5x5_s2": (12, 20, 45), "depthwise": (32, 16, 16), "maxpool": (8, 20, 40),
              "upsample": (16, 16, 16), "ic_conv3x3": (64, 8, 8), "ic_conv1x1": (32, 4, 20)}
    b = QdqBuilder(shapes[case], seed=1)
    y = {"conv3x3": lambda: b.conv(b.x, 16, 3, act="relu"),
         "ic_conv3x3": lambda: b.conv(b.x, 32, 3, act="relu"),
         "ic_conv1x1": lambda: b.conv(b.x, 16, 1, act="leaky"),
         "conv5x5_s2": lambda: b.conv(b.x, 24, 5, stride=2, act="relu"),
         "depthwise": lambda: b.conv(b.x, 32, 3, groups=32, act="relu"),
         "maxpool": lambda: b.maxpool(b.x, 3, 1, 1),
         "upsample": lambda: b.resize(b.x)}[case]()
    b.output(y)
    m = b.model()
    x = random_input(m)
    dataflows = {Dataflow.INPUT_CHANNEL} if case.startswith("ic_") else {Dataflow.PIXEL, Dataflow.DEPTHWISE}
    r = compile_model(m, "pynq-z2", tmp_path / "out", dataflows=frozenset(dataflows))
    ex = Executor(tmp_path / "out", "rtl")
    frame = ex.execute(ex.prepare(x))
    np.testing.assert_array_equal(ex.finish(frame)[0], run_onnxruntime(m, x)[0])
    measured = sum(s.cycles for s in frame.stats)
    estimated = _simulated(r)
    print(case, "estimated", estimated, "measured", measured)
    assert abs(estimated / measured - 1) < 0.05


def test_whole_detector_on_rtl_is_exact_and_estimated_within_5_percent(tmp_path):
    from qdq_graphs import detector

    m = detector(32, seed=0)
    x = random_input(m)
    r = compile_model(m, "pynq-z2", tmp_path / "out")
    ex = Executor(tmp_path / "out", "rtl")
    frame = ex.execute(ex.prepare(x))
    for got, ref in zip(ex.finish(frame), run_onnxruntime(m, x), strict=True):
        np.testing.assert_array_equal(got, ref)
    measured = sum(s.cycles for s in frame.stats)
    estimated = _simulated(r)
    print("detector 32x32 estimated", estimated, "measured", measured)
    assert abs(estimated / measured - 1) < 0.05


def test_detector_with_the_boards_ddr_latency_is_exact_and_estimated_within_5_percent(tmp_path):
    """The compiled RAM delays every read by the board's DDR latency: what the board estimate charges, measured."""
    from qdq_graphs import detector
    from typer.testing import CliRunner

    from shiftpu.boards import load_board
    from shiftpu.cli.main import app
    from shiftpu.sim.rtl.sim_ram import BASE_READ_LATENCY

    m = detector(32, seed=0)
    x = random_input(m)
    r = compile_model(m, "pynq-z2", tmp_path / "out")
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "out"), "--backend", "rtl", "--ddr-latency",
                                      "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    print(result.output)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run_onnxruntime(m, x)[0])
    lat = load_board("pynq-z2").ddr_read_latency_cycles
    assert f"reads {lat} cycles late as on the board" in result.output
    measured = int(result.output.split("fabric: ")[1].split(" cycles")[0])
    estimated = r.simulation_estimate(read_latency=max(lat, BASE_READ_LATENCY))["cycles"]
    print("detector 32x32 with the board's DDR latency: estimated", estimated, "measured", measured)
    assert f"{estimated} cycles estimated by the performance model for this memory" in result.output
    assert abs(estimated / measured - 1) < 0.05
    assert measured > r.simulation_estimate()["cycles"]  # the latency costs cycles
