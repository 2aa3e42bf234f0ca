"""`shiftpu compile`, `disasm`, `run`, `estimate`: from a quantized ONNX model to a program, and running it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shiftpu.cli.main import app
from shiftpu.cli.quantize import INPUT_SHAPE_HELP
from shiftpu.errors import ShiftpuError


class CliInputError(ShiftpuError):
    """A command-line argument names a file that cannot be used."""


@app.command()
def compile(
    model: Path = typer.Argument(..., help="Quantized ONNX model (QDQ form, docs/quantized-onnx.md)."),
    board: str = typer.Option("ultra96v2", "--board", "-b", help="Target board: pynq-z2, ultra96v2, zcu104, kv260."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically; replaced if it exists)."),
    dump_passes: Path = typer.Option(None, "--dump-passes", help="Write the IR after import and after every pass here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the partition report."),
    dataflows: str = typer.Option(
        "pixel,input-channel,depthwise", "--dataflows",
        help="PE-array mappings the target accelerator implements (comma-separated); the cost model chooses among "
             "them per layer. Without depthwise, depthwise convolutions run as dense ones."),
    schedule: str = typer.Option(
        "rtl", "--schedule",
        help="How the accelerator overlaps loads and computation, for the cost model that picks tilings and "
             "dataflows: rtl (the generated RTL) or overlapped (coarser: every load and store hidden)."),
    input_shape: list[str] = typer.Option([], "--input-shape", help=INPUT_SHAPE_HELP),
) -> None:
    """Compile a quantized ONNX model into a program for the accelerator of a board; print the partition report."""
    from shiftpu.arch.isa import Dataflow
    from shiftpu.compiler.driver import compile_model
    from shiftpu.compiler.onnx_import import parse_input_shapes

    names = {df.name.lower().replace("_", "-"): df for df in Dataflow}
    chosen = [d.strip() for d in dataflows.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in names]
    if unknown or not chosen:
        raise CliInputError(f"--dataflows: unknown dataflow(s) {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(names)}")
    result = compile_model(model, board, out, dump_passes, frozenset(names[d] for d in chosen), _schedule(schedule),
                           parse_input_shapes(input_shape))
    for line in result.bound:
        typer.echo(line)
    if not quiet:
        typer.echo(result.report)
    typer.echo(f"wrote {out} ({len(result.images)} fabric segment(s), {len(result.graph.cpu_nodes())} CPU node(s))")


@app.command()
def disasm(folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`).")) -> None:
    """Print the compiled programs readably: header, every instruction with its fields, memory map."""
    from shiftpu.compiler.artifact import read_folder
    from shiftpu.compiler.disasm import disassemble

    typer.echo(disassemble(read_folder(folder)))


def _schedule(name: str):
    from shiftpu.compiler.perf import Schedule

    try:
        return Schedule(name)
    except ValueError:
        raise CliInputError(f"--schedule must be one of {', '.join(s.value for s in Schedule)}, got {name!r}") from None


def _load_input(path: Path):
    import numpy as np

    if not path.is_file():
        raise CliInputError(f"{path}: no such input file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CliInputError(f"{path}: not a readable .npy array: {e}") from None


def _estimate_for(compiled, backend: str, sim_latency: int | None) -> str:
    """The performance model's cycles for what the backend measures (the simulation's memory or the board)."""
    board_cycles = compiled.manifest["estimate"]["cycles"]
    if backend != "rtl":
        return f"{board_cycles} cycles estimated by the performance model for the board"
    from shiftpu.compiler.estimate import simulation_estimate
    from shiftpu.compiler.perf import READ_LATENCY

    lat = READ_LATENCY if sim_latency is None else sim_latency
    sim = simulation_estimate(compiled.programs(), compiled.config, compiled.board, lat)["cycles"]
    return (f"{sim} cycles estimated by the performance model for this memory "
            f"({board_cycles} for the board, whose DDR bandwidth also bounds it)")


@app.command()
def run(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`)."),
    input: Path = typer.Option(..., "--input", "-i", help="Model input as .npy (dtype and shape of the model input), "
                               "or a folder of images (detections JSON and drawn images go to --output, a folder)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the first model output here (.npy)."),
    backend: str = typer.Option("golden", "--backend", help="golden (bit-exact model), rtl (RTL simulation), "
                                "pynq-sim (PYNQ's own Overlay/MMIO on a simulated device), board (a Zynq board)."),
    bitstream: Path = typer.Option(None, "--bitstream", help="board backend: the .bit (its .hwh next to it)."),
    compare: bool = typer.Option(False, "--compare",
                                 help="Also run onnxruntime and name the first tensor that differs, and by how much."),
    ddr_latency: bool = typer.Option(False, "--ddr-latency",
                                     help="rtl backend: the simulated DDR answers every read as late as the board's "
                                     "(the board file's DDR latency, on the compiled RAM), so the cycles measured "
                                     "compare with the board estimate."),
) -> None:
    """Run a compiled model on a backend; optionally compare every layer with onnxruntime."""
    import numpy as np

    if input.is_dir():
        from shiftpu.sw.images import run_image_folder

        typer.echo(f"wrote {run_image_folder(folder, input, output or Path('detections'), backend, bitstream=bitstream)}")
        return

    from shiftpu.sw.executor import Executor

    x = _load_input(input)
    accel = backend
    sim_latency = None  # read latency of the simulated memory, as the performance model counts it
    if ddr_latency:
        if backend != "rtl":
            raise CliInputError("--ddr-latency applies to the rtl backend only")
        from shiftpu.boards import load_board
        from shiftpu.sim.rtl import RtlAccelerator

        compiled = Executor(folder).compiled
        accel = RtlAccelerator.with_read_latency(compiled.config, load_board(compiled.board).ddr_read_latency_cycles)
        sim_latency = accel.read_latency
    if backend in ("board", "pynq-sim"):
        from shiftpu.sw.device_backends import open_backend

        compiled = Executor(folder).compiled
        accel = open_backend(backend, compiled.config, compiled.board, bitstream)
    ex = Executor(folder, accel, keep_intermediates=compare)
    frame = ex.execute(ex.prepare(x))
    outs = ex.finish(frame)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, outs[0])
        typer.echo(f"wrote {output}: {outs[0].dtype} {tuple(outs[0].shape)}")
    for name, y in zip(ex.output_names, outs, strict=True):
        typer.echo(f"output {name}: {y.dtype} {tuple(y.shape)} min {y.min():g} max {y.max():g}")
    measured = [s for s in frame.stats if s.measured]
    if measured:
        cycles = sum(s.cycles for s in measured)
        mhz = ex.compiled.config.clock_mhz
        how = "measured, RTL simulation" if backend == "rtl" else f"measured on the {backend} backend"
        if sim_latency is not None:
            how += f", reads {sim_latency} cycles late as on the board"
        typer.echo(f"fabric: {cycles} cycles ({how}; {cycles / mhz / 1e3:.3f} ms at {mhz} MHz), "
                   f"{sum(s.stall_cycles or 0 for s in measured)} of them stalled on memory; "
                   f"{_estimate_for(ex.compiled, backend, sim_latency)}")
    if compare:
        from shiftpu.compiler.compare import first_divergence

        report = first_divergence(ex, frame, x)
        typer.echo(report.text())
        if not report.equal:
            raise typer.Exit(2)


@app.command()
def estimate(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object (fps, cycles, utilization, layers)."),
    schedule: str = typer.Option(
        None, "--schedule",
        help="rtl: the generated RTL, whose line-buffer loader and store overlap the PE array where the buffers "
             "allow (agrees with the RTL simulation); overlapped: a coarser model, every load and store hidden "
             "behind the computation, reads and writes sharing one AXI beat per cycle. Default: the schedule the folder was compiled for."),
) -> None:
    """Estimated cycles, DDR traffic, PE utilisation per layer and fps at the board clock (performance model)."""
    from shiftpu.boards import load_board
    from shiftpu.compiler.artifact import read_folder
    from shiftpu.compiler.estimate import estimate as estimate_programs
    from shiftpu.compiler.estimate import format_table
    c = read_folder(folder)
    sched = _schedule(schedule or c.manifest["estimate"].get("schedule", "rtl"))
    b = load_board(c.board)
    names = {la["layer_id"]: la["name"] for la in c.manifest["layers"]}
    est = estimate_programs(c.programs(), c.config, b.ddr_bytes_per_cycle, names, c.board, sched,
                            b.ddr_read_latency_cycles)
    typer.echo(json.dumps(est, indent=1) if as_json else format_table(est))
