"""Layer input moments (compiler/quant/layerstats.py) and the calibration-driven layer steps (layeropt.py)."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from shiftpu.arch.numerics import WeightCode, shift_representable
from shiftpu.compiler.quant.layeropt import LayerMethods, optimise_layer
from shiftpu.compiler.quant.layerstats import ConvGeometry, LayerStats, patch_rows, patches
from shiftpu.compiler.quant.weights import quantize_weights


def _onnx_conv(x: np.ndarray, w: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    t, left, b, r = geo.pads
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=list(geo.strides), pads=[t, left, b, r],
                            dilations=list(geo.dilations), group=geo.group)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("geo", [
    ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)),
    ConvGeometry((3, 3), (2, 2), (1, 0, 0, 1)),
    ConvGeometry((3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ConvGeometry((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),
    ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),  # depthwise
])
def test_patches_times_weights_is_the_convolution(geo):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)
    w = rng.normal(size=(4, 4 // geo.group, *geo.kernel)).astype(np.float32)
    ref = _onnx_conv(x, w, geo)  # [N, O, Ho, Wo]
    p = patches(x, geo)  # [G, N*Ho*Wo, n]
    per = w.shape[0] // geo.group
    got = np.concatenate([p[k] @ w[k * per : (k + 1) * per].reshape(per, -1).T for k in range(geo.group)], axis=1)
    n, o, ho, wo = ref.shape
    np.testing.assert_allclose(got, ref.transpose(0, 2, 3, 1).reshape(-1, o), rtol=1e-5, atol=1e-5)


def _gemm_case(seed=0, n=12, c=5, samples=400):
    rng = np.random.default_rng(seed)
    xf = rng.normal(size=(samples, n)) + rng.normal(size=n)
    xq = xf + 0.1 * rng.normal(size=xf.shape)
    w = rng.normal(size=(c, n))
    b = rng.normal(size=c)
    return xf, xq, w, b


def test_closed_form_error_equals_the_direct_one():
    xf, xq, w, b = _gemm_case()
    stats = LayerStats.collect(xf, xq, ConvGeometry(), np.random.default_rng(0))
    u = quantize_weights(w).dequantize().astype(np.float64)
    bq = b + 0.3
    direct = ((xq @ u.T + bq - xf @ w.T - b) ** 2).mean(axis=0)
    np.testing.assert_allclose(stats.output_mse(u, bq, w, b), direct, rtol=1e-9)
    np.testing.assert_allclose(stats.output_energy(w, b), ((xf @ w.T + b) ** 2).mean(axis=0), rtol=1e-9)
    corrected = stats.corrected_bias(u, w, b)
    np.testing.assert_allclose((xq @ u.T + corrected - xf @ w.T - b).mean(axis=0), 0.0, atol=1e-9)


def test_rows_are_subsampled_with_the_seed():
    rng = np.random.default_rng(2)
    xf = rng.normal(size=(40, 3, 32, 32))
    xq = xf + 0.01
    geo = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    a = LayerStats.collect(xf, xq, geo, np.random.default_rng(9))
    b = LayerStats.collect(xf, xq, geo, np.random.default_rng(9))
    assert 0.8 * (1 << 14) < a.rows < 1.2 * (1 << 14)  # about MAX_ROWS of the 40,960 rows
    np.testing.assert_array_equal(a.qq, b.qq)


@pytest.mark.parametrize("code", [WeightCode.SHIFT4, WeightCode.SHIFT8_TWO_TERM])
def test_each_step_lowers_the_layer_output_error(code):
    """The SQNR after each method never falls; the weights stay legal codes; on spatially correlated inputs
    (as images are) the rounding gains clearly."""
    rng = np.random.default_rng(4)
    coarse = rng.normal(size=(16, 8, 5, 5)) + 0.3
    xf = np.maximum(np.kron(coarse, np.ones((1, 1, 2, 2))) + 0.2 * rng.normal(size=(16, 8, 10, 10)), 0)
    xq = np.round(xf * 16) / 16  # an 8-bit-like quantized input
    w = rng.normal(size=(6, 8, 3, 3)) * np.exp(rng.normal(size=(6, 1, 1, 1)))
    b = rng.normal(size=6)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    stats = LayerStats.collect(xf, xq, geo, np.random.default_rng(0))
    res = optimise_layer(w, b, stats, code, LayerMethods(), np.random.default_rng(0))
    names = [n for n, _ in res.steps]
    values = [v for _, v in res.steps]
    assert names == ["nearest", "bias correction", "scale search", "rounding"]
    assert (np.diff(values) >= -1e-9).all(), res.steps
    assert values[-1] - values[0] > (3.0 if code is WeightCode.SHIFT4 else 2.0), res.steps
    assert shift_representable(res.weights.values, code).all()
    u = res.weights.dequantize().astype(np.float64).reshape(6, -1)
    mse = stats.output_mse(u, res.bias, w.reshape(6, -1), b).sum()
    assert 10 * np.log10(stats.output_energy(w.reshape(6, -1), b).sum() / mse) == pytest.approx(values[-1])
    # without any method the data-free quantization comes back unchanged
    plain = optimise_layer(w, b, stats, code, LayerMethods(False, False, False), np.random.default_rng(0))
    np.testing.assert_array_equal(plain.weights.values, quantize_weights(w, code).values)
    assert [n for n, _ in plain.steps] == ["nearest"]


@pytest.mark.parametrize("geo", [ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)),
                                 ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
                                 ConvGeometry((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4)])
def test_output_error_with_the_float_terms_computed_once(geo):
    """``LayerStats.error_of`` (the float terms computed once per layer) gives ``output_mse``, ``output_energy`` and
    ``corrected_bias`` for every channel and for a subset of channels (with their group's moments)."""
    rng = np.random.default_rng(3)
    xf = rng.normal(size=(6, 4, 9, 9)) + 0.2
    xq = xf + 0.05 * rng.normal(size=xf.shape)
    stats = LayerStats.collect(xf, xq, geo, np.random.default_rng(0))
    w = rng.normal(size=(8, 4 // geo.group * 9))
    b = rng.normal(size=8)
    u = quantize_weights(w).dequantize().astype(np.float64)
    bq = b - 0.2
    error = stats.error_of(w, b)
    np.testing.assert_allclose(error.energy(), stats.output_energy(w, b), rtol=1e-12)
    terms = error.terms(u)
    np.testing.assert_allclose(error.mse(terms, bq), stats.output_mse(u, bq, w, b), rtol=1e-9)
    np.testing.assert_allclose(error.corrected_bias(terms), stats.corrected_bias(u, w, b), rtol=1e-12)
    rows = np.array([6, 1, 3])
    sub = error.terms(u[rows], rows)
    np.testing.assert_allclose(error.mse(sub, bq[rows], rows), stats.output_mse(u, bq, w, b)[rows], rtol=1e-9)
    np.testing.assert_allclose(error.corrected_bias(sub, rows), stats.corrected_bias(u, w, b)[rows], rtol=1e-12)
    for centred in (False, True):
        for (s1, h1, t1), (s2, h2, t2) in zip(stats.objective(w, centred), stats.objective(w, centred, error),
                                               strict=True):
            assert s1 == s2
            np.testing.assert_array_equal(h1, h2)
            np.testing.assert_allclose(t2, t1, rtol=1e-12, atol=1e-12 * np.abs(t1).max())


def test_patch_rows_are_the_rows_of_the_unfolded_input():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 7, 6)).astype(np.float32)
    for geo in (ConvGeometry((3, 3), (2, 1), (1, 0, 2, 1), (1, 2), 2), ConvGeometry((1, 1))):
        full = patches(x, geo)
        rows = rng.choice(full.shape[1], 20, replace=False)
        np.testing.assert_array_equal(patch_rows(x, geo, np.sort(rows)), full[:, np.sort(rows)])
    flat = rng.normal(size=(9, 5)).astype(np.float32)
    np.testing.assert_array_equal(patch_rows(flat, ConvGeometry(), np.array([0, 4, 8])), patches(flat, ConvGeometry())[:, [0, 4, 8]])
