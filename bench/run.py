"""Compiler and golden-model benchmarks on a 512x512 one-stage detector; modelled fps and utilisation per board.

Writes bench/results/compiler.json and bench/results/compiler.md. Times are measured on this machine
(wall clock, best of several runs); fps and utilisation on the boards are estimated by the performance model.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from shiftpu.boards import board_names

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BOARDS = tuple(board_names())
SIZE = 512
FRAMES = 5


def detector512():
    """The paper-scale detector of examples/detector512.py: 512x512, 20 classes, random shift weights,
    activation scales calibrated on generated images (only speed is measured on it)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from examples.detector512 import write_detector512

    with tempfile.TemporaryDirectory() as tmp:
        model = write_detector512(Path(tmp) / "detector512.onnx")
    return model, np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)


def run(with_rtl: bool = True) -> dict:
    import numpy as np

    from shiftpu.boards import load_board
    from shiftpu.compiled.cpu_timing import measure_cpu_times
    from shiftpu.compiled.pipeline_stages import schedule_stages
    from shiftpu.compiler.driver import compile_model
    from shiftpu.compiler.estimate import estimate, with_cpu_times
    from shiftpu.compiler.perf import Schedule
    from shiftpu.sw.executor import Executor

    model, x = detector512()
    result: dict = {"model": f"detector {SIZE}x{SIZE} (examples/detector512.py)", "machine": platform.processor() or
                    platform.machine(), "cpus": os.cpu_count(), "boards": {}}
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            r = compile_model(model, "ultra96v2", Path(tmp) / "out")
            times.append(time.perf_counter() - t0)
        result["compile_s"] = {"value": round(min(times), 3), "kind": "measured", "unit": "s", "target": 5.0}
        result["macs"] = r.estimate["macs"]
        ex = Executor(Path(tmp) / "out")
        ref = ex.run(x)
        frame_times = []
        for _ in range(FRAMES):
            t0 = time.perf_counter()
            out = ex.run(x)
            frame_times.append(time.perf_counter() - t0)
        assert all(np.array_equal(a, b) for a, b in zip(out, ref, strict=True))
        # the CPU regions, timed on this frame's own values (not random ones)
        cpu = measure_cpu_times(ex.compiled, values=ex.execute(ex.prepare(x)).values)
        result["cpu"] = cpu.to_json()
        best = min(frame_times)
        result["golden_fps"] = {"value": round(1.0 / best, 2), "kind": "measured", "unit": "frames/s", "target": 1.0,
                                "frames": FRAMES, "median_s": round(sorted(frame_times)[FRAMES // 2], 3)}
        for board in BOARDS:
            b = load_board(board)
            r = compile_model(model, board)
            progs = [img.instructions for img in r.images]
            result["boards"][board] = {}
            for sched in Schedule:
                est = estimate(progs, b.accel, b.ddr_bytes_per_cycle, {}, board, sched, b.ddr_read_latency_cycles)
                result["boards"][board][sched.value] = {
                    "fps": est["fps"], "cycles": est["cycles"], "utilization": est["utilization"],
                    "ddr_mib": round(est["ddr_bytes"] / 2**20, 2), "kind": "estimated", "target_utilization": 0.85,
                    "clock_mhz": est["clock_mhz"], "clock_source": est["clock_source"],
                    "clock_label": est["clock_label"], "frame": with_cpu_times(est, cpu, schedule_stages(r.manifest))["frame"]}
    if with_rtl:
        result["perf_vs_rtl"] = perf_vs_rtl()
    return result


def perf_vs_rtl() -> dict:
    """Estimated (rtl schedule) against RTL-simulated cycles: single layers and a whole small detector."""
    import numpy as np
    sys.path.insert(0, str(ROOT / "tests"))
    from qdq_graphs import QdqBuilder, detector, random_input, run_onnxruntime

    from shiftpu.arch.isa import Dataflow
    from shiftpu.boards import load_board
    from shiftpu.compiler.driver import compile_model
    from shiftpu.errors import ShiftpuError
    from shiftpu.sim.rtl import RtlAccelerator
    from shiftpu.sw.executor import Executor

    def layer(shape, build):
        def make():
            b = QdqBuilder(shape, seed=1)
            b.output(build(b))
            return b.model()
        return make

    spatial = frozenset({Dataflow.PIXEL, Dataflow.DEPTHWISE})
    channel = frozenset({Dataflow.INPUT_CHANNEL})
    cases = [
        ("conv3x3 16->16 32x32", layer((16, 32, 32), lambda b: b.conv(b.x, 16, 3, act="relu")), spatial),
        ("conv3x3 s2 3->16 64x64", layer((3, 64, 64), lambda b: b.conv(b.x, 16, 3, stride=2, act="leaky")), spatial),
        ("conv1x1 64->32 16x16", layer((64, 16, 16), lambda b: b.conv(b.x, 32, 1, act="relu")), spatial),
        ("depthwise 3x3 32 16x16", layer((32, 16, 16), lambda b: b.conv(b.x, 32, 3, groups=32, act="relu")), spatial),
        ("conv5x5 s2 12->24 20x45", layer((12, 20, 45), lambda b: b.conv(b.x, 24, 5, stride=2, act="relu")), spatial),
        ("input-channel conv3x3 64->32 8x8", layer((64, 8, 8), lambda b: b.conv(b.x, 32, 3, act="relu")), channel),
        ("input-channel conv1x1 32->16 4x20", layer((32, 4, 20), lambda b: b.conv(b.x, 16, 1, act="leaky")), channel),
        ("maxpool 3x3 s1 p1 8 20x40", layer((8, 20, 40), lambda b: b.maxpool(b.x, 3, 1, 1)), spatial),
        ("move + add 16 32x32", layer((16, 32, 32), lambda b: b.add(b.x, b.requant(b.x, 1))), spatial),
        ("upsample 16 16x16", layer((16, 16, 16), lambda b: b.resize(b.x)), spatial),
        ("whole detector 32x32", lambda: detector(32, seed=0), frozenset(Dataflow)),
    ]
    rows = []
    board = load_board("pynq-z2")
    late_rtl = RtlAccelerator.with_read_latency(board.accel, board.ddr_read_latency_cycles)
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, make, dataflows) in enumerate(cases):
            m = make()
            x = random_input(m)
            out = Path(tmp) / f"case{k}"
            r = compile_model(m, "pynq-z2", out, dataflows=dataflows)
            try:
                ex = Executor(out, "rtl")
                frame = ex.execute(ex.prepare(x))
            except ShiftpuError as e:
                return {"status": f"not run: {e}"}
            exact = all(np.array_equal(a, c) for a, c in zip(ex.finish(frame), run_onnxruntime(m, x), strict=True))
            rtl = sum(s.cycles for s in frame.stats)
            est = r.simulation_estimate()["cycles"]
            # again with every read as late as the board's DDR (the compiled RAM's extra latency)
            late = Executor(out, late_rtl)
            frame_late = late.execute(late.prepare(x))
            exact_late = all(np.array_equal(a, c) for a, c in
                             zip(late.finish(frame_late), run_onnxruntime(m, x), strict=True))
            rtl_late = sum(s.cycles for s in frame_late.stats)
            est_late = r.simulation_estimate(read_latency=late_rtl.read_latency)["cycles"]
            rows.append({"layer": name, "rtl_cycles_measured": rtl, "estimated_cycles": est,
                         "error": round(est / rtl - 1, 4), "bit_exact": exact and exact_late,
                         "ddr_latency_rtl_cycles_measured": rtl_late, "ddr_latency_estimated_cycles": est_late,
                         "ddr_latency_error": round(est_late / rtl_late - 1, 4)})
    return {"status": "ran", "max_abs_error": max(abs(r["error"]) for r in rows),
            "ddr_latency_cycles": late_rtl.read_latency,
            "ddr_latency_max_abs_error": max(abs(r["ddr_latency_error"]) for r in rows), "layers": rows}


def markdown(r: dict) -> str:
    from shiftpu.boards.clock import ClockSource

    lines = [f"# Compiler and golden-model benchmark: {r['model']}", "",
             f"Machine: {r['machine']}, {r['cpus']} CPUs. {r['macs'] / 1e9:.3f} GMAC per frame.", "",
             "| figure | value | kind | target |", "|---|---|---|---|",
             f"| compile time | {r['compile_s']['value']} s | measured | < 5 s |",
             f"| golden model throughput | {r['golden_fps']['value']} frames/s | measured | >= 1 frame/s |", "",
             "Estimated by the performance model (fabric only, CPU nodes not included). *rtl*: the generated RTL,",
             "whose CONV engine overlaps the line-buffer loads and the write-back with the PE array where the buffers",
             "allow and queues its reads ahead (docs/rtl.md); *overlapped*: a coarser model, every load and store after the",
             "prologue hidden behind the PE array but reads and writes sharing one AXI beat per cycle.", "",
             "fps at the clock each board's timing estimate supports: the board clock only where a stored estimate",
             "of the design clears it (docs/timing.md).", "",
             "| board | schedule | clock | fps | cycles/frame | MAC-weighted PE utilisation | DDR MiB/frame |",
             "|---|---|---|---|---|---|---|"]
    for name, by_sched in r["boards"].items():
        for sched, b in by_sched.items():
            clock = (f"{b['clock_mhz']:g} MHz, {ClockSource(b['clock_source']).words}" if "clock_source" in b
                     else "board clock, not recorded")
            lines.append(f"| {name} | {sched} | {clock} | {b['fps']} | {b['cycles']} | {100 * b['utilization']:.1f}% | "
                         f"{b['ddr_mib']} |")
    lines += cpu_markdown(r)
    labels = sorted({f"{name}: {b['clock_label']}" for name, by_sched in r["boards"].items()
                     for b in by_sched.values() if "clock_label" in b})
    if labels:
        lines += ["", "Clocks:", "", *[f"- {label}" for label in labels]]
    rtl = r["perf_vs_rtl"]
    lines += ["", "Performance model (rtl schedule) against the RTL simulation (cycles measured by the accelerator's "
              "CYCLES register under Verilator, pynq-z2 configuration):", ""]
    if rtl["status"] != "ran":
        lines.append(rtl["status"])
    else:
        lines += [f"*AxiRam*: cocotbext-axi's RAM (read latency 2 cycles); *board DDR latency*: the compiled RAM "
                  f"answering every read {rtl['ddr_latency_cycles']} cycles late, the pynq-z2's 200 ns at 125 MHz "
                  "(what its board estimate charges).", "",
                  "| layer | RTL cycles, AxiRam (measured) | estimated | error | RTL cycles, board DDR latency "
                  "(measured) | estimated | error | bit-exact |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['layer']} | {x['rtl_cycles_measured']} | {x['estimated_cycles']} | "
                  f"{100 * x['error']:+.1f}% | {x['ddr_latency_rtl_cycles_measured']} | "
                  f"{x['ddr_latency_estimated_cycles']} | {100 * x['ddr_latency_error']:+.1f}% | {x['bit_exact']} |"
                  for x in rtl["layers"]]
    return "\n".join(lines) + "\n"


def cpu_markdown(r: dict) -> list[str]:
    """The CPU regions' time per region and node, and per board the frame: fabric (estimated) and CPU (measured
    on this machine) sequentially and pipelined."""
    if "cpu" not in r:
        return []
    cpu = r["cpu"]
    lines = ["", f"CPU regions and nodes ({cpu['runtime']}; {cpu['label']}; this machine, not the boards' ARM cores):",
             "", "| region | node | op | ms |", "|---|---|---|---|"]
    for reg in cpu["regions"]:
        lines.append(f"| {reg['index']} | whole region (one session call) | | {reg['median_ms']} |")
        lines += [f"| {reg['index']} | {n['name']} | {n['op']} | {'n/a' if n['median_ms'] is None else n['median_ms']} |"
                  for n in reg["nodes"]]
    lines += ["", "Frame time: fabric (estimated, at each board's clock above) + CPU regions (measured here) in "
              "sequence, and pipelined (each CPU region a stage of its own beside the fabric stages, which share the "
              "accelerator: a frame leaves every max(fabric total, each region) ms; estimated; pre- and "
              "postprocessing not included):", "",
              "| board | schedule | fabric ms (estimated) | CPU ms (measured here) | sequential ms | pipelined ms | "
              "pipelined fps | bound by | bottleneck stage |", "|---|---|---|---|---|---|---|---|---|"]
    for name, by_sched in r["boards"].items():
        for sched, b in by_sched.items():
            if "frame" in b:
                f = b["frame"]
                lines.append(f"| {name} | {sched} | {f['fabric_ms']} | {f['cpu_ms']} | {f['sequential_ms']} | "
                             f"{f['pipelined_ms']} | {f['pipelined_fps']} | {f['bound_by']} | "
                             f"{f.get('bottleneck', f['bound_by'])} |")
    return lines


PARTS = ("timing", "compiler", "rtl", "rtl_speed", "pipeline")
#: Parts run without --parts: the timing estimates take hours on 2 cores and are run when asked.
DEFAULT_PARTS = ("compiler", "rtl", "rtl_speed", "pipeline")


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="shiftpu benchmarks (results in bench/results/)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS),
                    help="timing (only when named; run first): every board's timing estimate, stored for the fps "
                    "figures (bench/timing.py); compiler: compile time, golden throughput, board estimates, CPU regions' time "
                    "(measured here) and the pipelined frame; rtl: the "
                    "performance model against the RTL simulation; rtl_speed: the RTL simulation's speed, its frame against "
                    "the golden model's and cycles/s on every board config (bench/rtl_speed.py; builds each config); "
                    "pipeline: the CPU/fabric pipeline (a 10,000-frame soak). Parts not run keep their last results.")
    parts = set(ap.parse_args(argv).parts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if "timing" in parts:
        from bench import timing

        timing.main([])
    path = RESULTS / "compiler.json"
    if parts & {"compiler", "rtl"}:
        old = json.loads(path.read_text()) if path.exists() else {}
        r = run(with_rtl="rtl" in parts) if "compiler" in parts else old
        if "rtl" in parts and "compiler" not in parts:
            r["perf_vs_rtl"] = perf_vs_rtl()
        elif "rtl" not in parts and "perf_vs_rtl" in old:
            r["perf_vs_rtl"] = old["perf_vs_rtl"]
        path.write_text(json.dumps(r, indent=1) + "\n")
        md = markdown(r)
        (RESULTS / "compiler.md").write_text(md)
        print(md)
    if "rtl_speed" in parts:
        from bench import rtl_speed

        rtl_speed.main([])
    if "pipeline" in parts:
        from bench import pipeline_bench

        pipeline_bench.main(["--out", str(RESULTS / "pipeline.json")])


if __name__ == "__main__":
    main()
