"""The activation arena: where each tensor the fabric reads or writes lives, reusing the space of dead tensors.

A tensor is live from the step that writes it (or, when the CPU computes it, from the start of the first
segment that reads it: the executor packs it then) to its last reader (or the end of its segment when the
CPU reads it: the executor unpacks it then). Tensors whose live ranges overlap never share bytes; a tensor
stored inside a concatenation shares the range of its container. Placement is first fit, lowest address.
"""

from __future__ import annotations

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.layout import ALIGN, activation_bytes, align, channel_block_offset
from shiftpu.compiler.ir import Graph, Placement


def _root(graph: Graph, name: str) -> str:
    while name in graph.aliases:
        name = graph.aliases[name][0]
    return name


def live_ranges(graph: Graph) -> dict[str, tuple[int, int]]:
    """Container tensor -> (first, last) step index during which its bytes must be kept."""
    pos = {id(st): k for k, st in enumerate(graph.steps)}
    span = {id(op): (pos[id(seg.ops[0])], pos[id(seg.ops[-1])]) for seg in graph.segments for op in seg.ops}
    fabric_out = {op.output for op in graph.fabric_ops()}
    cpu_reads = {n for st in graph.cpu_nodes() for n in st.inputs} | set(graph.outputs)
    ranges: dict[str, tuple[int, int]] = {}

    def touch(name: str, k: int) -> None:
        r = _root(graph, name)
        lo, hi = ranges.get(r, (k, k))
        ranges[r] = (min(lo, k), max(hi, k))

    for op in graph.fabric_ops():
        k = pos[id(op)]
        first, last = span[id(op)]
        touch(op.output, k)
        if op.output in cpu_reads:
            touch(op.output, last)
        for name in op.inputs:
            touch(name, k)
            if name not in fabric_out:
                touch(name, first)
    return ranges


def allocate_arena(graph: Graph, cfg: AccelConfig, reuse: bool = True) -> tuple[dict[str, Placement], int]:
    """Placements of every tensor the fabric touches, and the arena size in bytes."""
    ranges = live_ranges(graph)

    def nbytes(name: str) -> int:
        c, h, w = graph.tensors[name].chw
        return activation_bytes(c, h, w, cfg)

    placed: list[tuple[int, int, int, int]] = []  # (first, last, offset, end)
    roots: dict[str, Placement] = {}
    for name in sorted(ranges, key=lambda n: (ranges[n][0], -nbytes(n))):
        first, last = ranges[name]
        size = align(nbytes(name), ALIGN)
        busy = sorted((o, e) for f, la, o, e in placed if not reuse or (f <= last and first <= la))
        offset = 0
        for o, e in busy:
            if offset + size <= o:
                break
            offset = max(offset, e)
        placed.append((first, last, offset, offset + size))
        roots[name] = Placement(offset, nbytes(name))
    place: dict[str, Placement] = {}
    for name in {n for op in graph.fabric_ops() for n in [*op.inputs, op.output]} | set(roots):
        c, h, w = graph.tensors[name].chw
        root, off = name, 0
        while root in graph.aliases:
            parent, c0 = graph.aliases[root]
            ph, pw = graph.tensors[parent].chw[1:]
            off += channel_block_offset(c0, ph, pw, cfg)
            root = parent
        place[name] = Placement(roots[root].offset + off, activation_bytes(c, h, w, cfg))
    size = max((e for *_, e in placed), default=ALIGN)
    return place, max(size, ALIGN)
