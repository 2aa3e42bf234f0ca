"""The requantiser (shiftpu.hw.postproc.Requantizer) against shiftpu.arch.numerics.requantize, bit for bit.

Runs in Amaranth's simulator for every value width the accelerator instantiates. Inputs stream back to back, one
per cycle, and each output is read REQUANT_LATENCY cycles after its input. The vectors cover every value of the
8-bit shift field, the values around every format's saturation bounds and rounding ties (also with LeakyReLU's
negative-side shift, for every leaky shift), the extremes of ``value + bias``, and random values of every size.
"""

from __future__ import annotations

import numpy as np
import pytest

amaranth = pytest.importorskip("amaranth")
from amaranth.sim import Simulator  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shiftpu.arch.latency import REQUANT_LATENCY  # noqa: E402
from shiftpu.arch.numerics import MAX_LEFT_SHIFT, ActFormat, Activation, requantize  # noqa: E402
from shiftpu.hw.params import ADD_WIDTH  # noqa: E402
from shiftpu.hw.postproc import Requantizer  # noqa: E402

#: Value widths of the accelerator's requantisers: the CONV accumulator (AccelConfig.acc_bits) and ADD's operands.
VALUE_WIDTHS = (24, 32, 48, ADD_WIDTH)
FORMATS = [ActFormat(b, s) for b in (4, 8) for s in (True, False)]
BIAS_MIN, BIAS_MAX = -(1 << 31), (1 << 31) - 1

#: One input of the requantiser: (v = value + bias, shift, act, leaky_shift, format).
Case = tuple[int, int, Activation, int, ActFormat]


def _v_range(value_width: int) -> tuple[int, int]:
    """The range of ``value + bias``."""
    return -(1 << (value_width - 1)) + BIAS_MIN, (1 << (value_width - 1)) - 1 + BIAS_MAX


def _split(rng: np.random.Generator, v: int, value_width: int) -> tuple[int, int]:
    """``v`` as ``value + bias`` with both in their port ranges: bias 0 where it can be, random, or extreme."""
    vmin, vmax = -(1 << (value_width - 1)), (1 << (value_width - 1)) - 1
    lo, hi = max(BIAS_MIN, v - vmax), min(BIAS_MAX, v - vmin)
    pick = rng.integers(3)
    if pick == 0 and lo <= 0 <= hi:
        bias = 0
    elif pick == 1:
        bias = lo + _below(rng, hi - lo + 1)
    else:
        bias = lo if rng.integers(2) else hi
    return v - bias, bias


