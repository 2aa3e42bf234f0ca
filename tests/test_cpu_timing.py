"""CPU time of the CPU regions, measured on this host: one entry per region and per node, labelled; `shiftpu
estimate --cpu-times` and the bench's frame figures (pipelined = the slowest of the fabric total and each CPU region,
named as the bottleneck; sequential = the sum)."""

from __future__ import annotations

import json
import os
import platform

import numpy as np
import onnx
import pytest
from qdq_graphs import cpu_tail_model
from typer.testing import CliRunner

from bench.run import cpu_markdown
from shiftpu.cli.main import app
from shiftpu.compiled.cpu_timing import CpuTimes, NodeTime, RegionTime, host_processor, measure_cpu_times
from shiftpu.compiled.folder import read_folder
from shiftpu.compiled.pipeline_stages import schedule_stages
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.estimate import format_cpu_table, with_cpu_times

runner = CliRunner()
HOST = ", ".join(filter(None, [host_processor(), platform.machine(), f"{os.cpu_count()} cores"]))
LABEL = f"measured on this host ({HOST}), median of 3 runs"


@pytest.fixture(scope="module")
def tail(tmp_path_factory):
    out = tmp_path_factory.mktemp("tail") / "out"
    compile_model(cpu_tail_model(), "pynq-z2", out)
    return out


def _nodes_by_region(folder) -> list[list[str]]:
    c = read_folder(folder)
    out = []
    for k in range(len(c.manifest["cpu_regions"])):
        model = onnx.ModelProto.FromString(c.region_bytes(k))
        out.append([n.op_type for n in model.graph.node])
    return out


def test_one_entry_per_region_and_node(tail):
    t = measure_cpu_times(tail, runs=3)
    expected = _nodes_by_region(tail)
    assert len(expected) >= 2
    assert [r.index for r in t.regions] == list(range(len(expected)))
    assert [[n.op for n in r.nodes] for r in t.regions] == expected
    assert {n.region for r in t.regions for n in r.nodes if n.region != r.index} == set()
    assert "Softmax" in [n.op for n in t.nodes]
    assert t.label == LABEL
    assert t.runtime == "onnxruntime" and t.runs == 3
    assert all(r.median_ms >= 0 for r in t.regions)
    # GroupNormalization runs as onnxruntime's function body: its kernels are still counted for it
    assert all(n.median_ms is not None and n.median_ms >= 0 for n in t.nodes)
    assert t.total_ms == sum(r.median_ms for r in t.regions)
    data = t.to_json()
    assert data["label"] == LABEL and data["machine"] == platform.machine() and data["cores"] == os.cpu_count()
    assert data["host"] == HOST and data["processor"] == host_processor()
    assert [len(r["nodes"]) for r in data["regions"]] == [len(e) for e in expected]


def test_given_values_feed_the_regions(tail):
    c = read_folder(tail)
    first = c.manifest["cpu_regions"][0]["inputs"][0]
    with pytest.raises(ValueError, match="runs"):
        measure_cpu_times(c, runs=0)
    t = measure_cpu_times(c, runs=1, values={first: np.zeros((1, 4, 12, 12), np.float32)})
    assert len(t.regions) == len(c.manifest["cpu_regions"])


def _times(region_ms: list[float]) -> CpuTimes:
    regions = tuple(RegionTime(k, ("a",), ("b",), ms, (NodeTime(k, f"n{k}", "Softmax", ms),))
                    for k, ms in enumerate(region_ms))
    return CpuTimes("onnxruntime", 5, "x86_64", 2, regions)


