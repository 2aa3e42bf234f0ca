"""The frame pipeline with each CPU region a stage of its own: bit-exact against the sequential executor on a model
with a CPU region between two fabric segments (golden model behind the driver, simulated PYNQ device), the CPU work
of one frame beside the fabric work of the next, the fabric stages taking turns on the one accelerator, a frame
keeping its arena from its first fabric stage to its last; the throughput model on hand-built stage lists; a
CPU-heavy model whose bottleneck is its CPU stage in `shiftpu estimate` and `shiftpu bench`."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto
from qdq_graphs import QdqBuilder, random_input
from typer.testing import CliRunner

from shiftpu.arch.regmap import OFFSET
from shiftpu.cli.main import app
from shiftpu.compiled.cpu_timing import CpuTimes, NodeTime, RegionTime
from shiftpu.compiled.pipeline_stages import (
    PipelineModel,
    ScheduleStep,
    StageKind,
    StageTime,
    StepKind,
    frame_stages,
    schedule_stages,
)
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.estimate import estimate_folder, with_cpu_times
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sw.device import SimDevice
from shiftpu.sw.device_backends import RuntimeBackend, open_accelerator
from shiftpu.sw.driver import Driver, DriverAccelerator
from shiftpu.sw.executor import Executor
from shiftpu.sw.pipeline import FrameFailure, Pipeline, run_all
from shiftpu.sw.pipeline_model import ArenaPool, ModelStages, arenas_wanted

runner = CliRunner()
STAGES = ["preprocess", "cpu0", "fabric0", "cpu1", "fabric1", "cpu2", "postprocess"]
#: generous: only a pipeline that never overlaps the two frames runs into it (a deadlock guard, not a speed bound)
DEADLOCK_S = 60.0


def skip_model() -> onnx.ModelProto:
    """conv -> reflect Pad (CPU region 1) -> conv, then Add of the second conv and the first: the second fabric
    segment reads the first conv's output where the first segment left it in the arena."""
    b = QdqBuilder((4, 12, 12), seed=5)
    t = b.conv(b.x, 8, 3, act="relu")
    v = b.conv(b.pad(t, (1, 1, 1, 1)), 8, 3, pad=0, act="relu")
    b.output(b.add(t, v, relu=True))
    return b.model()


def cpu_heavy_model() -> onnx.ModelProto:
    """One small convolution on the fabric, then a large float tail on the CPU: a linear Resize by 16 and a
    Softmax over 8 x 192 x 192 values (hundreds of times the fabric's work)."""
    b = QdqBuilder((4, 12, 12), seed=2)
    t = b.conv(b.x, 8, 3, act="none")
    up = b.float_node("Resize", [b.dq(t), "", b.constant("sc", np.array([1, 1, 16, 16], np.float32))], mode="linear")
    b.output_value(b.float_node("Softmax", [up], axis=1), TensorProto.FLOAT, (1, 8, 192, 192))
    return b.model(opset=21)


@pytest.fixture(scope="module")
def skip(tmp_path_factory):
    out = tmp_path_factory.mktemp("skip") / "out"
    m = skip_model()
    compile_model(m, "pynq-z2", out)
    reference = Executor(out)
    print("seeds 0..23")
    inputs = [random_input(m, seed=s) for s in range(24)]
    return out, reference, inputs, [reference.run(x) for x in inputs]


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    out = tmp_path_factory.mktemp("heavy") / "out"
    compile_model(cpu_heavy_model(), "pynq-z2", out)
    return out


class ActBaseByThread(SimDevice):
    """The golden model behind the driver, noting which stage thread set each frame's arena (ACT_BASE)."""

    def __init__(self, backend):
        super().__init__(backend)
        self.act_bases: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def write_register(self, offset, value):
        if offset == OFFSET["ACT_BASE"]:
            with self._lock:
                self.act_bases.setdefault(threading.current_thread().name, []).append(value)
        super().write_register(offset, value)


def _pipeline(reference: Executor, accel, frame_errors=()) -> tuple[Pipeline, ArenaPool, ModelStages]:
    pool = ArenaPool([accel.arena(reference.manifest["arena_bytes"]) for _ in range(arenas_wanted(reference.manifest))])
    stages = ModelStages(Executor(reference.compiled, backend=accel), pool)
    return Pipeline(stages.stages(), depth=2, on_stop=pool.close, frame_errors=frame_errors), pool, stages


