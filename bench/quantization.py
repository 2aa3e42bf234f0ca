"""Issue #16's quantization targets, measured, in one results file: bench/results/quantization.md and .json.

    .venv/bin/python -m bench.quantization --write [--parts digits datafree mixed structures tiny_yolov2]

Parts (each stored with its command, the time it was measured and the machine's load average):

* ``digits``: ``bench.quant_ptq``: float digits CNNs trained on scikit-learn's digits (the example's ``pooled``
  layout and a ``strided`` one that is not the example's), one-term and two-term shift PTQ, nearest rounding
  (``PtqOptions.fast``) vs the calibration-driven default; the one-term accuracy drop from float.
* ``datafree``, ``mixed``: ``bench.quant_datafree --write`` and ``bench.quant_mixed``, rerun; their detailed tables
  stay in bench/results/quant_datafree.md and quant_mixed.md, this file summarises them.
* ``structures``: torchvision's resnet18 and mobilenet_v2 layouts (``bench.quant_models``, random weights, BatchNorm
  statistics from natural images) calibrated on 64 and on 256 natural-image crops: model output SQNR on held-out
  crops, one-term codes, nearest rounding vs the default PTQ, and each quantization's wall time.
* ``tiny_yolov2``: ``shiftpu quantize`` (the command, in a subprocess) of the 512x512 Tiny-YOLOv2 structure with
  every calibration-driven method on, without and with ``--mixed-precision`` (each stopped after
  ``--yolo-timeout`` s): wall time; the time of mixed precision's sensitivity pass (one probe measured, the pass
  estimated); and the default run again under cProfile, the cumulative time of each step.

A part left out of ``--parts`` keeps its figures from the existing bench/results/quantization.json, so one part
can be measured again alone; so does a tiny_yolov2 run left out of ``--yolo-variants`` (with the date it was
measured), and a run measured again keeps the figures it replaces beside it. Measured figures only; the targets are issue #16's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COMMAND = "python -m bench.quantization --write"
PARTS = ("digits", "datafree", "mixed", "structures", "tiny_yolov2")
#: The `shiftpu quantize` runs of the tiny_yolov2 part.
YOLO_VARIANTS = ("default", "mixed")
#: Seeds of the natural-image crops: BatchNorm statistics, calibration, test (three disjoint draws).
BN_SEED, CALIB_SEED, TEST_SEED = 100, 101, 102


def _machine() -> dict:
    """Where and when a part was measured: CPU count, load averages (1, 5, 15 min), UTC time."""
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "load_before": [round(v, 2) for v in os.getloadavg()],
            "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _finish(part: dict, start: float) -> dict:
    part["load_after"] = [round(v, 2) for v in os.getloadavg()]
    part["part_s"] = round(time.perf_counter() - start, 1)
    return part


# -- digits: bench.quant_ptq ------------------------------------------------------------------------------------

def measure_digits(args) -> dict:
    """The digits CNNs' PTQ (``bench.quant_ptq``): per model the accuracies, SQNRs and times."""
    from bench import quant_ptq

    start, part = time.perf_counter(), _machine()
    argv = ["--epochs", str(args.epochs), "--calib", str(args.digits_calib), "--seeds", *map(str, args.seeds)]
    rows = quant_ptq.main(argv)
    part.update(command=f"python -m bench.quant_ptq {' '.join(argv)}", rows=rows, calib=args.digits_calib,
                epochs=args.epochs, test_images=594)
    return _finish(part, start)


def _digits_drop(rows: list[dict], arch: str, kind: str) -> tuple[float, float]:
    """Mean and worst one-term accuracy drop from float (points) of one architecture's models."""
    drops = [r["float"] - r[f"1t_{kind}"] for r in rows if r["model"].startswith(arch + "/")]
    return float(np.mean(drops)), float(max(drops))


# -- datafree and mixed: their own benches, summarised -----------------------------------------------------------

def measure_datafree(args) -> dict:
    """``bench.quant_datafree --write`` (its detailed table: quant_datafree.md) and its summary."""
    from bench import quant_datafree

    start, part = time.perf_counter(), _machine()
    argv = ["--epochs", str(args.epochs), "--seeds", *map(str, args.seeds), "--write"]
    result = quant_datafree.main(argv)
    rows = result["rows"]
    part.update(command=f"python -m bench.quant_datafree {' '.join(argv)}", mean=result["mean"],
                worst_gap=max(r["calibrated"] - r["datafree"] for r in rows), models=len(rows))
    return _finish(part, start)


