"""Real Brevitas exports (tests/data/brevitas/, made by tools/make_brevitas_fixtures.py) through import_quantized.

The references are Brevitas' own quantized PyTorch forward (``y_brevitas``) and qonnx's executor on the QONNX
file (``y_qonnx``), stored with the fixtures, so these tests need neither Brevitas nor qonnx installed.

Why the comparisons are exact: every scale is a power of two and zero points are 0, so dequantized inputs,
weights and biases are small integers times powers of two, exactly representable in float32; their products
are exact, and the sums stay below 2^24 units of the accumulator scale, so float32 addition is exact in any
order. Brevitas (torch float32), onnxruntime and the golden model therefore reach the same accumulator value,
and the final quantizer rounds it half to even (torch.round, QuantizeLinear, the fabric's requantisation) to
the same integer. Dequantized outputs are integers times a power of two, so equal integers mean bitwise-equal
float32 outputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from qdq_graphs import run_onnxruntime

from shiftpu.compiler.quant.check import check_model
from shiftpu.compiler.quant.onnxio import ModelError
from shiftpu.compiler.quant.qonnx_import import import_quantized

DATA = Path(__file__).parent / "data" / "brevitas"
GENERATOR = Path(__file__).resolve().parents[1] / "tools" / "make_brevitas_fixtures.py"
KINDS = ("qonnx", "qonnx_dynamo", "qcdq")
#: Fixtures whose quantizers the accelerator takes, and the subset the compiler maps onto the fabric.
REPRESENTABLE = ("conv_classifier", "residual_pool", "conv_linear", "conv_classifier_act4")
COMPILED = ("conv_classifier", "residual_pool", "conv_linear", "conv_classifier_act4")
HAVE_BREVITAS = all(importlib.util.find_spec(m) is not None for m in ("brevitas", "qonnx", "onnxoptimizer"))


def _imported(name: str, kind: str) -> onnx.ModelProto:
    return import_quantized(onnx.load(str(DATA / f"{name}.{kind}.onnx")))


def _reference(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def _int8_weights(model: onnx.ModelProto) -> list[list[int]]:
    """The int8 weight tensors of a model (sorted, names ignored)."""
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return sorted(a.ravel().tolist() for a in arrays if a.dtype == np.int8 and a.ndim > 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", REPRESENTABLE)
def test_import_fits_and_equals_brevitas(name, kind):
    ref = _reference(name)
    np.testing.assert_array_equal(ref["y_qonnx"], ref["y_brevitas"])  # the independent references agree
    np.testing.assert_array_equal(ref["y_qonnx_dynamo"], ref["y_brevitas"])
    q = _imported(name, kind)
    report = check_model(q)
    assert report.ok, report.lines()
    assert [o.name for o in q.graph.output] == [q.graph.output[0].name]  # QuantTensor metadata outputs dropped
    for x, y in zip(ref["x"], ref["y_brevitas"], strict=True):
        (got,) = run_onnxruntime(q, x)
        assert got.dtype == np.float32 and got.shape == y.shape
        np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("kind", ["qonnx", "qcdq"])
def test_identity_nodes_are_folded_away(kind):
    """Identity before a weight quantizer and after an activation (as other exporters write them) changes nothing."""
    m = onnx.load(str(DATA / f"conv_classifier.{kind}.onnx"))
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    wq = next(n for n in m.graph.node if n.output[0] == conv.input[1])
    if wq.op_type == "Quant":  # QONNX: Quant(Identity(float weights))
        ident_w = onnx.helper.make_node("Identity", [wq.input[0]], [f"{wq.input[0]}_id"], name="ident_w")
        wq.input[0] = ident_w.output[0]
        m.graph.node.insert(0, ident_w)
    ident_x = onnx.helper.make_node("Identity", [conv.input[0]], [f"{conv.input[0]}_id"], name="ident_x")
    conv.input[0] = ident_x.output[0]
    m.graph.node.insert(list(m.graph.node).index(conv), ident_x)
    q = import_quantized(m)
    assert "Identity" not in {n.op_type for n in q.graph.node} and check_model(q).ok
    ref = _reference("conv_classifier")
    np.testing.assert_array_equal(run_onnxruntime(q, ref["x"][0])[0], ref["y_brevitas"][0])


@pytest.mark.parametrize("name", REPRESENTABLE)
def test_qonnx_import_gives_brevitas_integer_weights(name):
    """Weights quantized by the importer from QONNX floats equal the integers Brevitas wrote into its QCDQ export."""
    exported = _int8_weights(onnx.load(str(DATA / f"{name}.qcdq.onnx")))
    assert _int8_weights(_imported(name, "qonnx")) == exported
    assert all(v == 0 or abs(v) in (1, 2, 4, 8, 16, 32, 64) for w in exported for v in w)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", COMPILED)
def test_golden_model_equals_onnxruntime_and_brevitas(tmp_path, name, kind):
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sw.executor import Executor

    q = _imported(name, kind)
    compile_model(q, "pynq-z2", tmp_path / "out")
    report = (tmp_path / "out" / "partition.txt").read_text()
    cpu = [line.split()[1] for line in report.splitlines() if line.startswith("  cpu")]
    assert sorted(cpu) == ["DequantizeLinear", "QuantizeLinear"]  # only the float edges stay on the CPU
    ex = Executor(tmp_path / "out")
    ref = _reference(name)
    for x, y in zip(ref["x"], ref["y_brevitas"], strict=True):
        (got,) = ex.run(x)
        (want,) = run_onnxruntime(q, x)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, y)


def test_4bit_relu_output_is_a_4bit_tensor_on_the_fabric(tmp_path):
    """The 4-bit ReLU becomes ``Conv -> Clip(0, 15 s) -> Q``: the compiler reads the clip as the 4-bit format."""
    from shiftpu.compiler.driver import compile_model

    q = _imported("conv_classifier_act4", "qcdq")
    conv = next(n for n in q.graph.node if n.name == "/conv1/Conv")
    clip = next(n for n in q.graph.node if n.input and n.input[0] == conv.output[0])
    assert clip.op_type == "Clip"
    res = compile_model(q, "pynq-z2", tmp_path / "out")
    assert 4 in {i.out_bits for img in res.images for i in img.instructions}


@pytest.mark.parametrize("kind,node", [
    ("qonnx", "/inp/act_quant/export_handler/Quant"),
    ("qonnx_dynamo", "node__symbolic"),
    ("qcdq", "/inp/act_quant/export_handler/QuantizeLinear"),
])
def test_float_scaled_brevitas_model_is_refused_naming_the_node(kind, node):
    with pytest.raises(ModelError, match=rf"^{node}: scale 0\.0\d+ is not a power of two$"):
        _imported("float_scaled", kind)


def test_cli_imports_a_brevitas_export(tmp_path):
    from typer.testing import CliRunner

    from shiftpu.cli.main import app

    src, out = DATA / "residual_pool.qonnx.onnx", tmp_path / "q.onnx"
    r = CliRunner().invoke(app, ["import-qonnx", str(src), "-o", str(out)])
    assert r.exit_code == 0 and "shiftpu check: ok" in r.output, r.output


def _fingerprint(path: Path) -> tuple[list[str], list[bytes]]:
    """What a fixture computes, independent of tensor names: op types in order and the sorted constant values."""
    m = onnx.load(str(path))
    values = sorted(numpy_helper.to_array(t).tobytes() + str(numpy_helper.to_array(t).shape).encode()
                    for t in m.graph.initializer)
    return [f"{n.domain}.{n.op_type}" for n in m.graph.node], values


@pytest.mark.skipif(not HAVE_BREVITAS, reason="needs brevitas, qonnx and onnxoptimizer (pip install shiftpu[brevitas])")
def test_fixtures_regenerate_identically(tmp_path):
    spec = importlib.util.spec_from_file_location("make_brevitas_fixtures", GENERATOR)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    made = gen.make_all(tmp_path)
    assert sorted(p.name for p in made) == sorted(p.name for p in DATA.iterdir() if p.suffix in (".onnx", ".npz"))
    for p in made:
        if p.suffix == ".npz":
            new, old = np.load(p), np.load(DATA / p.name)
            assert new.files == old.files
            for k in new.files:
                np.testing.assert_array_equal(new[k], old[k], err_msg=f"{p.name}: {k}")
        else:
            assert _fingerprint(p) == _fingerprint(DATA / p.name), p.name
