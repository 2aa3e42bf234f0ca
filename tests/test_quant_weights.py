"""Shift-weight and activation quantization in numpy (shiftpu.compiler.quant.weights / activations)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shiftpu.arch.numerics import INT8, UINT8, ActFormat, WeightCode, shift_representable, two_term_values
from shiftpu.compiler.quant.activations import choose_exponent, fake_quantize, range_exponent
from shiftpu.compiler.quant.weights import (
    nearest_level,
    quantize_bias,
    quantize_weights,
    sqnr_db,
    weight_levels,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


def test_levels_are_the_contract_values():
    assert weight_levels(WeightCode.SHIFT4).tolist() == [-64, -32, -16, -8, -4, -2, -1, 0, 1, 2, 4, 8, 16, 32, 64]
    assert weight_levels(WeightCode.SHIFT8_TWO_TERM).tolist() == two_term_values().tolist()


def test_nearest_level_known_values():
    lv = weight_levels(WeightCode.SHIFT4)
    v = np.array([0.49, 0.5, 0.51, 1.5, 1.6, 2.9, 3.0, 3.1, 47.0, 49.0, 100.0, -0.7, -6.0, -6.1, -1000.0])
    assert nearest_level(v, lv).tolist() == [0, 0, 1, 1, 2, 2, 2, 4, 32, 64, 64, -1, -4, -8, -64]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=finite), st.sampled_from(list(WeightCode)))
def test_nearest_level_is_a_nearest_level(v, code):
    lv = weight_levels(code)
    got = nearest_level(v, lv)
    best = np.abs(v[:, None] - lv[None, :]).min(axis=1)
    np.testing.assert_array_equal(np.abs(v - got), best)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20), st.integers(0, 2**31 - 1), st.sampled_from(list(WeightCode)),
       st.floats(1e-4, 1e2))
def test_quantize_weights_properties(cout, cin, seed, code, spread):
    print("seed", seed)
    w = np.random.default_rng(seed).normal(0, spread, size=(cout, cin, 3, 3)).astype(np.float32)
    q = quantize_weights(w, code)
    assert q.values.dtype == np.int8 and q.exponents.shape == (cout,)
    assert shift_representable(q.values, code).all()
    top = weight_levels(code)[-1]
    # the chosen scale is never worse than the range-fitting one
    for c in range(cout):
        e0 = int(np.ceil(np.log2(np.abs(w[c]).max() / top)))
        s0 = 2.0**e0
        err0 = ((nearest_level(w[c] / s0, weight_levels(code)) * s0 - w[c]) ** 2).sum()
        err = ((q.values[c] * 2.0 ** float(q.exponents[c]) - w[c]) ** 2).sum()
        assert err <= err0 * (1 + 1e-12)
    assert (q.scales == np.ldexp(1.0, q.exponents)).all()


def test_quantize_weights_exact_on_representable_input():
    w = np.array([[[[64.0, -32.0], [1.0, 0.0]]], [[[0.25, -0.5], [0.125, 2.0]]]]) * 2.0**-5
    q = quantize_weights(w, WeightCode.SHIFT4)
    np.testing.assert_array_equal(q.dequantize(), w.astype(np.float32))
    assert q.exponents.tolist() == [-5, -10]


def test_zero_channel_quantizes_to_zero():
    q = quantize_weights(np.zeros((2, 3)), WeightCode.SHIFT4)
    assert (q.values == 0).all() and q.exponents.tolist() == [0, 0]


def test_bias_rounds_half_to_even_and_saturates():
    b = np.array([2.5, 3.5, -2.5, 1e12, -1e12]) * 0.25
    assert quantize_bias(b, np.array([-2] * 5)).tolist() == [2, 4, -2, 2**31 - 1, -(2**31)]


def test_activation_exponents():
    assert range_exponent(1.0, UINT8) == -7  # 255 * 2^-7 = 1.99
    assert range_exponent(1.0, INT8) == -6  # 127 * 2^-6 = 1.98
    assert range_exponent(0.0, INT8) == 0
    assert range_exponent(7.0, ActFormat(4, False)) == -1  # 15 * 0.5 = 7.5
    x = np.array([0.3, -1.2, 2.5, 0.5, 1000.0])
    np.testing.assert_array_equal(fake_quantize(x, -1, INT8), [0.5, -1.0, 2.5, 0.5, 63.5])


def test_choose_exponent_clips_a_rare_outlier():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 0.1, 100000), [40.0]])
    e = choose_exponent(x, INT8)
    assert e < range_exponent(40.0, INT8)
    assert choose_exponent(np.full(10, 0.75), INT8) == range_exponent(0.75, INT8)


def test_sqnr():
    assert sqnr_db([1.0, 1.0], [1.0, 1.0]) == float("inf")
    assert sqnr_db([3.0, 4.0], [3.0, 4.5]) == pytest.approx(10 * np.log10(25 / 0.25))
