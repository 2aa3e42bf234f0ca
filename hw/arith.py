"""Arithmetic sized for the DSP slices: products with registers on both sides of every slice.

A product of a 16-bit value and a 32-bit one needs two or three DSP slices (DSP48E1 multiplies 25 x 18 bits,
DSP48E2 27 x 18); left combinational between two registers, their cascade is the slowest path of the design on
the 7-series. Every product here gives each slice its own input register (the slice's A/B register), a
registered output (its M/P register), and adds the partial products a stage later in the fabric. A DSP slice
then never drives another one combinationally, whichever way synthesis packs the registers.

Products of a value and a field of at most :data:`SMALL_FACTOR_BITS` bits (a kernel size) are shifts and adds
in LUTs instead: they need no slice.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value

#: Bits of an operand per partial product: an unsigned 17-bit value fits the 18-bit signed B port.
PRODUCT_CHUNK = 17
#: Widest operand that goes whole into the A port (25 bits signed on the DSP48E1: 24 unsigned).
A_PORT_BITS = 24
#: Cycles from the operands of :func:`pipelined_product` to its result: operand registers, the slices'
#: registered products, the registered sum of the parts.
PRODUCT_LATENCY = 3
#: Widest factor :func:`small_product` takes (a kernel height or width, 1..7).
SMALL_FACTOR_BITS = 3


def _chunk_products(m: Module, a: Value, b: Value, name: str) -> Signal:
    """Each 17-bit chunk of ``b`` times ``a`` into its own register (one slice each), then their sum into a
    register: ``a * b`` two cycles after ``a`` and ``b``. The chunks at even and at odd positions do not overlap
    while ``a`` is at most 17 bits wide, so the sum is a single two-input adder."""
    if len(a) > A_PORT_BITS:
        raise ValueError(f"{name}: the narrower operand has {len(a)} bits, more than the DSP A port's {A_PORT_BITS}")
    parts = []
    for k in range(0, len(b), PRODUCT_CHUNK):
        width = min(PRODUCT_CHUNK, len(b) - k)
        part = Signal(len(a) + width, name=f"{name}_part{k // PRODUCT_CHUNK}")
        m.d.sync += part.eq(a * b[k:k + width])
        parts.append(part << k)
    if len(parts) > 2 and len(a) > PRODUCT_CHUNK:
        raise ValueError(f"{name}: {len(parts)} partial products of a {len(a)}-bit operand need an adder tree")
    total = Signal(len(a) + len(b), name=name)
    if len(parts) > 2:  # parts k and k + 2 are 2 x 17 bits apart, more than a 17 + 17-bit part is wide
        m.d.sync += total.eq(sum(parts[0::2]) + sum(parts[1::2]))
    else:
        m.d.sync += total.eq(sum(parts[1:], parts[0]))
    return total


def pipelined_product(m: Module, a: Value, b: Value, name: str) -> Signal:
    """``a * b`` (unsigned), valid :data:`PRODUCT_LATENCY` cycles after its operands.

    Both operands go through registers of their own (the slices' A and B registers: no adder in front of them
    can be folded into a slice's pre-adder, and no slice output drives a slice input), each 17-bit chunk of
    the wider operand times the narrower one into a register (a slice with its output register), then the sum
    of the parts into a register. The narrower operand goes whole into the A port (at most 24 bits)."""
    if len(a) > len(b):
        a, b = b, a
    a_q = Signal(len(a), name=f"{name}_a")
    b_q = Signal(len(b), name=f"{name}_b")
    m.d.sync += [a_q.eq(a), b_q.eq(b)]
    return _chunk_products(m, a_q, b_q, name)


def small_product(value: Value, factor: Value) -> Value:
    """``value * factor`` for a ``factor`` of at most :data:`SMALL_FACTOR_BITS` bits, as shifted, masked copies
    of ``value`` added in LUTs (combinational: register it where it is used)."""
    if len(factor) > SMALL_FACTOR_BITS:
        raise ValueError(f"small_product takes factors of at most {SMALL_FACTOR_BITS} bits, not {len(factor)}")
    terms = [Mux(factor[k], value << k, 0) for k in range(len(factor))]
    return sum(terms[1:], terms[0])