def measure_mixed(args) -> dict:
    """``bench.quant_mixed`` (its detailed table: quant_mixed.md) and its summary per PTQ mode."""
    from bench import quant_mixed

    start, part = time.perf_counter(), _machine()
    argv = ["--epochs", str(args.epochs), "--seeds", *map(str, args.seeds)]
    rows = quant_mixed.main(argv)
    summary = {}
    for mode in ("nearest", "calibrated"):
        summary[mode] = {
            "better_uniform": sum(r[f"{mode}_mixed"] >= max(r[f"{mode}_one_term"], r[f"{mode}_two_term"]) for r in rows),
            "within_budget_uniform": sum(r[f"{mode}_mixed"] >= r[f"{mode}_one_term"] for r in rows),
            "worst_miss": max(max(r[f"{mode}_one_term"], r[f"{mode}_two_term"]) - r[f"{mode}_mixed"] for r in rows),
            **{k: float(np.mean([r[f"{mode}_{k}"] for r in rows])) for k in ("one_term", "mixed", "two_term")}}
    part.update(command=f"python -m bench.quant_mixed {' '.join(argv)}", models=len(rows), summary=summary,
                over_budget=sum(r["mixed_bytes"] > r["budget"] for r in rows))
    return _finish(part, start)


# -- structures: resnet18 and mobilenet_v2 on natural images -----------------------------------------------------

