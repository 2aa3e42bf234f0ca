"""`shiftpu check`: every reason a quantized model does not fit the accelerator whole, by node."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from shiftpu.arch.numerics import INT8, UINT8, Activation
from shiftpu.cli.main import app
from shiftpu.compiler.quant.check import Problem, check_model
from shiftpu.compiler.quant.qdq import QdqBuilder
from shiftpu.compiler.quant.weights import ShiftWeights


def _model(weights=None, with_sigmoid=False, dilation=1) -> onnx.ModelProto:
    """input -> Q(uint8) -> Conv 3x3 + ReLU -> Q -> MaxPool -> Q -> output (optionally a Sigmoid after)."""
    b = QdqBuilder()
    x = b.quantize(b.float_input("input", [1, 2, 8, 8]), -7, UINT8, "in")
    w = ShiftWeights(np.asarray(weights if weights is not None else np.full((4, 2, 3, 3), 2), np.int8),
                     np.array([-6, -5, -6, -4], np.int32))
    y = b.conv(x, w, np.arange(4, dtype=np.int32), "conv", strides=[1, 1], pads=[1, 1, 1, 1],
               dilations=[dilation, dilation], group=1)
    y = b.quantize(b.activation(y, Activation.RELU, 0, "conv"), -4, UINT8, "conv_out")
    (p,) = b.node("MaxPool", [y.name], "pool", kernel_shape=[2, 2], strides=[2, 2])
    out = b.requantize_like(p, y, "pool").name
    if with_sigmoid:
        (out,) = b.node("Sigmoid", [out], "sig")
    b.output(out, "output")
    return b.build()


def _set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return
    raise KeyError(name)


def test_clean_model_passes():
    report = check_model(_model())
    assert report.ok and report.lines()[0].startswith("ok: all")


def test_each_problem_is_named_at_its_node():
    w = np.full((4, 2, 3, 3), 2, np.int8)
    w[1, 0, 0, 0] = 3
    w[2, 1, 2, 2] = -96
    m = _model(weights=w, with_sigmoid=True, dilation=2)
    _set_init(m, "conv_out_scale", np.float32(0.3))
    _set_init(m, "in_zero", np.uint8(7))
    found = {(f.node, f.problem) for f in check_model(m).findings}
    assert ("conv_Conv", Problem.WEIGHT_NOT_SHIFT) in found
    assert ("conv_Conv", Problem.ATTRIBUTE) in found
    assert ("sig_Sigmoid", Problem.CPU_OP) in found
    assert ("conv_out_q_QuantizeLinear", Problem.SCALE_NOT_POW2) in found
    assert ("in_q_QuantizeLinear", Problem.ZERO_POINT) in found
    weight = next(f for f in check_model(m).findings if f.problem is Problem.WEIGHT_NOT_SHIFT)
    assert "2 of 72 weights, e.g. 3" in weight.detail
    # -96 = -64 - 32 is a two-term value, 3 = 2 + 1 too: the two-term accelerator takes both
    from dataclasses import replace

    from shiftpu.arch.config import AccelConfig
    from shiftpu.arch.numerics import WeightCode

    two = check_model(m, replace(AccelConfig(), weight_code=WeightCode.SHIFT8_TWO_TERM))
    assert Problem.WEIGHT_NOT_SHIFT not in {f.problem for f in two.findings}


def test_bias_scale_must_be_the_accumulator_scale():
    m = _model()
    _set_init(m, "conv_b_scale", np.full(4, 2.0**-10, np.float32))
    assert [f.problem for f in check_model(m).findings] == [Problem.BIAS]


def test_float_weights_are_reported():
    b = QdqBuilder()
    x = b.quantize(b.float_input("input", [1, 2, 4, 4]), -7, INT8, "in")
    w = b.constant("w", np.ones((2, 2, 1, 1), np.float32))
    (y,) = b.node("Conv", [x.name, w], "conv")
    b.output(y, "output")
    findings = check_model(b.build()).findings
    assert [f.problem for f in findings] == [Problem.FLOAT_WEIGHT]


@pytest.mark.parametrize("sigmoid,code", [(False, 0), (True, 1)])
def test_cli_exit_status(tmp_path, sigmoid, code):
    onnx.save(_model(with_sigmoid=sigmoid), str(tmp_path / "m.onnx"))
    r = CliRunner().invoke(app, ["check", str(tmp_path / "m.onnx")])
    assert r.exit_code == code, r.output
