"""Code generation: one constant image per fabric segment (program header, instructions, weights, tables).

Image layout (offsets from CONST_BASE): the 64-byte header, the instructions (END last), then for each
CONV its packed weights and its bias/shift table, each starting at a multiple of 64 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTR_BYTES, Instruction, encode_program
from shiftpu.arch.layout import ALIGN, align, pack_qparams, pack_weights
from shiftpu.compiler.ir import ConvOp, FabricOp, Graph, Segment
from shiftpu.compiler.lower import instruction


@dataclass
class SegmentImage:
    """The constant segment of one fabric subgraph and what it was built from."""

    segment: Segment
    image: np.ndarray  #: uint8: program at offset 0, then weights and tables
    instructions: list[Instruction]
    ops: list[FabricOp]  #: the operation behind each instruction (END excluded)


def layer_ids(graph: Graph) -> dict[int, int]:
    """id(op) -> layer_id: the index of the operation among the graph's fabric operations."""
    return {id(op): k for k, op in enumerate(graph.fabric_ops())}


def build_segment(graph: Graph, seg: Segment, cfg: AccelConfig) -> SegmentImage:
    ids = layer_ids(graph)
    ops = [op for op in seg.ops if instruction(op, graph.tensors, 0, graph.placements) is not None]
    data_start = align(INSTR_BYTES * (len(ops) + 2), ALIGN)
    blobs: list[tuple[int, np.ndarray]] = []
    cursor = data_start
    instrs: list[Instruction] = []
    for op in ops:
        w_addr = qp_addr = 0
        if isinstance(op, ConvOp):
            assert op.dataflow is not None
            w = pack_weights(op.weights.astype(np.int64), op.dataflow, cfg)
            w_addr, cursor = cursor, align(cursor + w.size, ALIGN)
            qp = pack_qparams(op.bias.astype(np.int32), op.shift.astype(np.int8), cfg)
            qp_addr, cursor = cursor, align(cursor + qp.size, ALIGN)
            blobs += [(w_addr, w), (qp_addr, qp)]
        instr = instruction(op, graph.tensors, ids[id(op)], graph.placements, w_addr, qp_addr)
        assert instr is not None
        instrs.append(instr)
    program = np.frombuffer(encode_program(instrs, cfg.config_hash()), dtype=np.uint8)
    image = np.zeros(max(cursor, program.size), dtype=np.uint8)
    image[: program.size] = program
    for addr, blob in blobs:
        image[addr: addr + blob.size] = blob
    return SegmentImage(seg, image, instrs, ops)


def generate(graph: Graph, cfg: AccelConfig) -> list[SegmentImage]:
    """The constant image of every segment of an allocated graph."""
    return [build_segment(graph, seg, cfg) for seg in graph.segments]
