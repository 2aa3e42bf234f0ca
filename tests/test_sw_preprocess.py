"""CPU operators: letterbox geometry, quantize/dequantize against the contract's rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftpu.sw.preprocess import (
    PreprocessError,
    dequantize,
    image_to_tensor,
    letterbox,
    quantize,
    unletterbox_boxes,
)


def test_letterbox_wide_image_is_padded_top_and_bottom():
    img = np.zeros((50, 100, 3), dtype=np.uint8)
    img[:, :, 0] = 200
    out, lb = letterbox(img, (64, 64))
    assert out.shape == (64, 64, 3)
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.64, 0, 16)
    assert out[0, 0].tolist() == [114, 114, 114] and out[63, 63].tolist() == [114, 114, 114]
    assert out[32, 32].tolist() == [200, 0, 0]


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 300), w=st.integers(8, 300), x0=st.floats(0, 1), y0=st.floats(0, 1))
def test_unletterbox_inverts_the_mapping(h, w, x0, y0):
    _, lb = letterbox(np.zeros((h, w, 3), np.uint8), (64, 64))
    src = np.array([[x0 * w * 0.5, y0 * h * 0.5, w * 0.75, h * 0.75]], np.float32)
    model = src * lb.scale + np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32)
    assert np.allclose(unletterbox_boxes(model, lb), src, atol=1e-3)


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1000.0, -1000.0], np.float32)
    assert quantize(x, 1.0).tolist() == [0, 2, 2, 0, -2, 127, -128]
    assert quantize(x, 1.0, signed=False).tolist() == [0, 2, 2, 0, 0, 255, 0]
    assert quantize(np.array([0.375], np.float32), 0.25).tolist() == [2]  # 1.5 -> 2


@settings(max_examples=50, deadline=None)
@given(e=st.integers(-8, 2), q=st.lists(st.integers(-128, 127), min_size=1, max_size=20))
def test_dequantize_then_quantize_is_identity(e, q):
    q = np.array(q, np.int8)
    assert np.array_equal(quantize(dequantize(q, 2.0 ** e), 2.0 ** e), q)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(PreprocessError, match="power of two"):
        quantize(np.zeros(3), 0.3)
    with pytest.raises(PreprocessError, match="H x W x 3 uint8"):
        letterbox(np.zeros((4, 4), np.float32), (8, 8))


def test_image_to_tensor_layout():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = image_to_tensor(img)
    assert t.shape == (1, 3, 2, 3) and t.dtype == np.float32
    assert t[0, 1, 1, 2] == np.float32(img[1, 2, 1]) / np.float32(255)
