"""CPU regions: consecutive CPU nodes of the schedule, grouped so that the runtime runs each as one session.

The partition orders the steps so that fabric operations form as few segments as possible; the CPU nodes
between two segments (or before the first, after the last) then form one region. :func:`group_regions` finds
them and the tensors that cross their borders; :func:`region_model` writes a region as an ONNX model of its own
(its nodes, the constants they read, typed inputs and outputs), which the compiled folder carries and
``shiftpu.compiled.cpu_regions`` loads into an onnxruntime session; :func:`region_problem` says why onnxruntime (or,
where it is not installed, the ONNX operator set) cannot run it.
"""

from __future__ import annotations

from dataclasses import replace

import onnx
from onnx import helper

from shiftpu.compiled.cpu_regions import onnxruntime_module, ort_session
from shiftpu.compiler.ir import CompileError, CpuNode, CpuRegion, Graph, Step


def node_reads(node: onnx.NodeProto) -> list[str]:
    """The values a node reads: its inputs and the outer values its subgraphs (If, Loop, Scan bodies) use."""
    names = [i for i in node.input if i]
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            defined = {v.name for v in g.input} | {i.name for i in g.initializer}
            defined |= {o for n in g.node for o in n.output}
            names += [x for sub in g.node for x in node_reads(sub) if x not in defined]
    return names


def _reads(st: Step) -> list[str]:
    return node_reads(st.node) if isinstance(st, CpuNode) else list(st.inputs)


def group_regions(graph: Graph) -> tuple[list[Step], list[CpuRegion]]:
    """The regions of an ordered graph: each maximal run of consecutive CPU steps, with its border tensors; and the
    graph's steps with ``region`` set on every CPU node (new CPU nodes: the graph's own are left as they are).
    """
    steps: list[Step] = []
    regions: list[CpuRegion] = []
    current: CpuRegion | None = None
    region_of_step: list[int | None] = []
    for st in graph.steps:
        if isinstance(st, CpuNode):
            if current is None:
                current = CpuRegion(len(regions), [])
                regions.append(current)
            st = replace(st, region=current.index)
            current.nodes.append(st)
            region_of_step.append(current.index)
        else:
            current = None
            region_of_step.append(None)
        steps.append(st)
    constants = {i.name for i in graph.model.graph.initializer}
    # who reads each value from outside a region: a region index, or -1 for the fabric and the model outputs
    readers: dict[str, set[int]] = {name: {-1} for name in graph.outputs}
    for st, r in zip(graph.steps, region_of_step, strict=True):
        for name in _reads(st):
            readers.setdefault(name, set()).add(-1 if r is None else r)
    for region in regions:
        made = {o for n in region.nodes for o in n.outputs if o}
        reads = [x for n in region.nodes for x in node_reads(n.node)]
        region.inputs = list(dict.fromkeys(x for x in reads if x not in made and x not in constants))
        region.outputs = [o for n in region.nodes for o in n.outputs
                          if o and readers.get(o, set()) - {region.index}]
    return steps, regions


def _value_info(types: dict[str, onnx.ValueInfoProto], name: str, region: CpuRegion) -> onnx.ValueInfoProto:
    vi = types.get(name)
    if vi is None or not vi.type.tensor_type.elem_type:
        raise CompileError(f"CPU region {region.index}: tensor '{name}' has no type after shape inference")
    return vi


def region_model(model: onnx.ModelProto, region: CpuRegion) -> onnx.ModelProto:
    """The region as a self-contained ONNX model (same opsets and IR version as ``model``)."""
    g = model.graph
    types = {vi.name: vi for vi in [*g.value_info, *g.input, *g.output]}
    used = {x for n in region.nodes for x in node_reads(n.node)}
    graph = helper.make_graph(
        [n.node for n in region.nodes], f"cpu_region{region.index}",
        [_value_info(types, name, region) for name in region.inputs],
        [_value_info(types, name, region) for name in region.outputs],
        [i for i in g.initializer if i.name in used])
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="shiftpu")
    out.ir_version = model.ir_version
    out.functions.extend(model.functions)
    return out


def _unknown_operator(region: CpuRegion) -> CpuNode | None:
    """The first node of the region that is not in the ONNX operator sets."""
    for n in region.nodes:
        if not onnx.defs.has(n.node.op_type, n.node.domain):
            return n
    return None


def region_problem(region: CpuRegion, model: onnx.ModelProto) -> str | None:
    """Why the region cannot run on the CPU (None when it can): onnxruntime's refusal to load it, or, where
    onnxruntime is not installed, a node outside the ONNX operator sets."""
    odd = _unknown_operator(region)
    if onnxruntime_module() is None:
        if odd is None:
            return None
        return (f"node '{odd.name}' ({odd.node.op_type}, domain '{odd.node.domain}') cannot run on the fabric "
                f"({odd.why}) and is not an ONNX standard operator")
    try:
        ort_session(model.SerializeToString())
    except Exception as e:  # onnxruntime raises its own exception types for every kind of refusal
        err = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if odd is not None:
            return (f"node '{odd.name}' ({odd.node.op_type}) cannot run on the fabric ({odd.why}) and onnxruntime "
                    f"cannot run it on the CPU: {err}")
        ops = ", ".join(dict.fromkeys(n.node.op_type for n in region.nodes))
        return f"CPU region {region.index} ({ops}): onnxruntime cannot run it on the CPU: {err}"
    return None
