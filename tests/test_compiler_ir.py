"""Passes that return new graphs, the IR as a file, and restarting a compilation from the IR dumped after a pass."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from qdq_graphs import QdqBuilder, cpu_tail_model, detector, mean_model, padded_model, rearrangement_model
from typer.testing import CliRunner

from shiftpu.arch.isa import Dataflow
from shiftpu.cli.main import app, main
from shiftpu.compiler import qdq_patterns
from shiftpu.compiler.arena import allocate_arena
from shiftpu.compiler.driver import compile_from_ir, compile_model
from shiftpu.compiler.ir import ConcatOp, ConvOp, CpuNode, CpuReason, FabricOp, Graph, MoveOp
from shiftpu.compiler.irfile import (
    IR_FORMAT,
    IR_VERSION,
    IrFileError,
    graph_from_json,
    graph_to_json,
    read_ir,
)
from shiftpu.compiler.partition import compile_options, load_model
from shiftpu.compiler.passes import IMPORT, PIPELINE, CompileOptions, choose_dataflow, passes_after
from shiftpu.compiler.qdq import fold_qdq

BOARD = "kv260"
DUMPS = ["00_import", "01_remove_dead_cpu_nodes", "02_lower_concat", "03_partition", "04_group_cpu_regions",
         "05_check_cpu_regions", "06_choose_dataflow", "07_allocate"]
runner = CliRunner()


def _mixed_model() -> onnx.ModelProto:
    """A depthwise CONV, a concatenation of a tensor with itself (its second part needs a MOVE), a Sigmoid on the
    CPU between two fabric segments, and a Gemm reading a flattened tensor directly (the Flatten, its DQ and its Q
    become dead)."""
    b = QdqBuilder((8, 8, 8), seed=1)
    a = b.conv(b.x, 16, 3, act="relu")
    dw = b.conv(a, 16, 3, groups=16, act="relu")
    cat = b.concat([dw, dw], exp=dw.exp)
    s = b.sigmoid(cat)
    p = b.maxpool(b.conv(s, 8, 1, act="relu"))
    b.output(b.gemm(b.flatten(p), 10))
    return b.model()


def _snapshot(graph: Graph) -> str:
    """Everything the graph holds, the ONNX model included, as text."""
    return json.dumps(graph_to_json(graph))


def _stages(model: onnx.ModelProto, opts: CompileOptions) -> list[tuple[str, Graph, Graph]]:
    """(pass, its input, its output) for every pass of the pipeline; asserts that no pass changes its input."""
    graph = fold_qdq(load_model(model)[0], opts.config)
    stages = []
    for name, fn in PIPELINE:
        before = _snapshot(graph)
        out = fn(graph, opts)
        assert _snapshot(graph) == before, f"{name} changed its input"
        stages.append((name, graph, out))
        graph = out
    return stages


@pytest.fixture(scope="module")
def mixed():
    opts = compile_options(BOARD)
    return {name: (before, after) for name, before, after in _stages(_mixed_model(), opts)}, opts


def _kinds(steps) -> list[str]:
    return [st.kind if isinstance(st, FabricOp) else st.node.op_type for st in steps]


def test_remove_dead_cpu_nodes_drops_the_flatten_the_gemm_reads_past(mixed):
    before, after = mixed[0]["remove_dead_cpu_nodes"]
    kept = {id(st) for st in after.steps}
    assert _kinds(st for st in before.steps if id(st) not in kept) == ["DequantizeLinear", "Flatten", "QuantizeLinear"]
    assert [id(st) for st in after.steps] == [id(st) for st in before.steps if id(st) in kept]
    assert after.tensors == before.tensors and after.model is before.model


def test_lower_concat_writes_each_part_into_the_result(mixed):
    before, after = mixed[0]["lower_concat"]
    (cat_before,) = [op for op in before.fabric_ops() if isinstance(op, ConcatOp)]
    (cat,) = [op for op in after.fabric_ops() if isinstance(op, ConcatOp)]
    dw = cat_before.inputs[0]
    part = f"{cat.output}/part1"
    assert cat_before.inputs == [dw, dw] and cat.inputs == [dw, part]
    move = after.steps[after.steps.index(cat) - 1]
    assert isinstance(move, MoveOp) and (move.inputs, move.output, move.out_shift) == ([dw], part, 0)
    assert after.aliases == {dw: (cat.output, 0), part: (cat.output, 16)}
    assert after.tensors[part].chw == before.tensors[dw].chw and part not in before.tensors
    assert before.aliases == {} and len(after.steps) == len(before.steps) + 1


def test_partition_makes_the_segments(mixed):
    before, after = mixed[0]["partition"]
    assert before.segments == []
    assert [_kinds(s.ops) for s in after.segments] == [["CONV", "CONV", "MOVE", "CONCAT"], ["CONV", "POOL", "CONV"]]
    assert sorted(map(id, after.steps)) == sorted(map(id, before.steps))
    in_segments = [id(op) for s in after.segments for op in s.ops]
    assert sorted(in_segments) == sorted(id(op) for op in after.fabric_ops())


def test_group_cpu_regions_numbers_new_cpu_nodes(mixed):
    before, after = mixed[0]["group_cpu_regions"]
    assert [_kinds(r.nodes) for r in after.cpu_regions] == [
        ["QuantizeLinear"], ["DequantizeLinear", "Sigmoid", "QuantizeLinear"], ["DequantizeLinear"]]
    assert [n.region for n in after.cpu_nodes()] == [0, 1, 1, 1, 2]
    assert all(n.region is None for n in before.cpu_nodes()) and before.cpu_regions == []
    regions = [n for r in after.cpu_regions for n in r.nodes]
    assert [id(n) for n in regions] == [id(n) for n in after.cpu_nodes()]
    assert [s.ops for s in after.segments] == [s.ops for s in before.segments]


def test_check_cpu_regions_changes_nothing(mixed):
    before, after = mixed[0]["check_cpu_regions"]
    assert _snapshot(after) == _snapshot(before)


def test_choose_dataflow_sets_every_conv(mixed):
    before, after = mixed[0]["choose_dataflow"]
    convs = [op for op in after.fabric_ops() if isinstance(op, ConvOp)]
    assert [op.dataflow for op in convs][:2] == [Dataflow.PIXEL, Dataflow.DEPTHWISE]
    assert all(op.tiling is not None and op.options for op in convs)
    assert all(op.tiling is None and op.dataflow is None and not op.options
               for op in before.fabric_ops() if isinstance(op, ConvOp))
    # the segments hold the new operations, not the old ones
    assert [id(op) for s in after.segments for op in s.ops] == [id(op) for op in after.fabric_ops()]


def test_choose_dataflow_densifies_a_copy(mixed):
    before, _ = mixed[0]["choose_dataflow"]
    opts = compile_options(BOARD, frozenset({Dataflow.PIXEL, Dataflow.INPUT_CHANNEL}))
    snapshot = _snapshot(before)
    after = choose_dataflow(before, opts)
    assert _snapshot(before) == snapshot
    dw_before = before.fabric_ops()[1]
    dw = after.fabric_ops()[1]
    assert dw_before.depthwise and dw_before.weights.shape == (16, 1, 3, 3)
    assert not dw.depthwise and dw.weights.shape == (16, 16, 3, 3) and dw.dataflow is not Dataflow.DEPTHWISE
    assert np.array_equal(dw.weights[np.arange(16), np.arange(16)], dw_before.weights[:, 0])
    off_diagonal = dw.weights.copy()
    off_diagonal[np.arange(16), np.arange(16)] = 0
    assert not off_diagonal.any()


def test_allocate_places_the_fabric_tensors(mixed):
    (before, after), opts = mixed[0]["allocate"], mixed[1]
    assert before.placements == {} and before.arena_bytes == 0
    assert (after.placements, after.arena_bytes) == allocate_arena(before, opts.config, opts.reuse_arena)
    touched = {n for op in after.fabric_ops() for n in [*op.inputs, op.output]}
    assert touched <= after.placements.keys() and after.arena_bytes > 0


MODELS = {
    "detector": lambda: detector(32, seed=0),
    "cpu_tail": cpu_tail_model,
    "padded_conv": lambda: padded_model((1, 1, 1, 1), "constant", "conv", True),
    "padded_maxpool": lambda: padded_model((0, 0, 1, 1), "edge", "maxpool", False),
    "mean": lambda: mean_model(4, "GlobalAveragePool"),
    "space_to_depth": lambda: rearrangement_model("SpaceToDepth"),
    "reorg": lambda: rearrangement_model("reshape-transpose"),
}


@pytest.mark.parametrize("name", MODELS)
def test_passes_leave_their_input_and_the_ir_survives_json(name):
    for pass_name, _, graph in _stages(MODELS[name](), compile_options(BOARD)):
        data = graph_to_json(graph)
        again = graph_from_json(json.loads(json.dumps(data)))
        assert graph_to_json(again) == data, pass_name
        assert again.describe() == graph.describe()
        steps = {id(st) for st in again.steps}
        assert all(id(op) in steps for s in again.segments for op in s.ops)
        assert all(id(n) in steps for r in again.cpu_regions for n in r.nodes)
        nodes = {id(n) for n in again.model.graph.node}
        assert all(id(n.node) in nodes for n in again.cpu_nodes())
        for a, b in zip(graph.fabric_ops(), again.fabric_ops(), strict=True):
            assert type(a) is type(b)
            if isinstance(a, ConvOp):
                assert a.weights.dtype == b.weights.dtype and np.array_equal(a.weights, b.weights)
                assert a.bias.dtype == b.bias.dtype and np.array_equal(a.bias, b.bias)
                assert list(a.options.items()) == list(b.options.items())


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    d = tmp_path_factory.mktemp("ir")
    m = detector(32, seed=0)
    onnx.save(m, d / "det.onnx")
    r = compile_model(d / "det.onnx", BOARD, d / "out", dump_ir=d / "dump")
    return d, r


def test_dump_ir_writes_one_file_per_pass(dumped):
    d, _ = dumped
    assert sorted(p.name for p in (d / "dump").iterdir()) == [f"{n}.json" for n in DUMPS]
    doc = json.loads((d / "dump" / "03_partition.json").read_text())
    assert (doc["format"], doc["format_version"], doc["pass"]) == (IR_FORMAT, IR_VERSION,
                                                                   {"number": 3, "name": "partition"})
    assert doc["board"] == BOARD and doc["source"] == "det.onnx"
    ir = read_ir(d / "dump" / "07_allocate.json")
    assert ir.options == compile_options(BOARD) and ir.after == "allocate" and ir.number == 7


@pytest.mark.parametrize("dump", DUMPS)
def test_restart_from_any_dump_writes_the_same_folder(dumped, dump, tmp_path):
    d, whole = dumped
    r = compile_from_ir(d / "dump" / f"{dump}.json", BOARD, tmp_path / "out")
    assert _files(tmp_path / "out") == _files(d / "out")
    assert r.report == whole.report and r.manifest == whole.manifest


def test_passes_after():
    assert passes_after(IMPORT) == PIPELINE
    assert [n for n, _ in passes_after("partition")] == ["group_cpu_regions", "check_cpu_regions", "choose_dataflow",
                                                         "allocate"]
    assert passes_after("allocate") == []


def _rewrite(src, dst, **changes):
    doc = json.loads(src.read_text())
    doc.update(changes)
    dst.write_text(json.dumps(doc))
    return dst


def test_wrong_files_are_refused_with_the_reason(dumped, tmp_path):
    d, _ = dumped
    src = d / "dump" / "03_partition.json"
    newer = _rewrite(src, tmp_path / "v2.json", format_version=IR_VERSION + 1)
    with pytest.raises(IrFileError, match=rf"IR format version {IR_VERSION + 1}, but this shiftpu .* reads version "
                                          rf"{IR_VERSION} only: dump the IR again"):
        read_ir(newer)
    with pytest.raises(IrFileError, match=r"not a shiftpu IR file \(format 'shiftpu-compiled'"):
        read_ir(_rewrite(src, tmp_path / "other.json", format="shiftpu-compiled"))
    (tmp_path / "half.json").write_text(src.read_text()[:1000])
    with pytest.raises(IrFileError, match="not readable JSON"):
        read_ir(tmp_path / "half.json")
    with pytest.raises(IrFileError, match="no such IR file"):
        read_ir(tmp_path / "none.json")
    with pytest.raises(IrFileError, match="malformed IR file: the pipeline has no pass 'fuse'"):
        read_ir(_rewrite(src, tmp_path / "pass.json", **{"pass": {"number": 3, "name": "fuse"}}))
    doc = json.loads(src.read_text())
    doc["graph"]["steps"][3]["kind"] = "SHUFFLE"
    (tmp_path / "kind.json").write_text(json.dumps(doc))
    with pytest.raises(IrFileError, match="malformed IR file: unknown step kind 'SHUFFLE'"):
        read_ir(tmp_path / "kind.json")
    doc = json.loads(src.read_text())
    del doc["graph"]["tensors"]
    (tmp_path / "tensors.json").write_text(json.dumps(doc))
    with pytest.raises(IrFileError, match="malformed IR file: missing field 'tensors'"):
        read_ir(tmp_path / "tensors.json")


def test_restart_with_other_options_is_refused(dumped, tmp_path):
    d, _ = dumped
    src = d / "dump" / "03_partition.json"
    with pytest.raises(IrFileError, match="dumped compiling for board kv260 .*not for board pynq-z2"):
        compile_from_ir(src, "pynq-z2", tmp_path / "out")
    with pytest.raises(IrFileError, match="schedule rtl\\), not for board kv260, other schedule"):
        compile_from_ir(src, BOARD, tmp_path / "out", schedule=compile_options(BOARD).schedule.OVERLAPPED)
    assert not (tmp_path / "out").exists()


def test_cli_dumps_and_restarts(dumped, tmp_path):
    d, _ = dumped
    r = runner.invoke(app, ["compile", str(d / "det.onnx"), "--board", BOARD, "-o", str(tmp_path / "out"),
                            "--dump-ir", str(tmp_path / "ir"), "--dump-passes", str(tmp_path / "txt"), "-q"])
    assert r.exit_code == 0, r.output
    assert _files(tmp_path / "out") == _files(d / "out")
    assert _files(tmp_path / "ir") == _files(d / "dump")
    assert sorted(p.name for p in (tmp_path / "txt").iterdir()) == [f"{n}.txt" for n in DUMPS]
    r = runner.invoke(app, ["compile", "--from-ir", str(tmp_path / "ir" / "02_lower_concat.json"), "--board", BOARD,
                            "-o", str(tmp_path / "again"), "--dump-ir", str(tmp_path / "rest"), "-q"])
    assert r.exit_code == 0, r.output
    assert _files(tmp_path / "again") == _files(d / "out")
    # the restart dumps the passes after the one it starts from, the same files as the whole run
    assert _files(tmp_path / "rest") == {k: v for k, v in _files(d / "dump").items() if k >= "03"}


@pytest.mark.parametrize("args, message", [
    (["--from-ir", "{ir}", "--board", "pynq-z2"], "dumped compiling for board kv260"),
    (["{model}", "--from-ir", "{ir}"], "give a MODEL to compile or --from-ir FILE to restart from, not both"),
    ([], "give a MODEL to compile (or --from-ir FILE"),
    (["--from-ir", "{ir}", "--input-shape", "1,3,32,32"], "--input-shape applies to a MODEL only"),
])
def test_cli_refuses_bad_restarts_in_one_line(dumped, tmp_path, args, message, monkeypatch, capsys):
    d, _ = dumped
    argv = [a.format(ir=d / "dump" / "03_partition.json", model=d / "det.onnx") for a in args]
    monkeypatch.setattr(sys, "argv", ["shiftpu", "compile", *argv, "-o", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_cpu_nodes_name_their_onnx_node(mixed):
    _, graph = mixed[0]["allocate"]
    data = graph_to_json(graph)
    cpu = [s for s in data["steps"] if s["kind"] == "CPU"]
    assert [graph.model.graph.node[s["node"]].op_type for s in cpu] == _kinds(graph.cpu_nodes())
    stray = CpuNode(onnx.helper.make_node("Relu", ["a"], ["b"]), graph.cpu_nodes()[0].reason)
    with pytest.raises(ValueError, match="is not a node of the graph's model"):
        graph_to_json(Graph(graph.model, steps=[stray]))


def test_the_pattern_table_is_where_folding_looks(monkeypatch):
    b = QdqBuilder((8, 8, 8), seed=2)
    b.output(b.maxpool(b.conv(b.x, 8, 3, act="relu")))
    model, _, _ = load_model(b.model())
    cfg = compile_options(BOARD).config
    assert _kinds(fold_qdq(model, cfg).steps)[1:3] == ["CONV", "POOL"]
    monkeypatch.delitem(qdq_patterns.PATTERNS, "MaxPool")
    pool = next(st for st in fold_qdq(model, cfg).steps if isinstance(st, CpuNode) and st.node.op_type == "MaxPool")
    assert (pool.reason, pool.detail) == (CpuReason.NO_FABRIC_OP, "MaxPool is not a fabric operation")