def _equal(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    return len(got) == len(want) and all(a.dtype == b.dtype and np.array_equal(a, b)
                                         for a, b in zip(got, want, strict=True))


def test_each_cpu_region_and_each_fabric_run_is_a_stage(skip):
    folder, reference, _, _ = skip
    m = reference.manifest
    plan = frame_stages(m)
    assert [p.name for p in plan] == STAGES
    assert [p.kind for p in plan] == [StageKind.PREPROCESS, StageKind.CPU, StageKind.FABRIC, StageKind.CPU,
                                      StageKind.FABRIC, StageKind.CPU, StageKind.POSTPROCESS]
    assert [p.indices for p in plan] == [(), (0,), (0,), (1,), (1,), (2,), ()]
    assert [s for p in plan for s in p.steps] == reference.steps
    assert reference.steps[2] == ScheduleStep(StepKind.REGION, 1)  # the Pad between the two fabric segments
    assert schedule_stages(m) == plan[1:-1]
    assert arenas_wanted(m) == 4  # fabric0, cpu1 and fabric1 each hold a frame, one more waits ready


def test_one_fabric_run_keeps_the_name_fabric_and_two_arenas():
    m = {"cpu_regions": [{"index": 0, "nodes": [0]}, {"index": 1, "nodes": [5]}],
         "schedule": [{"cpu": 0}, {"segment": 0}, {"segment": 1}, {"cpu": 5}]}
    plan = frame_stages(m)
    assert [p.name for p in plan] == ["preprocess", "cpu0", "fabric", "cpu1", "postprocess"]
    assert plan[2].indices == (0, 1) and arenas_wanted(m) == 2
    m["schedule"].append({"segment": 2})
    assert [p.name for p in schedule_stages(m)] == ["cpu0", "fabric0-1", "cpu1", "fabric2"]


@pytest.mark.parametrize("backend", [RuntimeBackend.GOLDEN, RuntimeBackend.PYNQ_SIM])
def test_pipelined_frames_equal_the_sequential_executor_bit_for_bit(skip, backend, tmp_path):
    if backend is RuntimeBackend.PYNQ_SIM:
        pytest.importorskip("pynq")
    folder, reference, inputs, expected = skip
    accel = open_accelerator(backend, reference.compiled.config, "pynq-z2", workdir=tmp_path)
    pipeline, pool, _ = _pipeline(reference, accel)
    results = list(pipeline.run(inputs))
    assert [seq for seq, _ in results] == list(range(len(inputs)))
    wrong = [seq for seq, r in results if not _equal(r.outputs, expected[seq])]
    assert wrong == []
    assert pipeline.stats.stages == STAGES and pool.available == pool.size == 4
    accel.driver.free_buffers()


def test_a_frame_keeps_its_arena_from_its_first_fabric_stage_to_its_last(skip):
    folder, reference, inputs, expected = skip
    cfg = reference.compiled.config
    device = ActBaseByThread(GoldenAccelerator(cfg))
    accel = DriverAccelerator(Driver(device), cfg)
    pipeline, pool, _ = _pipeline(reference, accel)
    results = list(pipeline.run(inputs))
    assert all(_equal(r.outputs, expected[seq]) for seq, r in results)
    first, second = device.act_bases["shiftpu-fabric0"], device.act_bases["shiftpu-fabric1"]
    assert len(first) == len(second) == len(inputs)
    assert first == second  # frame n: both segments in the same arena, frame after frame
    assert len(set(first)) <= 4


def test_the_cpu_region_of_one_frame_runs_while_the_fabric_computes_the_next(skip):
    """Region 1 of frame 0 and segment 0 of frame 1 each wait, inside their step, until the other has begun: both
    get there only if the pipeline runs them at the same time."""
    folder, reference, inputs, expected = skip
    accel = open_accelerator(RuntimeBackend.GOLDEN, reference.compiled.config, "pynq-z2")
    pipeline, pool, stages = _pipeline(reference, accel)
    executor = stages.executor
    plain = executor.execute_step
    name = reference.inputs[0]["name"]
    region_begun, segment_begun = threading.Event(), threading.Event()
    met = []

    def step(frame, s):
        x = frame.values[name]
        if s == ScheduleStep(StepKind.REGION, 1) and x is inputs[0]:
            region_begun.set()
            met.append(("region 1 of frame 0 saw segment 0 of frame 1", segment_begun.wait(DEADLOCK_S)))
        if s == ScheduleStep(StepKind.SEGMENT, 0) and x is inputs[1]:
            segment_begun.set()
            met.append(("segment 0 of frame 1 saw region 1 of frame 0", region_begun.wait(DEADLOCK_S)))
        plain(frame, s)

    executor.execute_step = step
    results = list(pipeline.run(inputs[:4]))
    assert sorted(met) == [("region 1 of frame 0 saw segment 0 of frame 1", True),
                           ("segment 0 of frame 1 saw region 1 of frame 0", True)]
    assert all(_equal(r.outputs, expected[seq]) for seq, r in results)


def test_the_fabric_stages_take_turns_on_the_one_accelerator(skip):
    folder, reference, inputs, expected = skip
    golden = GoldenAccelerator(reference.compiled.config)  # no lock of its own
    active, most = [0], [0]
    lock = threading.Lock()
    plain = golden.run_program

    def run_program(const, act):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.002)  # long enough for the other fabric stage to come in, were it let in
        try:
            return plain(const, act)
        finally:
            with lock:
                active[0] -= 1

    golden.run_program = run_program
    stages = ModelStages(Executor(reference.compiled, backend=golden))
    results = list(Pipeline(stages.stages(), depth=2).run(inputs))
    assert all(_equal(r.outputs, expected[seq]) for seq, r in results)
    assert most[0] == 1
    assert set(stages.wait_s) == {"fabric0", "fabric1"}


