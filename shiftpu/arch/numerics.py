"""The numerical contract: shift-weight codes, activation formats, bias and requantisation.

Every component (quantizer, compiler, golden model, RTL generator, runtime) computes with these
definitions, so that the accelerator, the golden model and onnxruntime agree bit for bit.

Weights
    A weight is 0 or +-2^e. Its 4-bit *shift code* is ``sign << 3 | ecode`` where ``ecode`` is 0 for
    the value 0 and ``e + 1`` (1..7) for magnitude 2^e, so integer weights lie in
    {0, +-1, +-2, +-4, ..., +-64}. Code 0b1000 ("negative zero") is illegal. A two-term weight
    ``+-2^e1 +- 2^e2`` is two such codes in one byte (term 1 in the low nibble) and must lie in int8.
    Each output channel has a power-of-two scale; the integer weights times that scale are the real
    weights, so in ONNX the weights are int8 tensors whose values are shift-representable.

Activations
    int8 (or uint8 after ReLU), optionally 4-bit; one power-of-two scale per tensor, zero point 0.

Bias and accumulators
    Bias is int32 at the accumulator scale (input scale x weight scale); accumulators are 32-bit.

Requantisation
    ``y = saturate(round_half_even((acc + bias) * 2^-shift))`` with a per-output-channel ``shift``
    (negative = left shift). For power-of-two scales this is exactly what ONNX QuantizeLinear computes
    on the dequantised float value while that value is exact in float32 (|acc| < 2^24).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from shiftpu.errors import ShiftpuError

#: Largest weight exponent a 4-bit shift code can express (magnitude 2^6 = 64).
MAX_WEIGHT_EXPONENT = 6
#: Width of one shift code in bits.
SHIFT_CODE_BITS = 4
#: The illegal "negative zero" code.
NEGATIVE_ZERO_CODE = 0b1000


class WeightCode(IntEnum):
    """How weights are coded in the weight buffer."""

    SHIFT4 = 1  #: one term: 0 or +-2^e, 4 bits per weight
    SHIFT8_TWO_TERM = 2  #: two terms: +-2^e1 +- 2^e2, 8 bits per weight

    @property
    def bits(self) -> int:
        """Bits that one weight occupies in DDR and in the weight buffer."""
        return 4 if self is WeightCode.SHIFT4 else 8

    @property
    def terms(self) -> int:
        return 1 if self is WeightCode.SHIFT4 else 2


class NumericsError(ShiftpuError, ValueError):
    """A value cannot be represented in the accelerator's number formats."""


