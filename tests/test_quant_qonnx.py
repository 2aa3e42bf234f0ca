"""Import of QONNX Quant graphs and Brevitas-style QCDQ graphs (hand-built with onnx.helper)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from shiftpu.compiler.quant.check import check_model
from shiftpu.compiler.quant.onnxio import ModelError
from shiftpu.compiler.quant.qonnx_import import import_quantized

QONNX = "qonnx.custom_op.general"


def _c(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _qonnx_model(w_scale=0.25, act_scale=2.0**-4, w=None, zero=0.0):
    """x -> Quant(8b unsigned) -> Conv(Quant(weights 4b), Quant(bias 32b)) -> Relu -> Quant(8b unsigned) -> y."""
    rng = np.random.default_rng(0)
    if w is None:
        ws = np.asarray(w_scale, np.float32)
        w = (rng.choice([-4, -2, -1, 0, 1, 2, 4], size=(4, 3, 3, 3)) * (ws.reshape(-1, 1, 1, 1) if ws.size > 1 else ws))
        w = w.astype(np.float32)
    w_scale = np.asarray(w_scale, np.float32)
    inits = [
        _c("w", w), _c("w_scale", w_scale.reshape(-1, 1, 1, 1) if w_scale.size > 1 else w_scale),
        _c("b", np.array([0.5, -0.25, 0.0, 1.0], np.float32)), _c("b_scale", np.float32(act_scale * 0.25)),
        _c("a_scale", np.float32(act_scale)), _c("zero", np.float32(zero)), _c("zero0", np.float32(0.0)),
        _c("bits8", np.float32(8)), _c("bits4", np.float32(4)), _c("bits32", np.float32(32)),
        _c("o_scale", np.float32(2.0**-3)),
    ]
    nodes = [
        helper.make_node("Quant", ["x", "a_scale", "zero", "bits8"], ["xq"], domain=QONNX, signed=0, narrow=0,
                         rounding_mode="ROUND"),
        helper.make_node("Quant", ["w", "w_scale", "zero0", "bits4"], ["wq"], domain=QONNX, signed=1, narrow=1,
                         rounding_mode="ROUND"),
        helper.make_node("Quant", ["b", "b_scale", "zero0", "bits32"], ["bq"], domain=QONNX, signed=1, narrow=0,
                         rounding_mode="ROUND"),
        helper.make_node("Conv", ["xq", "wq", "bq"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Quant", ["r", "o_scale", "zero0", "bits8"], ["y"], domain=QONNX, signed=0, narrow=0,
                         rounding_mode="ROUND"),
    ]
    g = helper.make_graph(nodes, "qonnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])


def _reference(x, w, b, act_scale):
    """The QONNX semantics in numpy: quantize input, float conv, relu, quantize output."""
    xq = np.clip(np.rint(x / act_scale), 0, 255) * act_scale
    bq = np.rint(b / (act_scale * 0.25)) * (act_scale * 0.25)
    out = np.zeros((1, 4, 6, 6))
    xp = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o in range(4):
        for i in range(6):
            for j in range(6):
                out[0, o, i, j] = (xp[0, :, i : i + 3, j : j + 3] * w[o]).sum() + bq[o]
    return np.clip(np.rint(np.maximum(out, 0) / 2.0**-3), 0, 255) * 2.0**-3


def test_qonnx_quant_nodes_become_the_qdq_form():
    m = _qonnx_model()
    q = import_quantized(m)
    assert {o.domain for o in q.opset_import} == {""} and q.opset_import[0].version == 19
    assert check_model(q).ok, check_model(q).lines()
    x = np.random.default_rng(1).random((1, 3, 6, 6), dtype=np.float32) * 8
    got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(got, _reference(x, inits["w"], inits["b"], 2.0**-4).astype(np.float32))


def test_per_channel_weight_scales_are_kept_on_axis_0():
    scales = np.array([0.5, 0.25, 0.125, 1.0], np.float32)
    q = import_quantized(_qonnx_model(w_scale=scales))
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "wq")
    assert helper.get_attribute_value(dq.attribute[0]) == 0
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    np.testing.assert_array_equal(inits[dq.input[1]], scales)


@pytest.mark.parametrize("kwargs,message", [
    ({"w_scale": 0.3}, "scale 0.3"),
    ({"zero": 1.0}, "zero point is not 0"),
    ({"w": np.full((4, 3, 3, 3), 3 * 0.25, np.float32)}, "weight 3 is not shift-representable"),
])
def test_unrepresentable_graphs_are_refused(kwargs, message):
    with pytest.raises(ModelError, match=message):
        import_quantized(_qonnx_model(**kwargs))


def test_qcdq_integer_clip_becomes_the_float_clip():
    """Brevitas QCDQ: QuantizeLinear -> Clip(int 4-bit range) -> DequantizeLinear on an activation and on weights."""
    inits = [_c("s", np.float32(0.5)), _c("z", np.int8(0)), _c("lo", np.int8(-8)), _c("hi", np.int8(7)),
             _c("w", np.array([[[[9]]], [[[-2]]]], np.int8)), _c("ws", np.float32(0.25)),
             _c("wlo", np.int8(-8)), _c("whi", np.int8(7))]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xi"]),
        helper.make_node("Clip", ["xi", "lo", "hi"], ["xc"]),
        helper.make_node("DequantizeLinear", ["xc", "s", "z"], ["xd"]),
        helper.make_node("Clip", ["w", "wlo", "whi"], ["wc"]),
        helper.make_node("DequantizeLinear", ["wc", "ws", "z"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["y"]),
    ]
    g = helper.make_graph(nodes, "qcdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    q = import_quantized(m)
    x = np.array([[[[-10.0, 1.25], [3.0, 2.75]]]], np.float32)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, ref)
    assert [n.op_type for n in q.graph.node].count("Clip") == 1  # the float range clip before QuantizeLinear
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert inits["w"].ravel().tolist() == [7, -2]  # weight clip folded: 9 -> 7 (then check() flags 7)


def test_cli_import_qonnx(tmp_path):
    from typer.testing import CliRunner

    from shiftpu.cli.main import app

    onnx.save(_qonnx_model(), str(tmp_path / "good.onnx"))
    r = CliRunner().invoke(app, ["import-qonnx", str(tmp_path / "good.onnx"), "-o", str(tmp_path / "out.onnx")])
    assert r.exit_code == 0 and "shiftpu check: ok" in r.output, r.output
    assert check_model(onnx.load(str(tmp_path / "out.onnx"))).ok
