"""The fabric/CPU partition of a quantized model: where each operation runs, and why.

:func:`plan_partition` is the one place that decides it: QDQ folding (which nodes become fabric operations,
which stay on the CPU and for what reason) and the partition passes (dead CPU nodes, in-place concatenations,
the order that makes the fewest fabric segments, CPU regions, the check that onnxruntime runs every region).
``shiftpu compile`` continues from its result and ``shiftpu check`` prints it, so check predicts exactly the
partition that compile makes. :func:`partition_entries` is the partition as data (the compiled manifest's
``partition``), :func:`partition_lines` as the text both commands print.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from shiftpu.arch.isa import Dataflow
from shiftpu.boards import load_board
from shiftpu.compiled.cpu_ops import has_kernel
from shiftpu.compiler.codegen import layer_ids
from shiftpu.compiler.ir import CompileError, ConcatOp, CpuNode, FabricOp, Graph
from shiftpu.compiler.onnx_import import ModelError, load_onnx, prepare
from shiftpu.compiler.passes import PARTITION_PASSES, CompileOptions, PassObserver, run_pipeline
from shiftpu.compiler.perf import Schedule
from shiftpu.compiler.qdq import fold_qdq

#: What runs the CPU regions on the host and the board (the numpy kernels only where it is not installed).
CPU_RUNTIME = "onnxruntime"


@dataclass(frozen=True)
class PartitionEntry:
    """Where one step of the compiled model runs and why: a fabric operation or a CPU node."""

    where: str  #: "fabric" or "cpu"
    unit: int  #: the fabric segment or the CPU region that runs it
    kind: str  #: the fabric operation (CONV, POOL, ADD, MOVE, CONCAT) or the ONNX operator
    name: str
    runtime: str  #: "fabric", or what runs the CPU regions ("onnxruntime")
    reason: str = ""  #: on the CPU: the ``CpuReason`` name
    why: str = ""  #: on the CPU: the reason in words, with its detail
    layer_id: int | None = None  #: on the fabric: the layer id (the index among the fabric operations)
    numpy_fallback: bool = True  #: on the CPU: whether the numpy kernels can run it where onnxruntime is absent

    @property
    def unit_name(self) -> str:
        return f"{self.where}{self.unit}"

    def line(self, extra: str = "") -> str:
        """One line of the partition report (``extra``: what compile adds for a CONV, its dataflow)."""
        head = f"  {self.unit_name:<8} {self.kind:<17} {self.name:<30}"
        if self.where == "fabric":
            return f"{head} #{self.layer_id}{extra}"
        fallback = "" if self.numpy_fallback else " (no numpy fallback)"
        return f"{head} {self.runtime}{fallback}, because: {self.why}"

    def to_dict(self) -> dict:
        return asdict(self)


def partition_entries(graph: Graph) -> list[PartitionEntry]:
    """Every step of a partitioned graph, in execution order."""
    ids = layer_ids(graph)
    seg_of = {id(op): s.index for s in graph.segments for op in s.ops}
    out = []
    for st in graph.steps:
        if isinstance(st, CpuNode):
            assert st.region is not None, "CPU regions are grouped by the partition"
            out.append(PartitionEntry("cpu", st.region, st.node.op_type, st.name, CPU_RUNTIME, st.reason.name,
                                      st.why, numpy_fallback=has_kernel(st.node)))
        else:
            assert isinstance(st, FabricOp)
            out.append(PartitionEntry("fabric", seg_of[id(st)], st.kind, st.name, "fabric", layer_id=ids[id(st)]))
    return out


def partition_summary(graph: Graph) -> str:
    """The counts: fabric instructions and segments, CPU nodes and regions."""
    n_fab = sum(not isinstance(o, ConcatOp) for o in graph.fabric_ops())
    return (f"{n_fab} fabric instructions in {len(graph.segments)} segment(s), {len(graph.cpu_nodes())} CPU node(s) "
            f"in {len(graph.cpu_regions)} {CPU_RUNTIME} region(s)")


def partition_lines(graph: Graph, extra: Callable[[FabricOp], str] | None = None) -> list[str]:
    """The partition as text: the counts, then one line per step (``extra(op)`` appended to fabric lines)."""
    lines = [partition_summary(graph), ""]
    for entry, st in zip(partition_entries(graph), graph.steps, strict=True):
        lines.append(entry.line(extra(st) if extra is not None and isinstance(st, FabricOp) else ""))
    return lines


def compile_options(board: str, dataflows: frozenset[Dataflow] = frozenset(Dataflow),
                    schedule: Schedule = Schedule.RTL) -> CompileOptions:
    """What the passes need to know about a board's accelerator."""
    b = load_board(board)
    return CompileOptions(b.accel, b.ddr_bytes_per_cycle, frozenset(dataflows), schedule,
                          read_latency=b.ddr_read_latency_cycles)


def plan_partition(model: onnx.ModelProto, opts: CompileOptions, observe: PassObserver | None = None) -> Graph:
    """QDQ folding and the partition passes of a prepared model (``onnx_import.prepare``); refusals raise
    ``CompileError``. ``observe`` sees the graph after import and after each pass (``compiler/irfile.py`` dumps)."""
    return run_pipeline(fold_qdq(model, opts.config), opts, observe, PARTITION_PASSES)


def load_model(model: str | Path | onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None
               ) -> tuple[onnx.ModelProto, list[str], str]:
    """Read (a path) and prepare a model for compilation: the prepared model, one line per symbolic batch
    dimension bound to 1, and the name of its source."""
    if isinstance(model, onnx.ModelProto):
        proto, bound = prepare(model, input_shapes=input_shapes)
        return proto, bound, model.graph.name
    proto, bound = load_onnx(model, input_shapes)
    return proto, bound, str(model)


def check_partition(model: str | Path | onnx.ModelProto, board: str,
                    input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Graph:
    """The partition ``shiftpu compile`` makes of a model for a board (read and prepared as compile does)."""
    return plan_partition(load_model(model, input_shapes)[0], compile_options(board))


def partition_prediction(model: str | Path | onnx.ModelProto, board: str,
                         input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[list[str], bool]:
    """What ``shiftpu check`` prints of the partition, and whether ``shiftpu compile`` accepts the model: the lines
    that begin compile's partition report (and its warnings), or the error compile would stop with up to the
    partition (a map too large for an instruction's fields, found by the tiling after it, is compile's alone)."""
    try:
        graph = check_partition(model, board, input_shapes)
    except (CompileError, ModelError) as e:
        return [f"shiftpu compile --board {board} refuses the model: {e}"], False
    lines = [f"partition made by shiftpu compile --board {board}:"] + partition_lines(graph)
    return lines + [f"warning: {w}" for w in graph.warnings], True
