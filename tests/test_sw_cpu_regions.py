"""CPU regions at run time: one onnxruntime session per region, built once; equal to onnxruntime on the whole
graph; the numpy kernels as the fallback where onnxruntime is absent (asked for, or failing to import)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from qdq_graphs import QdqBuilder, cpu_tail_model, random_input, run_onnxruntime
from typer.testing import CliRunner

from shiftpu.cli.main import app
from shiftpu.compiled.cpu_regions import CpuRuntime, NumpyRegion, OrtRegion, resolve
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.ir import CompileError
from shiftpu.sw.compare import CompareError, first_divergence
from shiftpu.sw.executor import Executor, ExecutorError

runner = CliRunner()


def _classifier() -> onnx.ModelProto:
    """CPU nodes the numpy kernels cover: quantize, GlobalAveragePool, Sigmoid."""
    b = QdqBuilder((3, 16, 16), seed=4)
    t = b.conv(b.x, 16, 3, act="relu")
    t = b.conv(t, 32, 3, stride=2, act="relu")
    b.output(b.gemm(b.global_avg_pool(t), 10), float_op="Sigmoid")
    return b.model()


@pytest.fixture(scope="module")
def tail(tmp_path_factory):
    d = tmp_path_factory.mktemp("tail")
    m = cpu_tail_model()
    onnx.save(m, str(d / "tail.onnx"))
    compile_model(m, "pynq-z2", d / "out")
    x = random_input(m, 4)
    np.save(d / "x.npy", x)
    return d, m, x


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    d = tmp_path_factory.mktemp("classifier")
    m = _classifier()
    compile_model(m, "ultra96v2", d / "out")
    return d, m


def test_standard_operators_on_the_cpu_equal_onnxruntime_on_the_whole_graph(tail):
    d, m, x = tail
    ex = Executor(d / "out", keep_intermediates=True)
    assert [type(r) for r in ex.cpu_regions] == [OrtRegion] * 3
    frame = ex.execute(ex.prepare(x))
    got, ref = ex.finish(frame), run_onnxruntime(m, x)
    assert [g.dtype for g in got] == [np.float32, np.float16, np.float32]
    for g, r in zip(got, ref, strict=True):  # the same onnxruntime kernels on the same integers: equal floats
        assert g.shape == r.shape
        np.testing.assert_array_equal(g, r)
    # the fabric layers and the outputs, tensor by tensor, bit for bit
    assert first_divergence(ex, frame, x).text() == "compare: all 6 tensors equal to onnxruntime, bit for bit"


def test_each_region_is_one_session_built_once_and_called_once_per_frame(tail, monkeypatch):
    import onnxruntime as ort

    d, m, x = tail
    built, calls = [], []
    real = ort.InferenceSession

    class Counting(real):
        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

        def run(self, *a, **k):
            calls.append(id(self))
            return super().run(*a, **k)

    monkeypatch.setattr(ort, "InferenceSession", Counting)
    ex = Executor(d / "out")
    assert len(built) == len(ex.manifest["cpu_regions"]) == 3
    for seed in range(3):
        ex.run(random_input(m, seed))
    assert len(built) == 3 and len(calls) == 9
    assert [calls.count(id(r.session)) for r in ex.cpu_regions] == [3, 3, 3]


def test_run_on_the_golden_and_pynq_sim_backends(tail):
    d, m, x = tail
    ref = run_onnxruntime(m, x)[0]
    backends = ["golden", "pynq-sim"] if _have_pynq() else ["golden"]
    for backend in backends:
        y = d / f"y_{backend}.npy"
        r = runner.invoke(app, ["run", str(d / "out"), "-i", str(d / "x.npy"), "--backend", backend, "-o", str(y)])
        assert r.exit_code == 0, r.output
        np.testing.assert_array_equal(np.load(y), ref)
    r = runner.invoke(app, ["run", str(d / "out"), "-i", str(d / "x.npy"), "--compare"])
    assert r.exit_code == 0 and "compare: all 6 tensors equal to onnxruntime, bit for bit" in r.output


def _have_pynq() -> bool:
    try:
        import pynq  # noqa: F401
    except ImportError:
        return False
    return True


def test_numpy_runtime_runs_what_its_kernels_cover(classifier):
    d, m = classifier
    ex = Executor(d / "out", cpu_runtime="numpy")
    assert [type(r) for r in ex.cpu_regions] == [NumpyRegion] * 3
    for seed in range(3):
        x = random_input(m, seed)
        np.testing.assert_array_equal(ex.run(x)[0], run_onnxruntime(m, x)[0])


def test_without_onnxruntime_the_numpy_kernels_take_over(classifier, tail, monkeypatch):
    d, m = classifier
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    assert resolve(CpuRuntime.AUTO) is CpuRuntime.NUMPY
    ex = Executor(d / "out")
    assert [type(r) for r in ex.cpu_regions] == [NumpyRegion] * 3
    monkeypatch.undo()
    x = random_input(m, 5)
    np.testing.assert_array_equal(ex.run(x)[0], run_onnxruntime(m, x)[0])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExecutorError, match=r"the onnxruntime CPU runtime was asked for, but onnxruntime is not "
                                            r"installed \(pip install onnxruntime\)$"):
        Executor(d / "out", cpu_runtime="onnxruntime")
    td = tail[0]
    with pytest.raises(ExecutorError, match=r"CPU region 1: node 'Pad_\d+' \(Pad\) has no numpy kernel \(1 of its 3 "
                                            r"nodes have none\) and onnxruntime is not installed: run it with "
                                            r"onnxruntime \(pip install onnxruntime\)$"):
        Executor(td / "out")


def test_numpy_runtime_refuses_a_region_beyond_its_kernels_on_the_command_line(tail):
    d, m, x = tail
    r = runner.invoke(app, ["run", str(d / "out"), "-i", str(d / "x.npy"), "--cpu-runtime", "numpy"])
    assert isinstance(r.exception, ExecutorError)
    assert "CPU region 1: node 'Pad_" in str(r.exception) and "the numpy CPU runtime was asked for" in str(r.exception)


def test_compiling_without_onnxruntime_checks_the_operator_sets(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = compile_model(cpu_tail_model(), "kv260", tmp_path / "out")
    assert len(r.graph.cpu_regions) == 3
    assert (tmp_path / "out" / "cpu_region2.onnx").is_file()
    b = QdqBuilder((4, 4, 4))
    b.nodes.append(helper.make_node("Swish2", [b.dq(b.x)], ["z"], domain="com.example", name="Swish2_0"))
    b.outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 4, 4]))
    m = helper.make_model(helper.make_graph(b.nodes, "g", [b.input], b.outputs, b.inits),
                          opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("com.example", 1)])
    with pytest.raises(CompileError, match=r"^node 'Swish2_0' \(Swish2, domain 'com.example'\) cannot run on the "
                                           r"fabric \(.*\) and is not an ONNX standard operator$"):
        compile_model(m, "kv260")


def test_compare_without_onnxruntime_is_one_clear_error(classifier, tmp_path, monkeypatch):
    d, m = classifier
    np.save(tmp_path / "x.npy", random_input(m, 1))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = runner.invoke(app, ["run", str(d / "out"), "-i", str(tmp_path / "x.npy"), "--compare"])
    assert isinstance(r.exception, CompareError)
    assert str(r.exception) == ("--compare needs onnxruntime, the reference, which is not installed here "
                                "(pip install onnxruntime, or compare on the host)")