class Glitch(Exception):
    """A fault of one frame's run."""


def test_a_frame_failing_in_its_last_fabric_stage_returns_its_arena(skip):
    folder, reference, inputs, expected = skip
    accel = open_accelerator(RuntimeBackend.GOLDEN, reference.compiled.config, "pynq-z2")
    pipeline, pool, stages = _pipeline(reference, accel, frame_errors=(Glitch,))
    plain = stages.executor.execute_step
    name = reference.inputs[0]["name"]
    bad = inputs[3:12:4]  # frames 3, 7 and 11

    def step(frame, s):
        if s == ScheduleStep(StepKind.SEGMENT, 1) and any(frame.values[name] is x for x in bad):
            raise Glitch("segment 1 failed")
        plain(frame, s)

    stages.executor.execute_step = step
    results = list(pipeline.run(inputs))
    failed = [seq for seq, r in results if isinstance(r, FrameFailure)]
    assert failed == [3, 7, 11]
    assert all(r.stage == "fabric1" for _, r in results if isinstance(r, FrameFailure))
    assert all(_equal(r.outputs, expected[seq]) for seq, r in results if not isinstance(r, FrameFailure))
    assert pool.available == pool.size


# -- the throughput model -----------------------------------------------------------------------------------------

def _stage(name: str, ms: float) -> StageTime:
    kind = (StageKind.FABRIC if name.startswith("fabric") else StageKind.CPU if name.startswith("cpu")
            else StageKind(name))
    return StageTime(name, kind, ms, "hand-built")


@pytest.mark.parametrize("times,interval,bottleneck", [
    ({"preprocess": 0.5, "cpu0": 0.25, "fabric0": 1.0, "cpu1": 2.5, "fabric1": 1.25, "postprocess": 0.125},
     2.5, "cpu1"),
    ({"preprocess": 0.5, "cpu0": 0.25, "fabric0": 1.5, "cpu1": 2.5, "fabric1": 1.25, "postprocess": 0.125},
     2.75, "fabric0+fabric1"),
    ({"preprocess": 3.0, "fabric": 2.0, "postprocess": 1.0}, 3.0, "preprocess"),
    ({"preprocess": 1.0, "fabric": 2.0, "cpu1": 2.0, "postprocess": 1.0}, 2.0, "fabric"),  # a tie: the accelerator
])
def test_interval_is_the_largest_of_the_fabric_total_and_each_other_stage(times, interval, bottleneck):
    model = PipelineModel(tuple(_stage(n, ms) for n, ms in times.items()))
    assert model.interval_ms == interval
    assert model.bottleneck == bottleneck
    assert model.latency_ms == sum(times.values())
    assert model.fps == 1e3 / interval
    assert model.sequential_fps == 1e3 / sum(times.values())
    data = model.to_json()
    assert data["bottleneck"] == bottleneck and data["interval_ms"] == interval
    assert [s["name"] for s in data["stages"]] == list(times)
    assert data["kind"].startswith("estimated") and all(s["source"] == "hand-built" for s in data["stages"])
    text = model.format()
    assert f"bottleneck: {bottleneck}" in text and "assumptions:" in text and "ms" in text and "fps" in text


@given(st.lists(st.tuples(st.sampled_from([StageKind.CPU, StageKind.FABRIC, StageKind.PREPROCESS]),
                          st.floats(0, 1e3, allow_nan=False)), min_size=1, max_size=8))
def test_interval_property(stages):
    model = PipelineModel(tuple(StageTime(f"s{i}", kind, ms, "drawn") for i, (kind, ms) in enumerate(stages)))
    fabric = sum(ms for kind, ms in stages if kind is StageKind.FABRIC)
    others = [ms for kind, ms in stages if kind is not StageKind.FABRIC]
    assert model.interval_ms == max([fabric] * any(k is StageKind.FABRIC for k, _ in stages) + others)
    assert model.latency_ms == sum(ms for _, ms in stages)
    assert model.interval_ms <= model.latency_ms


