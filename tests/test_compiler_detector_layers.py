"""The common detector layers on the fabric, each equal to onnxruntime bit for bit: a Clip bounded inside the output
range (ReLU6), activations of their own, a Pad folded into the Conv or MaxPool after it, means over H and W, and
space-to-depth rearrangements; and the cases that stay on the CPU, with their reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from qdq_graphs import (
    QdqBuilder,
    golden_vs_onnxruntime,
    mean_model,
    padded_model,
    random_input,
    rearrangement_model,
    run_onnxruntime,
)

from shiftpu.arch.numerics import WeightCode
from shiftpu.compiler.composite import negated_conv
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.ir import ConvOp, CpuNode, CpuReason, FabricOp, MoveOp, PoolOp
from shiftpu.compiler.padding import SpatialPad, maxpool_pads


def _compiled(m: onnx.ModelProto, tmp_path, seeds: tuple[int, ...] = (0, 1, 2)):
    """Compile m, check golden == onnxruntime on random inputs; the compiled graph's steps beyond the quantizers."""
    for seed in seeds:
        got, ref = golden_vs_onnxruntime(m, tmp_path / f"out{seed}", "ultra96v2", seed=seed)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_array_equal(g, r)
    graph = compile_model(m, "ultra96v2", tmp_path / "out").graph
    return [st for st in graph.steps if not (isinstance(st, CpuNode) and st.reason is CpuReason.QUANT_BOUNDARY)]


def _kinds(steps) -> list[str]:
    return [st.kind if isinstance(st, FabricOp) else st.node.op_type for st in steps]


# -- Clip bounded inside the output range --------------------------------------------------------------------------


@pytest.mark.parametrize(("bounds", "kinds"), [
    ((0, 20), ["CONV", "CONV", "CONV"]),          # even bound: the CONV negated, one depthwise CONV after it
    ((0, 21), ["CONV", "CONV", "CONV", "CONV"]),  # odd: the CONV with ReLU, then two depthwise CONVs
    ((0, 20.5), ["CONV", "CONV", "CONV"]),        # rounds half to even: 20
    ((None, 20), ["CONV", "CONV", "CONV"]),       # no lower bound: a signed output bounded above
    ((0, 300), ["CONV", "CONV"]),                 # beyond 255: the requantiser's saturation is the Clip
])
def test_clip_bound_after_a_conv_is_exact(tmp_path, bounds, kinds):
    b = QdqBuilder((8, 10, 10), seed=3)
    t = b.conv(b.x, 16, 3, act="relu")
    y = b.conv(t, 16, 3, clip=bounds, target_rms=40.0)
    b.output(y)
    m = b.model()
    assert _kinds(_compiled(m, tmp_path)) == kinds
    # the bound is reached: the test sees the Clip at work
    top = min(bounds[1], 127 if bounds[0] is None else 255)
    assert np.max(run_onnxruntime(m, random_input(m, 0))[0]) == np.rint(top) * 2.0**y.exp


def test_clip_bound_after_add_and_of_its_own(tmp_path):
    b = QdqBuilder((8, 8, 8), seed=5)
    a = b.conv(b.x, 8, 3, act="none")
    c = b.conv(b.x, 8, 3, act="none")
    s = b.float_node("Add", [b.dq(a), b.dq(c)])
    added = b.quantize(b.clip(s, (0, 40), a.exp), a.shape, a.exp, False)
    alone = b.quantize(b.clip(b.dq(a), (0, 25), a.exp - 1), a.shape, a.exp - 1, False)
    relu = b.quantize(b.float_node("Relu", [b.dq(c)]), c.shape, c.exp, False)
    leaky = b.quantize(b.float_node("LeakyRelu", [b.dq(c)], alpha=0.25), c.shape, c.exp, True)
    for t in (added, alone, relu, leaky):
        b.output(t)
    steps = _compiled(b.model(), tmp_path)
    fabric = [st for st in steps if isinstance(st, FabricOp)]
    assert len(fabric) == len(steps)  # nothing but the quantizers on the CPU
    assert _kinds(steps) == ["CONV", "CONV", "ADD", "CONV", "CONV", "MOVE", "CONV", "CONV", "MOVE", "MOVE"]
    moves = [st for st in fabric if isinstance(st, MoveOp)]
    assert [m.act.name for m in moves] == ["RELU", "RELU", "LEAKY"] and moves[2].leaky_shift == 2


