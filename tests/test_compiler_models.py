"""Whole models: golden == onnxruntime exactly; the partition report; the compiled folder; pass dumps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qdq_graphs import QdqBuilder, detector, golden_vs_onnxruntime, random_input, run_onnxruntime

from shiftpu.arch.layout import align
from shiftpu.boards import load_board
from shiftpu.compiler.arena import allocate_arena, live_ranges
from shiftpu.compiler.driver import compile_model
from shiftpu.sw.compare import first_divergence
from shiftpu.sw.executor import Executor


@pytest.mark.parametrize("board", ["pynq-z2", "ultra96v2", "zcu104", "kv260"])
def test_detector_is_exact_on_every_board(tmp_path, board):
    got, ref = golden_vs_onnxruntime(detector(64, seed=1), tmp_path / "out", board, seed=2)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == r.dtype == np.float32 and g.shape == r.shape
        np.testing.assert_array_equal(g, r)


def _classifier():
    """A classifier whose GlobalAveragePool (of a 3x3 map: 9 values, not a power of two) stays on the CPU."""
    b = QdqBuilder((3, 12, 12), seed=4)
    t = b.conv(b.x, 16, 3, act="relu")
    t = b.maxpool(t, 2, 2)
    t = b.conv(t, 32, 3, stride=2, act="relu")
    g = b.global_avg_pool(t)
    logits = b.gemm(g, 10)
    b.output(logits, float_op="Sigmoid")
    return b


def test_cpu_nodes_run_and_are_reported(tmp_path):
    b = _classifier()
    m = b.model()
    got, ref = golden_vs_onnxruntime(m, tmp_path / "out", "ultra96v2", seed=1)
    np.testing.assert_array_equal(got[0], ref[0])
    report = (tmp_path / "out" / "partition.txt").read_text()
    line = next(la for la in report.splitlines() if "GlobalAveragePool" in la)
    assert line.split()[:2] == ["cpu1", "GlobalAveragePool"]
    assert line.endswith("onnxruntime, because: attributes outside what the fabric implements: mean of 3x3 = 9 "
                         "values: the fabric divides by shifting, by powers of two only")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasons = {n["op_type"]: n["reason"] for n in manifest["cpu_nodes"]}
    assert reasons == {"QuantizeLinear": "QUANT_BOUNDARY", "DequantizeLinear": "QUANT_BOUNDARY",
                       "GlobalAveragePool": "UNSUPPORTED_ATTRIBUTES", "Sigmoid": "NO_FABRIC_OP"}
    assert len(manifest["segments"]) == 2  # conv+pool+conv, then the Gemm after the CPU pooling
    assert [s for s in manifest["schedule"] if "segment" in s] == [{"segment": 0}, {"segment": 1}]
    # one onnxruntime region before, between and after the segments: Q | DQ, GAP, Q | DQ, Sigmoid
    regions = manifest["cpu_regions"]
    ops = [[manifest["cpu_nodes"][[n["index"] for n in manifest["cpu_nodes"]].index(i)]["op_type"] for i in r["nodes"]]
           for r in regions]
    assert ops == [["QuantizeLinear"], ["DequantizeLinear", "GlobalAveragePool", "QuantizeLinear"],
                   ["DequantizeLinear", "Sigmoid"]]
    assert regions[0]["inputs"] == ["x"] and regions[2]["outputs"] == [m.graph.output[0].name]
    assert regions[1]["inputs"] == [manifest["segments"][0]["outputs"][0]]
    assert regions[1]["outputs"] == manifest["segments"][1]["inputs"]


def test_manifest_describes_the_folder(tmp_path):
    m = detector(32, seed=0)
    r = compile_model(m, "kv260", tmp_path / "out", dump_passes=tmp_path / "dump")
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["board"] == "kv260" and man["isa_version"] == 1
    assert int(man["config_hash"], 16) == load_board("kv260").accel.config_hash()
    assert man["arena_bytes"] == r.graph.arena_bytes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cpu_region0.onnx", "cpu_region1.onnx", "manifest.json", "model.onnx", "partition.txt", "segment0.bin"]
    assert man["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 32, 32],
                              "quantization": {"tensor": "q1", "dtype": "int8", "scale_exp": -5}}]
    assert [o["shape"] for o in man["outputs"]] == [[1, 24, 1, 1], [1, 24, 2, 2]]
    placed = {n: t for n, t in man["tensors"].items() if "offset" in t and "inside" not in t}
    assert all(t["offset"] % 64 == 0 and t["offset"] + t["nbytes"] <= man["arena_bytes"] for t in placed.values())
    live = live_ranges(r.graph)
    for a, ta in placed.items():  # tensors sharing bytes are never live at the same time
        for b, tb in placed.items():
            share = a < b and ta["offset"] < tb["offset"] + tb["nbytes"] and tb["offset"] < ta["offset"] + ta["nbytes"]
            assert not share or live[a][1] < live[b][0] or live[b][1] < live[a][0], (a, b)
    dumps = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert dumps == ["00_import.txt", "01_remove_dead_cpu_nodes.txt", "02_lower_concat.txt", "03_partition.txt",
                     "04_group_cpu_regions.txt", "05_check_cpu_regions.txt", "06_choose_dataflow.txt",
                     "07_allocate.txt"]
    assert "dataflow=" in (tmp_path / "dump" / "06_choose_dataflow.txt").read_text()
    assert "cpu1: 2 node(s)" in (tmp_path / "dump" / "04_group_cpu_regions.txt").read_text()


def test_compare_finds_the_first_divergent_layer(tmp_path):
    m = detector(32, seed=3)
    compile_model(m, "pynq-z2", tmp_path / "out")
    x = random_input(m, 1)
    ex = Executor(tmp_path / "out", keep_intermediates=True)
    frame = ex.execute(ex.prepare(x))
    assert first_divergence(ex, frame, x).equal
    # damage the bias table of the third CONV: that layer (and not an earlier one) must be named
    img = ex.compiled.images[0]
    prog = ex.compiled.programs()[0]
    third = [i for i in prog if i.opcode.name == "CONV"][2]
    img[third.qp_addr + 4] += 1  # the requantisation shift of channel 0
    frame = ex.execute(ex.prepare(x))
    rep = first_divergence(ex, frame, x)
    assert not rep.equal
    assert rep.first.layer == ex.manifest["layers"][third.layer_id]["name"]
    assert "first difference at tensor" in rep.text()


def test_executor_output_matches_dtype_and_shape_of_onnxruntime(tmp_path):
    b = QdqBuilder((8, 8, 8), seed=9)
    y = b.conv(b.x, 8, 3, act="relu")
    b.outputs.append(__import__("onnx").helper.make_tensor_value_info(y.name, 2, [1, 8, 8, 8]))
    b.output(y)
    m = b.model()
    x = random_input(m)
    compile_model(m, "pynq-z2", tmp_path / "out")
    got = Executor(tmp_path / "out").run(x)
    ref = run_onnxruntime(m, x)
    assert [g.dtype for g in got] == [r.dtype for r in ref] == [np.uint8, np.float32]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)


@pytest.mark.slow
def test_detector_512_is_exact(tmp_path):
    got, ref = golden_vs_onnxruntime(detector(512, seed=0), tmp_path / "out", "ultra96v2", seed=0)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)


def test_arena_reuse_shrinks_the_arena():
    r = compile_model(detector(64, seed=0), "pynq-z2")
    cfg = load_board("pynq-z2").accel
    _, without = allocate_arena(r.graph, cfg, reuse=False)
    # the peak is the first CONV: its 3x64x64 input (8-channel block) and its 16x32x32 output
    assert r.graph.arena_bytes == 8 * 64 * 64 + 16 * 32 * 32 == 49152
    roots = [n for n in r.graph.placements if n not in r.graph.aliases]
    assert without == sum(align(r.graph.placements[n].nbytes, 64) for n in roots)


def test_compare_reads_an_in_place_concatenation_before_the_arena_reuses_it(tmp_path):
    # both parts come from the CPU (packed into the concatenation in place); the segments after the next CPU
    # node reuse the concatenation's bytes, so reading it back there (and not when it was packed) differs
    b = QdqBuilder((3, 16, 16), seed=0)
    t = b.conv(b.x, 8, 3, act="relu")
    cat = b.concat([b.sigmoid(b.conv(t, 8, 3, act="none")), b.sigmoid(b.conv(t, 8, 1, act="none"))])
    t = b.sigmoid(b.conv(b.conv(cat, 16, 3, act="relu"), 16, 3, act="none"))
    for _ in range(3):
        t = b.conv(t, 16, 3, act="relu")
    b.output(t)
    m = b.model()
    compile_model(m, "pynq-z2", tmp_path / "out")
    ex = Executor(tmp_path / "out", keep_intermediates=True)
    container = next(la["output"] for la in ex.manifest["layers"] if la["kind"] == "CONCAT")
    later = [ex.tensors[la["output"]] for la in ex.manifest["layers"] if la["segment"] == 2]
    c = ex.tensors[container]
    assert any(t["offset"] < c["offset"] + c["nbytes"] and c["offset"] < t["offset"] + t["nbytes"] for t in later)
    x = random_input(m, 1)
    frame = ex.execute(ex.prepare(x))
    report = first_divergence(ex, frame, x)
    assert report.text() == "compare: all 10 tensors equal to onnxruntime, bit for bit"
