"""`shiftpu compile`, `disasm`, `run`, `estimate`: from a quantized ONNX model to a program, and running it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shiftpu.boards import DEFAULT_BOARD, board_names
from shiftpu.cli.main import app
from shiftpu.cli.paths import atomic_file, atomic_folder, check_output_file, check_output_folder, made_parents
from shiftpu.cli.quantize import INPUT_SHAPE_HELP
from shiftpu.compiled.cpu_regions import CpuRuntime
from shiftpu.compiler.perf import Schedule
from shiftpu.errors import ShiftpuError
from shiftpu.sw.device_backends import RuntimeBackend

#: Backends of `run` that load a bitstream (on the board, or on PYNQ's simulated device).
BITSTREAM_BACKENDS = (RuntimeBackend.BOARD, RuntimeBackend.PYNQ_SIM)


class CliInputError(ShiftpuError):
    """A command-line argument names a file that cannot be used."""


@app.command()
def compile(
    model: Path = typer.Argument(None, help="Quantized ONNX model (QDQ form, docs/quantized-onnx.md); none with "
                                 "--from-ir."),
    board: str = typer.Option(DEFAULT_BOARD, "--board", "-b", metavar="<board>",
                              help=f"Target board: {', '.join(board_names())}."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically; replaced if it exists and "
                             "holds an earlier compiled model, refused if it holds other files)."),
    dump_passes: Path = typer.Option(None, "--dump-passes", help="Write the IR after import and after every pass here, "
                                     "as text (NN_<pass>.txt)."),
    dump_ir: Path = typer.Option(None, "--dump-ir", help="Write the IR after import and after every pass here, as "
                                 "IR files (NN_<pass>.json) that --from-ir restarts from."),
    from_ir: Path = typer.Option(None, "--from-ir", metavar="FILE", help="Restart from an IR file written by "
                                 "--dump-ir (instead of MODEL): the passes after its own run, and the compiled folder "
                                 "is the one the whole compilation writes. Give the same --board, --dataflows and "
                                 "--schedule."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the partition report."),
    dataflows: str = typer.Option(
        "pixel,input-channel,depthwise", "--dataflows", metavar="<list>",
        help="PE-array mappings the target accelerator implements (comma-separated); the cost model chooses among "
             "them per layer. Without depthwise, depthwise convolutions run as dense ones."),
    schedule: Schedule = typer.Option(
        Schedule.RTL, "--schedule",
        help="How the accelerator overlaps loads and computation, for the cost model that picks tilings and "
             "dataflows: rtl (the generated RTL) or overlapped (coarser: every load and store hidden)."),
    input_shape: list[str] = typer.Option([], "--input-shape", help=INPUT_SHAPE_HELP),
) -> None:
    """Compile a quantized ONNX model into a program for the accelerator of a board (or continue a compilation from
    its IR dumped after a pass); print the partition report."""
    from shiftpu.arch.isa import Dataflow
    from shiftpu.compiled.folder import MANIFEST
    from shiftpu.compiler.driver import compile_from_ir, compile_model
    from shiftpu.compiler.onnx_import import parse_input_shapes

    names = {df.name.lower().replace("_", "-"): df for df in Dataflow}
    chosen = [d.strip() for d in dataflows.split(",") if d.strip()]
    unknown = [d for d in chosen if d not in names]
    if unknown or not chosen:
        raise CliInputError(f"--dataflows: unknown dataflow(s) {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(names)}")
    if (model is None) == (from_ir is None):
        raise CliInputError("give a MODEL to compile or --from-ir FILE to restart from, not both" if model else
                            "give a MODEL to compile (or --from-ir FILE to restart from a dumped IR)")
    if from_ir is not None and input_shape:
        raise CliInputError("--input-shape applies to a MODEL only: an IR file's input shapes are fixed")
    check_output_folder(out, "--out", marker=MANIFEST)
    for option, folder in (("--dump-passes", dump_passes), ("--dump-ir", dump_ir)):
        if folder is not None:
            check_output_folder(folder, option)
    with made_parents(out.parent):
        if from_ir is not None:
            result = compile_from_ir(from_ir, board, out, dump_passes, frozenset(names[d] for d in chosen), schedule,
                                     dump_ir)
        else:
            result = compile_model(model, board, out, dump_passes, frozenset(names[d] for d in chosen), schedule,
                                   parse_input_shapes(input_shape), dump_ir)
    for line in result.bound:
        typer.echo(line)
    if not quiet:
        typer.echo(result.report)
    typer.echo(f"wrote {out} ({len(result.images)} fabric segment(s), {len(result.graph.cpu_nodes())} CPU node(s))")


@app.command()
def disasm(folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`).")) -> None:
    """Print the compiled programs readably: header, every instruction with its fields, memory map."""
    from shiftpu.compiled.folder import read_folder
    from shiftpu.compiler.disasm import disassemble

    typer.echo(disassemble(read_folder(folder)))


def _load_input(path: Path):
    import numpy as np

    if not path.is_file():
        raise CliInputError(f"{path}: no such input file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CliInputError(f"{path}: not a readable .npy array: {e}") from None


def _npy_path(path: Path) -> Path:
    """Where ``numpy.save`` puts an array asked to go to ``path``: ``.npy`` appended unless it ends so."""
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def _check_run_options(backend: RuntimeBackend, images: bool, bitstream: Path | None, compare: bool,
                       ddr_latency: bool, ddr_latency_cycles: int | None = None, build_dir: Path | None = None,
                       timeout_s: float | None = None) -> None:
    """Refuse options that this backend or kind of input would ignore, and impossible values."""
    if bitstream is not None and backend not in BITSTREAM_BACKENDS:
        raise CliInputError(f"--bitstream applies to the {' and '.join(b.value for b in BITSTREAM_BACKENDS)} "
                            f"backends only: the {backend.value} backend loads no bitstream")
    check_latency_options(ddr_latency, ddr_latency_cycles)
    rtl_only = (("--ddr-latency", ddr_latency), ("--ddr-latency-cycles", ddr_latency_cycles is not None),
                ("--build-dir", build_dir is not None))
    for flag, given in rtl_only:
        if given and backend is not RuntimeBackend.RTL:
            raise CliInputError(f"{flag} applies to the rtl backend only")
    if timeout_s is not None and not timeout_s > 0:
        raise CliInputError(f"--timeout must be more than 0 seconds, got {timeout_s:g}")
    for flag, given in (("--compare", compare), *rtl_only, ("--timeout", timeout_s is not None)):
        if given and images:
            raise CliInputError(f"{flag} applies to a .npy input only, not to a folder of images")


def check_latency_options(ddr_latency: bool, ddr_latency_cycles: int | None) -> None:
    """Refuse both ways of giving the simulated DDR's latency at once, and a negative latency."""
    if ddr_latency and ddr_latency_cycles is not None:
        raise CliInputError("give --ddr-latency (the board's) or --ddr-latency-cycles N, not both")
    if ddr_latency_cycles is not None and ddr_latency_cycles < 0:
        raise CliInputError(f"--ddr-latency-cycles must be >= 0, got {ddr_latency_cycles}")


