"""The compiler's passes over the IR and the pipeline that runs them (optionally dumping after each).

Each pass is a small function ``pass_(graph, options) -> graph``; :data:`PIPELINE` lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow
from shiftpu.compiler import dataflow as dataflow_choice
from shiftpu.compiler.arena import allocate_arena
from shiftpu.compiler.ir import (
    CompileError,
    ConcatOp,
    ConvOp,
    CpuNode,
    FabricOp,
    Graph,
    MoveOp,
    QTensor,
    Segment,
    Step,
)
from shiftpu.compiler.perf import READ_LATENCY, CostModel, Schedule
from shiftpu.compiler.regions import group_regions, region_model, region_problem
from shiftpu.compiler.tiling import check_dims


@dataclass(frozen=True)
class CompileOptions:
    """What the passes need to know about the target."""

    config: AccelConfig
    ddr_bytes_per_cycle: float  #: the board's DDR bandwidth per accelerator cycle
    #: the dataflows the target accelerator implements (the choice is made among these)
    dataflows: frozenset[Dataflow] = frozenset(Dataflow)
    #: how the target overlaps loads and computation (the cost model the choices are made with)
    schedule: Schedule = Schedule.RTL
    #: let tensors whose lifetimes do not overlap share arena bytes
    reuse_arena: bool = True
    #: cycles from a DDR read command to its first beat
    read_latency: int = READ_LATENCY

    @property
    def cost_model(self) -> CostModel:
        return CostModel(self.config, self.ddr_bytes_per_cycle, self.schedule, self.read_latency)


def remove_dead_cpu_nodes(graph: Graph, opts: CompileOptions) -> Graph:
    """Drop CPU nodes whose results nothing reads (e.g. a flatten that a Gemm on the fabric no longer needs)."""
    while True:
        needed = set(graph.outputs) | {n for st in graph.steps for n in st.inputs}
        dead = [st for st in graph.steps if isinstance(st, CpuNode) and not needed & set(st.outputs)]
        if not dead:
            return graph
        graph.steps = [st for st in graph.steps if not any(st is d for d in dead)]


def lower_concat(graph: Graph, opts: CompileOptions) -> Graph:
    """Concatenations in place: each input is written straight into its channel range of the result.

    An input with another scale or format, or already stored inside another tensor, gets a MOVE into
    its range instead.
    """
    steps: list[Step] = []
    for st in graph.steps:
        if isinstance(st, ConcatOp):
            out = graph.tensors[st.output]
            c0, parts = 0, []
            for k, name in enumerate(st.inputs):
                t = graph.tensors[name]
                if t.exp == out.exp and t.fmt == out.fmt and name not in graph.aliases and name not in parts:
                    part = name
                else:
                    part = f"{out.name}/part{k}"
                    graph.tensors[part] = QTensor(part, (1, *t.chw), out.fmt, out.exp)
                    steps.append(MoveOp(f"{st.name}/move{k}", [name], part, st.sources, out_shift=out.exp - t.exp))
                graph.aliases[part] = (out.name, c0)
                parts.append(part)
                c0 += t.chw[0]
            st.inputs = parts
        steps.append(st)
    graph.steps = steps
    return graph


def _deps(steps: list[Step]) -> tuple[list[set[int]], list[list[int]]]:
    producer: dict[str, int] = {}
    for i, st in enumerate(steps):
        for o in (st.outputs if isinstance(st, CpuNode) else [st.output]):
            producer[o] = i
    preds = [set() for _ in steps]
    succs: list[list[int]] = [[] for _ in steps]
    for i, st in enumerate(steps):
        for name in st.inputs:
            j = producer.get(name)
            if j is not None and j != i and j not in preds[i]:
                preds[i].add(j)
                succs[j].append(i)
    return preds, succs


def partition(graph: Graph, opts: CompileOptions) -> Graph:
    """Order the steps so that fabric operations run in as few, as long segments as possible."""
    steps = graph.steps
    preds, succs = _deps(steps)
    waiting = [len(p) for p in preds]
    ready = sorted(i for i, w in enumerate(waiting) if w == 0)
    order: list[int] = []
    on_fabric = True
    while ready:
        same = [i for i in ready if isinstance(steps[i], FabricOp) == on_fabric]
        pick = same[0] if same else ready[0]
        ready.remove(pick)
        order.append(pick)
        on_fabric = isinstance(steps[pick], FabricOp)
        for j in succs[pick]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
        ready.sort()
    graph.steps = [steps[i] for i in order]
    graph.segments = []
    previous_on_fabric = False
    for st in graph.steps:
        on_fabric = isinstance(st, FabricOp)
        if on_fabric:
            if not previous_on_fabric:
                graph.segments.append(Segment(len(graph.segments), []))
            graph.segments[-1].ops.append(st)
        previous_on_fabric = on_fabric
    return graph


def group_cpu_regions(graph: Graph, opts: CompileOptions) -> Graph:
    """Each run of consecutive CPU steps becomes a CPU region (one onnxruntime session at run time)."""
    graph.cpu_regions = group_regions(graph)
    return graph


def check_cpu_regions(graph: Graph, opts: CompileOptions) -> Graph:
    """Refuse a CPU region that onnxruntime cannot run (an operator outside the ONNX operator sets)."""
    for region in graph.cpu_regions:
        problem = region_problem(region, region_model(graph.model, region))
        if problem is not None:
            raise CompileError(problem)
    return graph


def choose_dataflow(graph: Graph, opts: CompileOptions) -> Graph:
    """Tiling and dataflow of every CONV (by the performance model); dimension checks of all others."""
    for op in graph.fabric_ops():
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.output]
        if isinstance(op, ConvOp):
            dataflow_choice.choose(op, x, y, opts.cost_model, opts.dataflows)
        else:
            check_dims(op.name, *(graph.tensors[n] for n in op.inputs), y)
    return graph


def allocate(graph: Graph, opts: CompileOptions) -> Graph:
    """Place every tensor the fabric reads or writes in the activation arena (see compiler/arena.py)."""
    graph.placements, graph.arena_bytes = allocate_arena(graph, opts.config, opts.reuse_arena)
    return graph


Pass = Callable[[Graph, CompileOptions], Graph]

#: The passes that decide where each operation runs (``shiftpu check`` stops after them, see compiler/partition.py).
PARTITION_PASSES: list[tuple[str, Pass]] = [
    ("remove_dead_cpu_nodes", remove_dead_cpu_nodes),
    ("lower_concat", lower_concat),
    ("partition", partition),
    ("group_cpu_regions", group_cpu_regions),
    ("check_cpu_regions", check_cpu_regions),
]
#: The passes after the partition: tiling, dataflow and arena.
BACKEND_PASSES: list[tuple[str, Pass]] = [
    ("choose_dataflow", choose_dataflow),
    ("allocate", allocate),
]
#: The passes after import, in order.
PIPELINE: list[tuple[str, Pass]] = PARTITION_PASSES + BACKEND_PASSES


def run_pipeline(graph: Graph, opts: CompileOptions, dump_dir: Path | None = None,
                 passes: list[tuple[str, Pass]] = PIPELINE) -> Graph:
    """Run ``passes`` (a contiguous part of :data:`PIPELINE`, all of it by default); with ``dump_dir``, write the
    graph after each pass as text, numbered by its place in the pipeline (and after import, before the first)."""
    start = PIPELINE.index(passes[0]) if passes else 0
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        if start == 0:
            (dump_dir / "00_import.txt").write_text(graph.describe())
    for k, (name, fn) in enumerate(passes, start=start + 1):
        graph = fn(graph, opts)
        if dump_dir is not None:
            (dump_dir / f"{k:02d}_{name}.txt").write_text(graph.describe())
    return graph
