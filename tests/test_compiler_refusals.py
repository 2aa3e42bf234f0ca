"""Everything the compiler or the executor refuses gets one clear error naming the cause; nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper
from qdq_graphs import QdqBuilder, random_input, run_onnxruntime

from shiftpu.compiled.folder import ArtifactError, read_folder
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.ir import CompileError
from shiftpu.compiler.onnx_import import ModelError
from shiftpu.sw.executor import Executor, ExecutorError


def _conv_model(k=3, groups=1, c_in=8, c_out=8, h=8, w=8, **kw):
    b = QdqBuilder((c_in, h, w), seed=0)
    b.output(b.conv(b.x, c_out, k, groups=groups, **kw))
    return b


def test_kernel_beyond_max_kernel_is_refused():
    with pytest.raises(CompileError, match=r"node 'Conv_\d+': kernel 9x9 exceeds the accelerator's max_kernel 7"):
        compile_model(_conv_model(k=9, h=12, w=12).model(), "pynq-z2")


def test_grouped_convolution_is_refused():
    with pytest.raises(CompileError, match=r"groups=2 with 8 -> 8 channels: only groups=1 and depthwise"):
        compile_model(_conv_model(groups=2).model(), "pynq-z2")


def test_accumulator_overflow_is_refused():
    # 8192 input channels x 7x7 taps x |64| x 128 = 3.3e9 > 2^31 - 1
    b = QdqBuilder((8192, 7, 7), seed=0)
    b.output(b.conv(b.x, 8, 7, bias=False))
    m = b.model()
    for init in m.graph.initializer:
        if init.name.startswith("wq"):
            a = onnx.numpy_helper.to_array(init).copy()
            a[:] = -64
            init.CopyFrom(onnx.numpy_helper.from_array(a, init.name))
    with pytest.raises(CompileError, match=r"accumulator of output channel 0 could reach 3288334336, beyond the 32-bit"):
        compile_model(m, "pynq-z2")


def test_accumulator_beyond_float32_exactness_is_a_warning(tmp_path):
    # channel 0: 256 input channels x 3x3 taps x |64| x 128 (int8 input) = 18874368 >= 2^24, far below 2^31
    b = QdqBuilder((256, 4, 4), seed=0)
    b.output(b.conv(b.x, 8, 3, bias=False))
    m = b.model()
    for init in m.graph.initializer:
        if init.name.startswith("wq"):
            a = onnx.numpy_helper.to_array(init).copy()
            a[0] = -64
            a[1:] = 1
            init.CopyFrom(onnx.numpy_helper.from_array(a, init.name))
    res = compile_model(m, "pynq-z2", tmp_path / "out")
    assert len(res.graph.warnings) == 1
    assert "accumulator of output channel 0 could reach 18874368 >= 2^24" in res.graph.warnings[0]
    assert "warnings:" in res.report and res.graph.warnings[0] in res.report
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["warnings"] == res.graph.warnings
    quiet = compile_model(_conv_model().model(), "pynq-z2")
    assert quiet.graph.warnings == [] and "warnings:" not in quiet.report


def test_weight_not_a_shift_is_refused():
    m = _conv_model().model()
    w = next(i for i in m.graph.initializer if i.name.startswith("wq"))
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] = 3
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    with pytest.raises(CompileError, match="weight 3 is not representable as SHIFT4 shift code"):
        compile_model(m, "pynq-z2")


def test_operator_outside_the_onnx_operator_sets_is_refused():
    b = QdqBuilder((4, 4, 4))
    b.nodes.append(helper.make_node("Swish2", [b.dq(b.x)], ["z"], domain="com.example", name="Swish2_0"))
    b.outputs.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4, 4, 4]))
    m = helper.make_model(helper.make_graph(b.nodes, "g", [b.input], b.outputs, b.inits),
                          opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.example", 1)])
    with pytest.raises(CompileError, match=r"^node 'Swish2_0' \(Swish2\) cannot run on the fabric \(no fabric "
                       r"implementation of this operator: Swish2\) and onnxruntime cannot run it on the CPU: .*"
                       r"com.example:Swish2\(-1\) is not a registered function/op"):
        compile_model(m, "pynq-z2")


def test_unknown_board_is_refused(tmp_path):
    with pytest.raises(Exception, match="unknown board 'nope'"):
        compile_model(_conv_model().model(), "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_and_malformed_onnx(tmp_path):
    good = _conv_model().model().SerializeToString()
    (tmp_path / "t.onnx").write_bytes(good[: len(good) // 3])
    with pytest.raises(ModelError, match="t.onnx"):
        compile_model(tmp_path / "t.onnx", "pynq-z2", tmp_path / "out")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelError, match="junk.onnx"):
        compile_model(tmp_path / "junk.onnx", "pynq-z2", tmp_path / "out")
    with pytest.raises(ModelError, match="no such ONNX file"):
        compile_model(tmp_path / "missing.onnx", "pynq-z2", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_batch_size_other_than_one_is_refused():
    m = _conv_model().model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    with pytest.raises(ModelError, match="batch size 2"):
        compile_model(m, "pynq-z2")


def test_failed_compile_keeps_previous_output(tmp_path):
    out = tmp_path / "out"
    compile_model(_conv_model().model(), "pynq-z2", out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(CompileError):
        compile_model(_conv_model(k=9, h=12, w=12).model(), "pynq-z2", out)
    assert (out / "manifest.json").read_text() == before


@pytest.fixture()
def compiled(tmp_path):
    b = _conv_model()
    m = b.model()
    compile_model(m, "pynq-z2", tmp_path / "out")
    return tmp_path / "out", m


def test_wrong_input_shape_or_dtype(compiled):
    out, m = compiled
    ex = Executor(out)
    x = random_input(m)
    with pytest.raises(ExecutorError, match=r"input 'x' must be float32 of shape \(1, 8, 8, 8\), got float64"):
        ex.run(x.astype(np.float64))
    with pytest.raises(ExecutorError, match=r"got float32 of shape \(1, 8, 8, 9\)"):
        ex.run(np.zeros((1, 8, 8, 9), np.float32))


def test_folder_from_another_version_is_refused(compiled):
    out, _ = compiled
    m = json.loads((out / "manifest.json").read_text())
    m["shiftpu_version"] = "0.0.1"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"compiled by shiftpu 0.0.1, this is shiftpu .*: recompile"):
        read_folder(out)


def test_other_isa_version_and_damaged_image_are_refused(compiled):
    out, _ = compiled
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(m | {"isa_version": 99}))
    with pytest.raises(ArtifactError, match="ISA version 99"):
        read_folder(out)
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "segment0.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ArtifactError, match="10 bytes, the manifest says"):
        read_folder(out)


def test_not_a_compiled_folder(tmp_path):
    with pytest.raises(ArtifactError, match="not a compiled shiftpu folder"):
        read_folder(tmp_path)


def test_unknown_and_unavailable_backends(compiled):
    out, _ = compiled
    with pytest.raises(ExecutorError, match="^unknown backend 'fpga': choose one of golden, pynq-sim, rtl, board$"):
        Executor(out, "fpga")
    with pytest.raises(ExecutorError, match="^the board backend needs the bitstream"):
        Executor(out, "board")


def test_symbolic_input_shape_is_refused():
    m = _conv_model().model()
    d = m.graph.input[0].type.tensor_type.shape.dim[2]
    d.dim_param = "H"
    with pytest.raises(ModelError, match=r"^model: input 'x' has symbolic dimension 2 'H': give its size with "
                                          r"--input-shape x:1,8,<H>,8$"):
        compile_model(m, "pynq-z2")


def test_graph_without_outputs_is_refused():
    b = QdqBuilder((4, 6, 6), seed=0)
    b.conv(b.x, 8, 3)
    with pytest.raises(ModelError, match="the graph has no outputs"):
        compile_model(b.model(), "pynq-z2")


def test_empty_graph_is_refused():
    g = helper.make_graph([], "empty", [], [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ModelError, match="no nodes"):
        compile_model(m, "pynq-z2")


def test_clip_min_inside_the_output_range_runs_on_the_cpu(tmp_path):
    """A Clip maximum inside the range runs on the fabric (test_compiler_detector_layers); a minimum does not."""
    b = QdqBuilder((4, 6, 6), seed=0)
    y = b.conv(b.x, 8, 3, act="clip")
    b.output(y)
    m = b.model()
    lo = next(i for i in m.graph.initializer if i.name.startswith("lo"))
    lo.CopyFrom(onnx.numpy_helper.from_array(np.float32(2.0 ** y.exp * 10), lo.name))
    r = compile_model(m, "pynq-z2", tmp_path / "out")
    conv = next(n for n in r.graph.cpu_nodes() if n.node.op_type == "Conv")
    assert conv.why == f"attributes outside what the fabric implements: Clip min {2.0 ** y.exp * 10} is neither 0 nor below the range"
    assert not r.graph.fabric_ops()
    x = random_input(m, 3)
    np.testing.assert_array_equal(Executor(tmp_path / "out").run(x)[0], run_onnxruntime(m, x)[0])
