"""Post-training shift quantization of float ONNX models, and the `shiftpu quantize` command."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from shiftpu.arch.numerics import is_pow2, shift_representable
from shiftpu.cli.main import app
from shiftpu.compiler.quant.calibrate import CalibrationError
from shiftpu.compiler.quant.check import Problem, check_model
from shiftpu.compiler.quant.onnxio import ModelError
from shiftpu.compiler.quant.ptq import quantize_model

torch.set_num_threads(1)


class FloatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        a = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        b = F.leaky_relu(self.c2(a), 0.125)
        c = torch.cat([F.relu(a + b), a], 1)
        return self.fc(torch.flatten(F.max_pool2d(torch.sigmoid(self.c3(c)), 2), 1))


def _float_model(tmp_path, seed=0, batch="N") -> onnx.ModelProto:
    torch.manual_seed(seed)
    net = FloatNet()
    with torch.no_grad():
        net.b1.running_mean.uniform_(-0.5, 0.5)
        net.b1.running_var.uniform_(0.5, 2.0)
    net.eval()
    path = tmp_path / "float.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 16, 16), str(path), dynamo=False, opset_version=13,
                          input_names=["input"], output_names=["y"],
                          dynamic_axes={"input": {0: "N"}} if batch == "N" else None)
    return onnx.load(str(path))


def _calib(n=24, seed=0):
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


def test_ptq_produces_the_quantized_form(tmp_path):
    model, report = quantize_model(_float_model(tmp_path), _calib())
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert [o.version for o in model.opset_import if o.domain == ""] == [19]
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert is_pow2(inits[n.input[1]]).all() and not inits[n.input[2]].any()
            if n.input[0] in inits and inits[n.input[0]].dtype == np.int8:
                assert shift_representable(inits[n.input[0]]).all()
    # only the sigmoid stays float, and check() names only it
    assert [(f.op_type, f.reason) for f in report.float_nodes] == [("Sigmoid", "Sigmoid has no fabric operation")]
    findings = check_model(model).findings
    assert [(f.op_type, f.problem) for f in findings] == [("Sigmoid", Problem.CPU_OP)]
    assert [r.op_type for r in report.layers] == ["Conv", "Conv", "Conv", "Gemm"]
    assert [r.activation for r in report.layers] == ["relu", "leaky", "none", "none"]
    # the rounding chosen by the output error gives up some weight SQNR for output SQNR
    assert all(r.weight_sqnr_db > 6 and r.output_sqnr_db > 15 for r in report.layers), report.lines()
    assert "Sigmoid" in "\n".join(report.lines())


def test_ptq_output_tracks_the_float_model(tmp_path):
    fm = _float_model(tmp_path, seed=1)
    qm, report = quantize_model(fm, _calib(32, seed=1))
    x = _calib(16, seed=2)
    ref = ort.InferenceSession(fm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == ref.shape
    noise = ((got - ref) ** 2).sum()
    assert 10 * np.log10((ref**2).sum() / noise) > 12
    assert report.output_sqnr_db["y"] > 12


def test_ptq_with_fixed_batch_one(tmp_path):
    qm, report = quantize_model(_float_model(tmp_path, batch=1), _calib(5))
    assert report.n_calibration == 5
    assert qm.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_bad_calibration_data(tmp_path):
    fm = _float_model(tmp_path)
    with pytest.raises(CalibrationError, match=r"axis 2: 8 != 16"):
        quantize_model(fm, np.zeros((4, 3, 8, 16), np.float32))
    with pytest.raises(CalibrationError, match="dtype uint8"):
        quantize_model(fm, np.zeros((4, 3, 16, 16), np.uint8))
    with pytest.raises(CalibrationError, match="shape \\[3, 16, 16\\]"):
        quantize_model(fm, np.zeros((3, 16, 16), np.float32))
    bad = _calib(4)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        quantize_model(fm, bad)


def test_model_without_quantizable_layer():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ModelError, match="no quantizable layer"):
        quantize_model(m, np.zeros((1, 3, 4, 4), np.float32))


def test_matmul_add_becomes_a_gemm_layer():
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b])
    qm, report = quantize_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                                rng.normal(size=(20, 6)).astype(np.float32))
    assert [r.op_type for r in report.layers] == ["Gemm"] and not report.float_nodes
    assert check_model(qm).ok


runner = CliRunner()


def test_cli_quantize_and_check(tmp_path):
    onnx.save(_float_model(tmp_path), str(tmp_path / "f.onnx"))
    np.save(tmp_path / "calib.npy", _calib(8))
    r = runner.invoke(app, ["quantize", str(tmp_path / "f.onnx"), "--calib", str(tmp_path / "calib.npy"),
                            "-o", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.output
    assert "output SQNR" in r.output and "Sigmoid" in r.output
    r = runner.invoke(app, ["check", str(tmp_path / "q.onnx")])
    assert r.exit_code == 1 and "Sigmoid runs on the CPU" in r.output


def test_cli_bad_inputs_give_one_line_errors(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01garbage" * 20)
    np.save(tmp_path / "calib.npy", _calib(2))
    cmd = [str(Path(sys.executable).parent / "shiftpu")]
    onnx.save(_float_model(tmp_path), str(tmp_path / "f.onnx"))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 1, 16, 16), np.float32))
    cases = [
        (["quantize", str(tmp_path / "junk.onnx"), "--calib", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "o.onnx")],
         "not an ONNX model"),
        (["quantize", str(tmp_path / "f.onnx"), "--calib", str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "o.onnx")],
         "axis 1: 1 != 3"),
        (["check", str(tmp_path / "missing.onnx")], "no such file"),
    ]
    for args, message in cases:
        p = subprocess.run([*cmd, *args], capture_output=True, text=True)
        assert p.returncode == 1, p.stderr
        assert p.stderr.startswith("error: ") and message in p.stderr and "Traceback" not in p.stderr