#: Help of the options that set the simulated DDR's latency (`run` and `rtl-check` alike).
DDR_LATENCY_HELP = ("rtl backend: the simulated DDR answers every read as late as the board's (the board file's DDR "
                    "latency, on the compiled RAM), so the cycles measured compare with the board estimate.")
DDR_LATENCY_CYCLES_HELP = ("rtl backend: the simulated DDR (the compiled RAM) answers every read N cycles after its "
                           "command, as the performance model counts a read latency (e.g. 200 ns = 50 cycles at "
                           "250 MHz).")
TIMEOUT_HELP = ("Seconds one run of the accelerator may take before it counts as hung; the run then stops with an "
                "error (register dump; on the board and pynq-sim the device is reset). Default: no limit on golden "
                "and rtl, 10 s on board and pynq-sim.")
BUILD_DIR_HELP = "rtl backend: where Verilator builds are cached (default: the user's cache directory)."


def _estimate_for(compiled, backend: RuntimeBackend, sim_latency: int | None) -> str:
    """The performance model's cycles for what the backend measures (the simulation's memory or the board)."""
    board_cycles = compiled.manifest["estimate"]["cycles"]
    if backend is not RuntimeBackend.RTL:
        return f"{board_cycles} cycles estimated by the performance model for the board"
    from shiftpu.compiler.estimate import simulation_estimate
    from shiftpu.compiler.perf import READ_LATENCY

    lat = READ_LATENCY if sim_latency is None else sim_latency
    sim = simulation_estimate(compiled.programs(), compiled.config, compiled.board, lat)["cycles"]
    return (f"{sim} cycles estimated by the performance model for this memory "
            f"({board_cycles} for the board, whose DDR bandwidth also bounds it)")


