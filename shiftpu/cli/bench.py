"""`shiftpu bench`: throughput, latency, per-stage times and power of a compiled model in the pipeline."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import typer

from shiftpu.cli.main import app
from shiftpu.cli.paths import atomic_file, check_output_file
from shiftpu.errors import ShiftpuError
from shiftpu.sw.device_backends import RuntimeBackend


class BenchOptionError(ShiftpuError):
    """An option of `shiftpu bench` that this backend would ignore."""


@app.command()
def bench(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`)."),
    backend: RuntimeBackend = typer.Option(
        RuntimeBackend.GOLDEN, "--backend", help="golden (golden model behind the driver), pynq-sim (PYNQ code path, "
        "simulated device), rtl (RTL simulation behind the simulated PYNQ device), board."),
    frames: int = typer.Option(100, "--frames", "-n", min=1, help="Frames to push through the pipeline."),
    input: Path = typer.Option(None, "--input", "-i",
                               help="A .npy model input, or a folder of images; default: random frames of the "
                                    "model's input shape."),
    bitstream: Path = typer.Option(None, "--bitstream", help="board, pynq-sim and rtl backends: the .bit (its .hwh "
                                   "next to it) loaded on the board or the simulated PYNQ device."),
    depth: int = typer.Option(2, "--depth", min=1, help="Frames queued between stages."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trace: Path = typer.Option(None, "--trace", help="Write a Chrome trace JSON of the stages (open in Perfetto)."),
    gantt: Path = typer.Option(None, "--gantt", help="Write a Gantt chart PNG of the first frames."),
    timeout_s: float = typer.Option(None, "--timeout",
                                    help="Seconds before a run counts as hung (default: 10, rtl: 3600)."),
) -> None:
    """Run FOLDER on successive frames with preprocess, each CPU region, the fabric segments and postprocess as
    overlapped stages; report fps, latency percentiles, per-stage means, the bottleneck, pipeline efficiency and
    power (measured on this machine; power measured from PMBus rails on boards that have them, else estimated),
    each CPU node's time (measured here), and the board's pipelined fps: the fabric estimated by the performance
    model beside the CPU stages measured here."""
    from shiftpu.compiled.cpu_timing import format_cpu_nodes
    from shiftpu.compiled.folder import read_folder
    from shiftpu.compiled.pipeline_stages import frame_stages
    from shiftpu.compiler.estimate import estimate_folder, fabric_source, stage_model
    from shiftpu.sw.bench_run import BenchOptions, run_bench

    if bitstream is not None and backend is RuntimeBackend.GOLDEN:
        raise BenchOptionError("--bitstream applies to the board, pynq-sim and rtl backends only: the golden "
                               "backend loads no bitstream")
    outputs = {"--trace": trace, "--gantt": gantt}
    for option, path in outputs.items():
        if path is not None:
            check_output_file(path, option)
    with ExitStack() as stack:  # trace and chart appear only when the whole run succeeded
        partial = {option: stack.enter_context(atomic_file(path)) if path is not None else None
                   for option, path in outputs.items()}
        result = run_bench(BenchOptions(folder=folder, backend=backend.value, frames=frames, input=input,
                                        bitstream=bitstream, depth=depth, trace=partial["--trace"],
                                        gantt=partial["--gantt"], timeout_s=timeout_s))
    compiled = read_folder(folder)
    est = estimate_folder(compiled)
    on_the_board = backend is RuntimeBackend.BOARD
    board_model = stage_model(est, frame_stages(compiled.manifest), result["stages_alone"],
                              f"measured alone on this host ({result['cpu']['host']}), median"
                              + ("" if on_the_board else "; not the board's ARM"))
    result["fabric_estimate"] = {"ms": est["latency_ms"], "fps": est["fps"], "kind": fabric_source(est),
                                 "segments_ms": [seg["latency_ms"] for seg in est["segments"]]}
    result["pipeline_model_board"] = board_model.to_json()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['frames']} frames on {result['backend']} ({result['device']}): {result['fps']:.1f} fps "
               f"(measured), pipeline efficiency {result['pipeline_efficiency']:.2f}")
    lat = result["latency_ms"]
    typer.echo(f"latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms (measured)")
    typer.echo("stage means in the pipeline (at work; waits for an arena or the accelerator excluded): "
               + ", ".join(f"{k} {v:.2f} ms" for k, v in result["stages_at_work"].items())
               + "; run one after the other: " + ", ".join(f"{k} {v:.2f} ms" for k, v in result["stages_alone"].items())
               + " (measured)")
    typer.echo(f"bottleneck in the run: {result['bottleneck_measured']} (measured: the most time at work per frame, "
               "the fabric stages together)")
    typer.echo(f"power {result['power_w']:.2f} W ({result['power_source']}: {result['power_detail']})")
    typer.echo("\n".join(format_cpu_nodes(result["cpu"], on_the_board)))
    fab = result["fabric_estimate"]
    typer.echo(f"fabric on {result['board']}: {fab['ms']} ms per frame, {fab['fps']} fps ({fab['kind']})")
    typer.echo(f"on {result['board']}, fabric estimated, the other stages as measured here: " + board_model.format())