@dataclass(frozen=True)
class ActFormat:
    """An activation number format: bit width and signedness (zero point is always 0)."""

    bits: int = 8
    signed: bool = True

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise NumericsError(f"activation bits must be 4 or 8, got {self.bits}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def numpy_dtype(self) -> np.dtype:
        """The ONNX/numpy container type (4-bit values travel in 8-bit containers)."""
        return np.dtype(np.int8 if self.signed else np.uint8)


INT8 = ActFormat(8, True)
UINT8 = ActFormat(8, False)


# --------------------------------------------------------------------------------------------------
# Shift-weight codes
# --------------------------------------------------------------------------------------------------

_SHIFT_VALUES = np.array([0] + [1 << e for e in range(MAX_WEIGHT_EXPONENT + 1)], dtype=np.int64)
#: Integer value of each 4-bit code (index = code); the illegal code maps to 0 here and is
#: rejected by :func:`decode_shift4`.
SHIFT4_VALUES = np.concatenate([_SHIFT_VALUES, -_SHIFT_VALUES]).astype(np.int32)
SHIFT4_VALUES[NEGATIVE_ZERO_CODE] = 0


def shift_representable(w: np.ndarray, code: WeightCode = WeightCode.SHIFT4) -> np.ndarray:
    """Boolean mask: which integer weights the given code can represent exactly."""
    w = np.asarray(w, dtype=np.int64)
    if code is WeightCode.SHIFT4:
        a = np.abs(w)
        return (a == 0) | ((a & (a - 1)) == 0) & (a <= (1 << MAX_WEIGHT_EXPONENT))
    return np.isin(w, two_term_values())


def two_term_values() -> np.ndarray:
    """All int8 values of the form t1 + t2 with t1, t2 single-term shift values (sorted)."""
    v = SHIFT4_VALUES.astype(np.int64)
    s = np.unique((v[:, None] + v[None, :]).ravel())
    return s[(s >= -128) & (s <= 127)].astype(np.int32)


def encode_shift4(w: np.ndarray) -> np.ndarray:
    """Integer weights -> 4-bit shift codes (uint8 array, one code per element)."""
    w = np.asarray(w, dtype=np.int64)
    bad = ~shift_representable(w, WeightCode.SHIFT4)
    if bad.any():
        raise NumericsError(
            f"weight {int(w[bad].ravel()[0])} is not 0 or +-2^e with 0 <= e <= {MAX_WEIGHT_EXPONENT}"
        )
    a = np.abs(w)
    ecode = np.where(a == 0, 0, np.log2(np.maximum(a, 1)).astype(np.int64) + 1)
    return ((np.where(w < 0, 1, 0) << 3) | ecode).astype(np.uint8)


def decode_shift4(codes: np.ndarray) -> np.ndarray:
    """4-bit shift codes -> integer weights (int32). Raises on the illegal code."""
    codes = np.asarray(codes, dtype=np.uint8)
    if (codes > 0xF).any():
        raise NumericsError("shift code wider than 4 bits")
    if (codes == NEGATIVE_ZERO_CODE).any():
        raise NumericsError("illegal shift code 0b1000 (negative zero)")
    return SHIFT4_VALUES[codes]


def _two_term_table() -> dict[int, int]:
    table: dict[int, int] = {}
    for c1 in range(16):
        for c2 in range(16):
            if NEGATIVE_ZERO_CODE in (c1, c2):
                continue
            v = int(SHIFT4_VALUES[c1] + SHIFT4_VALUES[c2])
            if -128 <= v <= 127:
                # prefer the smallest byte so encoding is canonical
                table.setdefault(v, c1 | (c2 << 4))
    return table


_TWO_TERM_ENCODE = _two_term_table()


def encode_two_term(w: np.ndarray) -> np.ndarray:
    """Integer weights -> 8-bit two-term codes (term 1 in the low nibble)."""
    w = np.asarray(w, dtype=np.int64)
    out = np.empty(w.shape, dtype=np.uint8)
    flat = out.reshape(-1)
    for i, v in enumerate(w.reshape(-1)):
        code = _TWO_TERM_ENCODE.get(int(v))
        if code is None:
            raise NumericsError(f"weight {int(v)} is not a two-term shift value +-2^e1 +- 2^e2 in int8")
        flat[i] = code
    return out


def decode_two_term(codes: np.ndarray) -> np.ndarray:
    """8-bit two-term codes -> integer weights (int32)."""
    codes = np.asarray(codes, dtype=np.uint8)
    return decode_shift4(codes & 0xF) + decode_shift4(codes >> 4)


def encode_weights(w: np.ndarray, code: WeightCode) -> np.ndarray:
    """Integer weights -> codes of the given format (one uint8 per weight)."""
    return encode_shift4(w) if code is WeightCode.SHIFT4 else encode_two_term(w)


def decode_weights(codes: np.ndarray, code: WeightCode) -> np.ndarray:
    """Codes of the given format -> integer weights (int32)."""
    return decode_shift4(codes) if code is WeightCode.SHIFT4 else decode_two_term(codes)


# --------------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------------


def pow2_exponent(scale: float | np.ndarray) -> np.ndarray:
    """Exponent e with scale == 2^e exactly; raises NumericsError if a scale is not a power of two."""
    s = np.asarray(scale, dtype=np.float64)
    if (s <= 0).any() or not np.isfinite(s).all():
        raise NumericsError(f"scale must be positive and finite, got {s.ravel()[0]}")
    mant, exp = np.frexp(s)
    if (mant != 0.5).any():
        bad = s[mant != 0.5].ravel()[0]
        raise NumericsError(f"scale {bad!r} is not a power of two")
    return (exp - 1).astype(np.int32)


def is_pow2(scale: float | np.ndarray) -> np.ndarray:
    """Boolean mask: which scales are exact positive powers of two."""
    s = np.asarray(scale, dtype=np.float64)
    mant, _ = np.frexp(np.where(s > 0, s, 3.0))
    return (s > 0) & (mant == 0.5)


# --------------------------------------------------------------------------------------------------
# Requantisation
# --------------------------------------------------------------------------------------------------


def shift_round_half_even(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """``round_half_even(x * 2^-shift)`` on integers, exactly (shift < 0 is a left shift). int64 out."""
    # With r > 0, half = 2^(r-1) and q = floor(x / 2^r): round half to even is
    # (x + half - 1 + (q & 1)) >> r, since the remainder then carries into q exactly when it exceeds half, or
    # equals it with q odd. The per-shift terms are computed at the shift's own (broadcast) shape, e.g. one per
    # channel, so only a few whole-tensor operations remain.
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    right = np.maximum(shift, 0)
    left = np.maximum(-shift, 0)
    rounds = (right > 0).astype(np.int64)
    bias = np.where(right > 0, (np.int64(1) << np.maximum(right - 1, 0)) - 1, 0)
    y = (x + bias + ((x >> right) & rounds)) >> right
    return y << left


class Activation(IntEnum):
    """Activation fused into requantisation."""

    NONE = 0
    RELU = 1
    LEAKY = 2  #: x for x >= 0, x * 2^-leaky_shift for x < 0


#: Values requantize takes stay below 2^REQUANT_VALUE_BITS in magnitude (accumulator plus bias, or aligned ADD operands).
REQUANT_VALUE_BITS = 56
#: Left shifts beyond this saturate any nonzero value of an 8-bit output already.
MAX_LEFT_SHIFT = 9


def _clamp_shift(shift: np.ndarray) -> np.ndarray:
    """The shift clamped to where it still matters, so int64 arithmetic stays exact for every 8-bit field value.

    A right shift by REQUANT_VALUE_BITS + 1 or more rounds every value to 0 (|x / 2^s| <= 1/4), and a left shift
    by MAX_LEFT_SHIFT or more saturates every nonzero value, so clamping changes no result.
    """
    return np.clip(shift, -MAX_LEFT_SHIFT, REQUANT_VALUE_BITS + 1)


def requantize(
    acc: np.ndarray,
    shift: np.ndarray | int,
    fmt: ActFormat = INT8,
    act: Activation = Activation.NONE,
    leaky_shift: int = 0,
) -> np.ndarray:
    """Accumulator (bias already added) -> activation, as the accelerator's post-processing does it.

    ``shift`` broadcasts against ``acc`` (per output channel: shape (C, 1, 1) for CHW tensors).
    ReLU clamps negatives to 0; LeakyReLU shifts negatives by ``shift + leaky_shift`` before rounding.
    Saturates to the format's range. Returns the format's numpy dtype.
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(np.abs(acc) >= 1 << REQUANT_VALUE_BITS):
        raise NumericsError(f"requantize: |value| reaches 2^{REQUANT_VALUE_BITS}")
    if act is Activation.LEAKY:
        y = np.where(acc >= 0, shift_round_half_even(acc, _clamp_shift(shift)),
                     shift_round_half_even(acc, _clamp_shift(shift + leaky_shift)))
    else:
        y = shift_round_half_even(acc, _clamp_shift(shift))
        if act is Activation.RELU:
            y = np.maximum(y, 0)
    return np.clip(y, fmt.qmin, fmt.qmax).astype(fmt.numpy_dtype)