def _run_onnx(model, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """onnxruntime (CPU, default threads) outputs of a model on ``images``, in batches."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[s : s + batch]})[0] for s in range(0, len(images), batch)])


def measure_structure(name: str, args) -> list[dict]:
    """One structure: float model, then one-term PTQ by nearest rounding and by the default methods, calibrated
    on each of ``args.calib`` crop counts (the first crops of one draw)."""
    import torch

    from bench import quant_models
    from shiftpu.compiler.quant.ptq import PtqOptions, quantize_model
    from shiftpu.compiler.quant.weights import sqnr_db

    size = args.size
    net = quant_models.build(name, seed=0)
    quant_models.set_bn_statistics(net, quant_models.natural_crops(args.bn_images, size, BN_SEED))
    fm = quant_models.float_onnx(net, size)
    crops = quant_models.natural_crops(max(args.calib), size, CALIB_SEED)
    test = quant_models.natural_crops(args.test, size, TEST_SEED)
    reference = _run_onnx(fm, test)
    with torch.no_grad():  # the export is checked against PyTorch
        export_sqnr = sqnr_db(net(torch.from_numpy(test[:4])).numpy(), reference[:4])
    rows = []
    for count in args.calib:
        row: dict = {"model": name, "input": f"3x{size}x{size}", "calib": count, "export_sqnr_db": export_sqnr}
        for kind, options in (("nearest", PtqOptions.fast()), ("default", PtqOptions())):
            t0 = time.perf_counter()
            q, report = quantize_model(fm, crops[:count], options)
            row[f"{kind}_s"] = time.perf_counter() - t0
            out = _run_onnx(q, test)
            row[f"{kind}_sqnr_db"] = sqnr_db(reference, out)
            row[f"{kind}_top1_agreement"] = float((out.argmax(1) == reference.argmax(1)).mean())
            row[f"{kind}_float_nodes"] = [f"{n.op_type} ({n.reason})" for n in report.float_nodes]
            row[f"{kind}_calib_sqnr_db"] = min(report.output_sqnr_db.values())
            print(f"{name}, {count} calibration crops, {kind}: output SQNR {row[f'{kind}_sqnr_db']:.2f} dB on "
                  f"{len(test)} test crops, top-1 agreement {row[f'{kind}_top1_agreement']:.3f}, quantize "
                  f"{row[f'{kind}_s']:.1f} s", flush=True)
            if args.report:
                print("\n".join(report.lines()), flush=True)
        row["layers"] = len(report.layers)
        row["gain_db"] = row["default_sqnr_db"] - row["nearest_sqnr_db"]
        rows.append(row)
    return rows


def measure_structures(args) -> dict:
    start, part = time.perf_counter(), _machine()
    part.update(command=f"python -m bench.quantization --parts structures --size {args.size} --calib "
                        f"{' '.join(map(str, args.calib))} --test {args.test} --bn-images {args.bn_images}",
                size=args.size, calib=args.calib, test=args.test, bn_images=args.bn_images,
                rows=[row for name in args.structures for row in measure_structure(name, args)])
    return _finish(part, start)


# -- tiny_yolov2: `shiftpu quantize` at 512x512 -------------------------------------------------------------------

def _two_term_board(directory: Path) -> Path:
    """A board file: ultra96v2 with two-term weight codes (mixed precision needs an accelerator that runs both)."""
    data = json.loads((ROOT / "boards" / "ultra96v2.json").read_text())
    data["name"] = "ultra96v2-two-term"
    data["accel"]["weight_code"] = "SHIFT8_TWO_TERM"
    path = directory / "ultra96v2-two-term.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def _halfway_budget(model) -> tuple[int, int, int]:
    """Weight bytes of all layers one-term, all two-term (each layer packed at 4 or 8 bits a weight, as
    ``mixed.weight_bytes`` counts them), and the budget halfway between."""
    from shiftpu.arch.numerics import WeightCode
    from shiftpu.compiler.quant.mixed import weight_bytes

    weights = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    counts = [weights[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in weights]
    one = sum(weight_bytes(c, WeightCode.SHIFT4) for c in counts)
    two = sum(weight_bytes(c, WeightCode.SHIFT8_TWO_TERM) for c in counts)
    return one, two, (one + two) // 2


def _timed_command(argv: list[str], log: Path, timeout: float) -> tuple[float, int | None]:
    """Run a command, its output to ``log``; wall time in s and exit status (None: stopped at ``timeout`` s)."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    return time.perf_counter() - t0, rc


#: Functions of a profiled `shiftpu quantize` whose cumulative time the results give: (file, function, label).
PROFILED = (("ptq.py", "quantize_model", "quantize_model (all of the PTQ)"),
            ("slopes.py", "round_leaky_slopes", "LeakyReLU slopes rounded (float model run on the calibration set)"),
            ("ptq.py", "_equalise", "cross-layer equalisation (one float model run; per candidate pair a fast PTQ and "
             "a run of the quantized model)"),
            ("calibrate.py", "collect", "activation statistics (a float model run each)"),
            ("ptq.py", "capture_inputs", "float layer inputs kept for the calibration-driven methods"),
            ("ptq.py", "quantized_values", "quantized layer inputs (the partial quantized model run)"),
            ("layerstats.py", "collect", "patch moment matrices (LayerStats.collect)"),
            ("layeropt.py", "optimise_layer", "per-layer methods (bias correction, scale search, rounding)"),
            ("rounding.py", "optimise_rounding", "of which: rounding optimisation"),
            ("layerstats.py", "terms", "of which: layer output error evaluations (OutputError.terms)"),
            ("ptq.py", "measure", "report SQNR measurement (_Quantizer.measure)"),
            ("mixed.py", "choose_formats", "mixed precision: sensitivity and choice"),
            ("sensitivity.py", "curvatures", "of which: Hutchinson curvature (finite differences)"))


def _profile_lines(path: Path) -> list[str]:
    """Cumulative time of the PROFILED functions in a cProfile file, as report lines."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # (file, line, function) -> (calls, ncalls, tottime, cumtime, callers)
    total = max(v[3] for v in stats.values())
    lines = []
    for file, func, label in PROFILED:
        hits = [(k, v) for k, v in stats.items() if k[0].endswith("/" + file) and k[2] == func]
        if hits:
            calls, cum = sum(v[1] for _, v in hits), sum(v[3] for _, v in hits)
            lines.append(f"{label}: {cum:.0f} s ({100 * cum / total:.0f} %), {calls} call(s)")
    return lines


def _sensitivity_pass_estimate(model_path: Path, calib_path: Path) -> dict:
    """Time of one Hutchinson probe of one weight tensor (``sensitivity.curvatures``, measured) on the calibration
    samples the mixed-precision choice uses, and the whole pass it implies: tensors x PROBES probes (estimated)."""
    import onnx

    from shiftpu.compiler.quant.fold import fold_float_model
    from shiftpu.compiler.quant.ptq import quantized_layers
    from shiftpu.compiler.quant.sensitivity import PROBES, SAMPLES, curvatures

    folded = fold_float_model(onnx.load(str(model_path)))
    data = np.load(calib_path)
    layers = quantized_layers(folded)
    tensors = list(dict.fromkeys([n.input[1] for n, _, _ in layers] + [out for _, out, _ in layers]))
    t0 = time.perf_counter()
    curvatures(folded, data, [layers[-2][0].input[1]], probes=1)
    one = time.perf_counter() - t0
    return {"one_probe_s": round(one, 1), "tensors": len(tensors), "probes": PROBES,
            "samples": min(SAMPLES, len(data)), "estimated_s": round(one * len(tensors) * PROBES)}


def measure_tiny_yolov2(args) -> dict:
    """`shiftpu quantize` of the 512x512 Tiny-YOLOv2 structure, default methods, then with --mixed-precision."""
    import onnx

    from bench import quant_models

    start, part = time.perf_counter(), _machine()
    size = 512
    net = quant_models.build("tiny_yolov2", seed=0)
    quant_models.set_bn_statistics(net, quant_models.natural_crops(args.bn_images, size, BN_SEED), batch=8)
    fm = quant_models.float_onnx(net, size, batch=1)  # a static shape, as `shiftpu compile` takes it
    one, two, budget = _halfway_budget(fm)
    python = sys.executable
    shiftpu = str(Path(python).with_name("shiftpu"))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        onnx.save(fm, str(d / "tiny_yolov2_512.onnx"))
        np.save(d / "calib.npy", quant_models.natural_crops(args.yolo_calib, size, CALIB_SEED))
        board = _two_term_board(d)
        base = ["quantize", "tiny_yolov2_512.onnx", "--calib", "calib.npy"]
        variants = {"default": [*base, "-o", "q.onnx"],
                    "mixed": [*base, "-o", "q_mixed.onnx", "--mixed-precision", "--board", board.name,
                              "--max-weight-bytes", str(budget)]}
        for tag in args.yolo_variants:
            load = [round(v, 2) for v in os.getloadavg()]
            measured = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            seconds, rc = _timed_command([shiftpu, *variants[tag]], d / f"{tag}.log", args.yolo_timeout)
            text = (d / f"{tag}.log").read_text()
            runs[tag] = {"command": " ".join(["shiftpu", *variants[tag]]), "measured": measured,
                         "wall_s": round(seconds, 1),
                         "exit": rc, "load_before": load, "load_after": [round(v, 2) for v in os.getloadavg()],
                         "output_sqnr": [ln for ln in text.splitlines() if ln.startswith("model output")],
                         "float_nodes": [ln.strip() for ln in text.splitlines() if "has no fabric operation" in ln],
                         "log_tail": text.splitlines()[-40:]}
            print(f"tiny_yolov2 512 {tag}: {seconds:.1f} s (exit {rc}), load {load}", flush=True)
            if rc:
                print(text[-3000:], flush=True)
        if "mixed" in args.yolo_variants:
            part["sensitivity_estimate"] = _sensitivity_pass_estimate(d / "tiny_yolov2_512.onnx", d / "calib.npy")
        if args.yolo_profile:
            profiled = [python, "-m", "cProfile", "-o", "default.prof", shiftpu, *variants["default"]]
            seconds, rc = _timed_command(profiled, d / "profiled.log", args.yolo_timeout)
            part["profile"] = {"command": " ".join(["python -m cProfile -o default.prof shiftpu",
                                                    *variants["default"]]),
                               "wall_s": round(seconds, 1), "exit": rc,
                               "lines": _profile_lines(d / "default.prof") if rc == 0 else []}
    variants_flag = "" if args.yolo_variants == list(YOLO_VARIANTS) else f" --yolo-variants {' '.join(args.yolo_variants)}"
    part.update(command="python -m bench.quantization --parts tiny_yolov2 --yolo-calib "
                        f"{args.yolo_calib} --bn-images {args.bn_images} --yolo-timeout {args.yolo_timeout:.0f}"
                        + variants_flag + ("" if args.yolo_profile else " --no-yolo-profile"),
                input="1x3x512x512", calib=args.yolo_calib, one_term_bytes=one, two_term_bytes=two, budget=budget,
                timeout_s=args.yolo_timeout, runs=runs,
                threads="onnxruntime's default (a thread per core), torch 1 thread")
    return _finish(part, start)


def _carry_runs(part: dict, previous: dict) -> None:
    """Keep the earlier tiny_yolov2 figures a new measurement does not replace, each with when it was measured:
    the runs of the variants not measured again (with mixed precision's sensitivity estimate, the mixed run's),
    the profile when it was not measured again, and the run each new one replaces (``previous_runs``)."""
    for tag, run in previous["runs"].items():
        run = {**run, "measured": run.get("measured", previous["measured"])}
        if tag in part["runs"]:
            run.pop("carried", None)
            part.setdefault("previous_runs", {})[tag] = run
        else:
            part["runs"][tag] = {**run, "carried": True}
            if tag == "mixed" and "sensitivity_estimate" in previous:
                part["sensitivity_estimate"] = {"measured": previous["measured"], **previous["sensitivity_estimate"]}
    if "profile" not in part and "profile" in previous:
        part["profile"] = {"measured": previous["measured"], **previous["profile"]}


# -- the results file ---------------------------------------------------------------------------------------------

def _load(part: dict) -> str:
    return f"load average {part['load_before'][0]:.2f} before, {part['load_after'][0]:.2f} after"


def markdown(result: dict) -> str:
    """bench/results/quantization.md from the parts measured."""
    out = ["# Quantization targets (issue #16), measured", "",
           f"Written by `{COMMAND}` (every part; `--parts P ...` measures those again and keeps the others). "
           "Each part names its own command, when it was measured and the machine's load average (2 CPUs; other "
           "jobs were running: the load is that of the whole machine). All figures measured, none estimated, "
           "unless a line says otherwise.", ""]
    out += _targets(result)
    if "digits" in result:
        out += _digits_section(result["digits"])
    if "structures" in result:
        out += _structures_section(result["structures"])
    if "tiny_yolov2" in result:
        out += _yolo_section(result["tiny_yolov2"])
    if "datafree" in result or "mixed" in result:
        out += _datafree_mixed_section(result)
    out += _not_met(result)
    return "\n".join(out) + "\n"


def _targets(result: dict) -> list[str]:
    lines = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    if "digits" in result:
        rows = result["digits"]["rows"]
        mean, worst = _digits_drop(rows, "strided", "new")
        pm, pw = _digits_drop(rows, "pooled", "new")
        lines.append(f"| one-term PTQ, digits CNN not the example's (`strided`): accuracy drop <= 1.0 point | "
                     f"{mean:.2f} points on the mean of {sum(r['model'].startswith('strided') for r in rows)} "
                     f"models, {worst:.2f} at worst (the example's `pooled` layout: {pm:.2f} / {pw:.2f}) | "
                     f"{'yes' if worst <= 1.0 else 'no'} |")
    if "structures" in result:
        for r in result["structures"]["rows"]:
            lines.append(f"| {r['model']} structure, {r['calib']} natural-image calibration crops: output SQNR "
                         f">= 6 dB above nearest rounding | {r['gain_db']:+.2f} dB ({r['nearest_sqnr_db']:.2f} -> "
                         f"{r['default_sqnr_db']:.2f} dB, input {r['input']}) | {'yes' if r['gain_db'] >= 6.0 else 'no'} |")
    if "datafree" in result:
        d = result["datafree"]
        gap = d["mean"]["calibrated"] - d["mean"]["datafree"]
        lines.append(f"| data-free within 2 points of calibrated PTQ (digits CNNs) | {gap:.2f} points on the mean of "
                     f"{d['models']} models, {d['worst_gap']:.2f} at worst | {'yes' if d['worst_gap'] <= 2.0 else 'no'} |")
    if "mixed" in result:
        s = result["mixed"]["summary"]["calibrated"]
        lines.append(f"| mixed precision at a *cycle* budget halfway between the uniform models: accuracy >= the "
                     f"better uniform model | cannot be measured yet (last section); at the *weight-byte* budget "
                     f"halfway: >= the better uniform model in {s['better_uniform']} of {result['mixed']['models']} "
                     "models (calibrated PTQ) | no |")
    if "tiny_yolov2" in result:
        y = result["tiny_yolov2"]
        for tag, run in y["runs"].items():
            what = "every calibration-driven method" + (", --mixed-precision" if tag == "mixed" else "")
            when = f" (measured {run['measured']})" if run.get("carried") else ""
            lines.append(f"| `shiftpu quantize`, Tiny-YOLOv2 512x512, {what}: < 10 min on 2 cores | "
                         f"{_wall(run)}{when}; load average {run['load_before'][0]:.2f} at start, "
                         f"{run['load_after'][0]:.2f} at end | "
                         f"{'yes' if run['exit'] == 0 and run['wall_s'] < 600 else 'no'} |")
    return lines + [""]


def _digits_section(part: dict) -> list[str]:
    rows = part["rows"]
    lines = ["## One-term PTQ on the digits CNNs", "",
             f"`{part['command']}`, measured {part['measured']} ({_load(part)}). scikit-learn digits (8x8, real "
             f"data), {part['test_images']} test images (one image is 0.17 points), {part['calib']} calibration "
             f"images from the training split, {part['epochs']} training epochs per model. `pooled`: the layout of "
             "examples/digits; `strided`: three Conv-BN-ReLU, the last two stride 2, no pooling, a Linear. "
             "Nearest: each weight rounded to the nearest power of two (`PtqOptions.fast`, the PTQ before issue #16); "
             "default: the calibration-driven PTQ (`shiftpu quantize`'s default). Test accuracy in %, output SQNR "
             "of the logits against the float model on the test images, quantization wall time.", "",
             "| model | float | one-term nearest | one-term default | two-term nearest | two-term default | "
             "SQNR one-term nearest / default | SQNR two-term nearest / default | time nearest / default |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['float']:.2f} | {r['1t_old']:.2f} | {r['1t_new']:.2f} | {r['2t_old']:.2f} | "
                     f"{r['2t_new']:.2f} | {r['1t_old_sqnr']:.1f} / {r['1t_new_sqnr']:.1f} dB | {r['2t_old_sqnr']:.1f} / "
                     f"{r['2t_new_sqnr']:.1f} dB | {r['1t_old_s']:.1f} / {r['1t_new_s']:.1f} s |")
    return lines + [""]


def _structures_section(part: dict) -> list[str]:
    lines = ["## resnet18 and mobilenet_v2 structures on natural images", "",
             f"`{part['command']}`, measured {part['measured']} ({_load(part)}). torchvision's layouts "
             "(bench/quant_models.py: torchvision is not installed, so they are written out module for module), "
             f"random weights with torchvision's initialisation, input {part['size']}x{part['size']}; BatchNorm "
             f"statistics set on {part['bn_images']} natural-image crops, calibration on the first "
             f"{' or '.join(map(str, part['calib']))} of another draw, "
             f"output SQNR and top-1 agreement with the float model on {part['test']} more (random crops of "
             "scikit-learn's two sample photographs, resized, ImageNet-normalised). One-term shift codes, 8-bit "
             "activations. Nearest: `PtqOptions.fast`; default: every calibration-driven method. Quantize time: "
             "wall clock of `quantize_model` (onnxruntime with its default threads, one per core).", "",
             "| model | calibration crops | nearest: output SQNR | default: output SQNR | gain | on the calibration "
             "crops: nearest / default | top-1 agreement nearest / default | quantize time nearest / default | "
             "stayed float |", "|---|---|---|---|---|---|---|---|---|"]
    for r in part["rows"]:
        floats = ", ".join(r["default_float_nodes"]) or "none"
        lines.append(f"| {r['model']} ({r['layers']} layers) | {r['calib']} | {r['nearest_sqnr_db']:.2f} dB | "
                     f"{r['default_sqnr_db']:.2f} dB | {r['gain_db']:+.2f} dB | {r['nearest_calib_sqnr_db']:.1f} / "
                     f"{r['default_calib_sqnr_db']:.1f} dB | {r['nearest_top1_agreement']:.3f} / "
                     f"{r['default_top1_agreement']:.3f} | {r['nearest_s']:.1f} / {r['default_s']:.1f} s | {floats} |")
    lines += ["", "Output SQNR: of the 1,000 logits against the float model's, on the held-out test crops (the target's "
              "figure); on the calibration crops as the PTQ report gives it (its first 32). Where the default is "
              "much better on the calibration crops than on the test crops, the rounding and bias of the last layers "
              "fit the few calibration images (wide layers, fewer patch rows than inputs; the classifier has one row "
              "per image); more crops narrow that gap and raise the SQNR on the test crops. With random weights the "
              "logits are close together, so top-1 agreement is a harsh proxy.", ""]
    return lines


def _wall(run: dict) -> str:
    """A run's wall time, or that it was stopped."""
    if run["exit"] is None:
        return f"stopped after {run['wall_s'] / 60:.1f} min (unfinished)"
    return f"{run['wall_s'] / 60:.1f} min ({run['wall_s']:.0f} s)" + ("" if run["exit"] == 0 else f", exit {run['exit']}")


def _yolo_section(part: dict) -> list[str]:
    lines = ["## `shiftpu quantize` of a 512x512 Tiny-YOLOv2 structure", "",
             f"`{part['command']}`, measured {part['measured']} ({_load(part)}). darknet's yolov2-tiny-voc layout "
             "(bench/quant_models.py: nine convolutions, Conv3x3-BN-LeakyReLU(0.1), max pools, the last stride 1), "
             "random weights, BatchNorm statistics from natural images, exported to ONNX with the BatchNorm nodes "
             f"kept (the quantizer folds them) and a static input {part['input']}; {part['calib']} natural-image "
             f"crops as calibration. Threads: {part['threads']}. Every calibration-driven method is on (the default: "
             "rounding optimisation, scale search, bias correction, equalisation, BatchNorm re-estimation, LeakyReLU "
             "slopes rounded); mixed precision: a copy of ultra96v2 with two-term weight codes, budget halfway "
             f"between all one-term ({part['one_term_bytes']} bytes) and all two-term ({part['two_term_bytes']}): "
             f"{part['budget']} weight bytes. A run is stopped after {part['timeout_s'] / 60:.0f} min. The machine's "
             "two cores were shared with synthesis jobs that others started during the runs (the load columns).", "",
             "| run | command | wall time | load average (1 min) at start / end | model output SQNR (calibration set) |",
             "|---|---|---|---|---|"]
    rows = [(tag, run) for tag, run in part["runs"].items()]
    rows += [(f"{tag}, the measurement before", run) for tag, run in part.get("previous_runs", {}).items()]
    for tag, run in rows:
        sqnr = "; ".join(s.replace("model output ", "") for s in run["output_sqnr"]) or "-"
        when = f" (measured {run['measured']})" if run.get("carried") or tag not in part["runs"] else ""
        lines.append(f"| {tag}{when} | `{run['command']}` | {_wall(run)} | {run['load_before'][0]:.2f} / "
                     f"{run['load_after'][0]:.2f} | {sqnr} |")
    if any(run.get("carried") for run in part["runs"].values()) or part.get("previous_runs"):
        lines += ["", "A row with its own date was measured before this part's command, with the code of that day: "
                  "a run this command did not measure again keeps its figures, and the measurement a new run "
                  "replaces is kept beside it."]
    est = part.get("sensitivity_estimate")
    if est:
        lines += ["", f"Mixed precision's sensitivity pass (`sensitivity.curvatures`): one Hutchinson probe of one "
                  f"weight tensor took {est['one_probe_s']:.0f} s (measured after the mixed run"
                  + (f" of {est['measured']}" if "measured" in est else "") + ", at its load: two runs of "
                  "the float model per "
                  f"calibration sample, {est['samples']} samples); the pass makes {est['probes']} probes of each of "
                  f"{est['tensors']} tensors (every layer's weights and output), about {est['estimated_s'] / 60:.0f} "
                  "min (estimated), before the PTQ itself."]
    prof = part.get("profile")
    if prof:
        when = f" (measured {prof['measured']})" if "measured" in prof else ""
        lines += ["", f"Where the time of the default run goes: `{prof['command']}`{when}, {_wall(prof)} under the "
                  "profiler; "
                  "cumulative time per step (nested steps are part of the one above them):", ""]
        lines += [f"- {ln}" for ln in prof["lines"]]
    equalised = [ln for ln in part["runs"].get("default", {}).get("log_tail", []) if "cross-layer equalisation" in ln]
    kept = sum(ln.endswith(" kept") and "not kept" not in ln for ln in equalised)
    lines += ["", "What the time is spent on:", "",
              f"- Equalisation runs the float model once for all candidate pairs (equalising a pair divides the "
              "channels of the tensors between its layers by powers of two and leaves every other tensor bit for bit "
              "as it was, so each candidate's activation statistics are derived from that run exactly) and scores "
              "each pair with a fast PTQ and a run of the quantized model on the calibration samples; here "
              f"{kept} of {len(equalised)} pairs were kept (BatchNorm-trained layers are already balanced).",
              "- The per-layer methods are dominated by the two 1,024-channel 3x3 layers (9,216 inputs per output "
              "channel), where every product with a moment matrix costs channels x inputs^2 multiply-adds (about "
              "10^11): the patch moments, one product per set of candidate weights scored (the terms that depend on "
              "the float weights alone are computed once per layer, and a candidate is scored on the channels it "
              "changes only), and per rounding sweep one product for the gradient and one for its updates (a "
              "block of 64 weights at a time).",
              "- Mixed precision's sensitivity pass runs the float model twice per calibration sample per probe "
              "(finite differences), 16 probes per tensor: with 2 x 9 tensors at 512x512 that alone exceeds the "
              "10 minutes many times over. Fewer samples or probes for large inputs, or one probe batch for all "
              "tensors, would be needed."]
    return lines + [""]


def _datafree_mixed_section(result: dict) -> list[str]:
    lines = ["## Data-free calibration and mixed precision (digits CNNs)", ""]
    if "datafree" in result:
        d = result["datafree"]
        m = d["mean"]
        lines.append(f"- Data-free: `{d['command']}`, measured {d['measured']} ({_load(d)}); table in "
                     f"[quant_datafree.md](quant_datafree.md). Mean test accuracy of {d['models']} models: float "
                     f"{m['float']:.2f}, calibrated PTQ {m['calibrated']:.2f}, data-free [0, 1] {m['datafree']:.2f} "
                     f"(worst gap {d['worst_gap']:.2f} points); synthesis {m['synthesis_s']:.1f} s per model.")
    if "mixed" in result:
        p = result["mixed"]
        parts = []
        for mode, s in p["summary"].items():
            label = {"nearest": "Nearest rounding", "calibrated": "Calibrated PTQ"}[mode]
            parts.append(f"{label}: mean accuracy one-term {s['one_term']:.2f}, mixed {s['mixed']:.2f}, two-term "
                         f"{s['two_term']:.2f}; mixed >= the better uniform model in {s['better_uniform']} of "
                         f"{p['models']}, >= the uniform model within the budget in {s['within_budget_uniform']} of "
                         f"{p['models']}")
        lines.append(f"- Mixed precision at a weight-byte budget halfway between all one-term and all two-term: "
                     f"`{p['command']}`, measured {p['measured']} ({_load(p)}); table and frontier in "
                     f"[quant_mixed.md](quant_mixed.md). " + ". ".join(parts)
                     + f". Over the budget: {p['over_budget']} of {p['models']}.")
    return lines + [""]


def _not_met(result: dict) -> list[str]:
    lines = ["## Targets that cannot be met yet", "",
             "- **Mixed precision at a cycle budget.** `shiftpu quantize --mixed-precision --max-cycles N` is refused: "
             "the accelerator has one weight code for the whole model (`AccelConfig.weight_code`) and stores 4-bit "
             "activations one per byte, so a layer's cycles do not depend on the format chosen for it and no choice "
             "of formats can trade accuracy for cycles. It needs per-layer weight and activation formats on the "
             "accelerator (issue #15). Until then the budget is in weight bytes, each layer counted at its own code "
             "(what per-layer formats would store)."]
    if "mixed" in result:
        p = result["mixed"]
        s = {m: p["summary"][m]["better_uniform"] for m in ("nearest", "calibrated")}
        miss = max(p["summary"][m]["worst_miss"] for m in ("nearest", "calibrated"))
        lines.append(f"- **Mixed precision at the weight-byte budget** (the stand-in): the mixed model is at least as "
                     f"accurate as the better uniform model in {s['calibrated']} of {p['models']} digits models with "
                     f"the calibration-driven PTQ and {s['nearest']} of {p['models']} with nearest rounding; the "
                     f"largest miss is {miss:.2f} points ({miss / (100 / 594):.0f} of the 594 test images), as close "
                     "as the uniform models are to each other. Not met as stated.")
    if "tiny_yolov2" in result:
        runs = result["tiny_yolov2"]["runs"]
        late = [tag for tag, r in runs.items() if r["exit"] != 0 or r["wall_s"] >= 600]
        if late:
            lines.append(f"- **`shiftpu quantize` of Tiny-YOLOv2 at 512x512 in < 10 min** ({', '.join(late)}): see "
                         "its section for where the time goes.")
    return lines + [""]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="digits: training seeds")
    ap.add_argument("--epochs", type=int, default=40, help="digits: float training epochs")
    ap.add_argument("--digits-calib", type=int, default=256, help="digits: calibration images")
    ap.add_argument("--structures", nargs="+", default=["resnet18", "mobilenet_v2"],
                    choices=["resnet18", "mobilenet_v2"])
    ap.add_argument("--size", type=int, default=224, help="structures: input height and width")
    ap.add_argument("--calib", type=int, nargs="+", default=[64, 256],
                    help="structures: calibration crops (a PTQ for each count)")
    ap.add_argument("--test", type=int, default=64, help="structures: test crops")
    ap.add_argument("--bn-images", type=int, default=64, help="crops the BatchNorm statistics are set on")
    ap.add_argument("--yolo-calib", type=int, default=32, help="tiny_yolov2: calibration crops (512x512)")
    ap.add_argument("--yolo-variants", nargs="+", default=list(YOLO_VARIANTS), choices=YOLO_VARIANTS,
                    help="tiny_yolov2: the runs to measure (a run left out keeps its earlier figures)")
    ap.add_argument("--yolo-timeout", type=float, default=1200.0, help="tiny_yolov2: stop a run after this many s")
    ap.add_argument("--no-yolo-profile", dest="yolo_profile", action="store_false",
                    help="tiny_yolov2: skip the default run under cProfile (where the time goes)")
    ap.add_argument("--report", action="store_true", help="structures: print each PTQ report")
    ap.add_argument("--write", action="store_true", help="write bench/results/quantization.json and .md")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    path = RESULTS / "quantization.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    measure = {"digits": measure_digits, "datafree": measure_datafree, "mixed": measure_mixed,
               "structures": measure_structures, "tiny_yolov2": measure_tiny_yolov2}
    for name in args.parts:
        previous = result.get(name)
        result[name] = measure[name](args)
        if name == "tiny_yolov2" and previous:
            _carry_runs(result[name], previous)
        if args.write:  # after each part, so that a long run keeps what it measured
            RESULTS.mkdir(exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            (RESULTS / "quantization.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