def _below(rng: np.random.Generator, n: int) -> int:
    """A random integer in 0 .. n - 1, for any n (also beyond int64)."""
    return int.from_bytes(rng.bytes(n.bit_length() // 8 + 8), "little") % n


def _near_result(rng: np.random.Generator, y: int, shift: int) -> int:
    """A value that the shift (already the effective one) brings to ``y`` + a fraction near 0, 1/2 or 1."""
    if shift <= 0:  # left shift: the values whose product lies around y
        return (y >> -shift) + int(rng.integers(-1, 2))
    half = 1 << (shift - 1)
    frac = [0, half - 1, half, half, half + 1, (1 << shift) - 1, _below(rng, 1 << shift)]
    return (y << shift) + frac[rng.integers(len(frac))]


def _boundary_case(rng: np.random.Generator, shift: int, act: Activation, leaky: int, fmt: ActFormat,
                   negative: bool = False) -> int:
    """A value whose result lies at or next to a saturation bound, 0, or a rounding tie (a negative one)."""
    targets = [fmt.qmin - 2, fmt.qmin - 1, fmt.qmin, fmt.qmin + 1, -2, -1, 0, 1, fmt.qmax - 1, fmt.qmax,
               fmt.qmax + 1, fmt.qmax + 2, int(rng.integers(-300, 300))]
    if negative:
        targets = [y for y in targets if y < 0] or [-1]
    y = targets[rng.integers(len(targets))]
    effective = shift + leaky if act is Activation.LEAKY and y < 0 else shift
    return _near_result(rng, y, int(np.clip(effective, -MAX_LEFT_SHIFT - 1, 70)))


def _random_case(rng: np.random.Generator, shift: int | None = None, act: Activation | None = None,
                 leaky: int | None = None) -> tuple[int, Activation, int, ActFormat]:
    return (int(rng.integers(-128, 128)) if shift is None else shift,
            Activation(int(rng.integers(3))) if act is None else act,
            int(rng.integers(16)) if leaky is None else leaky, FORMATS[rng.integers(len(FORMATS))])


def _cases(rng: np.random.Generator, value_width: int) -> list[Case]:
    vmin, vmax = _v_range(value_width)
    vw = max(value_width, 32) + 1  # bits of value + bias
    cases: list[Case] = []

    def add(v: int, shift: int, act: Activation, leaky: int, fmt: ActFormat) -> None:
        cases.append((int(np.clip(v, vmin, vmax)), shift, act, leaky, fmt))

    # every shift field value, each with values around the bounds and ties of random formats and activations
    for shift in range(-128, 128):
        for _ in range(8):
            s, act, leaky, fmt = _random_case(rng, shift=shift)
            add(_boundary_case(rng, s, act, leaky, fmt), s, act, leaky, fmt)
    # every leaky shift with negative values around the bounds and ties (the shift + leaky_shift side)
    for leaky in range(16):
        for _ in range(24):
            s, act, _, fmt = _random_case(rng, shift=int(rng.integers(-12, 30)), act=Activation.LEAKY, leaky=leaky)
            add(_boundary_case(rng, s, act, leaky, fmt, negative=True), s, act, leaky, fmt)
    # for every shift and every bit position, a value around a bound with that bit flipped: below the guard bit
    # (then the value is an exact tie, which the bit breaks), the guard bit, in the window, or above it
    for shift in range(-MAX_LEFT_SHIFT - 1, vw + 2):
        for bit in range(vw - 1):
            if bit < shift - 1:
                s, act, leaky, fmt = _random_case(rng, shift=shift, act=Activation(int(rng.integers(2))))
                targets = [fmt.qmin - 1, fmt.qmin, -1, 0, fmt.qmax - 1, fmt.qmax, int(rng.integers(-300, 300))]
                v = (targets[rng.integers(len(targets))] << shift) + (1 << (shift - 1))
            else:
                s, act, leaky, fmt = _random_case(rng, shift=shift)
                v = _boundary_case(rng, s, act, leaky, fmt)
            add(v ^ (1 << bit), s, act, leaky, fmt)
    # every format and activation with the shifts where rounding and saturation change character
    critical = [-128, -10, -9, -8, -1, 0, 1, 2, 3, 8, 9, vw - 2, vw - 1, vw, vw + 1, 53, 54, 55, 56, 57, 58, 127]
    extremes = [vmin, vmin + 1, vmax, vmax - 1, 0, 1, -1, 2, -2]
    for fmt in FORMATS:
        for act in Activation:
            for shift in critical:
                for v in [*extremes, vmin + _below(rng, vmax - vmin + 1)]:
                    add(v, shift, act, int(rng.integers(16)), fmt)
    # values of every magnitude, including the largest |value + bias|
    for _ in range(600):
        s, act, leaky, fmt = _random_case(rng, shift=int(rng.integers(-12, vw + 4)) if rng.random() < 0.8 else None)
        bits = int(rng.integers(0, vw))
        add(int(rng.integers(-(1 << bits), 1 << bits)), s, act, leaky, fmt)
    return cases


def _simulate(value_width: int, cases: list[Case], rng: np.random.Generator) -> list[int]:
    """The output byte for each case, fed one per cycle with no gap."""
    dut = Requantizer(value_width)
    assert dut.latency == REQUANT_LATENCY
    inputs = []
    for v, shift, act, leaky, fmt in cases:
        value, bias = _split(rng, v, value_width)
        inputs.append((value, bias, shift, int(act), leaky, fmt.bits, int(fmt.signed)))
    ports = (dut.value, dut.bias, dut.shift, dut.act, dut.leaky_shift, dut.out_bits, dut.out_signed)
    got: list[int] = []

    async def bench(ctx):
        for t in range(len(inputs) + REQUANT_LATENCY):
            if t < len(inputs):
                for port, x in zip(ports, inputs[t], strict=True):
                    ctx.set(port, x)
            if t >= REQUANT_LATENCY:
                got.append(ctx.get(dut.out))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def _check(value_width: int, cases: list[Case], got: list[int]) -> None:
    assert len(got) == len(cases)
    for k, ((v, shift, act, leaky, fmt), out) in enumerate(zip(cases, got, strict=True)):
        want = int(requantize(np.int64(v), shift, fmt, act, leaky)) & 0xFF
        assert out == want, (f"case {k}: width {value_width}, v={v}, shift={shift}, {act.name}, leaky_shift={leaky}, "
                             f"{fmt}: got {out:#04x}, want {want:#04x}")


@pytest.mark.parametrize("value_width", VALUE_WIDTHS)
def test_requantizer_is_bit_exact(value_width):
    seed = 20261207 + value_width
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    cases = _cases(rng, value_width)
    _check(value_width, cases, _simulate(value_width, cases, rng))


@st.composite
def _hypothesis_cases(draw, value_width: int) -> list[Case]:
    vmin, vmax = _v_range(value_width)
    case = st.tuples(st.integers(vmin, vmax), st.integers(-128, 127), st.sampled_from(list(Activation)),
                     st.integers(0, 15), st.sampled_from(FORMATS))
    return draw(st.lists(case, min_size=1, max_size=40))


@pytest.mark.parametrize("value_width", [32, ADD_WIDTH])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_requantizer_property(value_width, data):
    """Random streams of any inputs, as Hypothesis draws and shrinks them."""
    cases = data.draw(_hypothesis_cases(value_width))
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed of the value/bias split")
    got = _simulate(value_width, cases, np.random.default_rng(seed))
    _check(value_width, cases, got)