def test_model_refuses_no_stages_and_bad_times():
    with pytest.raises(ValueError, match="at least one"):
        PipelineModel(())
    with pytest.raises(ValueError, match="cpu1"):
        PipelineModel((_stage("fabric", 1.0), _stage("cpu1", math.nan)))
    with pytest.raises(ValueError, match="cpu1"):
        PipelineModel((_stage("cpu1", -1.0),))


def test_estimate_frame_uses_the_schedule_stages(skip):
    folder, reference, _, _ = skip
    est = estimate_folder(reference.compiled)
    assert sum(s["cycles"] for s in est["segments"]) == est["cycles"] and len(est["segments"]) == 2
    regions = tuple(RegionTime(k, ("a",), ("b",), ms, (NodeTime(k, f"n{k}", "Pad", ms),))
                    for k, ms in enumerate([0.001, 5.0, 0.002]))
    frame = with_cpu_times(est, CpuTimes("onnxruntime", 3, "x86_64", 2, regions, "Some CPU"),
                           schedule_stages(reference.manifest))["frame"]
    assert [s["name"] for s in frame["pipeline"]["stages"]] == STAGES[1:-1]
    assert frame["bottleneck"] == "cpu1" and frame["bound_by"] == "cpu" and frame["pipelined_ms"] == 5.0
    assert frame["sequential_ms"] == round(est["latency_ms"] + 5.003, 4)
    assert "Some CPU, x86_64, 2 cores" in frame["cpu_kind"]


# -- a CPU-heavy model --------------------------------------------------------------------------------------------

def test_cpu_heavy_model_estimate_names_its_cpu_stage_the_bottleneck(heavy):
    res = runner.invoke(app, ["estimate", str(heavy), "--cpu-times", "--cpu-runs", "3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    frame = data["frame"]
    names = [s["name"] for s in frame["pipeline"]["stages"]]
    assert names == ["cpu0", "fabric", "cpu1"]
    region_ms = {f"cpu{r['index']}": r["median_ms"] for r in data["cpu"]["regions"]}
    print("region ms (measured):", region_ms, "fabric ms (estimated):", frame["fabric_ms"])
    assert frame["bottleneck"] == "cpu1" and frame["bound_by"] == "cpu"
    assert frame["pipelined_ms"] == max([frame["fabric_ms"], *region_ms.values()]) == region_ms["cpu1"]
    assert {n["op"] for r in data["cpu"]["regions"] for n in r["nodes"]} >= {"Resize", "Softmax", "QuantizeLinear"}
    text = runner.invoke(app, ["estimate", str(heavy), "--cpu-times", "--cpu-runs", "3"])
    assert text.exit_code == 0, text.output
    assert "bottleneck: cpu1" in text.stdout and "Softmax" in text.stdout and "assumptions:" in text.stdout


def test_cpu_heavy_model_bench_reports_nodes_fabric_estimate_and_bottleneck(heavy):
    res = runner.invoke(app, ["bench", str(heavy), "--frames", "4", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert list(doc["stages"]) == ["preprocess", "cpu0", "fabric", "cpu1", "postprocess"]
    assert doc["cpu"]["label"].startswith("measured on this host (") and doc["cpu"]["host"] in doc["cpu"]["label"]
    assert {n["op"] for r in doc["cpu"]["regions"] for n in r["nodes"]} >= {"Resize", "Softmax"}
    assert doc["fabric_estimate"]["kind"].startswith("estimated (performance model")
    board = doc["pipeline_model_board"]
    assert board["bottleneck"] == "cpu1"
    assert [s["source"].startswith("estimated") for s in board["stages"]] == [False, False, True, False, False]
    assert board["interval_ms"] == max(board["fabric_ms"], *(s["ms"] for s in board["stages"] if s["kind"] != "fabric"))
    assert doc["pipeline_model_this_backend"]["stages"][2]["source"].startswith("measured alone on this host")
    text = runner.invoke(app, ["bench", str(heavy), "--frames", "4"])
    assert text.exit_code == 0, text.output
    assert "bottleneck: cpu1" in text.stdout and "Softmax" in text.stdout and "estimated (performance model" in text.stdout


def test_run_all_on_model_stages_without_arenas(skip):
    folder, reference, inputs, expected = skip
    stats = run_all(Pipeline(ModelStages(reference).stages()), inputs[:6])
    assert stats.frames == 6 and stats.stages == STAGES