def test_negated_conv_needs_an_even_bound_representable_weights_and_whole_accumulator_units():
    op = ConvOp("c", ["x"], "y", [], weights=np.array([[[[1, -64]]]], np.int8), bias=np.array([5]),
                shift=np.array([-2]))
    neg = negated_conv(op, 8, WeightCode.SHIFT4)
    assert neg.weights.tolist() == [[[[-1, 64]]]] and neg.bias.tolist() == [-5 + 2] and neg.act.name == "RELU"
    assert negated_conv(op, 7, WeightCode.SHIFT4) is None  # odd: rounding half to even is not symmetric about it
    assert negated_conv(op, 6, WeightCode.SHIFT4) is None  # 6 * 2^-2 is not a whole accumulator unit
    two_term = ConvOp("c", ["x"], "y", [], weights=np.array([[[[-128]]]], np.int8), bias=np.array([0]),
                      shift=np.array([0]))
    assert negated_conv(two_term, 8, WeightCode.SHIFT8_TWO_TERM) is None  # 128 is beyond int8


# -- Pad folded into the Conv or MaxPool after it --------------------------------------------------------------------


@pytest.mark.parametrize(("pads", "mode", "consumer", "signed", "value", "folded"), [
    ((1, 1, 1, 1), "constant", "conv", True, None, (1, 1, 1, 1)),
    ((0, 0, 1, 1), "edge", "maxpool", True, None, (0, 0, 1, 1)),     # darknet's size-2 stride-1 maxpool
    ((1, 0, 1, 0), "edge", "maxpool", True, None, (1, 0, 1, 0)),
    ((0, 0, 1, 1), "constant", "maxpool", False, 0.0, (0, 0, 1, 1)),  # zeros below no uint8 value
    ((0, 0, 1, 1), "constant", "maxpool", True, 0.0, None),          # zeros above int8 values: not a padded max
    ((0, 0, 2, 2), "edge", "maxpool", True, None, None),             # a window of padding only
    ((1, 1, 1, 1), "reflect", "conv", True, None, None),
    ((1, 1, 1, 1), "edge", "conv", True, None, None),
])
def test_pad_folds_where_the_fabric_pads_the_same(tmp_path, pads, mode, consumer, signed, value, folded):
    steps = _compiled(padded_model(pads, mode, consumer, signed, value), tmp_path, seeds=(0, 1))
    cpu = [st.node.op_type for st in steps if isinstance(st, CpuNode)]
    if folded is None:
        assert "Pad" in cpu
        return
    assert cpu == []
    op = steps[-1]
    assert isinstance(op, ConvOp if consumer == "conv" else PoolOp) and op.pads == folded
    assert any(s.startswith("Pad_") for s in op.sources)


def test_maxpool_pads_window_rule():
    edge = SpatialPad((0, 0, 1, 1), "edge", 0.0)
    assert maxpool_pads(edge, (5, 5), (2, 2), (1, 1), (0, 0, 0, 0), -np.inf) == (0, 0, 1, 1)
    assert maxpool_pads(edge, (5, 5), (2, 2), (2, 2), (0, 0, 0, 0), -np.inf) == (0, 0, 1, 1)
    assert maxpool_pads(SpatialPad((2, 2, 0, 0), "edge", 0.0), (5, 5), (2, 2), (1, 1), (0, 0, 0, 0), -np.inf) is None
    assert maxpool_pads(SpatialPad((0, 0, 1, 1), "constant", -1.0), (5, 5), (2, 2), (1, 1), (0, 0, 0, 0), 0.0) == \
        (0, 0, 1, 1)
    assert maxpool_pads(SpatialPad((0, 0, 1, 1), "reflect", 0.0), (5, 5), (2, 2), (1, 1), (0, 0, 0, 0), 0.0) is None


# -- means over H and W ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "op", "keepdims"), [(4, "GlobalAveragePool", 1), (2, "ReduceMean", 1),
                                                      (4, "ReduceMean", 0), (1, "GlobalAveragePool", 1)])
