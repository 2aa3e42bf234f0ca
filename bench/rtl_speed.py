"""RTL simulation speed: the RTL frame against the golden model's frame, and simulated cycles per second per board.

    python -m bench.rtl_speed [--parts demo boards sweep] [--boards B ...] [--frames N] [--no-cocotb]

Measured in one run on this machine (wall clock; the load average is recorded with the figures):

* the demo detector (shiftpu/models/shapes_detector.onnx) compiled for the Ultra96-V2: the golden model's frame
  (best of several), the RTL frame on the native backend (its build and first load timed apart; AxiRam timing, as
  the demo's first RTL frame, and the compiled RAM answering as late as the board's DDR, as its second), the RTL
  frame on the cocotb backend the native one replaces (same cycles), and the ratio RTL frame / golden frame;
* for each board's default config: the native build time and the cycles simulated per second on the demo detector
  compiled for that board;
* ``sweep`` (only when named): the Ultra96-V2 config built with each of several C++ optimisation levels and
  Verilator thread counts, build time against frame time (the choice behind
  shiftpu.sim.rtl.native.NativeBuildOptions).

Writes bench/results/rtl_speed.json and bench/results/rtl_speed.md; parts not run keep their last results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEMO = ROOT / "shiftpu" / "models" / "shapes_detector.onnx"
DEMO_BOARD = "ultra96v2"
#: RTL frame / golden frame the native backend must stay within on the demo detector.
TARGET_RATIO = 100.0
#: Frames timed on the golden model (best of) and on the native RTL backend (median and best).
GOLDEN_FRAMES = 20
RTL_FRAMES = 5
#: Build options compared by --sweep-builds: (C++ optimisation of the per-cycle code, Verilator threads).
SWEEP = (("-O1", 1), ("-O2", 1), ("-O3", 1), ("-Os", 1), ("-O2", 2))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the cocotb backend runs a simulator process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _demo_input() -> np.ndarray:
    from shiftpu.shapes_dataset import make_split
    from shiftpu.sw.preprocess import image_to_tensor

    frame = make_split("test", 1).images[0]
    return image_to_tensor((np.clip(frame.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8))


def _time_frames(executor, x: np.ndarray, frames: int) -> dict:
    """Wall and CPU seconds of whole frames (``Executor.run``: quantise, CPU regions, fabric segments), and for an RTL
    backend the cycles and the seconds inside its runs."""
    walls, cpus, sim_walls, cycles = [], [], [], 0
    for _ in range(frames):
        c0, t0 = _cpu_seconds(), time.perf_counter()
        out = executor.run(x)
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - c0)
        run = getattr(executor.accel, "last_run", None)
        if run is not None:
            sim_walls.append(run.wall_seconds)
            cycles = run.cycles
    walls_sorted = sorted(walls)
    r = {"frames": frames, "best_s": round(walls_sorted[0], 5), "median_s": round(walls_sorted[frames // 2], 5),
         "cpu_median_s": round(sorted(cpus)[frames // 2], 5), "outputs": out}
    if sim_walls:
        sim = sorted(sim_walls)[frames // 2]
        r.update(cycles=cycles, run_median_s=round(sim, 5), cycles_per_s_in_run=round(cycles / sim),
                 cycles_per_s_frame=round(cycles / r["median_s"]))
    return r


def _rtl(config, board=None, **kwargs):
    """An RTL backend and its build time (0 when the build was reused)."""
    from shiftpu.sim.rtl import RtlAccelerator

    accel = (RtlAccelerator(config, **kwargs) if board is None
             else RtlAccelerator.with_read_latency(config, board.ddr_read_latency_cycles, **kwargs))
    t0 = time.perf_counter()
    build = accel.build
    return accel, {"build_s": round(build.build_seconds, 1), "build_reused": build.reused,
                   "build_check_s": round(time.perf_counter() - t0, 2)}


def demo_frames(work: Path, frames: int, with_cocotb: bool) -> dict:
    """The demo detector on the Ultra96-V2 config: golden frame, native and cocotb RTL frames, their ratio."""
    from shiftpu.boards import load_board
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sim.rtl import SimBackend, SimMemory
    from shiftpu.sw.executor import Executor

    board = load_board(DEMO_BOARD)
    compiled = work / "demo"
    compile_model(DEMO, DEMO_BOARD, compiled)
    x = _demo_input()
    golden = Executor(compiled, backend="golden")
    golden.run(x)
    g = _time_frames(golden, x, GOLDEN_FRAMES)
    result: dict = {"model": DEMO.name, "board": DEMO_BOARD, "load_before": _load(),
                    "golden": {k: v for k, v in g.items() if k != "outputs"}}
    rows = [("native", "axiram", SimBackend.NATIVE, {}), ("native", "compiled+ddr", SimBackend.NATIVE,
                                                         {"board": board})]
    if with_cocotb:
        rows.append(("cocotb", "axiram", SimBackend.COCOTB, {}))
    for backend_name, memory, backend, extra in rows:
        accel, info = _rtl(board.accel, backend=backend, **extra)
        ex = Executor(compiled, backend=accel)
        c0, t0 = _cpu_seconds(), time.perf_counter()
        first = ex.run(x)
        info["first_frame_s"] = round(time.perf_counter() - t0, 3)
        info["first_frame_cpu_s"] = round(_cpu_seconds() - c0, 3)
        timed = _time_frames(ex, x, 1 if backend is SimBackend.COCOTB else frames)
        same = all(np.array_equal(a, b) for a, b in zip(timed.pop("outputs"), g["outputs"], strict=True))
        info.update(timed, equals_golden=same and all(
            np.array_equal(a, b) for a, b in zip(first, g["outputs"], strict=True)),
            memory=memory if accel.memory is SimMemory.AXI_RAM else f"compiled, read latency {accel.read_latency}",
            ratio_to_golden=round(timed["median_s"] / g["best_s"], 1))
        result[f"{backend_name}_{memory}"] = info
    native = result["native_axiram"]
    result["ratio"] = {"value": native["ratio_to_golden"], "target": TARGET_RATIO, "kind": "measured",
                       "meets_target": native["ratio_to_golden"] <= TARGET_RATIO}
    if "cocotb_axiram" in result:
        cocotb = result["cocotb_axiram"]
        result["speedup_vs_cocotb"] = round(cocotb["median_s"] / native["median_s"], 1)
        result["same_cycles_as_cocotb"] = cocotb["cycles"] == native["cycles"]
    result["load_after"] = _load()
    return result


def board_speeds(work: Path, boards: list[str], frames: int) -> dict:
    """Each board's default config: native build time, cycles/s on the demo detector compiled for it."""
    from shiftpu.boards import load_board
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sw.executor import Executor

    x = _demo_input()
    out = {}
    for name in boards:
        board = load_board(name)
        cfg = board.accel
        print(f"board {name}: {cfg.array_shape} PEs, {cfg.axi_data_bits}-bit bus", flush=True)
        load = _load()
        accel, info = _rtl(cfg)
        folder = work / f"demo-{name}"
        compile_model(DEMO, name, folder)
        ex = Executor(folder, backend=accel)
        ex.run(x)
        timed = _time_frames(ex, x, frames)
        timed.pop("outputs")
        out[name] = {"array": cfg.array_shape, "bus_bits": cfg.axi_data_bits, "load_before": load,
                     **info, **timed}
    return out


