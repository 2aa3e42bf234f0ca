"""Estimated speed of the two benchmark detectors on every board, against the dense accelerator's targets.

Compiles the 512x512 detector (examples/detector512.py) and Tiny-YOLOv2 at 512x512 (examples/tiny_yolov2.py) for
each board and reports the performance model's estimate (rtl schedule, the board's DDR bandwidth and latency):
the clock and where it comes from, fps, cycles, GMAC, PE utilisation and the share of cycles per layer kind, so
that what limits each model shows. Every figure is estimated, none measured. ``--write`` stores them in
bench/results/detectors.json and bench/results/detectors.md with the command, the time (UTC) and the machine's
load average.

    python -m bench.detectors [--boards ultra96v2 zcu104 ...] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx

from bench.run import BOARDS, detector512
from shiftpu.arch.isa import Dataflow, Opcode

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KIND = "estimated (performance model, rtl schedule)"
#: Layer kinds the cycles are split into: each CONV dataflow, then the other fabric instructions.
LAYER_KINDS = (*(f"{Opcode.CONV.name} {d.name}" for d in Dataflow),
               *(o.name for o in Opcode if o not in (Opcode.CONV, Opcode.END)))
#: Cycles outside every layer: each fabric segment's start and its END.
OVERHEAD = "segment start/end"
#: The fields of an estimate that say which clock its fps figures use.
CLOCK_FIELDS = ("clock_mhz", "clock_source", "clock_label")
#: MAC-weighted PE utilisation each model reaches on every board.
UTILIZATION_TARGET = 0.75


@dataclass(frozen=True)
class FpsTarget:
    """Frames per second a model reaches on a board (at the clock its estimate uses)."""

    model: str
    board: str
    fps: float


FPS_TARGETS = (FpsTarget("tiny_yolov2", "ultra96v2", 18.0), FpsTarget("tiny_yolov2", "zcu104", 80.0),
               FpsTarget("detector512", "ultra96v2", 100.0))


def _tiny_yolov2() -> onnx.ModelProto:
    """Tiny-YOLOv2 at 512x512 (examples/tiny_yolov2.py): random shift weights, scales calibrated on generated
    images (only speed is estimated on it)."""
    sys.path.insert(0, str(ROOT))
    from examples.tiny_yolov2 import write_tiny_yolov2

    with tempfile.TemporaryDirectory() as tmp:
        return write_tiny_yolov2(Path(tmp) / "tiny_yolov2.onnx")


#: The benchmarked models: name -> (title, builder).
MODELS: dict[str, tuple[str, Callable[[], onnx.ModelProto]]] = {
    "detector512": ("512x512 detector (examples/detector512.py)", lambda: detector512()[0]),
    "tiny_yolov2": ("Tiny-YOLOv2 512x512, ReLU (examples/tiny_yolov2.py)", _tiny_yolov2),
}


def layer_kind(layer: dict) -> str:
    """The kind of one layer of an estimate: ``CONV <dataflow>`` or the instruction's name."""
    return f"{layer['op']} {layer['dataflow']}" if layer["dataflow"] else layer["op"]


def cycle_shares(est: dict) -> dict[str, float]:
    """Share of the frame's estimated cycles spent in each layer kind (``LAYER_KINDS``) and outside every layer
    (``OVERHEAD``); the shares add up to 1."""
    cycles = dict.fromkeys(LAYER_KINDS, 0)
    for layer in est["layers"]:
        cycles[layer_kind(layer)] += layer["cycles"]
    cycles[OVERHEAD] = est["cycles"] - sum(cycles.values())
    return {kind: c / est["cycles"] for kind, c in cycles.items()}


def kind_utilization(est: dict) -> dict[str, float]:
    """PE utilisation within the cycles of each CONV dataflow the model uses: its MACs / (its cycles x peak MACs
    per cycle)."""
    macs: dict[str, int] = {}
    cycles: dict[str, int] = {}
    for layer in est["layers"]:
        if layer["op"] == Opcode.CONV.name:
            kind = layer_kind(layer)
            macs[kind] = macs.get(kind, 0) + layer["macs"]
            cycles[kind] = cycles.get(kind, 0) + layer["cycles"]
    return {kind: macs[kind] / (cycles[kind] * est["peak_macs_per_cycle"]) for kind in macs if cycles[kind]}


def summary(model: str, est: dict) -> dict:
    """The figures reported for one model on one board, from its estimate."""
    return {"model": model, "board": est["board"], "kind": KIND, "schedule": est["schedule"],
            **{k: est[k] for k in CLOCK_FIELDS},
            "fps": est["fps"], "cycles": est["cycles"], "gmac": round(est["macs"] / 1e9, 4),
            "peak_macs_per_cycle": est["peak_macs_per_cycle"],
            "overall_pe_utilization": est["overall_pe_utilization"], "utilization": est["utilization"],
            "cycle_shares": {k: round(v, 4) for k, v in cycle_shares(est).items()},
            "conv_utilization": {k: round(v, 4) for k, v in kind_utilization(est).items()}}