def _clock_for(compiled, backend: RuntimeBackend) -> tuple[float, str]:
    """The clock that turns the cycles measured on ``backend`` into time, and its description. On the board it is
    the clock the bitstream runs at (the Vivado flow refuses to write a bitstream that misses it); elsewhere the
    clock of every fps figure (:func:`shiftpu.boards.clock.fps_clock`)."""
    if backend is RuntimeBackend.BOARD:
        mhz = compiled.config.clock_mhz
        return mhz, f"{mhz:g} MHz, the clock the bitstream was built and timed for"
    from shiftpu.boards.clock import fps_clock

    clock = fps_clock(compiled.board, compiled.config)
    return clock.clock_mhz, clock.describe()


@app.command()
def run(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`), or a bundle (from `shiftpu "
                                "package`: its model; on the board backend also its overlay)."),
    input: Path = typer.Option(..., "--input", "-i", help="Model input as .npy (dtype and shape of the model input), "
                               "or a folder of images (detections JSON and drawn images go to --output, a folder)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the first model output here (.npy, appended "
                                "if the name lacks it); with a folder of images, the folder for the detections "
                                "(default: detections; an earlier one, holding detections.json, is replaced)."),
    backend: RuntimeBackend = typer.Option(
        RuntimeBackend.GOLDEN, "--backend", help="golden (bit-exact model), rtl (RTL simulation), pynq-sim (PYNQ's "
        "own Overlay/MMIO on a simulated device), board (a Zynq board)."),
    bitstream: Path = typer.Option(None, "--bitstream", help="board and pynq-sim backends: the .bit (its .hwh next "
                                   "to it; default for a bundle on the board: the bundle's overlay)."),
    compare: bool = typer.Option(False, "--compare",
                                 help="Also run onnxruntime and name the first tensor that differs, and by how much."),
    ddr_latency: bool = typer.Option(False, "--ddr-latency", help=DDR_LATENCY_HELP),
    ddr_latency_cycles: int = typer.Option(None, "--ddr-latency-cycles", metavar="N", help=DDR_LATENCY_CYCLES_HELP),
    timeout_s: float = typer.Option(None, "--timeout", metavar="SECONDS", help=TIMEOUT_HELP),
    build_dir: Path = typer.Option(None, "--build-dir", help=BUILD_DIR_HELP),
    cpu_runtime: CpuRuntime = typer.Option(
        CpuRuntime.AUTO, "--cpu-runtime", help="What runs the model's CPU regions: auto (onnxruntime where it is "
        "installed, else the numpy kernels), onnxruntime, or numpy (the fallback kernels, which cover the usual "
        "boundary operators only)."),
) -> None:
    """Run a compiled model on a backend; optionally compare every layer with onnxruntime."""
    import numpy as np

    from shiftpu.boards.bundle import resolve_run_folder

    _check_run_options(backend, input.is_dir(), bitstream, compare, ddr_latency, ddr_latency_cycles, build_dir,
                       timeout_s)
    folder, bitstream = resolve_run_folder(folder, backend is RuntimeBackend.BOARD, bitstream)
    if input.is_dir():
        from shiftpu.sw.images import run_image_folder

        out_dir = output or Path("detections")
        check_output_folder(out_dir, "--output", marker="detections.json")
        with atomic_folder(out_dir) as tmp:
            written = run_image_folder(folder, input, tmp, backend.value, bitstream=bitstream,
                                       cpu_runtime=cpu_runtime.value)
        typer.echo(f"wrote {out_dir / written.name}")
        return

    from shiftpu.sw.executor import Executor

    if output is not None:
        output = _npy_path(output)
        check_output_file(output, "--output")
    x = _load_input(input)
    probe = Executor(folder, cpu_runtime=cpu_runtime)
    probe.check_inputs(x)  # before a backend that may take minutes to build
    compiled = probe.compiled
    accel = backend.value
    sim_latency = None  # read latency of the simulated memory, as the performance model counts it
    if backend is RuntimeBackend.RTL:
        from shiftpu.boards import load_board
        from shiftpu.sim.rtl import RtlAccelerator

        latency = load_board(compiled.board).ddr_read_latency_cycles if ddr_latency else ddr_latency_cycles
        rtl_options = {"build_root": build_dir, "wall_timeout_s": timeout_s}
        accel = (RtlAccelerator(compiled.config, **rtl_options) if latency is None
                 else RtlAccelerator.with_read_latency(compiled.config, latency, **rtl_options))
        sim_latency = accel.read_latency if latency is not None else None
    # with a timeout the golden model runs behind the driver, whose watchdog stops a run that takes too long
    behind_driver = BITSTREAM_BACKENDS + ((RuntimeBackend.GOLDEN,) if timeout_s is not None else ())
    if backend in behind_driver:
        from shiftpu.sw.device_backends import open_accelerator

        accel = open_accelerator(backend, compiled.config, compiled.board, bitstream, timeout_s=timeout_s)
    ex = Executor(compiled, accel, keep_intermediates=compare, cpu_runtime=cpu_runtime)
    frame = ex.execute(ex.prepare(x))
    outs = ex.finish(frame)
    if output is not None:
        with atomic_file(output) as tmp, tmp.open("wb") as f:
            np.save(f, outs[0])
        typer.echo(f"wrote {output}: {outs[0].dtype} {tuple(outs[0].shape)}")
    for name, y in zip(ex.output_names, outs, strict=True):
        typer.echo(f"output {name}: {y.dtype} {tuple(y.shape)} min {y.min():g} max {y.max():g}")
    measured = [s for s in frame.stats if s.measured]
    if measured:
        cycles = sum(s.cycles for s in measured)
        mhz, clock_text = _clock_for(ex.compiled, backend)
        how = ("measured, RTL simulation" if backend is RuntimeBackend.RTL
               else f"measured on the {backend.value} backend")
        if sim_latency is not None:
            how += f", reads {sim_latency} cycles late" + (" as on the board" if ddr_latency else "")
        typer.echo(f"fabric: {cycles} cycles ({how}; {cycles / mhz / 1e3:.3f} ms at {clock_text}), "
                   f"{sum(s.stall_cycles or 0 for s in measured)} of them stalled on memory; "
                   f"{_estimate_for(ex.compiled, backend, sim_latency)}")
    if compare:
        from shiftpu.sw.compare import first_divergence

        report = first_divergence(ex, frame, x)
        typer.echo(report.text())
        if not report.equal:
            raise typer.Exit(2)


