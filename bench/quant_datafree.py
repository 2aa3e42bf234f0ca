"""Data-free post-training shift quantization on real data: calibrated PTQ vs PTQ on synthesised inputs.

    .venv/bin/python -m bench.quant_datafree [--seeds 0 1 2] [--epochs 40] [--calib 256] [--samples 128] [--write]

Trains the float digits CNNs of bench/quant_ptq.py (scikit-learn's handwritten digits, 8x8, its 67/33 split;
architectures ``pooled`` and ``strided``, Conv-BN-ReLU blocks), exports each to float ONNX with its BatchNorm
nodes kept, and quantizes it with ``shiftpu.compiler.quant.ptq`` (default options: one-term shift codes,
calibration-driven methods) on four calibration sets:

* ``calibrated``: the first ``--calib`` images of the training split (real data),
* ``data-free``: ``--samples`` inputs synthesised by ``shiftpu.compiler.quant.datafree`` from the BatchNorm
  statistics, kept in the input range [0, 1] (what ``shiftpu quantize --data-free --input-range 0,1`` does),
* ``data-free, unbounded``: the same without the input range,
* ``noise``: uniform noise in [0, 1], as many inputs, no synthesis (the baseline the synthesis has to beat),

and once more with 4-bit activations (calibrated and data-free), where the scales matter more. Prints the test
accuracy of each (measured, onnxruntime, 594 test images) and the synthesis time; ``--write`` also writes
bench/results/quant_datafree.json and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from bench.quant_ptq import accuracy, add_digits_options, digits_splits, run_onnx, train_float

RESULTS = Path(__file__).resolve().parent / "results"
#: Calibration sets measured, in table order: (key, label).
COLUMNS = (("calibrated", "calibrated"), ("datafree", "data-free [0,1]"), ("datafree_unbounded", "data-free unbounded"),
           ("noise", "noise [0,1]"), ("calibrated_act4", "calibrated, act4"), ("datafree_act4", "data-free, act4"))


def float_onnx_with_bn(model):
    """The float model as ONNX with its BatchNormalization nodes kept (no constant folding), symbolic batch."""
    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 8, 8), buf, dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


def measure_model(arch: str, seed: int, args, train, test) -> dict:
    """One trained model: float accuracy and the accuracy of each calibration set's PTQ."""
    from shiftpu.compiler.quant.datafree import DataFreeOptions, synthesize
    from shiftpu.compiler.quant.ptq import PtqOptions, quantize_model
    from shiftpu.compiler.quant.weights import sqnr_db

    fm = float_onnx_with_bn(train_float(arch, seed, args.epochs, train))
    if not any(n.op_type == "BatchNormalization" for n in fm.graph.node):
        raise SystemExit("the export folded the BatchNorms: nothing to synthesise from")
    reference = run_onnx(fm, test.images)
    row: dict = {"model": f"{arch}/{seed}", "float": accuracy(reference, test.labels)}
    bounded = synthesize(fm, DataFreeOptions(samples=args.samples, seed=seed, input_range=(0.0, 1.0)))
    unbounded = synthesize(fm, DataFreeOptions(samples=args.samples, seed=seed))
    noise = np.random.default_rng(seed).random((args.samples, 1, 8, 8), dtype=np.float32)
    row["synthesis_s"] = bounded.seconds
    row["synthesis_loss"] = bounded.loss_end
    calib = train.images[: args.calib]
    for key, data, bits in (("calibrated", calib, 8), ("datafree", bounded.data, 8),
                            ("datafree_unbounded", unbounded.data, 8), ("noise", noise, 8),
                            ("calibrated_act4", calib, 4), ("datafree_act4", bounded.data, 4)):
        t0 = time.perf_counter()
        q, _ = quantize_model(fm, data, PtqOptions(act_bits=bits, seed=seed))
        row[f"{key}_s"] = time.perf_counter() - t0
        logits = run_onnx(q, test.images)
        row[key] = accuracy(logits, test.labels)
        row[f"{key}_sqnr"] = sqnr_db(reference, logits)
    return row


