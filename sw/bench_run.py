"""The benchmark behind `shiftpu bench`: a compiled model in the pipeline on a chosen backend."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftpu.boards import load_board
from shiftpu.compiled.cpu_timing import DEFAULT_RUNS, measure_cpu_times
from shiftpu.compiled.pipeline_stages import PipelineModel, StageTime
from shiftpu.errors import ShiftpuError
from shiftpu.sw.detection import DecodeParams
from shiftpu.sw.device_backends import open_backend
from shiftpu.sw.executor import Executor
from shiftpu.sw.images import find_sidecar
from shiftpu.sw.pipeline import Pipeline, run_all
from shiftpu.sw.pipeline_model import ArenaPool, ModelStages, arenas_wanted
from shiftpu.sw.power import RailSampler
from shiftpu.sw.trace import Trace


class BenchError(ShiftpuError):
    """The benchmark cannot run with these options."""


@dataclass(frozen=True)
class BenchOptions:
    folder: Path
    backend: str = "golden"
    frames: int = 100
    input: Path | None = None
    bitstream: Path | None = None
    depth: int = 2
    trace: Path | None = None
    gantt: Path | None = None
    timeout_s: float | None = None  #: None: the backend's default
    seed: int = 0


def _decode_params(folder: Path, manifest: dict) -> DecodeParams | None:
    """The detector decode of the model (its sidecar), so postprocessing includes decode and NMS."""
    side = find_sidecar(folder, manifest.get("source", ""))
    if side is None:
        return None
    try:
        return DecodeParams.from_json(side)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise BenchError(f"{side}: not a detector description: {e}") from None


def _frames(opts: BenchOptions, spec: dict) -> list[np.ndarray]:
    """The distinct inputs cycled through: from --input, else random frames of the model's input shape."""
    if opts.input is None:
        rng = np.random.default_rng(opts.seed)
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        return [rng.uniform(-1, 1, size=shape).astype(dtype) for _ in range(min(opts.frames, 8))]
    if opts.input.is_dir():
        from shiftpu.sw.images import load_folder

        return [img for _, img in load_folder(opts.input)]
    try:
        return [np.load(opts.input, allow_pickle=False)]
    except (OSError, ValueError) as e:
        raise BenchError(f"{opts.input}: cannot read a .npy input: {e}") from None


def _stages_alone(stages: ModelStages, inputs: list[np.ndarray], frames: int) -> dict[str, float]:
    """Median ms per frame of each stage run alone: frame after frame, nothing overlapped (measured, after
    two warm-up frames that upload the programs; the median resists load spikes of a shared machine)."""
    times: dict[str, list[float]] = {s.name: [] for s in stages.stages()}
    for i in range(frames + 2):
        item: Any = inputs[i % len(inputs)]
        for stage in stages.stages():
            t0 = time.perf_counter()
            item = stage.fn(item)
            if i >= 2:
                times[stage.name].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def _frame_values(stages: ModelStages, item: Any) -> dict[str, np.ndarray]:
    """Every tensor of one frame run through the stages one after the other (real values for the CPU timing)."""
    for stage in stages.stages()[:-1]:
        item = stage.fn(item)
    return item.frame.values


def _stage_model(stages: ModelStages, ms: dict[str, float], source: str) -> PipelineModel:
    """The pipeline model over stage times measured on this backend (the fabric stages' included)."""
    return PipelineModel(tuple(StageTime(p.name, p.kind, ms[p.name], source) for p in stages.plan))


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Run the pipeline and return the JSON-ready result (figures measured unless labelled otherwise)."""
    probe = Executor(opts.folder, backend="golden")
    compiled = probe.compiled
    board = load_board(compiled.board)
    with tempfile.TemporaryDirectory(prefix="shiftpu-bench-") as work:
        accel = open_backend(opts.backend, compiled.config, board.name, opts.bitstream, opts.timeout_s, Path(work))
        executor = Executor(compiled, backend=accel)
        arena_bytes = compiled.manifest["arena_bytes"]
        n_arenas = arenas_wanted(compiled.manifest)
        pool = ArenaPool([accel.arena(arena_bytes) for _ in range(n_arenas)])
        stages = ModelStages(executor, pool, decode_params=_decode_params(Path(opts.folder), compiled.manifest))
        inputs = _frames(opts, executor.inputs[0])
        alone = _stages_alone(stages, inputs, max(1, min(opts.frames // 4, 30)))
        # the CPU regions and each of their nodes, timed on a real frame's values
        cpu = measure_cpu_times(compiled, runs=max(3, min(opts.frames, DEFAULT_RUNS)),
                                values=_frame_values(stages, inputs[0]))
        trace = Trace() if (opts.trace or opts.gantt) else None
        pipeline = Pipeline(stages.stages(), depth=opts.depth, trace=trace, on_stop=pool.close)
        waited_before = dict(stages.wait_s)
        with RailSampler(board) as rails:
            stats = run_all(pipeline, (inputs[i % len(inputs)] for i in range(opts.frames)))
        waited = {k: v - waited_before[k] for k, v in stages.wait_s.items()}
        device = accel.driver.device.name
        accel.driver.free_buffers()
    est = compiled.manifest.get("estimate", {})
    ops_per_frame = float(est["macs"]) if "macs" in est else (
        float(est.get("utilization", 0.0)) * board.accel.macs_per_cycle * float(est.get("cycles", 0)))
    power = rails.report(ops_per_frame * stats.fps / 1e9)
    backend_model = _stage_model(stages, alone, f"measured alone on this host ({cpu.host}), median")
    slowest_alone_fps = backend_model.fps
    frames = max(stats.frames, 1)
    at_work = {k: 1e3 * (v - waited.get(k, 0.0)) / frames for k, v in stats.busy_s.items()}
    in_run = _stage_model(stages, at_work, "measured in the pipeline run, mean time at work (waits for an arena "
                          "and for the accelerator excluded)")
    if trace is not None and opts.trace:
        trace.write_chrome(opts.trace)
    if trace is not None and opts.gantt:
        trace.write_gantt(opts.gantt)
    return {
        "model": str(opts.folder), "backend": opts.backend, "device": device, "board": board.name,
        "frames": stats.frames, "fps": round(stats.fps, 3), "measured": True,
        "latency_ms": {f"p{q}": round(stats.latency_ms(q), 3) for q in (50, 90, 99)},
        "stages": {k: round(v, 3) for k, v in stats.stage_mean_ms().items()},
        "stages_at_work": {k: round(v, 3) for k, v in at_work.items()},
        "slowest_stage_fps": round(in_run.fps, 3),
        "pipeline_efficiency": round(stats.fps / in_run.fps, 3) if in_run.fps else 0.0,
        "bottleneck_measured": in_run.bottleneck,
        "stages_alone": {k: round(v, 4) for k, v in alone.items()},
        "pipeline_efficiency_vs_sequential": round(stats.fps / slowest_alone_fps, 3),
        "pipeline_model_this_backend": backend_model.to_json(),
        "cpu": cpu.to_json(),
        "power_w": power.watts, "power_source": power.source.value, "power_detail": power.detail,
        "depth": opts.depth, "arenas": n_arenas, "postprocess": "decode + class-wise NMS" if
        stages.decode_params is not None else "model outputs only (no detector description found)",
    }
