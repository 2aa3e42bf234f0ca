"""What a report shows, gathered from a compiled folder and the performance model (no figures, no HTML)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from shiftpu.arch.config import AccelConfig
from shiftpu.boards import Board, load_board
from shiftpu.boards.estimate import ResourceEstimate
from shiftpu.compiler.artifact import ArtifactError, CompiledFolder, read_folder
from shiftpu.compiler.estimate import estimate
from shiftpu.compiler.perf import Schedule
from shiftpu.errors import ShiftpuError
from shiftpu.report.demo_inputs import DemoResults
from shiftpu.report.inputs import PipelineTrace, ReportError
from shiftpu.sw.power import PowerReport, estimate_power_at_fps


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table: a fabric operation or a CPU node, in execution order."""

    name: str
    operation: str  #: fabric operation kind (CONV, POOL, ...) or ONNX op type of a CPU node
    on_fabric: bool
    segment: int | None  #: fabric segment, None on the CPU
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...] | None
    dataflow: str | None  #: CONV only
    tiles: str | None  #: CONV only: strip width / input channel tile / output channel tile
    macs: int | None  #: estimated; None on the CPU (not modelled)
    cycles: int | None  #: estimated; 0 for an operation without an instruction, None on the CPU
    utilization: float | None  #: estimated, 0..1
    ddr_bytes: int | None  #: estimated
    note: str  #: why a node is on the CPU, why a fabric operation costs nothing, or empty


@dataclass(frozen=True)
class Roofline:
    """The board's roofline: compute peak and DDR bandwidth of the compiled accelerator."""

    clock_hz: float  #: accelerator clock of the estimate (``shiftpu.boards.clock.fps_clock``)
    macs_per_cycle: int  #: pe_oc x pe_px x pe_ic
    ddr_bytes_per_s: float  #: the board's usable DDR bandwidth

    @property
    def peak_macs_per_s(self) -> float:
        """Compute roof: every PE does one shift-add per cycle."""
        return self.macs_per_cycle * self.clock_hz

    @property
    def ridge_intensity(self) -> float:
        """MACs per DDR byte where the bandwidth roof meets the compute roof."""
        return self.peak_macs_per_s / self.ddr_bytes_per_s


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; every figure here is estimated unless it comes from ``bench``/``trace``."""

    folder: Path
    source: str  #: the ONNX file the folder was compiled from
    board: Board
    config: AccelConfig
    config_hash: int
    estimate: dict[str, Any]  #: `shiftpu.compiler.estimate.estimate` of the folder's programs
    rows: tuple[LayerRow, ...]
    roofline: Roofline
    resources: ResourceEstimate | None
    trace: PipelineTrace | None
    bench: dict[str, Any] | None
    demo: DemoResults | None
    #: the power model at the performance model's fps (the figure of the demo's board table)
    power: PowerReport


def _onnx_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of the tensors of the folder's model copy (its shapes were inferred at compile time)."""
    shapes = {}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _fabric_row(layer: dict[str, Any], est: dict[int, dict[str, Any]], tensors: dict[str, Any]) -> LayerRow:
    e = est.get(layer["layer_id"])
    conv = layer["kind"] == "CONV"
    return LayerRow(
        name=layer["name"], operation=layer["kind"], on_fabric=True, segment=layer["segment"],
        input_shapes=tuple(tuple(tensors[t]["shape"]) for t in layer["inputs"]),
        output_shape=tuple(tensors[layer["output"]]["shape"]),
        dataflow=layer.get("dataflow") if conv else None,
        tiles=f"{layer['strip_w']} / {layer['ic_tile']} / {layer['oc_tile']}" if conv else None,
        macs=e["macs"] if e else 0, cycles=e["cycles"] if e else 0, utilization=e["utilization"] if e else 0.0,
        ddr_bytes=e["ddr_bytes"] if e else 0,
        note="" if e else "no instruction: stored in place inside its result (no cycles, no DDR traffic)")