def _table(rows: list[dict], suffix: str, fmt: str, extra: bool) -> list[str]:
    """One markdown table: a row per model, a column per calibration set (``suffix`` picks the figure)."""
    head = "| model | " + ("float | " if extra else "") + " | ".join(label for _, label in COLUMNS)
    lines = [head + (" | synthesis |" if extra else " |"), "|" + "---|" * (len(COLUMNS) + 1 + 2 * extra)]
    for r in rows:
        cells = [f"{r[k + suffix]:{fmt}}" for k, _ in COLUMNS]
        first = [f"{r['float']:{fmt}}"] if extra else []
        last = [f"{r['synthesis_s']:.1f}"] if extra else []
        lines.append("| " + " | ".join([r["model"], *first, *cells, *last]) + " |")
    return lines


def markdown(result: dict) -> str:
    """bench/results/quant_datafree.md."""
    rows, mean = result["rows"], result["mean"]
    every = [*rows, {**mean, "model": "**mean**"}]
    gap = mean["calibrated"] - mean["datafree"]
    worst = max(r["calibrated"] - r["datafree"] for r in rows)
    return "\n".join([
        "# Data-free calibration: PTQ on synthesised inputs vs on real calibration data",
        "",
        f"Measured on {result['machine']}, {result['cpus']} CPUs, torch threads {result['threads']}: "
        "`.venv/bin/python -m bench.quant_datafree --write`.",
        "",
        f"scikit-learn digits, {result['test_images']} test images; the float models of bench/quant_ptq.py "
        f"({result['epochs']} epochs), exported with their BatchNorm nodes kept, and their one-term shift PTQ "
        f"(default methods) calibrated on: {result['calib']} real training images; {result['samples']} inputs "
        "synthesised from the BatchNorm statistics (`shiftpu quantize --data-free`), kept in [0, 1] or unbounded; "
        "as many uniform-noise inputs in [0, 1] (no synthesis). act4: 4-bit activations.",
        "",
        "Test accuracy in % (measured, onnxruntime); synthesis: wall time in s (measured) of the [0, 1] synthesis "
        f"({result['steps']} Adam steps per batch of {result['batch']}).",
        "",
        *_table(every, "", ".2f", True),
        "",
        "Model output (logits) SQNR against the float model on the test images, in dB (measured).",
        "",
        *_table(every, "_sqnr", ".1f", False),
        "",
        f"Data-free [0, 1] vs calibrated PTQ: {gap:.2f} points lower on the mean, {worst:.2f} at worst (target: "
        f"within 2 points); with 4-bit activations {mean['calibrated_act4'] - mean['datafree_act4']:.2f} points.",
        "",
    ])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_digits_options(ap, calib_help="real calibration images (first of the training split)",
                       threads_help="torch threads (training and synthesis)")
    ap.add_argument("--samples", type=int, default=128, help="synthesised calibration inputs")
    ap.add_argument("--write", action="store_true", help="write bench/results/quant_datafree.json and .md")
    args = ap.parse_args(argv)

    import torch

    from shiftpu.compiler.quant.datafree import DataFreeOptions

    torch.set_num_threads(args.threads)
    train, test = digits_splits()
    print(f"scikit-learn digits: {len(test.labels)} test images; test accuracy in % (measured, onnxruntime); "
          "synthesis wall time in s (measured)")
    print(f"{'model':<12} {'float':>6} " + " ".join(f"{label:>20}" for _, label in COLUMNS) + f" {'synth s':>8}")
    rows = []
    for arch in args.archs:
        for seed in args.seeds:
            row = measure_model(arch, seed, args, train, test)
            rows.append(row)
            print(f"{row['model']:<12} {row['float']:>6.2f} " + " ".join(f"{row[k]:>20.2f}" for k, _ in COLUMNS)
                  + f" {row['synthesis_s']:>8.1f}", flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "model"}
    print(f"{'mean':<12} {mean['float']:>6.2f} " + " ".join(f"{mean[k]:>20.2f}" for k, _ in COLUMNS)
          + f" {mean['synthesis_s']:>8.1f}")
    defaults = DataFreeOptions()
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
              "test_images": len(test.labels), "calib": args.calib, "samples": args.samples, "epochs": args.epochs,
              "steps": defaults.steps, "batch": defaults.batch, "rows": rows, "mean": mean}
    print("model output SQNR in dB: " + ", ".join(f"{label} {mean[k + '_sqnr']:.1f}" for k, label in COLUMNS))
    print(f"data-free [0, 1] vs calibrated: {mean['calibrated'] - mean['datafree']:.2f} points lower (mean over "
          f"{len(rows)} models)")
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "quant_datafree.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "quant_datafree.md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