def test_mean_over_a_power_of_two_map_is_one_conv(tmp_path, size, op, keepdims):
    m = mean_model(size, op, keepdims)
    steps = _compiled(m, tmp_path)
    assert _kinds(steps) == ["CONV", "CONV"]
    mean = steps[1]
    assert mean.depthwise and mean.weights.shape == (16, 1, size, size) and (mean.weights == 1).all()
    assert (mean.shift == -1 + 2 * (size.bit_length() - 1)).all() and not mean.bias.any()


@pytest.mark.parametrize(("size", "why"), [
    (3, "mean of 3x3 = 9 values: the fabric divides by shifting, by powers of two only"),
    (8, "mean of a 8x8 map: a CONV kernel covers at most 7x7"),
])
def test_other_means_stay_on_the_cpu(tmp_path, size, why):
    m = mean_model(size, "GlobalAveragePool")
    steps = _compiled(m, tmp_path, seeds=(0,))
    gap = next(st for st in steps if isinstance(st, CpuNode) and st.node.op_type == "GlobalAveragePool")
    assert gap.why == f"attributes outside what the fabric implements: {why}"


# -- space-to-depth --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["SpaceToDepth", "reshape-transpose"])
def test_space_to_depth_is_one_strided_conv(tmp_path, kind):
    steps = _compiled(rearrangement_model(kind), tmp_path)
    assert _kinds(steps) == ["CONV", "CONV", "CONV"]
    s2d = steps[1]
    assert s2d.stride == 2 and s2d.weights.shape == (32, 8, 2, 2) and (s2d.shift == 1).all()
    assert (s2d.weights.reshape(32, -1).sum(axis=1) == 1).all()  # one 1 per output channel
    first = np.argwhere(s2d.weights)[:4].tolist()
    expected = ([[0, 0, 0, 0], [1, 1, 0, 0], [2, 2, 0, 0], [3, 3, 0, 0]] if kind == "SpaceToDepth"  # offset-major
                else [[0, 0, 0, 0], [1, 0, 0, 1], [2, 0, 1, 0], [3, 0, 1, 1]])  # channel-major
    assert first == expected


def test_depth_to_space_stays_on_the_cpu(tmp_path):
    steps = _compiled(rearrangement_model("DepthToSpace"), tmp_path, seeds=(0,))
    d2s = next(st for st in steps if isinstance(st, CpuNode) and st.node.op_type == "DepthToSpace")
    assert d2s.why == ("no fabric implementation of this operator: DepthToSpace spreads each pixel over a block: a "
                       "MOVE upsamples only by repeating one value, and a CONV has no transposed (fractional-stride) form")


def test_other_rearrangements_stay_on_the_cpu(tmp_path):
    b = QdqBuilder((8, 8, 8), seed=13)
    t = b.conv(b.x, 8, 3, act="none")
    y = b.float_node("Transpose", [b.dq(t)], perm=[0, 1, 3, 2])  # a transposed map: no stride-b block pattern
    b.output(b.conv(b.quantize(y, (8, 8, 8), t.exp, True), 8, 1, act="relu"))
    steps = _compiled(b.model(), tmp_path, seeds=(0,))
    assert [st.node.op_type for st in steps if isinstance(st, CpuNode)] == ["Transpose"]


def test_check_names_what_stays_on_the_cpu():
    from shiftpu.compiler.quant.check import Problem, check_model

    def found(m: onnx.ModelProto) -> list[tuple[str, Problem]]:
        return [(f.op_type, f.problem) for f in check_model(m).findings]

    assert found(padded_model((0, 0, 1, 1), "edge", "maxpool", True)) == []
    assert found(padded_model((0, 0, 1, 1), "constant", "maxpool", True, 0.0)) == [("Pad", Problem.CPU_OP)]
    assert found(padded_model((1, 1, 1, 1), "constant", "conv", True)) == []
    assert found(mean_model(4, "GlobalAveragePool")) == []
    assert found(mean_model(3, "GlobalAveragePool")) == [("GlobalAveragePool", Problem.ATTRIBUTE)]
    assert found(rearrangement_model("SpaceToDepth")) == []
