"""Arithmetic sized for the DSP slices: wide products split into registered partial products.

A product of a 16-bit value and a 32-bit one needs two or three DSP slices (DSP48E1 multiplies 25 x 18 bits,
DSP48E2 27 x 18); left combinational between two registers, their cascade is the slowest path of the design on
the 7-series. :func:`split_product` gives each slice a registered output and adds the parts a stage later.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value

#: Bits of the wider operand per partial product: an unsigned 17-bit value fits the 18-bit signed B port.
PRODUCT_CHUNK = 17


def split_product(m: Module, a: Value, b: Value, name: str) -> Signal:
    """``a * b`` (unsigned), valid two cycles after its operands: each 17-bit chunk of ``b`` times ``a`` into a
    register (one DSP slice with its output register), then the sum of the shifted parts into a register."""
    parts = []
    for k in range(0, len(b), PRODUCT_CHUNK):
        width = min(PRODUCT_CHUNK, len(b) - k)
        part = Signal(len(a) + width, name=f"{name}_part{k // PRODUCT_CHUNK}")
        m.d.sync += part.eq(a * b[k:k + width])
        parts.append(part << k)
    total = Signal(len(a) + len(b), name=name)
    m.d.sync += total.eq(sum(parts[1:], parts[0]))
    return total
