"""``compile_model``: quantized ONNX -> typed IR -> passes -> code generation -> compiled folder.

``compile_from_ir`` does the same from the graph dumped after any pass (``--dump-ir``, ``compiler/irfile.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from shiftpu import __version__
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import ISA_VERSION, Dataflow, Instruction, Opcode
from shiftpu.compiled.cpu_ops import has_kernel
from shiftpu.compiled.folder import FORMAT_NAME, FORMAT_VERSION, MODEL_FILE, region_file, write_folder
from shiftpu.compiler.codegen import SegmentImage, generate, layer_ids
from shiftpu.compiler.estimate import estimate, format_table, simulation_estimate
from shiftpu.compiler.ir import ConcatOp, ConvOp, CpuNode, FabricOp, Graph, QTensor
from shiftpu.compiler.irfile import IrFileError, pass_dump, read_ir
from shiftpu.compiler.onnx_import import shape_of
from shiftpu.compiler.partition import (
    CPU_RUNTIME,
    compile_options,
    load_model,
    partition_entries,
    partition_lines,
    plan_partition,
)
from shiftpu.compiler.passes import BACKEND_PASSES, CompileOptions, passes_after, run_pipeline
from shiftpu.compiler.perf import READ_LATENCY, Schedule
from shiftpu.compiler.regions import region_model


@dataclass
class CompileResult:
    """Everything a compilation produced (also what the compiled folder holds)."""

    graph: Graph
    images: list[SegmentImage]
    manifest: dict[str, Any]
    report: str
    estimate: dict  #: for the board (its DDR bandwidth and latency)
    #: one line per symbolic input dimension the front end bound by itself (a batch dimension bound to 1)
    bound: list[str] = field(default_factory=list)

    @property
    def programs(self) -> list[list[Instruction]]:
        """The instructions of each fabric segment, END included."""
        return [img.instructions + [Instruction(Opcode.END)] for img in self.images]

    def simulation_estimate(self, read_latency: int = READ_LATENCY) -> dict:
        """The estimate on the RTL simulation's memory model: what ``--backend rtl`` measures (``read_latency``:
        that of the compiled RAM with its extra latency, see ``shiftpu.sim.rtl.sim_ram``)."""
        cfg = AccelConfig.from_dict(self.manifest["config"])
        return simulation_estimate(self.programs, cfg, self.manifest["board"], read_latency)


def _dtype_name(t: QTensor) -> str:
    return "int8" if t.fmt.signed else "uint8"


def _io(graph: Graph, names: list[str]) -> list[dict]:
    out = []
    model = graph.model
    for name in names:
        vi = next(v for v in list(model.graph.input) + list(model.graph.output) if v.name == name)
        elem = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        entry = {"name": name, "dtype": np.dtype(elem).name, "shape": list(shape_of(model, name) or [])}
        q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name]
        dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == name]
        src = q[0].output[0] if q else (dq[0].input[0] if dq else None)
        if src in graph.tensors:
            t = graph.tensors[src]
            entry["quantization"] = {"tensor": src, "dtype": _dtype_name(t), "scale_exp": t.exp}
        out.append(entry)
    return out


def build_manifest(graph: Graph, images: list[SegmentImage], board: str, opts: CompileOptions, source: str,
                   est: dict) -> dict[str, Any]:
    """The manifest.json content (docs/compiled-format.md)."""
    cfg = opts.config
    node_index = {id(n): k for k, n in enumerate(graph.model.graph.node)}
    fabric_out = {op.output for op in graph.fabric_ops()}
    cpu_in = {name for n in graph.cpu_nodes() for name in n.inputs} | set(graph.outputs)
    ids = layer_ids(graph)
    segments, schedule = [], []
    for img in images:
        seg = img.segment
        reads = [n for op in seg.ops for n in op.inputs if n not in fabric_out]
        writes = [op.output for op in seg.ops if op.output in cpu_in]
        segments.append({
            "index": seg.index, "const": f"segment{seg.index}.bin", "const_bytes": int(img.image.size),
            "instructions": len(img.instructions) + 1,
            "layers": [ids[id(op)] for op in seg.ops if not isinstance(op, ConcatOp)],
            "inputs": list(dict.fromkeys(reads)), "outputs": list(dict.fromkeys(writes)),
        })
    seg_of = {id(op): s.index for s in graph.segments for op in s.ops}
    for st in graph.steps:
        if isinstance(st, CpuNode):
            schedule.append({"cpu": node_index[id(st.node)]})
        elif not schedule or schedule[-1].get("segment") != seg_of[id(st)]:
            schedule.append({"segment": seg_of[id(st)]})
    layers = []
    for op in graph.fabric_ops():
        entry: dict[str, Any] = {"layer_id": ids[id(op)], "name": op.name, "kind": op.kind, "segment": seg_of[id(op)],
                                 "inputs": op.inputs, "output": op.output, "onnx_nodes": op.sources}
        if isinstance(op, ConvOp):
            assert op.tiling is not None and op.dataflow is not None
            entry |= {"dataflow": op.dataflow.name, "strip_w": op.tiling.strip_w, "ic_tile": op.tiling.ic_tile,
                      "oc_tile": op.tiling.oc_tile,
                      "dataflow_options": {df.name: round(u, 4) for df, u in op.options.items()}}
        layers.append(entry)
    tensors = {}
    for name, t in graph.tensors.items():
        e: dict[str, Any] = {"shape": list(t.onnx_shape), "chw": list(t.chw), "dtype": _dtype_name(t),
                             "bits": t.fmt.bits, "scale_exp": t.exp}
        if name in graph.placements:
            p = graph.placements[name]
            e |= {"offset": p.offset, "nbytes": p.nbytes}
        if name in graph.aliases:
            e["inside"] = list(graph.aliases[name])
        tensors[name] = e
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "shiftpu_version": __version__,
        "isa_version": ISA_VERSION, "board": board, "config": cfg.to_dict(),
        "config_hash": f"0x{cfg.config_hash():08x}", "source": source, "model": MODEL_FILE,
        "arena_bytes": graph.arena_bytes,
        "inputs": _io(graph, graph.inputs), "outputs": _io(graph, graph.outputs),
        "tensors": tensors, "segments": segments,
        "cpu_nodes": [{"index": node_index[id(n.node)], "name": n.name, "op_type": n.node.op_type,
                       "reason": n.reason.name, "why": n.reason.value, "detail": n.detail, "region": n.region,
                       "runtime": CPU_RUNTIME, "numpy_kernel": has_kernel(n.node)}
                      for n in graph.cpu_nodes()],
        "cpu_regions": [{"index": r.index, "file": region_file(r.index),
                         "nodes": [node_index[id(n.node)] for n in r.nodes], "inputs": r.inputs, "outputs": r.outputs}
                        for r in graph.cpu_regions],
        "schedule": schedule, "partition": [e.to_dict() for e in partition_entries(graph)],
        "layers": layers, "warnings": list(graph.warnings),
        "estimate": {k: est[k] for k in ("kind", "schedule", "cycles", "fps", "utilization")},
    }


def _dataflow_note(op: FabricOp) -> str:
    """What the report adds to a CONV: the dataflow chosen, the utilisation of every option, the tiling."""
    if not isinstance(op, ConvOp) or op.tiling is None or op.dataflow is None:
        return ""
    opts = ", ".join(f"{df.name} {100 * u:.1f}%" for df, u in op.options.items())
    t = op.tiling
    return (f"  dataflow {op.dataflow.name} (estimated utilisation: {opts}); "
            f"strip_w {t.strip_w} ic_tile {t.ic_tile} oc_tile {t.oc_tile}")


def partition_report(graph: Graph, board: str, est: dict) -> str:
    """Fabric segments, CPU nodes with their regions and reasons, dataflow choices and the estimate."""
    lines = [f"shiftpu partition report ({board})", ""] + partition_lines(graph, _dataflow_note)
    if graph.warnings:
        lines += ["", "warnings:"] + [f"  {w}" for w in graph.warnings]
    lines += ["", format_table(est), ""]
    return "\n".join(lines)


def compile_model(model: str | Path | onnx.ModelProto, board: str, out_dir: str | Path | None = None,
                  dump_passes: str | Path | None = None,
                  dataflows: frozenset[Dataflow] = frozenset(Dataflow),
                  schedule: Schedule = Schedule.RTL,
                  input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                  dump_ir: str | Path | None = None) -> CompileResult:
    """Compile a quantized ONNX model for a board; with ``out_dir``, write the compiled folder.

    ``dataflows`` restricts the PE-array mappings to those the target accelerator implements; ``schedule``
    is how it overlaps loads and computation (the cost model that chooses tilings and dataflows);
    ``input_shapes`` fixes symbolic input dimensions (by input name, "" for the only input). ``dump_passes`` and
    ``dump_ir`` are folders for the graph after import and after each pass, as text and as IR files
    (``compiler/irfile.py``, which :func:`compile_from_ir` restarts from).
    """
    opts = compile_options(board, dataflows, schedule)
    proto, bound, source = load_model(model, input_shapes)
    observe = pass_dump(board, Path(source).name, opts, dump_passes, dump_ir)
    graph = run_pipeline(plan_partition(proto, opts, observe), opts, observe, BACKEND_PASSES)
    return _generate(graph, opts, board, Path(source).name, out_dir, bound)


def compile_from_ir(path: str | Path, board: str, out_dir: str | Path | None = None,
                    dump_passes: str | Path | None = None,
                    dataflows: frozenset[Dataflow] = frozenset(Dataflow),
                    schedule: Schedule = Schedule.RTL,
                    dump_ir: str | Path | None = None) -> CompileResult:
    """Continue a compilation from an IR file (written by ``dump_ir``) with the passes after the one it was
    dumped after: the same result, and the same compiled folder, as the compilation that wrote it. The board and
    options must be those of that compilation (``IrFileError`` otherwise)."""
    opts = compile_options(board, dataflows, schedule)
    ir = read_ir(path)
    if ir.board != board or ir.options != opts:
        differ = [k for k, v in opts.to_dict().items() if ir.options.to_dict()[k] != v]
        given = f"board {board}" + (f", other {', '.join(differ)}" if differ else "")
        raise IrFileError(f"{path}: dumped compiling for board {ir.board} (dataflows "
                          f"{', '.join(sorted(df.name.lower() for df in ir.options.dataflows))}, schedule "
                          f"{ir.options.schedule.value}), not for {given}: restart it with that compilation's "
                          "--board, --dataflows and --schedule")
    observe = pass_dump(board, ir.source, opts, dump_passes, dump_ir)
    graph = run_pipeline(ir.graph, opts, observe, passes_after(ir.after))
    return _generate(graph, opts, board, ir.source, out_dir, [])


def _generate(graph: Graph, opts: CompileOptions, board: str, source: str, out_dir: str | Path | None,
              bound: list[str]) -> CompileResult:
    """Code generation, estimate, report and manifest of a graph after the whole pipeline; with ``out_dir``, the
    compiled folder written."""
    images = generate(graph, opts.config)
    names = {k: op.name for k, op in enumerate(graph.fabric_ops())}
    est = estimate([img.instructions + [Instruction(Opcode.END)] for img in images], opts.config,
                   opts.ddr_bytes_per_cycle, names, board, opts.schedule, opts.read_latency)
    report = partition_report(graph, board, est)
    manifest = build_manifest(graph, images, board, opts, source, est)
    if out_dir is not None:
        regions = {region_file(r.index): region_model(graph.model, r).SerializeToString() for r in graph.cpu_regions}
        write_folder(Path(out_dir), manifest, {f"segment{i.segment.index}.bin": i.image for i in images}, graph.model,
                     report, regions)
    return CompileResult(graph, images, manifest, report, est, bound)
