"""CPU operators against onnxruntime (bit for bit) and the executor's frame API."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from qdq_graphs import QdqBuilder, random_input, run_onnxruntime

from shiftpu.compiled.cpu_ops import run_node
from shiftpu.compiler.driver import compile_model
from shiftpu.sw.executor import Executor


def _single(op, x, consts=(), out_type=TensorProto.FLOAT, **attrs):
    names = ["x"] + [f"c{k}" for k in range(len(consts))]
    node = helper.make_node(op, names, ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", out_type, None)],
                          [numpy_helper.from_array(c, f"c{k}") for k, c in enumerate(consts)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    return node, m


def _dq_values(seed, shape, exp):
    rng = np.random.default_rng(seed)
    return (rng.integers(-128, 128, size=shape).astype(np.float32) * np.float32(2.0 ** exp))


@settings(max_examples=30, deadline=None)
@given(st.integers(-12, 4), st.integers(0, 2**16))
def test_sigmoid_is_exact(exp, seed):
    print("sigmoid", exp, seed)
    x = _dq_values(seed, (1, 4, 16, 16), exp)
    node, m = _single("Sigmoid", x)
    np.testing.assert_array_equal(run_node(node, [x])[0], run_onnxruntime(m, x)[0])


@pytest.mark.parametrize("op,consts,attrs", [
    ("QuantizeLinear", [np.float32(0.25), np.int8(0)], {}),
    ("QuantizeLinear", [np.float32(0.5), np.uint8(0)], {}),
    ("GlobalAveragePool", [], {}),
    ("MaxPool", [], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("Relu", [], {}),
    ("LeakyRelu", [], {"alpha": 0.125}),
    ("Flatten", [], {"axis": 1}),
    ("Reshape", [np.array([1, -1], np.int64)], {}),
    ("Transpose", [], {"perm": [0, 2, 3, 1]}),
    ("Mul", [np.float32(0.5)], {}),
])
def test_cpu_operator_matches_onnxruntime(op, consts, attrs):
    x = _dq_values(1, (1, 3, 9, 7), -3)
    out_type = TensorProto.FLOAT
    if op == "QuantizeLinear":
        out_type = helper.np_dtype_to_tensor_dtype(np.asarray(consts[-1]).dtype)
    node, m = _single(op, x, [np.asarray(c) for c in consts], out_type, **attrs)
    got = run_node(node, [x, *[np.asarray(c) for c in consts]])[0]
    ref = run_onnxruntime(m, x)[0]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_prepare_execute_finish_equals_run(tmp_path):
    b = QdqBuilder((4, 10, 10), seed=2)
    b.output(b.conv(b.x, 8, 3, act="relu"))
    m = b.model()
    compile_model(m, "zcu104", tmp_path / "out")
    ex = Executor(tmp_path / "out")
    x1, x2 = random_input(m, 1), random_input(m, 2)
    f1, f2 = ex.prepare(x1), ex.prepare(x2)  # two frames in flight
    y2 = ex.finish(ex.execute(f2))
    y1 = ex.finish(ex.execute(f1))
    np.testing.assert_array_equal(y1[0], run_onnxruntime(m, x1)[0])
    np.testing.assert_array_equal(y2[0], run_onnxruntime(m, x2)[0])
    assert [s.instructions for s in f1.stats] == [2]  # one CONV + END
    assert f1.stats[0].cycles is None  # the golden model has no clock
