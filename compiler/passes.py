"""The compiler's passes over the IR and the pipeline that runs them (optionally observing the graph after each).

Each pass is a small function ``pass_(graph, options) -> graph`` that returns a new graph and leaves its input as it
was: what it changes it rebuilds (``dataclasses.replace``, ``Graph.substitute``), what it does not change it shares,
and nothing is changed in place, so every intermediate graph stays valid (QONNX's transformations copy the model
for the same reason); a pass that only checks returns its input. :data:`PIPELINE` lists the passes in order; :func:`run_pipeline` runs a contiguous part of it,
which is how a compilation restarts from the graph dumped after any pass (``compiler/irfile.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values (the dataflows sorted by name)."""
        return {"config": self.config.to_dict(), "ddr_bytes_per_cycle": self.ddr_bytes_per_cycle,
                "dataflows": sorted(df.name for df in self.dataflows), "schedule": self.schedule.value,
                "reuse_arena": self.reuse_arena, "read_latency": self.read_latency}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompileOptions:
        return cls(AccelConfig.from_dict(data["config"]), float(data["ddr_bytes_per_cycle"]),
                   frozenset(Dataflow[name] for name in data["dataflows"]), Schedule(data["schedule"]),
                   bool(data["reuse_arena"]), int(data["read_latency"]))


def remove_dead_cpu_nodes(graph: Graph, opts: CompileOptions) -> Graph:
    """Drop CPU nodes whose results nothing reads (e.g. a flatten that a Gemm on the fabric no longer needs)."""
    steps = graph.steps
    while True:
        needed = set(graph.outputs) | {n for st in steps for n in st.inputs}
        kept = [st for st in steps if not isinstance(st, CpuNode) or needed & set(st.outputs)]
        if len(kept) == len(steps):
            return replace(graph, steps=kept)
        steps = kept


def lower_concat(graph: Graph, opts: CompileOptions) -> Graph:
    """Concatenations in place: each input is written straight into its channel range of the result.

    An input with another scale or format, or already stored inside another tensor, gets a MOVE into
    its range instead.
    """
    tensors, aliases = dict(graph.tensors), dict(graph.aliases)
    steps: list[Step] = []
    for st in graph.steps:
        if isinstance(st, ConcatOp):
            out = tensors[st.output]
            c0, parts = 0, []
            for k, name in enumerate(st.inputs):
                t = tensors[name]
                if t.exp == out.exp and t.fmt == out.fmt and name not in aliases and name not in parts:
                    part = name
                else:
                    part = f"{out.name}/part{k}"
                    tensors[part] = QTensor(part, (1, *t.chw), out.fmt, out.exp)
                    steps.append(MoveOp(f"{st.name}/move{k}", [name], part, st.sources, out_shift=out.exp - t.exp))
                aliases[part] = (out.name, c0)
                parts.append(part)
                c0 += t.chw[0]
            st = replace(st, inputs=parts)
        steps.append(st)
    return replace(graph, steps=steps, tensors=tensors, aliases=aliases)


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
    ordered = [steps[i] for i in order]
    segments: list[Segment] = []
    previous_on_fabric = False
    for st in ordered:
        on_fabric = isinstance(st, FabricOp)
        if on_fabric:
            if not previous_on_fabric:
                segments.append(Segment(len(segments), []))
            segments[-1].ops.append(st)
        previous_on_fabric = on_fabric
    return replace(graph, steps=ordered, segments=segments)


def group_cpu_regions(graph: Graph, opts: CompileOptions) -> Graph:
    """Each run of consecutive CPU steps becomes a CPU region (one onnxruntime session at run time)."""
    steps, regions = group_regions(graph)
    return replace(graph, steps=steps, cpu_regions=regions)


def check_cpu_regions(graph: Graph, opts: CompileOptions) -> Graph:
    """Refuse a CPU region that onnxruntime cannot run (an operator outside the ONNX operator sets)."""
    for region in graph.cpu_regions:
        problem = region_problem(region, region_model(graph.model, region))
        if problem is not None:
            raise CompileError(problem)
    return graph


def choose_dataflow(graph: Graph, opts: CompileOptions) -> Graph:
    """Tiling and dataflow of every CONV (by the performance model); dimension checks of all others."""
    chosen: dict[int, Step] = {}
    for op in graph.fabric_ops():
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.output]
        if isinstance(op, ConvOp):
            chosen[id(op)] = dataflow_choice.choose(op, x, y, opts.cost_model, opts.dataflows)
        else:
            check_dims(op.name, *(graph.tensors[n] for n in op.inputs), y)
    return graph.substitute(chosen)


def allocate(graph: Graph, opts: CompileOptions) -> Graph:
    """Place every tensor the fabric reads or writes in the activation arena (see compiler/arena.py)."""
    placements, arena_bytes = allocate_arena(graph, opts.config, opts.reuse_arena)
    return replace(graph, placements=placements, arena_bytes=arena_bytes)


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


#: The name of the graph before the first pass (QDQ folding's result).
IMPORT = "import"
#: What :func:`run_pipeline` calls with each graph: its number (0 after import, k after the k-th pass of
#: :data:`PIPELINE`), the name of the pass that made it, and the graph.
PassObserver = Callable[[int, str, Graph], None]


def run_pipeline(graph: Graph, opts: CompileOptions, observe: PassObserver | None = None,
                 passes: list[tuple[str, Pass]] = PIPELINE) -> Graph:
    """Run ``passes`` (a contiguous part of :data:`PIPELINE`, all of it by default); ``observe`` sees the graph after
    each pass, numbered by its place in the pipeline (and the one given, when ``passes`` starts the pipeline)."""
    start = PIPELINE.index(passes[0]) if passes else len(PIPELINE)
    if observe is not None and start == 0:
        observe(0, IMPORT, graph)
    for k, (name, fn) in enumerate(passes, start=start + 1):
        graph = fn(graph, opts)
        if observe is not None:
            observe(k, name, graph)
    return graph


def passes_after(name: str) -> list[tuple[str, Pass]]:
    """The passes of :data:`PIPELINE` that follow the pass called ``name`` (all of them after :data:`IMPORT`)."""
    names = [IMPORT] + [n for n, _ in PIPELINE]
    if name not in names:
        raise CompileError(f"the pipeline has no pass '{name}' (its passes: {', '.join(names)})")
    return PIPELINE[names.index(name):]