@app.command()
def estimate(
    folder: Path = typer.Argument(..., help="Compiled folder (from `shiftpu compile`)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object (fps, cycles, utilization, layers, the clock: clock_mhz, clock_source)."),
    schedule: Schedule = typer.Option(
        None, "--schedule",
        help="rtl: the generated RTL, whose line-buffer loader and store overlap the PE array where the buffers "
             "allow (agrees with the RTL simulation); overlapped: a coarser model, every load and store hidden "
             "behind the computation, reads and writes sharing one AXI beat per cycle. Default: the schedule the folder was compiled for."),
    cpu_times: bool = typer.Option(False, "--cpu-times", help="Also run the CPU regions on this host and print the time of each region and CPU node (median, measured here, not on the board's ARM), and the frame: fabric (estimated) + CPU regions sequentially, and pipelined (each CPU region a stage beside the fabric: the slowest of the fabric total and each region sets the rate, named as the bottleneck)."),
    cpu_runs: int = typer.Option(20, "--cpu-runs", min=1, help="With --cpu-times: timed runs per figure (the median is reported)."),
    cpu_runtime: CpuRuntime = typer.Option(CpuRuntime.AUTO, "--cpu-runtime", help="With --cpu-times: what runs the CPU regions (auto: onnxruntime where installed, else the numpy kernels)."),
) -> None:
    """Estimated cycles, DDR traffic, PE utilisation per layer and fps (performance model), at the board clock where
    a stored timing estimate of the design clears it, else at the clock the estimate supports or, with none, at the
    board clock labelled as assumed (docs/timing.md)."""
    from shiftpu.compiled.folder import read_folder
    from shiftpu.compiler.estimate import estimate_folder, format_table
    c = read_folder(folder)
    est = estimate_folder(c, schedule)
    if cpu_times:
        from shiftpu.compiled.cpu_timing import measure_cpu_times
        from shiftpu.compiled.pipeline_stages import schedule_stages
        from shiftpu.compiler.estimate import format_cpu_table, with_cpu_times
        est = with_cpu_times(est, measure_cpu_times(c, cpu_runs, cpu_runtime), schedule_stages(c.manifest))
    if as_json:
        typer.echo(json.dumps(est, indent=1))
    else:
        typer.echo(format_table(est) + ("\n" + format_cpu_table(est) if cpu_times else ""))
