"""`shiftpu rtl-check`: random programs on the RTL simulation, compared bit for bit with the golden model."""

from __future__ import annotations

from pathlib import Path

import typer

from shiftpu.cli.main import app
from shiftpu.errors import ShiftpuError

KINDS = ("conv", "ic", "dw", "pool", "add", "move")


class RtlCheckError(ShiftpuError):
    """The RTL simulation disagreed with the golden model."""


@app.command("rtl-check")
def rtl_check(
    board: str = typer.Option(None, "--board", "-b", help="Use this board's accelerator config (see `shiftpu boards`)."),
    config: Path = typer.Option(None, "--config", help="Accelerator config as JSON (default: AccelConfig())."),
    seeds: int = typer.Option(3, "--seeds", help="Number of random programs."),
    first_seed: int = typer.Option(0, "--first-seed", help="Seed of the first program (the next ones count up)."),
    layers: int = typer.Option(6, "--layers", help="Random layers per program."),
    build_dir: Path = typer.Option(Path("build") / "rtl", "--build-dir", help="Where Verilator builds are cached."),
    memory: str = typer.Option("axiram", "--memory",
                               help="Simulated DDR: axiram (cocotbext-axi AxiRam) or compiled (Verilog RAM, faster)."),
    extra_read_latency: int = typer.Option(0, "--extra-read-latency",
                                           help="Cycles the compiled RAM adds to every read (and write response), "
                                           "as a board's DDR does (e.g. 200 ns = 50 cycles at 250 MHz)."),
) -> None:
    """Build the accelerator (cached), run random layers on its Verilator simulation and on the golden model,
    compare the whole activation arena; prints measured cycles and simulation speed per program."""
    import numpy as np

    from shiftpu.arch.config import AccelConfig
    from shiftpu.arch.isa import Dataflow, Opcode
    from shiftpu.sim.golden import GoldenAccelerator
    from shiftpu.sim.rtl import RtlAccelerator, SimMemory, cases

    if board and config:
        raise RtlCheckError("give --board or --config, not both")
    if board:
        from shiftpu.boards import load_board

        cfg = load_board(board).accel
    else:
        cfg = AccelConfig.load(config) if config else AccelConfig()
    try:
        sim_memory = SimMemory(memory)
    except ValueError:
        raise RtlCheckError(f"--memory {memory!r}: choose axiram or compiled") from None
    if extra_read_latency and sim_memory is not SimMemory.COMPILED:
        raise RtlCheckError("--extra-read-latency needs --memory compiled")
    if extra_read_latency < 0:
        raise RtlCheckError(f"--extra-read-latency must be >= 0, got {extra_read_latency}")
    rtl = RtlAccelerator(cfg, build_root=build_dir, memory=sim_memory, extra_read_latency=extra_read_latency)
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
