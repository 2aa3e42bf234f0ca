"""The README's result tables, generated from bench/results (what `make bench` and `python -m bench.resources` write).

    python -m bench.readme            # print the tables
    python -m bench.readme --write    # rewrite the fenced tables of README.md
    python -m bench.readme --check    # exit 1 if README.md differs from bench/results

Each table sits between ``<!-- BEGIN bench:<name> -->`` and ``<!-- END bench:<name> -->`` in README.md; nothing
else of the README is touched. Figures come from the result files alone (the board files add what the results
name: the array, the static power the power model adds), so tests/test_bench_readme.py fails whenever the README
and bench/results disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from shiftpu.boards import load_board
from shiftpu.sw.power import estimate_power_at_fps

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
README = ROOT / "README.md"
RESULT_FILES = ("compiler", "pipeline", "resources")
#: The board set beside the published figures, which are Ultra96 ones.
COMPARED_BOARD = "ultra96v2"
#: Published figures (measured on boards by their authors): system, model and input, fps, power.
PUBLISHED = (
    ("reference paper (ICCV 2019 workshops, Zynq)", "shift-quantized detector, 512x512", "18 (measured)",
     "6.9 W with display (measured)"),
    ("Vitis AI DPU B1600, Ultra96", "YOLOv3, 416x416", "5.4 (measured)", ""),
    ("Vitis AI DPU B1600, Ultra96", "SSD-MobileNetV2", "16.5 (measured)", ""),
    ("SkyNet (DAC-SDC), Ultra96", "SkyNet", "25 (measured)", "7.26 W (measured)"),
)


class ReadmeError(ValueError):
    """The results cannot be rendered, or the README lacks a fenced table."""


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    """The result files by name (compiler, pipeline, resources)."""
    try:
        return {name: json.loads((folder / f"{name}.json").read_text()) for name in RESULT_FILES}
    except (OSError, json.JSONDecodeError) as e:
        raise ReadmeError(f"cannot read the benchmark results: {e}") from None


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(resource: dict) -> str:
    """``used / available (percent)`` of one resource kind, as bench/results/resources.md writes it."""
    used, available = resource["used"], resource["available"]
    shown = f"{used:,.1f}" if used != int(used) else f"{int(used):,}"
    return f"{shown} / {available:,} ({100 * used / available:.0f}%)"


def _power_w(board: str, results: dict) -> float:
    c = results["compiler"]
    return estimate_power_at_fps(load_board(board), c["macs"], c["boards"][board]["rtl"]["fps"]).watts


def measured_table(results: dict) -> str:
    c, p = results["compiler"], results["pipeline"]
    rows = []
    rtl = c.get("perf_vs_rtl", {})
    if rtl.get("status") == "ran":
        layers = [x for x in rtl["layers"] if not x["layer"].startswith("whole")]
        models = [x["layer"] for x in rtl["layers"] if x["layer"].startswith("whole")]
        worst = max(rtl["max_abs_error"], rtl["ddr_latency_max_abs_error"])
        what = " and ".join([f"{len(layers)} layers", *models])
        rows.append((f"performance model vs RTL simulation, with AxiRam and with every read "
                     f"{rtl['ddr_latency_cycles']} cycles late: {what} (`bench/results/compiler.md`)",
                     f"within {100 * worst:.1f}% on each"))
    rows.append((f"compile time / golden-model throughput, {c['model']}",
                 f"{c['compile_s']['value']:.2f} s / {c['golden_fps']['value']:.1f} frames/s"))
    run = p["efficiency_run"]
    rows.append((f"CPU/fabric pipeline efficiency on the {run['backend']} backend, {run['frames']} frames of "
                 "the demo detector (`bench/results/pipeline.json`)", f"{run['pipeline_efficiency']:.3f}"))
    return _table(("benchmark (measured)", "result"), rows)


def boards_table(results: dict) -> str:
    c, res = results["compiler"], results["resources"]["boards"]
    rows = []
    for name, by_schedule in c["boards"].items():
        board = load_board(name)
        cfg = board.accel
        if name not in res:
            raise ReadmeError(f"bench/results/resources.json has no estimate for {name}: run python -m bench.resources")
        if int(res[name]["config_hash"], 16) != cfg.config_hash():
            raise ReadmeError(f"bench/results/resources.json estimates {name}'s config {res[name]['config_hash']}, "
                              f"its board file now gives 0x{cfg.config_hash():08x}: rerun python -m bench.resources "
                              "and python -m bench.run")
        r = res[name]["resources"]
        fps = by_schedule["rtl"]
        clock = fps.get("clock_mhz", cfg.clock_mhz)
        rows.append((name, f"{cfg.array_shape}, {clock:g} MHz", _cell(r["LUT"]), _cell(r["FF"]), _cell(r["DSP"]),
                     _cell(r["BRAM"]), f"{fps['fps']:.1f} fps", f"{_power_w(name, results):.1f} W"))
    return _table(("board", "PE array, clock", "LUT", "FF", "DSP", "BRAM36", "512x512 detector",
                   "power at 512x512"), rows)


def published_table(results: dict) -> str:
    c = results["compiler"]
    cfg = load_board(COMPARED_BOARD).accel
    ours = (f"shiftpu, {load_board(COMPARED_BOARD).title} ({cfg.array_shape} array)", c["model"],
            f"{c['boards'][COMPARED_BOARD]['rtl']['fps']:.1f} (estimated)",
            f"{_power_w(COMPARED_BOARD, results):.1f} W (estimated)")
    return _table(("system", "model, input", "fps", "power"), [*PUBLISHED, ours])


def tables(results: dict) -> dict[str, str]:
    """Every generated table by its fence name."""
    return {"measured": measured_table(results), "boards": boards_table(results),
            "published": published_table(results)}


def render(readme: str, generated: dict[str, str]) -> str:
    """``readme`` with each fenced table replaced by its generated text."""
    for name, text in generated.items():
        fence = re.compile(rf"(<!-- BEGIN bench:{name} -->\n).*?(<!-- END bench:{name} -->)", re.S)
        if not fence.search(readme):
            raise ReadmeError(f"README.md has no <!-- BEGIN bench:{name} --> ... <!-- END bench:{name} --> fence")
        readme = fence.sub(lambda m, text=text: m.group(1) + text + "\n" + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the fenced tables of README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md differs from bench/results")
    args = ap.parse_args(argv)
    generated = tables(load_results())
    if not (args.write or args.check):
        print("\n\n".join(f"{name}:\n{text}" for name, text in generated.items()))
        return 0
    text = README.read_text()
    new = render(text, generated)
    if args.check:
        if new != text:
            print("README.md differs from bench/results: run python -m bench.readme --write", file=sys.stderr)
            return 1
        return 0
    if new != text:
        README.write_text(new)
        print("rewrote the result tables of README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
