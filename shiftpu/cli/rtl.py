"""`shiftpu rtl-check`: random programs on the RTL simulation, compared bit for bit with the golden model."""

from __future__ import annotations

from pathlib import Path

import typer

from shiftpu.cli.compile import check_latency_options
from shiftpu.cli.main import app
from shiftpu.errors import ShiftpuError

KINDS = ("conv", "ic", "dw", "pool", "add", "move")


class RtlCheckError(ShiftpuError):
    """The RTL simulation disagreed with the golden model."""


@app.command("rtl-check")
def rtl_check(
    board: str = typer.Option(None, "--board", "-b",
                              help="Use this board's accelerator config (see `shiftpu boards`; default: the default "
                                   "board's, unless --config is given)."),
    config: Path = typer.Option(None, "--config", help="Accelerator config as JSON, instead of a board's."),
    seeds: int = typer.Option(3, "--seeds", help="Number of random programs."),
    first_seed: int = typer.Option(0, "--first-seed", help="Seed of the first program (the next ones count up)."),
    layers: int = typer.Option(6, "--layers", help="Random layers per program."),
    build_dir: Path = typer.Option(None, "--build-dir",
                                   help="Where Verilator builds are cached (default: the user's cache directory)."),
    memory: str = typer.Option(None, "--memory",
                               help="Simulated DDR: axiram (cocotbext-axi AxiRam; the default) or compiled (Verilog "
                                    "RAM, faster; the default with a DDR latency)."),
    ddr_latency: bool = typer.Option(False, "--ddr-latency",
                                     help="The simulated DDR answers every read as late as the board's (--board or "
                                          "the default board; the board file's DDR latency, on the compiled RAM), as "
                                          "`shiftpu run --ddr-latency` does."),
    ddr_latency_cycles: int = typer.Option(None, "--ddr-latency-cycles", metavar="N",
                                           help="The simulated DDR (the compiled RAM) answers every read N cycles "
                                                "after its command, as the performance model counts a read latency "
                                                "(e.g. 200 ns = 50 cycles at 250 MHz)."),
    extra_read_latency: int = typer.Option(None, "--extra-read-latency", hidden=True,
                                           help="Deprecated: --ddr-latency-cycles N+1 gives the same latency."),
) -> None:
    """Build the accelerator (cached), run random layers on its Verilator simulation and on the golden model,
    compare the whole activation arena; prints measured cycles and simulation speed per program."""
    import numpy as np

    from shiftpu.arch.config import AccelConfig
    from shiftpu.arch.isa import Dataflow, Opcode
    from shiftpu.boards import DEFAULT_BOARD, load_board
    from shiftpu.sim.golden import GoldenAccelerator
    from shiftpu.sim.rtl import RtlAccelerator, SimMemory, cases
    from shiftpu.sim.rtl.sim_ram import BASE_READ_LATENCY

    if board and config:
        raise RtlCheckError("give --board or --config, not both")
    if ddr_latency and config:
        raise RtlCheckError("--ddr-latency takes the DDR latency from a board file: give --board, or "
                            "--ddr-latency-cycles N with --config")
    if extra_read_latency is not None:
        if ddr_latency or ddr_latency_cycles is not None:
            raise RtlCheckError("give one of --ddr-latency, --ddr-latency-cycles (--extra-read-latency is their "
                                "deprecated form)")
        if extra_read_latency < 0:
            raise RtlCheckError(f"--extra-read-latency must be >= 0, got {extra_read_latency}")
        ddr_latency_cycles = extra_read_latency + BASE_READ_LATENCY
        typer.secho(f"warning: --extra-read-latency is deprecated: --ddr-latency-cycles {ddr_latency_cycles} gives "
                    "the same latency", fg="yellow", err=True)
    check_latency_options(ddr_latency, ddr_latency_cycles)
    board_file = load_board(board or DEFAULT_BOARD) if not config else None
    cfg = AccelConfig.load(config) if config else board_file.accel
    latency = board_file.ddr_read_latency_cycles if ddr_latency else ddr_latency_cycles
    try:
        sim_memory = SimMemory(memory or ("compiled" if latency is not None else "axiram"))
    except ValueError:
        raise RtlCheckError(f"--memory {memory!r}: choose axiram or compiled") from None
    if latency is not None and sim_memory is not SimMemory.COMPILED:
        raise RtlCheckError("a DDR latency (--ddr-latency, --ddr-latency-cycles) needs --memory compiled")
    options = {"build_root": build_dir}
    rtl = (RtlAccelerator(cfg, memory=sim_memory, **options) if latency is None
           else RtlAccelerator.with_read_latency(cfg, latency, **options))
    source = f"--config {config}" if config else f"board {board_file.name}"
    memory_text = sim_memory.value + (f", reads {rtl.read_latency} cycles late" if latency is not None else "")
    typer.echo(f"accelerator 0x{cfg.config_hash():08x} ({source}; memory {memory_text})")
    build = rtl.build
    typer.echo(f"accelerator 0x{cfg.config_hash():08x}: Verilator build "
               + ("reused" if build.reused else f"took {build.build_seconds:.1f} s (measured)"))
    dataflows = {"conv": Dataflow.PIXEL, "ic": Dataflow.INPUT_CHANNEL, "dw": Dataflow.DEPTHWISE}
    failures = []
    for seed in range(first_seed, first_seed + seeds):
        rng = np.random.default_rng(seed)
        b = cases.ProgramBuilder(cfg)
        kinds = [KINDS[int(k)] for k in rng.integers(0, len(KINDS), size=layers)]
        for kind in kinds:
            if kind in dataflows:
                cases.add_random_conv(b, rng, dataflow=dataflows[kind])
            else:
                cases.add_random_eltwise(b, rng, Opcode[kind.upper()])
        image = b.image()
        golden = image.act.copy()
        GoldenAccelerator(cfg).run_program(image.const, golden)
        got = image.act.copy()
        stats = rtl.run_program(image.const, got)
        same = np.array_equal(golden, got)
        run = rtl.last_run
        typer.echo(f"seed {seed} [{','.join(kinds)}]: {'bit-exact' if same else 'MISMATCH'}, "
                   f"{stats.cycles} cycles measured, {run.cycles_per_second:.0f} simulated cycles/s")
        if not same:
            failures.append(seed)
    if failures:
        raise RtlCheckError(f"RTL and golden model differ for seed(s) {', '.join(map(str, failures))}")
