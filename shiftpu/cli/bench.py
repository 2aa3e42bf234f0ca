"""`shiftpu bench`: throughput, latency, per-stage times and power of a compiled model in the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shiftpu.cli.main import app


@app.command()
def bench(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`)."),
    backend: str = typer.Option("golden", "--backend",
                                help="golden (golden model behind the driver), pynq-sim (PYNQ code path, simulated "
                                     "device), rtl (RTL simulation behind the simulated PYNQ device), board."),
    frames: int = typer.Option(100, "--frames", "-n", min=1, help="Frames to push through the pipeline."),
    input: Path = typer.Option(None, "--input", "-i",
                               help="A .npy model input, or a folder of images; default: random frames of the "
                                    "model's input shape."),
    bitstream: Path = typer.Option(None, "--bitstream", help="Board backend: the .bit (its .hwh next to it)."),
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

    result = run_bench(BenchOptions(folder=folder, backend=backend, frames=frames, input=input, bitstream=bitstream,
                                    depth=depth, trace=trace, gantt=gantt, timeout_s=timeout_s))
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
