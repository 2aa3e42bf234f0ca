"""The front end of `shiftpu compile` and `shiftpu check`: models exported with a symbolic batch or other symbolic
dimensions (bound to 1, or given with --input-shape), and models quantized by another tool (non-power-of-two
scales), refused in one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qdq_graphs import QdqBuilder, random_input

from shiftpu.cli.main import main
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.onnx_import import ModelError
from shiftpu.compiler.quant.check import Problem, check_model


def _shiftpu(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the `shiftpu` command as a user does: (exit status, stdout, stderr)."""
    monkeypatch.setattr("sys.argv", ["shiftpu", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _symbolic(model: onnx.ModelProto, dims: dict[int, str]) -> onnx.ModelProto:
    """The model with these input dimensions symbolic, as torch.onnx's dynamic_axes writes them (the batch
    dimension of the outputs and of the intermediate shapes symbolic too)."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    for k, name in dims.items():
        m.graph.input[0].type.tensor_type.shape.dim[k].dim_param = name
    if 0 in dims:
        for vi in m.graph.output:
            vi.type.tensor_type.shape.dim[0].dim_param = dims[0]
        q = m.graph.node[0].output[0]  # the input's QuantizeLinear
        shape = [dims.get(k, d.dim_value) for k, d in enumerate(m.graph.input[0].type.tensor_type.shape.dim)]
        m.graph.value_info.append(helper.make_tensor_value_info(q, TensorProto.INT8, shape))
    return m


def _conv_model() -> onnx.ModelProto:
    b = QdqBuilder((8, 8, 8), seed=0)
    b.output(b.conv(b.conv(b.x, 8, 3), 8, 3))
    return b.model()


# -- symbolic dimensions ------------------------------------------------------------------------------------------


def test_a_symbolic_batch_is_bound_to_1_and_the_model_runs(tmp_path, monkeypatch, capsys):
    m = _symbolic(_conv_model(), {0: "N"})
    onnx.save(m, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", random_input(_conv_model(), 1))
    code, out, err = _shiftpu(monkeypatch, capsys, "compile", str(tmp_path / "m.onnx"), "-b", "pynq-z2",
                              "-o", str(tmp_path / "out"), "-q")
    assert code == 0, err
    assert out.splitlines() == ["input 'x': symbolic batch dimension 'N' bound to 1",
                                f"wrote {tmp_path / 'out'} (1 fabric segment(s), 2 CPU node(s))"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [1, 8, 8, 8] and manifest["outputs"][0]["shape"] == [1, 8, 8, 8]
    code, out, err = _shiftpu(monkeypatch, capsys, "run", str(tmp_path / "out"), "-i", str(tmp_path / "x.npy"),
                              "--compare")
    assert code == 0, err
    assert out.splitlines()[-1] == "compare: all 3 tensors equal to onnxruntime, bit for bit"
    code, out, _ = _shiftpu(monkeypatch, capsys, "check", str(tmp_path / "m.onnx"))
    assert code == 0
    assert out.splitlines()[0] == "input 'x': symbolic batch dimension 'N' bound to 1"


def test_another_symbolic_dimension_needs_input_shape(tmp_path, monkeypatch, capsys):
    onnx.save(_symbolic(_conv_model(), {0: "batch", 2: "height"}), tmp_path / "m.onnx")
    message = (f"error: {tmp_path / 'm.onnx'}: input 'x' has symbolic dimension 2 'height': "
               "give its size with --input-shape x:1,8,<height>,8\n")
    for command in (["compile", "-o", str(tmp_path / "out")], ["check"]):
        code, out, err = _shiftpu(monkeypatch, capsys, command[0], str(tmp_path / "m.onnx"), *command[1:])
        assert (code, out, err) == (1, "", message)
    assert not (tmp_path / "out").exists()
    for shape in ("1,8,8,8", "x:1,8,8,8"):
        code, out, err = _shiftpu(monkeypatch, capsys, "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"),
                                  "-q", "--input-shape", shape)
        assert code == 0 and out == f"wrote {tmp_path / 'out'} (1 fabric segment(s), 2 CPU node(s))\n", err
        code, out, err = _shiftpu(monkeypatch, capsys, "check", str(tmp_path / "m.onnx"), "--input-shape", shape)
        assert code == 0 and out.startswith("ok: all"), err


@pytest.mark.parametrize("shapes,message", [
    (["1,8,8"], "--input-shape x: 3 sizes for an input with 4 dimensions"),
    (["1,8,4,8"], "--input-shape x: dimension 2 is 8 in the model, not 4"),
    (["y:1,8,8,8"], "--input-shape: model has no input 'y' (its inputs: x)"),
    (["1,8,h,8"], "--input-shape '1,8,h,8': expected positive sizes separated by commas, e.g. 1,3,224,224 or "
                  "input:1,3,224,224"),
    (["1,8,8,8", "x:1,8,8,8"], "--input-shape: input 'x' is given twice"),
    (["2,8,8,8"], "model: input 'x' has batch size 2: only batch 1 is supported"),
])
def test_bad_input_shapes_are_refused(shapes, message):
    from shiftpu.compiler.onnx_import import parse_input_shapes

    with pytest.raises(ModelError) as e:
        compile_model(_symbolic(_conv_model(), {0: "N"}), "pynq-z2", input_shapes=parse_input_shapes(shapes))
    assert str(e.value) == message


# -- models quantized by another tool ------------------------------------------------------------------------------


def _onnxruntime_quantized(tmp_path) -> onnx.ModelProto:
    """A float Conv + Relu quantized by onnxruntime's quantize_static (QDQ, scales fitted to the data)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array((0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "float.onnx")

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.frames = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.frames, None)

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "ort.onnx"), Calibration(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(tmp_path / "ort.onnx")


def test_an_onnxruntime_quantized_model_is_refused_naming_its_scales(tmp_path, monkeypatch, capsys):
    m = _onnxruntime_quantized(tmp_path)
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    scale = float(next(numpy_helper.to_array(i) for i in m.graph.initializer if i.name == q.input[1]))
    message = (f"error: {tmp_path / 'ort.onnx'}: tensor '{q.output[0]}' has scale {scale:.7g}, not a power of two "
               "(4 of 4 quantized tensors have such scales; the accelerator rescales by shifts only): "
               "quantize the float model with `shiftpu quantize`\n")
    for command in (["compile", "-o", str(tmp_path / "out")], ["check"]):
        code, out, err = _shiftpu(monkeypatch, capsys, command[0], str(tmp_path / "ort.onnx"), *command[1:])
        assert (code, out, err) == (1, "", message)
    assert not (tmp_path / "out").exists()
    # the checker's own findings (per node) no longer trip over the bias scale of shape (1,)
    found = {f.problem for f in check_model(m).findings}
    assert {Problem.SCALE_NOT_POW2, Problem.ZERO_POINT, Problem.WEIGHT_NOT_SHIFT} <= found


def test_one_scale_of_0_0123_is_refused_at_its_tensor(tmp_path):
    m = _conv_model()
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"][-1]  # the one after the second Conv
    scale = next(i for i in m.graph.initializer if i.name == q.input[1])
    scale.CopyFrom(numpy_helper.from_array(np.float32(0.0123), scale.name))
    with pytest.raises(ModelError) as e:
        compile_model(m, "pynq-z2", tmp_path / "out")
    assert str(e.value) == (f"model: tensor '{q.output[0]}' has scale 0.0123, not a power of two (1 of 7 quantized "
                            "tensors have such scales; the accelerator rescales by shifts only): quantize the float "
                            "model with `shiftpu quantize`")
    assert not (tmp_path / "out").exists()
