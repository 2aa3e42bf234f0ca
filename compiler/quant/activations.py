"""Activation quantization in numpy: power-of-two scale exponents chosen from calibration data."""

from __future__ import annotations

from enum import Enum

import numpy as np

from shiftpu.arch.numerics import ActFormat

#: How many exponents below the range-fitting one the calibration tries (smaller scales clip outliers).
ACT_SEARCH_STEPS = 3


def range_exponent(max_abs: float, fmt: ActFormat) -> int:
    """Smallest exponent e with max_abs <= qmax * 2^e (0 for an all-zero tensor)."""
    if not max_abs > 0:
        return 0
    return int(np.ceil(np.log2(max_abs / fmt.qmax)))


def fake_quantize(x: np.ndarray, exponent: int, fmt: ActFormat) -> np.ndarray:
    """round_half_even(x / 2^e) saturated to the format, times 2^e (float32)."""
    s = np.float32(np.ldexp(1.0, exponent))
    return (np.clip(np.rint(np.asarray(x, dtype=np.float32) / s), fmt.qmin, fmt.qmax) * s).astype(np.float32)


def choose_exponent(samples: np.ndarray, fmt: ActFormat) -> int:
    """The power-of-two scale exponent minimising the squared error of fake quantization on samples."""
    x = np.asarray(samples, dtype=np.float32).ravel()
    if x.size == 0:
        return 0
    top = float(np.abs(x).max()) if fmt.signed else float(max(x.max(), 0.0))
    e0 = range_exponent(top, fmt)
    errors = [float(((fake_quantize(x, e0 - k, fmt) - x).astype(np.float64) ** 2).sum()) for k in range(ACT_SEARCH_STEPS)]
    return e0 - int(np.argmin(errors))


class LeakySlope(Enum):
    """What the quantizer does with a LeakyReLU whose slope is not a power of two."""

    ROUND = "round"  #: round the slope to the nearest 2^-k the fabric runs (the change is reported)
    CPU = "cpu"  #: keep the slope: the activation stays float, on the CPU


#: LeakyReLU slopes the fabric runs: 2^-k for k in this range (the 4-bit leaky_shift field, 0 excluded).
LEAKY_SHIFTS = range(1, 16)


def leaky_shift_of(alpha: float) -> int | None:
    """k with alpha == 2^-k exactly and k in LEAKY_SHIFTS, else None."""
    k = -np.log2(alpha) if alpha > 0 else np.inf
    return int(k) if k == int(k) and int(k) in LEAKY_SHIFTS else None


def rounded_leaky_shift(alpha: float) -> int | None:
    """The k in LEAKY_SHIFTS whose 2^-k is nearest to alpha (the slope error at every negative input is then
    smallest, whatever the data); None for a slope no single power of two approximates (zero or negative)."""
    if not alpha > 0:
        return None
    return min(LEAKY_SHIFTS, key=lambda k: (abs(alpha - 2.0**-k), k))
