"""`shiftpu check` predicts exactly the fabric/CPU partition that `shiftpu compile` makes, on every model of the
test suite and on graphs with standard operators the fabric does not run (Pad, Softmax, linear Resize, Slice,
Cast, GroupNormalization, ConstantOfShape); each CPU node is reported with the onnxruntime region that runs it
and why it is not on the fabric."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from qdq_graphs import QdqBuilder, cpu_tail_model, detector, mean_model, padded_model, rearrangement_model
from typer.testing import CliRunner

from shiftpu.cli.main import app
from shiftpu.compiler.ir import CompileError
from shiftpu.compiler.onnx_import import ModelError
from shiftpu.compiler.partition import PartitionEntry, check_partition, partition_entries
from shiftpu.compiler.quant.qonnx_import import import_quantized

ROOT = Path(__file__).resolve().parents[1]
BREVITAS = ROOT / "tests" / "data" / "brevitas"
runner = CliRunner()


def _classifier() -> onnx.ModelProto:
    """test_compiler_models' classifier: a CPU GlobalAveragePool between two segments, a Sigmoid after them."""
    b = QdqBuilder((3, 16, 16), seed=4)
    t = b.conv(b.x, 16, 3, act="relu")
    t = b.maxpool(t, 2, 2)
    t = b.conv(t, 32, 3, stride=2, act="relu")
    b.output(b.gemm(b.global_avg_pool(t), 10), float_op="Sigmoid")
    return b.model()


def _concat_of_sigmoids() -> onnx.ModelProto:
    """test_compiler_models' in-place concatenation whose parts come from the CPU."""
    b = QdqBuilder((3, 16, 16), seed=0)
    t = b.conv(b.x, 8, 3, act="relu")
    cat = b.concat([b.sigmoid(b.conv(t, 8, 3, act="none")), b.sigmoid(b.conv(t, 8, 1, act="none"))])
    t = b.sigmoid(b.conv(b.conv(cat, 16, 3, act="relu"), 16, 3, act="none"))
    b.output(b.conv(t, 16, 3, act="relu"))
    return b.model()


def _unaligned_concat() -> onnx.ModelProto:
    """test_compiler_layers' concatenation of channel counts off the channel block: a CPU Concat."""
    b = QdqBuilder((4, 8, 8), seed=1)
    b.output(b.conv(b.concat([b.conv(b.x, 3, 3), b.conv(b.x, 5, 3)]), 8, 3))
    return b.model()


def _flatten_gemm() -> onnx.ModelProto:
    b = QdqBuilder((8, 4, 4), seed=2)
    b.output(b.gemm(b.flatten(b.conv(b.x, 8, 3)), 10))
    return b.model()


def _float_tail(op: str, **attrs) -> Callable[[], onnx.ModelProto]:
    def build() -> onnx.ModelProto:
        b = QdqBuilder((4, 6, 6), seed=5)
        t = b.conv(b.x, 8, 3, act="relu")
        y = b.float_node(op, [b.dq(t)], **attrs)
        b.output_value(y, TensorProto.FLOAT, (1, 8, 6, 6))
        return b.model()
    return build


def _clip_inside_range() -> onnx.ModelProto:
    """test_compiler_refusals' Clip with its maximum inside the output range: the Conv stays float on the CPU."""
    b = QdqBuilder((4, 6, 6), seed=0)
    y = b.conv(b.x, 8, 3, act="clip")
    b.output(y)
    m = b.model()
    hi = next(i for i in m.graph.initializer if i.name.startswith("hi"))
    hi.CopyFrom(onnx.numpy_helper.from_array(np.float32(2.0 ** y.exp * 10), hi.name))
    return m


def _brevitas(name: str, kind: str) -> Callable[[], onnx.ModelProto]:
    return lambda: import_quantized(onnx.load(str(BREVITAS / f"{name}.{kind}.onnx")))


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "shapes_detector": lambda: onnx.load(str(ROOT / "shiftpu" / "models" / "shapes_detector.onnx")),
    "detector32": lambda: detector(32, seed=3),
    "classifier": _classifier,
    "concat_of_sigmoids": _concat_of_sigmoids,
    "unaligned_concat": _unaligned_concat,
    "flatten_gemm": _flatten_gemm,
    "clip_inside_range": _clip_inside_range,
    "cpu_tail": cpu_tail_model,
    "softmax": _float_tail("Softmax", axis=1),
    "softplus": _float_tail("Softplus"),
    "edge_pad_maxpool": lambda: padded_model((0, 0, 1, 1), "edge", "maxpool", True),
    "zero_pad_signed_maxpool": lambda: padded_model((0, 0, 1, 1), "constant", "maxpool", True, 0.0),
    "mean_4x4": lambda: mean_model(4, "GlobalAveragePool"),
    "mean_3x3": lambda: mean_model(3, "ReduceMean"),
    "space_to_depth": lambda: rearrangement_model("reshape-transpose"),
    "depth_to_space": lambda: rearrangement_model("DepthToSpace"),
    **{f"brevitas_{name}_{kind}": _brevitas(name, kind)
       for name in ("conv_classifier", "residual_pool", "conv_linear", "conv_classifier_act4")
       for kind in ("qcdq", "qonnx")},
}


