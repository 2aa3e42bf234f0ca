"""Random single layers and small chains: golden model == onnxruntime, bit for bit, for every fabric operation."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdq_graphs import QdqBuilder, golden_vs_onnxruntime

from shiftpu.arch.isa import Dataflow

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)


def _assert_exact(model, board="pynq-z2", seed=0, forced=None):
    with tempfile.TemporaryDirectory() as d:
        got, ref = golden_vs_onnxruntime(model, Path(d) / "out", board, seed, forced)
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_array_equal(g, r)


@st.composite
def conv_layers(draw):
    k = draw(st.integers(1, 7))
    kw = draw(st.sampled_from([k, draw(st.integers(1, 7))]))
    stride = draw(st.sampled_from([1, 2]))
    depthwise = draw(st.booleans())
    c_in = draw(st.integers(1, 40))
    c_out = c_in if depthwise else draw(st.integers(1, 40))
    h = draw(st.integers(max(k, 1), 24))
    w = draw(st.integers(max(kw, 1), 70))
    pads = tuple(draw(st.integers(0, min(3, kk - 1 if kk > 1 else 0) if kk > 1 else 0)) for kk in (k, kw, k, kw))
    act = draw(st.sampled_from(["none", "relu", "leaky", "clip"]))
    dataflow = draw(st.sampled_from(
        [None, {Dataflow.PIXEL}, {Dataflow.INPUT_CHANNEL}, {Dataflow.PIXEL, Dataflow.DEPTHWISE}]))
    seed = draw(st.integers(0, 2**16))
    return dict(k=k, kw=kw, stride=stride, groups=c_in if depthwise else 1, c_in=c_in, c_out=c_out, h=h, w=w,
                pads=pads, act=act, dataflow=dataflow, seed=seed)


@SETTINGS
@given(conv_layers(), st.sampled_from(["pynq-z2", "ultra96v2", "zcu104"]))
def test_random_conv_is_exact(p, board):
    print("conv layer", p, board)
    b = QdqBuilder((p["c_in"], p["h"], p["w"]), seed=p["seed"])
    y = b.conv(b.x, p["c_out"], p["k"], kw=p["kw"], stride=p["stride"], pad=p["pads"], groups=p["groups"],
               act=p["act"])
    b.output(y)
    _assert_exact(b.model(), board, p["seed"], p["dataflow"])


@SETTINGS
@given(st.integers(1, 20), st.integers(2, 40), st.integers(2, 40), st.sampled_from([(2, 2, 0), (3, 2, 1), (3, 1, 1),
                                                                                      (2, 1, 0), (3, 2, 0)]),
       st.integers(-1, 1), st.integers(0, 2**16))
def test_random_maxpool_is_exact(c, h, w, kind, delta, seed):
    k, s, p = kind
    print("maxpool", c, h, w, kind, delta, seed)
    b = QdqBuilder((c, max(h, k), max(w, k)), seed=seed)
    b.output(b.maxpool(b.x, k, s, p, exp_delta=delta))
    _assert_exact(b.model(), seed=seed)


@SETTINGS
@given(st.integers(1, 24), st.integers(1, 20), st.integers(1, 20), st.integers(-3, 3), st.integers(-3, 3),
       st.booleans(), st.integers(0, 2**16))
def test_random_add_is_exact(c, h, w, da, db, relu, seed):
    print("add", c, h, w, da, db, relu, seed)
    b = QdqBuilder((c, h, w), seed=seed)
    a1 = b.conv(b.x, c, 1, act="none")
    a2 = b.requant(b.x, da)
    b.output(b.add(a1, a2, relu=relu, exp=max(a1.exp, a2.exp) + db))
    _assert_exact(b.model(), seed=seed)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.integers(-2, 2), st.booleans(),
       st.integers(0, 2**16))
def test_concat_resize_and_moves_are_exact(blocks, h, w, delta, signed_out, seed):
    print("concat/resize", blocks, h, w, delta, signed_out, seed)
    b = QdqBuilder((8, h, w), seed=seed)
    p1 = b.conv(b.x, 8 * blocks, 3, act="relu")
    p2 = b.conv(b.x, 5, 1, act="leaky")
    cat = b.concat([p1, p2], exp=p1.exp + delta, signed=signed_out)
    b.output(b.resize(cat, exp_delta=delta))
    _assert_exact(b.model(), seed=seed)


def test_concat_in_place_needs_no_move():
    b = QdqBuilder((8, 6, 6), seed=3)
    p1 = b.conv(b.x, 16, 3, act="relu", target_rms=30.0)
    p2 = b.requant(b.conv(b.x, 8, 3, act="relu"), 0)
    p2 = b.requant(p2, p1.exp - p2.exp)
    b.output(b.concat([p1, p2]))
    from shiftpu.compiler.driver import compile_model

    r = compile_model(b.model(), "pynq-z2")
    kinds = [op.kind for op in r.graph.fabric_ops()]
    assert kinds.count("MOVE") == 2  # the two explicit requantisations, none for the concatenation
    cat = r.graph.tensors[r.graph.fabric_ops()[-1].output].name
    assert r.graph.aliases[p1.name] == (cat, 0)
    assert r.graph.aliases[p2.name] == (cat, 16)
    _assert_exact(b.model(), seed=3)


@pytest.mark.parametrize("flatten_hw", [1, 3])
def test_gemm_as_convolution_is_exact(flatten_hw):
    b = QdqBuilder((16, flatten_hw, flatten_hw), seed=5)
    b.output(b.gemm(b.x, 10, act="relu"))
    _assert_exact(b.model(), seed=5)


@pytest.mark.parametrize("w", [1, 31, 32, 33, 97])
def test_strip_borders_with_padding_and_stride(w):
    b = QdqBuilder((4, 5, w), seed=w)
    t = b.conv(b.x, 8, 5, stride=2, pad=(2, 1, 2, 3), act="leaky")
    b.output(b.conv(t, 8, 3, act="relu"))
    _assert_exact(b.model(), seed=w)


@pytest.mark.parametrize("shape", [(3, 1, 1), (2, 3, 4096), (2, 4096, 2), (1, 1, 9)])
def test_extreme_map_sizes(shape):
    b = QdqBuilder(shape, seed=1)
    k = 3 if min(shape[1:]) >= 3 else 1
    b.output(b.conv(b.x, 8, k, act="relu"))
    _assert_exact(b.model(), seed=1)


def test_concat_of_unaligned_channels_runs_on_the_cpu():
    b = QdqBuilder((8, 4, 4), seed=2)
    p1 = b.conv(b.x, 5, 1, act="relu")
    p2 = b.conv(b.x, 8, 3, act="relu")
    b.output(b.conv(b.concat([p1, p2]), 8, 1))
    from shiftpu.compiler.driver import compile_model

    r = compile_model(b.model(), "pynq-z2")
    (cat,) = [n for n in r.graph.cpu_nodes() if n.node.op_type == "Concat"]
    assert "not multiples of the channel block 8" in cat.detail
    _assert_exact(b.model(), seed=2)


@pytest.mark.parametrize("hw", [1, 2, 5])
def test_quantized_flatten_before_gemm_stays_on_the_fabric(hw):
    b = QdqBuilder((8, 2 * hw, 2 * hw), seed=hw)
    t = b.maxpool(b.conv(b.x, 16, 3, act="relu"), 2, 2)
    b.output(b.gemm(b.flatten(t), 10, act="relu"))
    from shiftpu.compiler.driver import compile_model

    r = compile_model(b.model(), "pynq-z2")
    assert [n.node.op_type for n in r.graph.cpu_nodes()] == ["QuantizeLinear", "DequantizeLinear"]
    assert len(r.graph.segments) == 1
    gemm = r.graph.fabric_ops()[-1]
    assert (gemm.kh, gemm.kw) == (hw, hw)
    _assert_exact(b.model(), seed=hw)


def test_matmul_plus_bias_is_a_convolution():
    from onnx import helper

    b = QdqBuilder((16,), seed=11)  # a (1, 16) input
    rng = np.random.default_rng(11)
    wq = b._weights((16, 10))  # K x N for MatMul
    w_exp = rng.integers(-7, -4, size=10)
    w = b._dq_weight(wq, w_exp, axis=1)
    y = b._uid("mm")
    b.nodes.append(helper.make_node("MatMul", [b.dq(b.x), w], [y], name="MatMul_0"))
    bias = b._dq_const(rng.integers(-500, 500, size=10).astype(np.int32), b.x.exp + w_exp)
    z = b._uid("add")
    b.nodes.append(helper.make_node("Add", [y, bias], [z], name="Add_0"))
    b.output(b._quantize(z, (10,), b.x.exp - 3, True, 30.0))
    from shiftpu.compiler.driver import compile_model

    r = compile_model(b.model(), "pynq-z2")
    (op,) = r.graph.fabric_ops()
    assert op.kind == "CONV" and op.weights.shape == (10, 16, 1, 1) and op.sources == ["Add_0", "MatMul_0"]
    np.testing.assert_array_equal(op.weights[:, :, 0, 0], wq.T)
    _assert_exact(b.model(), seed=11)


def test_depthwise_without_the_depthwise_dataflow_runs_dense():
    b = QdqBuilder((12, 9, 9), seed=4)
    b.output(b.conv(b.x, 12, 3, groups=12, act="relu"))
    from shiftpu.compiler.driver import compile_model

    r = compile_model(b.model(), "pynq-z2", dataflows=frozenset({Dataflow.PIXEL}))
    (op,) = r.graph.fabric_ops()
    assert not op.depthwise and op.dataflow is Dataflow.PIXEL and op.weights.shape == (12, 12, 3, 3)
    off_diagonal = op.weights[~np.eye(12, dtype=bool)]
    assert not off_diagonal.any()
    _assert_exact(b.model(), seed=4, forced={Dataflow.PIXEL})


@pytest.mark.parametrize("pe_ic", [8, 16])
@pytest.mark.parametrize("c_in, k, stride", [(3, 3, 2), (20, 3, 1), (40, 1, 1), (17, 5, 2)])
def test_convs_on_pes_with_lanes_are_exact(tmp_path, pe_ic, c_in, k, stride):
    """Boards whose PEs sum pe_ic input channels per cycle (PIXEL): channels filling the lanes or not."""
    board = json.loads((Path(__file__).parents[1] / "boards" / "ultra96v2.json").read_text())
    board["accel"].update(pe_ic=pe_ic, dsp_lanes=pe_ic // 2)
    board["name"] = "ultra96v2-lanes"
    path = tmp_path / "ultra96v2-lanes.json"
    path.write_text(json.dumps(board))
    b = QdqBuilder((c_in, 20, 37), seed=c_in + k)
    b.output(b.conv(b.x, 24, k, stride=stride, pad=(k // 2,) * 4, act="relu"))
    _assert_exact(b.model(), str(path), seed=k, forced={Dataflow.PIXEL})