@pytest.mark.parametrize("segment_cycles,region_ms,bound,bottleneck", [
    ([100_000, 100_000], [0.5, 0.25, 1.0], "fabric", "fabric0+fabric1"),
    ([50_000, 50_000], [0.75, 1.5, 0.0], "cpu", "cpu1"),
])
def test_frame_pipelined_is_the_slowest_stage_sequential_is_sum(segment_cycles, region_ms, bound, bottleneck):
    est = {"latency_ms": sum(segment_cycles) / 1e5, "clock_mhz": 100.0, "clock_label": "board clock",
           "schedule": "rtl", "segments": [{"segment": k, "cycles": c} for k, c in enumerate(segment_cycles)]}
    plan = schedule_stages({"cpu_regions": [{"index": k, "nodes": [10 * k]} for k in range(3)],
                            "schedule": [{"cpu": 0}, {"segment": 0}, {"cpu": 10}, {"segment": 1}, {"cpu": 20}]})
    fabric_ms = sum(segment_cycles) / 1e5
    cpu_ms = sum(region_ms)
    frame = with_cpu_times(est, _times(region_ms), plan)["frame"]
    assert frame["fabric_ms"] == fabric_ms and frame["cpu_ms"] == cpu_ms
    assert frame["pipelined_ms"] == max(fabric_ms, *region_ms)
    assert frame["sequential_ms"] == fabric_ms + cpu_ms
    assert frame["pipelined_fps"] == round(1e3 / max(fabric_ms, *region_ms), 3)
    assert frame["bound_by"] == bound and frame["bottleneck"] == bottleneck
    assert [s["name"] for s in frame["pipeline"]["stages"]] == ["cpu0", "fabric0", "cpu1", "fabric1", "cpu2"]
    assert "measured on this host (x86_64, 2 cores), median of 5 runs" in frame["cpu_kind"]
    assert "not the board's ARM" in frame["cpu_kind"]
    assert frame["fabric_kind"].startswith("estimated") and "100 MHz" in frame["fabric_kind"]
    text = format_cpu_table(with_cpu_times(est, _times(region_ms), plan))
    assert f"bottleneck: {bottleneck}" in text and "assumptions:" in text
    r = {"cpu": _times(region_ms).to_json(), "boards": {"b": {"rtl": {"frame": frame}}}}
    md = "\n".join(cpu_markdown(r))
    assert "median of 5 runs" in md and f"| b | rtl | {fabric_ms} | {cpu_ms} |" in md and f"| {bottleneck} |" in md


def test_cli_estimate_cpu_times(tail):
    res = runner.invoke(app, ["estimate", str(tail), "--cpu-times", "--cpu-runs", "3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["cpu"]["label"] == LABEL
    assert [[n["op"] for n in r["nodes"]] for r in data["cpu"]["regions"]] == _nodes_by_region(tail)
    f = data["frame"]
    assert set(f) >= {"fabric_ms", "fabric_kind", "cpu_ms", "cpu_kind", "sequential_ms", "pipelined_ms",
                      "sequential_fps", "pipelined_fps", "bound_by"}
    assert f["fabric_ms"] == data["latency_ms"]
    assert f["cpu_ms"] == data["cpu"]["total_ms"]
    region_ms = [r["median_ms"] for r in data["cpu"]["regions"]]
    assert f["pipelined_ms"] == round(max(f["fabric_ms"], *region_ms), 4)
    # the sum of the unrounded times, rounded: within the two fields' rounding of their rounded sum
    assert f["sequential_ms"] == pytest.approx(f["fabric_ms"] + f["cpu_ms"], abs=1.5e-4)
    assert f["bound_by"] == ("fabric" if f["fabric_ms"] >= max(region_ms) else "cpu")
    assert [s["name"] for s in f["pipeline"]["stages"]] == ["cpu0", "fabric0", "cpu1", "fabric1", "cpu2"]
    text = runner.invoke(app, ["estimate", str(tail), "--cpu-times", "--cpu-runs", "3"])
    assert text.exit_code == 0, text.output
    assert LABEL in text.stdout and "Softmax" in text.stdout and "pipelined" in text.stdout
    assert f"bottleneck: {f['bottleneck']}" in text.stdout
    assert "not the board's ARM" in text.stdout
    plain = runner.invoke(app, ["estimate", str(tail), "--json"])
    assert "cpu" not in json.loads(plain.stdout)