def _partition_lines(text: str) -> list[str]:
    """The step lines of a partition listing (compile's report or check's output)."""
    return [line for line in text.splitlines() if line.startswith(("  fabric", "  cpu"))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_check_predicts_the_partition_compile_makes(tmp_path, name):
    board = "pynq-z2" if name.startswith("brevitas") else "ultra96v2"
    path = tmp_path / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    checked = runner.invoke(app, ["check", str(path), "--board", board])
    assert checked.exit_code in (0, 1), checked.output
    assert f"partition made by shiftpu compile --board {board}:" in checked.output
    compiled = runner.invoke(app, ["compile", str(path), "--board", board, "-o", str(tmp_path / "out")])
    assert compiled.exit_code == 0, compiled.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    predicted = partition_entries(check_partition(path, board))
    assert [e.to_dict() for e in predicted] == manifest["partition"]
    # the lines check prints begin the lines of compile's report (which adds each CONV's dataflow)
    said = _partition_lines(checked.output)
    reported = _partition_lines((tmp_path / "out" / "partition.txt").read_text())
    assert len(said) == len(reported) == len(predicted)
    assert all(r.startswith(s) for s, r in zip(said, reported, strict=True))
    # every step is listed once, CPU nodes with their region, runtime and reason
    cpu = [PartitionEntry(**e) for e in manifest["partition"] if e["where"] == "cpu"]
    assert [(e.name, e.reason) for e in cpu] == [(n["name"], n["reason"]) for n in manifest["cpu_nodes"]]
    assert all(e.runtime == "onnxruntime" and e.why for e in cpu)
    assert {e.unit for e in cpu} == set(range(len(manifest["cpu_regions"])))


def test_standard_operators_on_the_cpu_are_reported_with_their_reason(tmp_path):
    onnx.save(cpu_tail_model(), str(tmp_path / "tail.onnx"))
    r = runner.invoke(app, ["check", str(tmp_path / "tail.onnx"), "--board", "zcu104"])
    assert r.exit_code == 1  # the model does not run whole on the fabric
    lines = {line.split()[1]: line for line in _partition_lines(r.output) if line.startswith("  cpu")}
    assert lines["Pad"].split()[0] == "cpu1"  # between the first and second fabric segments
    assert lines["Pad"].endswith("onnxruntime (no numpy fallback), because: no fabric implementation of this "
                                 "operator: Pad is not a fabric operation")
    assert lines["Resize"].endswith("because: operates on float values (its inputs or output are not quantized "
                                    "tensors)")
    for op in ("Softmax", "Slice", "Cast", "GroupNormalization", "Shape", "ConstantOfShape"):
        assert lines[op].split()[0] == "cpu2"
        assert lines[op].endswith(f"because: no fabric implementation of this operator: {op}")
    assert lines["DequantizeLinear"].endswith("onnxruntime, because: converts between float and quantized values "
                                              "at the edge of the fabric")
    assert "3 fabric instructions in 2 segment(s), 15 CPU node(s) in 3 onnxruntime region(s)" in r.output


def test_check_predicts_a_refusal_with_compiles_message(tmp_path):
    b = QdqBuilder((4, 4, 4))
    b.nodes.append(helper.make_node("Swish2", [b.dq(b.x)], ["z"], domain="com.example", name="Swish2_0"))
    b.outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 4, 4]))
    m = helper.make_model(helper.make_graph(b.nodes, "g", [b.input], b.outputs, b.inits),
                          opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.example", 1)])
    onnx.save(m, str(tmp_path / "m.onnx"))
    compiled = runner.invoke(app, ["compile", str(tmp_path / "m.onnx"), "-b", "kv260", "-o", str(tmp_path / "out")])
    assert isinstance(compiled.exception, CompileError) and not (tmp_path / "out").exists()
    error = str(compiled.exception)
    assert error.startswith("node 'Swish2_0' (Swish2) cannot run on the fabric (no fabric implementation of "
                            "this operator: Swish2) and onnxruntime cannot run it on the CPU: ")
    checked = runner.invoke(app, ["check", str(tmp_path / "m.onnx"), "-b", "kv260"])
    assert checked.exit_code == 1
    assert f"shiftpu compile --board kv260 refuses the model: {error}" in checked.output


def test_non_power_of_two_scales_are_still_refused_by_both(tmp_path):
    m = _classifier()
    scale = next(i for i in m.graph.initializer if i.name.startswith("s"))
    scale.CopyFrom(onnx.numpy_helper.from_array(np.float32(0.3), scale.name))
    onnx.save(m, str(tmp_path / "m.onnx"))
    for command in ("compile", "check"):
        r = runner.invoke(app, [command, str(tmp_path / "m.onnx"), *(["-o", str(tmp_path / "out")] * (command == "compile"))])
        assert isinstance(r.exception, ModelError)
        assert "has scale 0.3, not a power of two" in str(r.exception) and "`shiftpu quantize`" in str(r.exception)
