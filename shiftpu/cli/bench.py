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
    """Run FOLDER on successive frames with preprocess, fabric and postprocess overlapped; report fps,
    latency percentiles, per-stage means, pipeline efficiency and power (all measured on this machine,
    power measured from PMBus rails on boards that have them, else estimated)."""
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
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['frames']} frames on {result['backend']} ({result['device']}): {result['fps']:.1f} fps "
               f"(measured), pipeline efficiency {result['pipeline_efficiency']:.2f}")
    lat = result["latency_ms"]
    typer.echo(f"latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms (measured)")
    typer.echo("stage means in the pipeline: " + ", ".join(f"{k} {v:.2f} ms" for k, v in result["stages"].items())
               + "; run one after the other: " + ", ".join(f"{k} {v:.2f} ms" for k, v in result["stages_alone"].items())
               + " (measured)")
    typer.echo(f"power {result['power_w']:.2f} W ({result['power_source']}: {result['power_detail']})")
