"""Whole-model performance estimate from the compiled programs (the performance model applied per instruction)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Instruction, Opcode
from shiftpu.boards import load_board
from shiftpu.boards.clock import ClockSource, FpsClock, fps_clock
from shiftpu.compiled.cpu_timing import CpuTimes, format_cpu_nodes
from shiftpu.compiled.folder import CompiledFolder
from shiftpu.compiled.pipeline_stages import PipelineModel, PlannedStage, StageKind, StageTime
from shiftpu.compiler.perf import READ_LATENCY, Schedule, instruction_cost, program_overhead


@dataclass(frozen=True)
class LayerEstimate:
    """Estimated figures of one instruction (a layer on the fabric)."""

    layer_id: int
    name: str
    segment: int
    op: str
    dataflow: str | None
    macs: int
    cycles: int
    compute_cycles: int
    stall_cycles: int
    utilization: float  #: MACs / (cycles x PEs), 0..1 (0 for non-CONV)
    ddr_read_bytes: int
    ddr_write_bytes: int

    @property
    def ddr_bytes(self) -> int:
        return self.ddr_read_bytes + self.ddr_write_bytes


def estimate(programs: list[list[Instruction]], cfg: AccelConfig, ddr_bytes_per_cycle: float,
             names: dict[int, str], board: str, schedule: Schedule = Schedule.RTL,
             read_latency: int = READ_LATENCY, clock: FpsClock | None = None,
             memory_at_fabric_clock: bool = False) -> dict:
    """The estimate as a JSON-ready dict: fps, cycles, utilization (MAC-weighted), layers, all estimated.

    ``ddr_bytes_per_cycle`` and ``read_latency`` (cycles from a DDR read command to its first beat) are per cycle
    of ``cfg.clock_mhz``: the board file's figures for a board; the default latency is the RTL simulation's memory
    model. ``clock`` is the clock of the figures (default: :func:`~shiftpu.boards.clock.fps_clock` of the board and
    config, which a stored timing estimate may set below the board clock). At a slower clock the board's DDR, whose
    bandwidth and latency do not slow down, gives more bytes per cycle and answers in fewer cycles (the latency is
    rounded up); ``memory_at_fabric_clock`` is for a memory clocked with the fabric (the RTL simulation's), whose
    figures per cycle stay."""
    clock = fps_clock(board, cfg) if clock is None else clock
    if clock.clock_mhz != cfg.clock_mhz and not memory_at_fabric_clock:
        ratio = clock.clock_mhz / cfg.clock_mhz
        ddr_bytes_per_cycle /= ratio
        read_latency = math.ceil(read_latency * ratio - 1e-9)
    layers: list[LayerEstimate] = []
    segment_cycles: list[int] = []
    for seg, prog in enumerate(programs):
        segment_cycles.append(program_overhead(cfg, ddr_bytes_per_cycle, schedule, read_latency))
        for i in prog:
            c = instruction_cost(i, cfg, ddr_bytes_per_cycle, schedule, read_latency)
            segment_cycles[-1] += c.cycles
            if i.opcode is Opcode.END:
                continue
            layers.append(LayerEstimate(
                i.layer_id, names.get(i.layer_id, f"layer{i.layer_id}"), seg, i.opcode.name,
                i.dataflow.name if i.opcode is Opcode.CONV else None, c.macs, c.cycles, c.compute_cycles,
                c.stall_cycles, round(c.utilization(cfg), 4), c.read_bytes, c.write_bytes))
    total = sum(segment_cycles)
    macs = sum(la.macs for la in layers)
    util = sum(la.macs * la.utilization for la in layers) / macs if macs else 0.0
    secs = total / (clock.clock_mhz * 1e6)
    return {
        "kind": "estimated (performance model; fabric only, CPU nodes not included)",
        "board": board,
        "schedule": schedule.value,
        **clock.to_json(),
        "ddr_read_latency_cycles": read_latency,
        "cycles": total,
        "latency_ms": round(secs * 1e3, 4),
        "fps": round(1.0 / secs, 3) if secs else 0.0,
        "macs": macs,
        "peak_macs_per_cycle": cfg.macs_per_cycle,
        "utilization": round(util, 4),
        "overall_pe_utilization": round(macs / (total * cfg.macs_per_cycle), 4) if total else 0.0,
        "ddr_bytes": sum(la.ddr_bytes for la in layers),
        #: per fabric segment (one accelerator start each): what the pipeline's fabric stages add up
        "segments": [{"segment": k, "cycles": c, "latency_ms": round(c / (clock.clock_mhz * 1e3), 4)}
                     for k, c in enumerate(segment_cycles)],
        "layers": [asdict(la) | {"ddr_bytes": la.ddr_bytes} for la in layers],
    }


def simulation_estimate(programs: list[list[Instruction]], cfg: AccelConfig, board: str,
                        read_latency: int = READ_LATENCY) -> dict:
    """The estimate for the RTL simulation's memory model (one read and one write beat per cycle; by default the
    read latency of cocotbext-axi's AxiRam): what ``--backend rtl`` measures with the accelerator's CYCLES
    register. With ``read_latency`` the estimate for the compiled RAM delaying its reads (``--ddr-latency``)."""
    return estimate(programs, cfg, 2.0 * cfg.axi_bytes, {}, board, Schedule.RTL, read_latency,
                    memory_at_fabric_clock=True)


def format_table(est: dict) -> str:
    """The estimate as a readable table."""
    lines = [
        f"performance estimate ({est['kind']}) on {est['board']}, {est['schedule']} schedule, "
        f"at {est['clock_mhz']:g} MHz ({est['clock_label']})",
        f"{'id':>4} {'layer':<28} {'op':<5} {'dataflow':<13} {'MMAC':>8} {'kcycles':>9} {'stall%':>7} "
        f"{'util%':>6} {'DDR KiB':>9}",
    ]
    for la in est["layers"]:
        stall = 100.0 * la["stall_cycles"] / la["cycles"] if la["cycles"] else 0.0
        lines.append(
            f"{la['layer_id']:>4} {la['name'][:28]:<28} {la['op']:<5} {la['dataflow'] or '-':<13} "
            f"{la['macs'] / 1e6:>8.2f} {la['cycles'] / 1e3:>9.1f} {stall:>7.1f} {100 * la['utilization']:>6.1f} "
            f"{la['ddr_bytes'] / 1024:>9.1f}")
    lines.append(
        f"total: {est['cycles']} cycles (estimated), {est['latency_ms']} ms, {est['fps']} fps (estimated, at "
        f"{est['clock_mhz']:g} MHz, {ClockSource(est['clock_source']).words}), "
        f"MAC-weighted PE utilisation {100 * est['utilization']:.1f}% (estimated), "
        f"DDR traffic {est['ddr_bytes'] / 2**20:.2f} MiB (estimated)")
    return "\n".join(lines)


def estimate_folder(compiled: CompiledFolder, schedule: Schedule | None = None) -> dict:
    """The estimate of a compiled folder on its board (its DDR bandwidth and latency), for ``schedule`` (default:
    the one it was compiled for)."""
    board = load_board(compiled.board)
    names = {la["layer_id"]: la["name"] for la in compiled.manifest["layers"]}
    sched = schedule or Schedule(compiled.manifest["estimate"].get("schedule", "rtl"))
    return estimate(compiled.programs(), compiled.config, board.ddr_bytes_per_cycle, names, compiled.board, sched,
                    board.ddr_read_latency_cycles)


def fabric_source(est: dict) -> str:
    """How the fabric stages' times of an estimate were found, for the label beside each figure."""
    return f"estimated (performance model, {est['schedule']} schedule, at {est['clock_mhz']:g} MHz, {est['clock_label']})"


def stage_model(est: dict, plan: list[PlannedStage], stage_ms: Mapping[str, float], source: str) -> PipelineModel:
    """The pipeline model of the stages ``plan`` names: each fabric stage the estimate's time of its segments, every
    other stage its time in ``stage_ms`` (by stage name) from ``source`` (e.g. measured on this host)."""
    seg_ms = [seg["cycles"] / (est["clock_mhz"] * 1e3) for seg in est["segments"]]
    fabric = fabric_source(est)
    return PipelineModel(tuple(
        StageTime(p.name, p.kind, sum(seg_ms[k] for k in p.indices), fabric) if p.kind is StageKind.FABRIC
        else StageTime(p.name, p.kind, stage_ms[p.name], source) for p in plan))


def with_cpu_times(est: dict, cpu: CpuTimes, plan: list[PlannedStage]) -> dict:
    """The estimate with the CPU side's time beside it: ``cpu`` (per region and node, measured on this host) and
    ``frame``, one frame end to end through the schedule's stages ``plan`` (:func:`schedule_stages` of the
    manifest; pre- and postprocessing not included). Sequentially a frame takes the fabric time plus every CPU
    region's; pipelined, each CPU region is a stage of its own beside the fabric stages (which share the
    accelerator), so frames leave at the pace of the slowest of the fabric total and each region, the bottleneck.
    The fabric time is estimated at the estimate's clock; the CPU time is this host's, not a board's ARM core."""
    cpu_kind = f"{cpu.label}; not the board's ARM"
    model = stage_model(est, plan, {f"cpu{r.index}": r.median_ms for r in cpu.regions}, cpu_kind)
    return est | {"cpu": cpu.to_json(), "frame": {
        "fabric_ms": round(model.fabric_ms, 4),
        "fabric_kind": fabric_source(est),
        "cpu_ms": round(model.cpu_ms, 4),
        "cpu_kind": cpu_kind,
        "sequential_ms": round(model.latency_ms, 4),
        "pipelined_ms": round(model.interval_ms, 4),
        "sequential_fps": round(model.sequential_fps, 3),
        "pipelined_fps": round(model.fps, 3),
        "bound_by": "fabric" if model.bottleneck_is_fabric else "cpu",
        "bottleneck": model.bottleneck,
        "pipeline": model.to_json(),
    }}


def format_cpu_table(est: dict) -> str:
    """The CPU regions and nodes of an estimate from :func:`with_cpu_times`, and the frame summary."""
    frame = est["frame"]
    lines = format_cpu_nodes(est["cpu"])
    lines += [
        f"frame: fabric {frame['fabric_ms']} ms ({frame['fabric_kind']}), CPU {frame['cpu_ms']} ms "
        f"({frame['cpu_kind']})",
        "pipeline stages (ms per frame; pre- and postprocessing not included):",
    ]
    lines += [f"  {s['name']:<12} {s['ms']:>10.4f} ms  ({s['source']})" for s in frame["pipeline"]["stages"]]
    lines += [
        f"sequential (fabric + every CPU region): {frame['sequential_ms']} ms per frame, {frame['sequential_fps']} fps "
        f"(estimated); pipelined (each CPU region a stage beside the fabric stages): a frame every "
        f"{frame['pipelined_ms']} ms, {frame['pipelined_fps']} fps (estimated), bottleneck: {frame['bottleneck']} "
        f"({'the fabric' if frame['bound_by'] == 'fabric' else 'a CPU stage'}; the other stages are hidden behind it)",
        "assumptions: " + "; ".join(frame["pipeline"]["assumptions"]),
    ]
    return "\n".join(lines)