def targets(rows: list[dict]) -> list[dict]:
    """Each target with the estimated value and whether it is met (None: the model was not estimated on that
    board): the fps targets, then the MAC-weighted utilisation of every estimated model on every board."""
    by_key = {(r["model"], r["board"]): r for r in rows}
    out = []
    for t in FPS_TARGETS:
        row = by_key.get((t.model, t.board))
        out.append({"model": t.model, "board": t.board, "figure": "fps", "target": t.fps,
                    "value": row["fps"] if row else None, "met": row["fps"] >= t.fps if row else None,
                    **{k: row[k] if row else None for k in CLOCK_FIELDS}})
    for r in rows:
        out.append({"model": r["model"], "board": r["board"], "figure": "utilization", "target": UTILIZATION_TARGET,
                    "value": r["utilization"], "met": r["utilization"] >= UTILIZATION_TARGET,
                    **{k: r[k] for k in CLOCK_FIELDS}})
    return out


def clock_words(figure: dict) -> str:
    """The clock of a figure with where it comes from: its label without the command that would refine it (the
    page lists the full labels)."""
    return f"{figure['clock_mhz']:g} MHz, {figure['clock_label'].split(': run `')[0]}"


def _target_line(t: dict) -> str:
    what = (f"{t['model']} >= {t['target']:g} fps on {t['board']}" if t["figure"] == "fps" else
            f"{t['model']} MAC-weighted PE utilisation >= {100 * t['target']:.0f}% on {t['board']}")
    if t["met"] is None:
        return f"{what}: not estimated (board not run)"
    value = f"{t['value']:g} fps" if t["figure"] == "fps" else f"{100 * t['value']:.1f}%"
    verdict = "met" if t["met"] else "**not met**"
    return f"{what}: {verdict}, {value} (estimated, at {clock_words(t)})"


def markdown(result: dict) -> str:
    """The results as a page: the targets, one row per board and model, the cycle shares and the clocks."""
    rows = result["rows"]
    lines = ["# Benchmark detectors on every board (estimated)", ""]
    if "command" in result:
        lines += [f"`{result['command']}`, run {result['measured']} on {result['machine']} ({result['cpus']} CPUs, "
                  f"load average {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} after; the "
                  "figures are estimated and do not depend on it).", ""]
    lines += ["All figures are estimated by the performance model (rtl schedule; fabric only, CPU nodes not "
              "included), at the clock in each row: the board clock only "
              "where a stored timing estimate of the design clears it, otherwise the assumed board clock or the "
              "clock the estimated Fmax supports (docs/timing.md). *MAC-weighted*: each CONV's PE utilisation "
              "weighted by its MACs; *overall*: all MACs / (all cycles x peak MACs per cycle).", "",
              "## Targets", "", *[f"- {_target_line(t)}" for t in result["targets"]], "",
              "## Per board and model", "",
              "| board | model | clock | fps | cycles/frame | GMAC/frame | peak MACs/cycle | overall PE utilisation | "
              "MAC-weighted PE utilisation |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['board']} | {r['model']} | {clock_words(r)} | {r['fps']:g} | "
              f"{r['cycles']:,} | {r['gmac']:.3f} | {r['peak_macs_per_cycle']} | "
              f"{100 * r['overall_pe_utilization']:.1f}% | {100 * r['utilization']:.1f}% |" for r in rows]
    kinds = (*LAYER_KINDS, OVERHEAD)
    lines += ["", "## Share of cycles per layer kind (estimated)", "",
              "CONV rows give the PE utilisation within that dataflow's cycles in brackets.", "",
              "| board | model | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for r in rows:
        cells = []
        for k in kinds:
            cell = f"{100 * r['cycle_shares'].get(k, 0.0):.1f}%"
            if k in r["conv_utilization"]:
                cell += f" ({100 * r['conv_utilization'][k]:.0f}%)"
            cells.append(cell)
        lines.append(f"| {r['board']} | {r['model']} | " + " | ".join(cells) + " |")
    labels = sorted({f"{r['board']}: {r['clock_mhz']:g} MHz, {r['clock_label']}" for r in rows})
    lines += ["", "## Clocks", "", *[f"- {label}" for label in labels]]
    return "\n".join(lines) + "\n"


def run(boards: list[str]) -> dict:
    """Every model compiled for every board in ``boards``; the summary rows and the targets."""
    from shiftpu.compiler.driver import compile_model

    rows = []
    for model, (title, build) in MODELS.items():
        print(f"{model}: writing {title} ...", flush=True)
        proto = build()
        for board in boards:
            row = summary(model, compile_model(proto, board).estimate)
            print(f"{board} {model}: {row['fps']:g} fps, MAC-weighted PE utilisation {100 * row['utilization']:.1f}% "
                  f"(estimated, at {clock_words(row)})", flush=True)
            rows.append(row)
    return {"kind": KIND, "models": {k: title for k, (title, _) in MODELS.items()}, "rows": rows,
            "targets": targets(rows)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", nargs="+", default=list(BOARDS), choices=BOARDS)
    ap.add_argument("--write", action="store_true",
                    help="store the results in bench/results/detectors.json and detectors.md")
    args = ap.parse_args(argv)
    load_before = [round(v, 2) for v in os.getloadavg()]
    measured = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = run(args.boards)
    boards = f" --boards {' '.join(args.boards)}" if args.boards != list(BOARDS) else ""
    result |= {"command": f"python -m bench.detectors{boards}{' --write' if args.write else ''}",
               "measured": measured, "machine": platform.machine(), "cpus": os.cpu_count(),
               "load_before": load_before, "load_after": [round(v, 2) for v in os.getloadavg()]}
    md = markdown(result)
    if args.write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "detectors.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "detectors.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
