"""Barrel rotation of a vector of words: the crossbar between banked buffers and their read lanes.

Reading ``n`` consecutive words from ``n`` banks by ``address mod n`` puts word ``address + t`` in bank
``(address + t) mod n``; rotating the banks' outputs right by ``address mod n`` words lines them up. A
rotation costs ``log2(n)`` two-way muxes per bit, where selecting each lane from all banks costs ``n - 1``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, Value


def rotate_words(m: Module, words: list[Value], amount: Value, word_bits: int, name: str) -> list[Value]:
    """``words`` rotated so that result ``t`` is ``words[(amount + t) mod len(words)]`` (len a power of two).

    Each stage is a signal of its own, so the expression does not grow with the number of stages.
    """
    n = len(words)
    if n & (n - 1):
        raise ValueError(f"rotate_words needs a power-of-two number of words, not {n}")
    vec = Cat(*words)
    for bit in range((n - 1).bit_length()):
        stage = Signal(n * word_bits, name=f"{name}_rot{bit}")
        m.d.comb += stage.eq(Mux(amount[bit], vec.rotate_right(word_bits << bit), vec))
        vec = stage
    return [vec.word_select(t, word_bits) for t in range(n)]
