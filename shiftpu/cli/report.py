"""`shiftpu report`: one self-contained HTML report of a compiled model."""

from __future__ import annotations

from pathlib import Path

import typer

from shiftpu.cli.main import app
from shiftpu.cli.paths import atomic_file, check_output_file
from shiftpu.errors import ShiftpuError


class ReportExtraMissing(ShiftpuError):
    """The report's figures need matplotlib (the "report" extra), which is not installed."""


@app.command()
def report(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`)."),
    output: Path = typer.Option(None, "--output", "-o", help="HTML file to write (default: FOLDER/report.html)."),
    resources: Path = typer.Option(None, "--resources",
                                   help="Resource estimate JSON from `shiftpu build-hw --board B --estimate --json` "
                                        "(without it the resource section says none was given)."),
    trace: Path = typer.Option(None, "--trace",
                               help="Chrome trace JSON from `shiftpu bench FOLDER --trace FILE`, drawn as the "
                                    "pipeline Gantt chart (measured)."),
    bench: Path = typer.Option(None, "--bench",
                               help="Result of `shiftpu bench FOLDER --json` for the measured fps, latency and "
                                    "power."),
    demo: Path = typer.Option(None, "--demo",
                              help="Output folder of `shiftpu demo` (FOLDER is then its compiled/): bit-exactness, "
                                   "mAP, RTL cycles against the model and the drawn detections."),
) -> None:
    """Write one self-contained HTML page of FOLDER: the per-layer table (operation, shapes, dataflow, tiles,
    cycles, utilisation, DDR bytes, fabric or CPU), a roofline for the board, power, what the demo measured, the
    resource chart and the pipeline Gantt chart, each marked measured or estimated. Works offline: no external
    files or URLs."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportExtraMissing("shiftpu report draws its figures with matplotlib, which is not installed: "
                                 "pip install 'shiftpu[report]'") from None
    from shiftpu.report import DEFAULT_NAME, ReportError, write_report

    if not folder.is_dir():  # before the output, which by default goes into it
        raise ReportError(f"{folder}: no such folder (expected the output of `shiftpu compile`)")
    out = output if output is not None else folder / DEFAULT_NAME
    check_output_file(out, "--output")
    with atomic_file(out) as partial:
        write_report(folder, partial, resources=resources, trace=trace, bench=bench, demo=demo)
    typer.echo(f"wrote {out}")
