"""Shift-weight quantization in numpy: integer levels, per-channel power-of-two scales chosen to minimise error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftpu.arch.numerics import SHIFT4_VALUES, WeightCode, two_term_values

#: How many exponents below the max-fitting one the scale search tries (smaller scales clip the largest weights).
SCALE_SEARCH_STEPS = 4


def weight_levels(code: WeightCode) -> np.ndarray:
    """The sorted integer values a weight of this code can take (float64)."""
    if code is WeightCode.SHIFT4:
        return np.unique(SHIFT4_VALUES).astype(np.float64)
    return two_term_values().astype(np.float64)


def _above(v: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """How many of the sorted ``mid`` lie below each value (``np.searchsorted(mid, v)``): counted one midpoint at a
    time for a short list (quicker than a binary search per value)."""
    if len(mid) > 24:
        return np.searchsorted(mid, v)
    count = np.zeros(v.shape, np.uint8)
    above = np.empty(v.shape, bool)
    for m in mid:
        np.greater(v, m, out=above)
        np.add(count, above, out=count, casting="unsafe")
    return count.astype(np.intp)


def nearest_level(v: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each value rounded to the nearest level (ties go to the smaller magnitude); clips outside the range.

    A value is compared with the midpoints of neighbouring levels (exact: the levels are integers)."""
    v = np.asarray(v, dtype=np.float64)
    if len(levels) == 1:
        return np.full_like(v, levels[0])
    mid = (levels[:-1] + levels[1:]) / 2
    idx = _above(v, mid)  # a value on a midpoint goes to the level below it ...
    up = np.abs(levels[1:]) < np.abs(levels[:-1])
    if up.any():  # ... or to the one above where that has the smaller magnitude
        at = np.minimum(idx, len(mid) - 1)
        idx += (v == mid[at]) & up[at]
    return levels[idx]


@dataclass(frozen=True)
class ShiftWeights:
    """Weights quantized to shift levels: ``real ~= values * 2^exponents[c]`` per output channel (axis 0)."""

    values: np.ndarray  #: int8 integer weights, shift-representable
    exponents: np.ndarray  #: int32 per-output-channel scale exponents

    @property
    def scales(self) -> np.ndarray:
        """Per-output-channel scales as float32."""
        return np.ldexp(np.float32(1.0), self.exponents).astype(np.float32)

    def dequantize(self) -> np.ndarray:
        shape = (-1,) + (1,) * (self.values.ndim - 1)
        return self.values.astype(np.float32) * self.scales.reshape(shape)


def max_fit_exponent(max_abs: np.ndarray, code: WeightCode) -> np.ndarray:
    """Smallest exponent whose scale lets the largest level cover ``max_abs`` (int32; 0 where max_abs is 0)."""
    top = weight_levels(code)[-1]
    safe = np.where(max_abs > 0, max_abs, top)
    return np.ceil(np.log2(safe / top)).astype(np.int32)


def quantize_weights(w: np.ndarray, code: WeightCode = WeightCode.SHIFT4) -> ShiftWeights:
    """Per-output-channel shift quantization minimising the squared error over a few candidate scales."""
    w = np.asarray(w, dtype=np.float64)
    levels = weight_levels(code)
    flat = w.reshape(w.shape[0], -1)
    e0 = max_fit_exponent(np.abs(flat).max(axis=1), code)
    best_err = np.full(w.shape[0], np.inf)
    best_e = e0.copy()
    best_q = np.zeros_like(flat)
    for step in range(SCALE_SEARCH_STEPS):
        e = e0 - step
        s = np.ldexp(1.0, e)[:, None]
        q = nearest_level(flat / s, levels)
        err = ((q * s - flat) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_e = np.where(better, e, best_e)
        best_q[better] = q[better]
    return ShiftWeights(best_q.reshape(w.shape).astype(np.int8), best_e.astype(np.int32))


def quantize_bias(b: np.ndarray, acc_exponents: np.ndarray) -> np.ndarray:
    """Float bias -> int32 at the accumulator scale 2^acc_exponents (round half to even, saturating)."""
    q = np.rint(np.asarray(b, dtype=np.float64) / np.ldexp(1.0, acc_exponents))
    return np.clip(q, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(((ref - np.asarray(approx, dtype=np.float64)) ** 2).sum())
    signal = float((ref**2).sum())
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))
