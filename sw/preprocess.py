"""CPU operators around the fabric: letterbox resize, quantize, dequantize, sigmoid and softmax.

Images are H x W x 3 uint8 (RGB); model inputs are N x C x H x W. Quantization follows the contract:
power-of-two scale, zero point 0, round half to even, saturation (what ONNX QuantizeLinear computes).
Sigmoid and softmax are the detector post-processing's own (:mod:`shiftpu.sw.detection`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from shiftpu.errors import ShiftpuError
from shiftpu.sw.detection import sigmoid, softmax

__all__ = ["Letterbox", "PreprocessError", "dequantize", "image_to_tensor", "letterbox", "quantize", "sigmoid",
           "softmax", "unletterbox_boxes"]

#: Grey of the letterbox borders (the value detectors are commonly trained with).
LETTERBOX_FILL = 114


class PreprocessError(ShiftpuError, ValueError):
    """An image or tensor cannot be turned into the model's input."""


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: ``model = source * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: int
    pad_y: int
    source_size: tuple[int, int]  #: (height, width) of the original image


def letterbox(image: np.ndarray, size: tuple[int, int], fill: int = LETTERBOX_FILL) -> tuple[np.ndarray, Letterbox]:
    """Resize (bilinear, aspect ratio kept) and centre ``image`` on a ``size`` = (height, width) canvas."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PreprocessError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} of shape {image.shape}")
    h, w = image.shape[:2]
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (h, w) else image
    canvas = np.full((th, tw, 3), fill, dtype=np.uint8)
    pad_y, pad_x = (th - nh) // 2, (tw - nw) // 2
    canvas[pad_y: pad_y + nh, pad_x: pad_x + nw] = resized
    return canvas, Letterbox(scale, pad_x, pad_y, (h, w))


def unletterbox_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Boxes [N, 4] (x0, y0, x1, y1) in model-input pixels -> pixels of the original image, clipped to it."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - lb.pad_x) / lb.scale
    b[:, [1, 3]] = (b[:, [1, 3]] - lb.pad_y) / lb.scale
    h, w = lb.source_size
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    return b


def image_to_tensor(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> 1 x 3 x H x W float32 in [0, 1] (the float input of the quantized model)."""
    return (np.ascontiguousarray(image.transpose(2, 0, 1))[None].astype(np.float32) / np.float32(255.0))


def quantize(x: np.ndarray, scale: float, signed: bool = True, bits: int = 8) -> np.ndarray:
    """``sat(round_half_even(x / scale))`` as int8 (signed) or uint8; ``scale`` a power of two."""
    mantissa, _ = np.frexp(scale)
    if scale <= 0 or mantissa != 0.5:
        raise PreprocessError(f"quantization scale {scale} is not a positive power of two")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    return np.clip(q, lo, hi).astype(np.int8 if signed else np.uint8)


def dequantize(q: np.ndarray, scale: float) -> np.ndarray:
    """Integer tensor -> float32 values (``q * scale``)."""
    return q.astype(np.float32) * np.float32(scale)
