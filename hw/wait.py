"""Fixed waits inside an FSM state: the cycles in which registered stages settle (``shiftpu.arch.latency``)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value


def wait_cycles(m: Module, cycles: int | Value, name: str) -> Value:
    """The condition that ends a state lasting ``cycles`` cycles; call it inside the state.

    The counter is the state's own and counts only while the state is active; it is back at 0 when the
    condition holds, so the state must be left then.
    """
    count = Signal(8, name=f"{name}_count")
    last = count == cycles - 1
    m.d.sync += count.eq(Mux(last, 0, count + 1))
    return last


def delayed(m: Module, value: Value, cycles: int, name: str) -> Value:
    """``value`` as it was ``cycles`` cycles ago, through a chain of registers (the tag that travels beside a
    fixed-latency pipeline); ``cycles`` 0 is ``value`` itself."""
    for k in range(cycles):
        reg = Signal.like(value, name=f"{name}{k}")
        m.d.sync += reg.eq(value)
        value = reg
    return value
