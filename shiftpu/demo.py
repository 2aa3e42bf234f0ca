"""`shiftpu demo` (`make demo`): the whole flow on the shipped shape detector, from ONNX to detections, in minutes.

Steps: check the model; compile it for the default board; run the generated shapes test images through the
CPU/fabric pipeline on the golden model; run onnxruntime on the same frames and show the outputs are equal bit
for bit (hence the same mAP); run a frame on the RTL simulation (Verilator) and show it equals the golden model;
model fps and power on every board (at the clock each board's timing estimate supports, docs/timing.md); write
detections, drawn images and an HTML report. Everything it needs ships in the package, so it runs from an installed
wheel in any folder; the HTML report and the Gantt chart need the "report" extra (matplotlib), the RTL frames the
"hw" extra. A failed demo leaves no output behind (an earlier one is put back).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnx
from PIL import Image
from rich.console import Console
from rich.table import Table

from shiftpu.boards import DEFAULT_BOARD
from shiftpu.errors import ShiftpuError

MODEL = Path(__file__).parent / "models" / "shapes_detector.onnx"
SIDECAR = MODEL.with_suffix(".json")
#: The file that marks a demo's output folder (written last).
SUMMARY = "summary.json"


class DemoError(ShiftpuError):
    """The demo cannot run as asked."""

console = Console()


def _step(text: str) -> None:
    console.print(f"[bold cyan]>>[/bold cyan] {text}")


def _onnxruntime_outputs(model_path: Path, frames: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_path), opts)
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: f})[0] for f in frames]


def _test_split(n: int):
    """The generated shapes test split (deterministic from fixed seeds)."""
    from shiftpu.shapes_dataset import make_split

    return make_split("test", n)


def _rtl_with_board_latency(compiled_dir: Path, result, board, x: np.ndarray, golden_out: np.ndarray,
                            summary: dict, build_dir: Path | None = None) -> None:
    """Frame 0 once more on the RTL, the simulated DDR answering every read as late as the board's: the cycles
    measured then stand beside the board estimate, which charges that latency."""
    from shiftpu.arch.config import AccelConfig
    from shiftpu.sim.rtl import RtlAccelerator
    from shiftpu.sw.executor import Executor

    lat = board.ddr_read_latency_cycles
    _step(f"frame 0 again on the RTL, the simulated DDR answering reads as late as the {board.name}'s "
          f"({board.ddr_read_latency_ns:g} ns = {lat} cycles)")
    accel = RtlAccelerator.with_read_latency(AccelConfig.from_dict(result.manifest["config"]), lat,
                                             build_root=build_dir)
    ex = Executor(compiled_dir, backend=accel)
    frame = ex.execute(ex.prepare(x))
    equal = np.array_equal(ex.finish(frame)[0], golden_out)
    cycles = sum(s.cycles or 0 for s in frame.stats)
    est = result.simulation_estimate(read_latency=accel.read_latency)["cycles"]
    summary["rtl_board_latency"] = {"read_latency_cycles": lat, "equals_golden": equal, "cycles_measured": cycles,
                                    "cycles_estimated": est, "board_cycles_estimated": result.estimate["cycles"]}
    console.print(f"RTL frame 0 with the board's DDR latency: {'equal to' if equal else 'DIFFERENT from'} the golden "
                  f"model; {cycles} cycles (measured, RTL simulation) vs {est} (estimated; the board estimate, "
                  f"also held to its DDR bandwidth: {result.estimate['cycles']})")
    if not equal:
        raise ShiftpuError("RTL simulation with the board's DDR latency and golden model differ on frame 0")


def _rtl_per_layer(compiled_dir: Path, result, board, x: np.ndarray, golden_out: np.ndarray, summary: dict,
                   build_dir: Path | None = None) -> None:
    """Frame 0 once more on the RTL, one fabric instruction at a time (each run alone as a one-instruction program on
    the arena the instructions before it left), the simulated DDR as late as the board's: the cycles of every layer,
    measured, beside the performance model of the same one-instruction program."""
    from shiftpu.arch.config import AccelConfig
    from shiftpu.arch.isa import Instruction, Opcode
    from shiftpu.compiler.estimate import simulation_estimate
    from shiftpu.sim.rtl import RtlAccelerator
    from shiftpu.sw.executor import Executor

    lat = board.ddr_read_latency_cycles
    _step(f"frame 0 layer by layer on the RTL (each instruction alone, the simulated DDR {lat} cycles late): "
          "cycles per layer")
    cfg = AccelConfig.from_dict(result.manifest["config"])
    accel = RtlAccelerator.with_read_latency(cfg, lat, build_root=build_dir)
    ex = Executor(compiled_dir, backend=accel, keep_intermediates=True)
    frame = ex.execute(ex.prepare(x))
    equal = np.array_equal(ex.finish(frame)[0], golden_out)
    programs = ex.compiled.programs()
    instrs = [i for kind, k in ex.steps if kind == "segment"
              for i in programs[ex.manifest["segments"][k]["index"]][:-1]]
    names = {la["layer_id"]: la["name"] for la in ex.manifest["layers"]}
    layers = []
    for instr, stats in zip(instrs, frame.stats, strict=True):
        est = simulation_estimate([[instr, Instruction(Opcode.END)]], cfg, result.manifest["board"],
                                  accel.read_latency)["cycles"]
        layers.append({"layer_id": instr.layer_id, "name": names.get(instr.layer_id, f"layer{instr.layer_id}"),
                       "op": instr.opcode.name, "cycles_measured": stats.cycles, "cycles_estimated": est})
    summary["rtl_layers"] = {"read_latency_cycles": lat, "equals_golden": equal, "layers": layers}
    worst = max(layers, key=lambda la: abs(la["cycles_estimated"] / la["cycles_measured"] - 1))
    console.print(f"RTL layer by layer: {'equal to' if equal else 'DIFFERENT from'} the golden model; "
                  f"{len(layers)} layers, model within {abs(worst['cycles_estimated'] / worst['cycles_measured'] - 1):.2%}"
                  f" of the cycles measured on each (worst: {worst['name']}, {worst['cycles_measured']} measured vs "
                  f"{worst['cycles_estimated']} estimated)", markup=False, highlight=False)
    if not equal:
        raise ShiftpuError("RTL simulation layer by layer and golden model differ on frame 0")


def run_demo(out: Path, board_name: str, n_images: int, rtl_frames: int, build_dir: Path | None = None) -> dict:
    """The demo's steps, writing into ``out``; ``build_dir``: where the RTL build is cached (default: the user's
    cache directory)."""
    from shiftpu.boards import board_names, load_board
    from shiftpu.boards.clock import ClockSource
    from shiftpu.compiler.driver import compile_model
    from shiftpu.compiler.quant.check import check_model
    from shiftpu.sw.bench_run import BenchOptions, run_bench
    from shiftpu.sw.detection import DecodeParams, Detections, decode, mean_average_precision
    from shiftpu.sw.executor import Executor
    from shiftpu.sw.images import write_results
    from shiftpu.sw.pipeline import Pipeline
    from shiftpu.sw.pipeline_model import ModelStages
    from shiftpu.sw.power import estimate_power_at_fps
    from shiftpu.sw.preprocess import image_to_tensor

    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"board": board_name, "model": MODEL.name, "images": n_images}
    meta = json.loads(SIDECAR.read_text())
    classes = list(meta["classes"])
    params = DecodeParams.from_json(SIDECAR)

    _step(f"checking {MODEL.name}: can the accelerator take it whole?")
    report = check_model(onnx.load(str(MODEL)), load_board(board_name).accel)
    console.print("\n".join(report.lines()))

    _step(f"compiling for {board_name}")
    t0 = time.perf_counter()
    compiled_dir = out / "compiled"
    result = compile_model(MODEL, board_name, compiled_dir)
    summary["config_hash"] = result.manifest["config_hash"]
    summary["compile_s_measured"] = round(time.perf_counter() - t0, 3)
    console.print(result.report)

    _step(f"generating {n_images} test images of the shapes data set (PNG, with ground truth)")
    split = _test_split(n_images)
    images = [(np.clip(f.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8) for f in split.images]
    img_dir = out / "test_images"
    img_dir.mkdir(exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(img_dir / f"frame{i:03d}.png")
    (img_dir / "ground_truth.json").write_text(json.dumps(
        {f"frame{i:03d}.png": [{"class": classes[int(c)], "box": [round(float(v), 1) for v in b]}
                               for b, c in zip(bx, lab, strict=True)]
         for i, (bx, lab) in enumerate(zip(split.boxes, split.labels, strict=True))}, indent=1))

    _step(f"detecting objects in {n_images} images through the CPU/fabric pipeline on the golden model")
    executor = Executor(compiled_dir, backend="golden")
    stages = ModelStages(executor, decode_params=params)
    golden = [res for _, res in Pipeline(stages.stages(), depth=2).run(iter(images))]

    _step("running onnxruntime on the same frames")
    ort_outs = _onnxruntime_outputs(compiled_dir / "model.onnx", [image_to_tensor(img) for img in images])
    mismatched = [i for i, (g, r) in enumerate(zip(golden, ort_outs, strict=True))
                  if not np.array_equal(g.outputs[0], r)]
    summary["golden_equals_onnxruntime"] = not mismatched
    if mismatched:
        raise ShiftpuError(f"golden model and onnxruntime differ on frames {mismatched[:10]}")
    console.print(f"golden model == onnxruntime on all {n_images} frames, bit for bit")

    truths = [Detections(b.astype(np.float32), np.ones(len(b), np.float32), lab.astype(np.int64))
              for b, lab in zip(split.boxes, split.labels, strict=True)]
    golden_det = [g.detections for g in golden]
    map_golden, _ = mean_average_precision(golden_det, truths, len(classes))
    map_ort, _ = mean_average_precision([decode(r, params) for r in ort_outs], truths, len(classes))
    summary["map50_golden"] = round(map_golden, 4)
    summary["map50_onnxruntime"] = round(map_ort, 4)
    console.print(f"mAP@0.5 on {n_images} test images: golden {map_golden:.4f}, onnxruntime {map_ort:.4f} (measured)")

    _step("writing detections and drawn images")
    zoom = 4
    write_results(out / "detections", [
        (Path(f"frame{i:03d}.png"), img.repeat(zoom, 0).repeat(zoom, 1),
         Detections(det.boxes * zoom, det.scores, det.labels))
        for i, (img, det) in enumerate(zip(images, golden_det, strict=True))], classes)
    for i in range(min(3, n_images)):
        det = golden_det[i]
        top = ", ".join(f"{classes[int(c)]} {s:.2f}" for c, s in zip(det.labels[:4], det.scores[:4], strict=True))
        console.print(f"frame {i}: {len(det)} detections: {top}")

    if rtl_frames:
        _step(f"running {rtl_frames} frame(s) on the RTL simulation (Verilator; the first build takes a few minutes)")
        from shiftpu.arch.config import AccelConfig
        from shiftpu.sim.rtl import RtlAccelerator

        rtl = Executor(compiled_dir, backend=RtlAccelerator(AccelConfig.from_dict(result.manifest["config"]),
                                                            build_root=build_dir))
        sim_cycles = result.simulation_estimate()["cycles"]  # on the simulation's memory, not the board's DDR
        for i in range(rtl_frames):
            frame = rtl.execute(rtl.prepare(image_to_tensor(images[i])))
            outs = rtl.finish(frame)
            equal = np.array_equal(outs[0], golden[i].outputs[0])
            cycles = sum(s.cycles or 0 for s in frame.stats)
            summary.setdefault("rtl", []).append({"frame": i, "equals_golden": equal, "cycles_measured": cycles,
                                                  "cycles_estimated": sim_cycles})
            console.print(f"RTL frame {i}: {'equal to' if equal else 'DIFFERENT from'} the golden model; "
                          f"{cycles} cycles (measured, RTL simulation) vs {sim_cycles} (estimated)")
            if not equal:
                raise ShiftpuError(f"RTL simulation and golden model differ on frame {i}")
        _rtl_with_board_latency(compiled_dir, result, load_board(board_name), image_to_tensor(images[0]),
                                golden[0].outputs[0], summary, build_dir)
        _rtl_per_layer(compiled_dir, result, load_board(board_name), image_to_tensor(images[0]),
                       golden[0].outputs[0], summary, build_dir)

    _step("modelling fps and power on every board")
    table = Table(title="shape detector on each board (estimated: performance and power models)",
                  caption="clock: the board clock only where a stored timing estimate of the design clears it "
                          "(docs/timing.md); power: the board's static power + the fabric's dynamic power at this "
                          "fps (power model)")
    for col in ("board", "clock MHz", "clock source", "cycles/frame", "fps", "PE utilisation", "power W"):
        table.add_column(col, justify="left" if col == "clock source" else "right")
    boards = []
    clock_lines = []
    for name in board_names():
        board = load_board(name)
        est = compile_model(MODEL, name).estimate
        power = estimate_power_at_fps(board, est["macs"], est["fps"])
        boards.append({"board": name, "fps_estimated": est["fps"], "cycles_estimated": est["cycles"],
                       "utilization_estimated": est["utilization"], "power_w_estimated": power.watts,
                       "clock_mhz": est["clock_mhz"], "clock_source": est["clock_source"]})
        table.add_row(name, f"{est['clock_mhz']:g}", ClockSource(est["clock_source"]).words, str(est["cycles"]),
                      f"{est['fps']:.0f}", f"{est['utilization']:.1%}", f"{power.watts:.2f}")
        clock_lines.append(f"{name}: {est['clock_mhz']:g} MHz, {est['clock_label']}")
    console.print(table)
    console.print("\n".join(clock_lines), markup=False, highlight=False)
    summary["boards"] = boards

    _step(f"benchmarking the pipeline on the golden backend ({n_images} frames, `shiftpu bench`)")
    charts = find_spec("matplotlib") is not None  # the "report" extra draws the report's figures and the Gantt chart
    bench = run_bench(BenchOptions(folder=compiled_dir, backend="golden", frames=n_images, input=img_dir,
                                   trace=out / "trace.json", gantt=out / "gantt.png" if charts else None))
    (out / "bench.json").write_text(json.dumps(bench, indent=1))
    console.print(f"pipeline on this machine (measured): {bench['fps']:.1f} fps, efficiency "
                  f"{bench['pipeline_efficiency']:.2f}, stages (ms): {bench['stages']}")
    summary["bench_measured"] = {k: bench[k] for k in ("fps", "pipeline_efficiency", "latency_ms", "stages")}

    summary["report"] = None
    if charts:
        _step("writing the HTML report")
        from shiftpu.report import write_report
        from shiftpu.report.demo_inputs import demo_results

        html = write_report(compiled_dir, out / "report.html", trace=out / "trace.json", bench=out / "bench.json",
                            demo=demo_results(out, summary))
        summary["report"] = str(html)
    else:
        console.print("no HTML report or Gantt chart: they are drawn with matplotlib, which is not installed "
                      "(pip install 'shiftpu[report]')", markup=False, highlight=False)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def demo(out: Path, board_name: str, n_images: int, rtl_frames: int, build_dir: Path | None = None) -> dict:
    """The demo as `shiftpu demo` runs it: ``out`` checked first, written in place and removed again (an earlier
    demo's output put back) if the demo fails. Prints the closing line; returns the summary."""
    from shiftpu.cli.paths import check_output_folder, folder_in_place

    if rtl_frames < 0 or n_images < max(1, rtl_frames):
        raise DemoError(f"the demo needs at least one image and at most one RTL frame per image: got --images "
                        f"{n_images}, --rtl-frames {rtl_frames}")
    if rtl_frames and (find_spec("amaranth") is None or find_spec("cocotb") is None):
        raise DemoError("the RTL frames need the RTL simulation, which is not installed: pip install 'shiftpu[hw]', "
                        "or run the demo with --rtl-frames 0")
    check_output_folder(out, "--out", marker=SUMMARY)
    t0 = time.perf_counter()
    with folder_in_place(out):
        summary = run_demo(out, board_name, n_images, rtl_frames, build_dir)
    report = f"report {summary['report']}, " if summary["report"] else ""
    console.print(f"[green]demo finished in {time.perf_counter() - t0:.0f} s (measured)[/green]: "
                  f"{report}images {out / 'detections'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shiftpu.demo", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    ap.add_argument("--board", default=DEFAULT_BOARD, help=f"board to compile for (default {DEFAULT_BOARD})")
    ap.add_argument("--images", type=int, default=64, help="test images to run (default 64)")
    ap.add_argument("--rtl-frames", type=int, default=1, help="frames to run on the RTL simulation (default 1)")
    ap.add_argument("--build-dir", type=Path, default=None,
                    help="where the RTL build is cached (default: the user's cache directory)")
    args = ap.parse_args(argv)
    try:
        demo(args.out, args.board, args.images, args.rtl_frames, args.build_dir)
    except ShiftpuError as e:
        console.print(f"error: {e}", style="red", markup=False, highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