def _cpu_row(node: dict[str, Any], model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> LayerRow:
    onnx_node = model.graph.node[node["index"]]
    why = node["why"] + (f" ({node['detail']})" if node.get("detail") else "")
    return LayerRow(
        name=node["name"], operation=node["op_type"], on_fabric=False, segment=None,
        input_shapes=tuple(shapes[t] for t in onnx_node.input if t in shapes),
        output_shape=shapes.get(onnx_node.output[0]) if onnx_node.output else None,
        dataflow=None, tiles=None, macs=None, cycles=None, utilization=None, ddr_bytes=None,
        note=f"{node['reason']}: {why}")


def layer_rows(compiled: CompiledFolder, est: dict[str, Any]) -> tuple[LayerRow, ...]:
    """Rows in execution order: the CPU nodes and, for each segment, its fabric operations (by layer id, the
    order of its instructions)."""
    m = compiled.manifest
    by_id = {la["layer_id"]: la for la in est["layers"]}
    cpu = {n["index"]: n for n in m["cpu_nodes"]}
    model = compiled.model()
    shapes = _onnx_shapes(model)
    rows: list[LayerRow] = []
    for step in m["schedule"]:
        if "cpu" in step:
            rows.append(_cpu_row(cpu[step["cpu"]], model, shapes))
        else:
            rows += [_fabric_row(la, by_id, m["tensors"]) for la in m["layers"] if la["segment"] == step["segment"]]
    return tuple(rows)


def gather(folder: str | Path, resources: ResourceEstimate | None = None, trace: PipelineTrace | None = None,
           bench: dict[str, Any] | None = None, demo: DemoResults | None = None) -> ReportData:
    """Read a compiled folder, apply the performance model at the clock its board's timing estimate supports
    (:func:`shiftpu.boards.clock.fps_clock`) and the board's DDR bandwidth, and check that the optional inputs
    belong to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder (expected the output of `shiftpu compile`)")
    try:
        compiled = read_folder(folder)
        board = load_board(compiled.board)
    except ArtifactError as e:
        raise ReportError(str(e)) from None
    cfg = compiled.config
    if resources is not None and resources.board != compiled.board:
        raise ReportError(f"the resource estimate is for board {resources.board}, {folder} was compiled for "
                          f"{compiled.board}")
    if resources is not None and resources.config_hash != cfg.config_hash():
        raise ReportError(f"the resource estimate is for accelerator config 0x{resources.config_hash:08x} on "
                          f"{resources.board}, {folder} was compiled for 0x{cfg.config_hash():08x}")
    if bench is not None and bench["board"] != compiled.board:
        raise ReportError(f"the bench result was measured for board {bench['board']}, {folder} was compiled for "
                          f"{compiled.board}")
    if demo is not None and demo.board != compiled.board:
        raise ReportError(f"the demo in {demo.folder} ran for board {demo.board}, {folder} was compiled for "
                          f"{compiled.board}")
    if demo is not None and demo.config_hash is not None and demo.config_hash != cfg.config_hash():
        raise ReportError(f"the demo in {demo.folder} ran accelerator config 0x{demo.config_hash:08x}, {folder} was "
                          f"compiled for 0x{cfg.config_hash():08x}")
    names = {la["layer_id"]: la["name"] for la in compiled.manifest["layers"]}
    try:
        schedule = Schedule(compiled.manifest["estimate"].get("schedule", Schedule.RTL.value))
        est = estimate(compiled.programs(), cfg, board.ddr_bytes_per_cycle, names, compiled.board, schedule,
                       board.ddr_read_latency_cycles)
        rows = layer_rows(compiled, est)
    except ShiftpuError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ReportError(f"{folder}: damaged manifest (bad or missing entry {e}): recompile the model") from None
    roof = Roofline(clock_hz=est["clock_mhz"] * 1e6, macs_per_cycle=cfg.macs_per_cycle,
                    ddr_bytes_per_s=board.ddr_bandwidth_gbps * 1e9)
    return ReportData(folder=folder, source=compiled.manifest["source"], board=board, config=cfg,
                      config_hash=cfg.config_hash(), estimate=est, rows=rows, roofline=roof, resources=resources,
                      trace=trace, bench=bench, demo=demo, power=estimate_power_at_fps(board, est["macs"], est["fps"]))