def sweep_builds(work: Path, frames: int) -> list[dict]:
    """The Ultra96-V2 config built with each of SWEEP's options (in a scratch build folder): build time, frame time."""
    from shiftpu.boards import load_board
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sim.rtl.native import NativeBuildOptions
    from shiftpu.sw.executor import Executor

    cfg = load_board(DEMO_BOARD).accel
    folder = work / "demo-sweep"
    compile_model(DEMO, DEMO_BOARD, folder)
    x = _demo_input()
    rows = []
    for opt_fast, threads in SWEEP:
        options = NativeBuildOptions(opt_fast=opt_fast, threads=threads)
        print(f"build options: {options.to_dict()}", flush=True)
        load = _load()
        accel, info = _rtl(cfg, build_root=work / "builds", native_options=options)
        ex = Executor(folder, backend=accel)
        ex.run(x)
        timed = _time_frames(ex, x, frames)
        timed.pop("outputs")
        rows.append({"opt_fast": opt_fast, "opt_slow": options.opt_slow, "opt_global": options.opt_global,
                     "threads": threads, "load_before": load, **info, **timed})
    return rows


def markdown(r: dict) -> str:
    lines = ["# RTL simulation speed", "",
             f"Machine: {r['machine']}, {r['cpus']} CPUs, shared with other jobs (the load average over 1/5/15 min is "
             "recorded with each part). Times are wall clock unless said; all figures measured (`python -m "
             "bench.rtl_speed`).", ""]
    d = r.get("demo")
    if d:
        g = d["golden"]
        lines += [f"## Demo detector on the {d['board']} config", "",
                  f"Measured {d.get('date', '')}: {d['model']}, one 64x64 frame through `Executor.run` (quantise, "
                  f"CPU regions, fabric segments). Load average {d['load_before']} before, {d['load_after']} after.",
                  "",
                  "| backend | memory | frame (median) | frame (best) | CPU per frame | cycles | cycles/s in the run | "
                  "x golden frame | build | first frame (load included) | equals golden |",
                  "|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| golden model | - | {g['median_s'] * 1e3:.2f} ms | {g['best_s'] * 1e3:.2f} ms | "
                  f"{g['cpu_median_s'] * 1e3:.2f} ms | - | - | 1 | - | - | - |"]
        for key in ("native_axiram", "native_compiled+ddr", "cocotb_axiram"):
            if key not in d:
                continue
            x = d[key]
            build = "reused" if x["build_reused"] else f"{x['build_s']:.0f} s"
            lines.append(f"| {key.split('_')[0]} | {x['memory']} | {x['median_s']:.3f} s | {x['best_s']:.3f} s | "
                         f"{x['cpu_median_s']:.3f} s | {x['cycles']} | {x['cycles_per_s_in_run']:,} | "
                         f"{x['ratio_to_golden']} | {build} | {x['first_frame_s']:.2f} s | {x['equals_golden']} |")
        ratio = d["ratio"]
        lines += ["", f"RTL frame (native, AxiRam timing) / golden frame (best): **{ratio['value']}x** (target <= "
                  f"{ratio['target']:g}x: {'met' if ratio['meets_target'] else 'NOT met'})."]
        if "speedup_vs_cocotb" in d:
            lines.append(f"Native against cocotb, same frame and memory timing: **{d['speedup_vs_cocotb']}x** faster; "
                         f"same cycle count: {d['same_cycles_as_cocotb']}.")
    boards = r.get("boards")
    if boards:
        lines += ["", "## Each board's default config (native backend, AxiRam timing)", "",
                  f"Measured {r.get('boards_date', '')}: the demo detector compiled for each board; cycles/s: "
                  "simulated cycles per wall second of the run (the C++ loop) and of the whole frame.", "",
                  "| board | PE array | bus | build | frame (median) | cycles | cycles/s in the run | cycles/s per frame "
                  "| load before |", "|---|---|---|---|---|---|---|---|---|"]
        for name, b in boards.items():
            build = "reused" if b["build_reused"] else f"{b['build_s']:.0f} s"
            lines.append(f"| {name} | {b['array']} | {b['bus_bits']} bits | {build} | {b['median_s']:.3f} s | "
                         f"{b['cycles']} | {b['cycles_per_s_in_run']:,} | {b['cycles_per_s_frame']:,} | "
                         f"{b['load_before']} |")
    missing = r.get("boards_not_measured")
    if missing:
        lines += ["", "Not measured: " + "; ".join(f"{k} ({v})" for k, v in missing.items()) + "."]
    sweep = r.get("build_options")
    if sweep:
        lines += ["", f"## Build options ({DEMO_BOARD} config)", "",
                  f"Measured {r.get('build_options_date', '')}. C++ optimisation of the model's per-cycle code (`OPT_FAST`; set-up code at `OPT_SLOW`, the "
                  "runtime and harness at `OPT_GLOBAL`) and Verilator threads, each built from scratch on 2 shared "
                  "cores. Frame: the demo detector, native backend, AxiRam timing.", "",
                  "| OPT_FAST | threads | build | frame (median) | CPU per frame | cycles/s in the run | load before |",
                  "|---|---|---|---|---|---|---|"]
        for s in sweep:
            lines.append(f"| {s['opt_fast']} | {s['threads']} | {s['build_s']:.0f} s | {s['median_s']:.3f} s | "
                         f"{s['cpu_median_s']:.3f} s | {s['cycles_per_s_in_run']:,} | {s['load_before']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from shiftpu.boards import board_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", choices=("demo", "boards", "sweep"), default=["demo", "boards"],
                    help="demo: golden and RTL frames of the demo detector; boards: cycles/s of each board config; "
                    "sweep: build options compared (several builds). Parts not run keep their last results.")
    ap.add_argument("--boards", nargs="+", default=list(board_names()), choices=list(board_names()),
                    help="board configs whose cycles/s to measure (each needs a native build)")
    ap.add_argument("--frames", type=int, default=RTL_FRAMES, help="RTL frames timed per backend")
    ap.add_argument("--no-cocotb", action="store_true", help="skip the cocotb frame (and its build)")
    args = ap.parse_args(argv)
    path = RESULTS / "rtl_speed.json"
    r = json.loads(path.read_text()) if path.exists() else {}
    r.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count())
    now = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "demo" in args.parts:
            r["demo"] = demo_frames(work, args.frames, not args.no_cocotb) | {"date": now}
        if "boards" in args.parts:
            r["boards"] = board_speeds(work, args.boards, args.frames)
            r["boards_date"] = now
            r["boards_not_measured"] = {b: "not asked for in this run" for b in board_names()
                                        if b not in args.boards}
        if "sweep" in args.parts:
            r["build_options"] = sweep_builds(work, args.frames)
            r["build_options_date"] = now
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1) + "\n")
    md = markdown(r)
    (RESULTS / "rtl_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
