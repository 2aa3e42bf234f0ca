"""Mixed precision on real data: per-layer one-term / two-term weight codes at a weight-byte budget.

    .venv/bin/python -m bench.quant_mixed [--archs pooled strided] [--seeds 0 1 2] [--epochs 40] [--calib 256]

Trains the float digits CNNs of ``bench.quant_ptq`` (scikit-learn's handwritten digits, same split, same
architectures and seeds), and quantizes each as all one-term, all two-term, and mixed: each layer's code chosen
by ``shiftpu.compiler.quant.mixed.choose_formats`` for an accelerator with two-term codes, at the budget halfway
between the two uniform models' weight bytes (each layer counted at its own code), what
``shiftpu quantize --mixed-precision --board B --max-weight-bytes N`` does. Each with the nearest-rounding PTQ
(``PtqOptions.fast``) and with the default calibration-driven one (the formats chosen once: the sensitivity does
not depend on the PTQ methods). Prints and writes (bench/results/quant_mixed.json, .md) the test accuracy
(measured, onnxruntime, 594 images), the output SQNR of the logits against the float model on the test images
(measured), the weight bytes, the predicted output SQNR of the chosen formats (estimated) and the time the
choice took (sensitivity and solver, wall clock); for the first model also the accuracy along the frontier.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from bench import quant_ptq as digits

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COMMAND = "python -m bench.quant_mixed"


def measure_model(arch: str, seed: int, epochs: int, calib_n: int, train, test, frontier: bool) -> dict:
    """One float model quantized uniformly and mixed, with both PTQ modes (module docstring)."""
    from shiftpu.arch.config import AccelConfig
    from shiftpu.arch.numerics import WeightCode
    from shiftpu.compiler.quant.mixed import choose_formats, predicted_sqnr_db
    from shiftpu.compiler.quant.ptq import PtqOptions

    fm = digits.float_onnx(digits.train_float(arch, seed, epochs, train))
    reference = digits.run_onnx(fm, test.images)
    calib = train.images[:calib_n]
    accel = AccelConfig(weight_code=WeightCode.SHIFT8_TWO_TERM)
    row: dict = {"model": f"{arch}/{seed}", "float": digits.accuracy(reference, test.labels)}
    t0 = time.perf_counter()
    # the halfway budget needs the layer sizes: a first choice at the all-two-term budget gives them
    _, probe = choose_formats(fm, calib, PtqOptions.fast(), accel, 1 << 40, "two-term accelerator")
    one, _ = probe.uniform(WeightCode.SHIFT4)
    two, _ = probe.uniform(WeightCode.SHIFT8_TWO_TERM)
    budget = (one + two) // 2
    fast_mixed, report = choose_formats(fm, calib, PtqOptions.fast(), accel, budget, "two-term accelerator")
    row["choice_s"] = time.perf_counter() - t0
    cost, error = report.total(report.chosen)
    row.update(one_term_bytes=one, two_term_bytes=two, budget=budget, mixed_bytes=cost,
               predicted_mixed_db=predicted_sqnr_db(error),
               predicted_one_term_db=predicted_sqnr_db(report.uniform(WeightCode.SHIFT4)[1]),
               predicted_two_term_db=predicted_sqnr_db(report.uniform(WeightCode.SHIFT8_TWO_TERM)[1]),
               formats={s.name: f.label for s, f in zip(report.layers, report.chosen, strict=True)})
    for mode, base in (("nearest", PtqOptions.fast()), ("calibrated", PtqOptions())):
        for tag, options in (("one_term", replace(base, weight_code=WeightCode.SHIFT4)),
                             ("two_term", replace(base, weight_code=WeightCode.SHIFT8_TWO_TERM)),
                             ("mixed", replace(base, layer_formats=fast_mixed.layer_formats))):
            m = digits.quantize_and_measure(fm, calib, test, reference, options)
            row[f"{mode}_{tag}"] = m.accuracy
            row[f"{mode}_{tag}_sqnr"] = m.output_sqnr_db
    if frontier:
        points = []
        for p in report.frontier:
            formats = {s.name: f for s, f in zip(report.layers, p.formats, strict=True)}
            point = {"weight_bytes": p.weight_bytes, "predicted_sqnr_db": p.predicted_sqnr_db,
                     "formats": [f.label for f in p.formats]}
            for mode, base in (("nearest", PtqOptions.fast()), ("calibrated", PtqOptions())):
                m = digits.quantize_and_measure(fm, calib, test, reference, replace(base, layer_formats=formats))
                point[mode], point[f"{mode}_sqnr"] = m.accuracy, m.output_sqnr_db
            points.append(point)
        row["frontier"] = points
    return row


def _markdown(rows: list[dict], args, when: str, seconds: float) -> str:
    lines = ["# Mixed precision (one-term / two-term weight codes per layer) on the digits CNNs", "",
             f"Measured {when} with `{COMMAND} --archs {' '.join(args.archs)} --seeds "
             f"{' '.join(map(str, args.seeds))} --epochs {args.epochs} --calib {args.calib}` on {platform.machine()} "
             f"({seconds:.0f} s in all, wall clock). Test accuracy in % on scikit-learn's digits (594 test images: one "
             "image is 0.17 points), output SQNR of the logits against the float model on the test images, both "
             "measured with onnxruntime. Budget: halfway between all one-term and all two-term weight bytes, each "
             "layer counted at its own code (4 bits a one-term weight, 8 a two-term one); the accelerator has "
             "two-term codes. Predicted SQNR: the second-order estimate the choice is made by (nearest rounding).",
             "", "| model | float | weight bytes: one-term / mixed / two-term (budget) | chosen formats | predicted SQNR "
             "one-term / mixed / two-term | nearest: one-term / mixed / two-term | calibrated: one-term / mixed / "
             "two-term | SQNR nearest: 1t / mixed / 2t | SQNR calibrated: 1t / mixed / 2t | choice |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmts = ", ".join(f"{k} {v.split('/')[0]}" for k, v in r["formats"].items())
        lines.append(
            f"| {r['model']} | {r['float']:.2f} | {r['one_term_bytes']} / {r['mixed_bytes']} / {r['two_term_bytes']} "
            f"({r['budget']}) | {fmts} | {r['predicted_one_term_db']:.1f} / {r['predicted_mixed_db']:.1f} / "
            f"{r['predicted_two_term_db']:.1f} dB | "
            + " | ".join(f"{r[f'{m}_one_term']:.2f} / {r[f'{m}_mixed']:.2f} / {r[f'{m}_two_term']:.2f}"
                         for m in ("nearest", "calibrated"))
            + " | "
            + " | ".join(f"{r[f'{m}_one_term_sqnr']:.1f} / {r[f'{m}_mixed_sqnr']:.1f} / {r[f'{m}_two_term_sqnr']:.1f} dB"
                         for m in ("nearest", "calibrated"))
            + f" | {r['choice_s']:.1f} s |")
    lines.append("")
    for m in ("nearest", "calibrated"):
        mean = {k: float(np.mean([r[f"{m}_{k}"] for r in rows])) for k in ("one_term", "mixed", "two_term")}
        met = sum(r[f"{m}_mixed"] >= max(r[f"{m}_one_term"], r[f"{m}_two_term"]) for r in rows)
        within = sum(r[f"{m}_mixed"] >= r[f"{m}_one_term"] for r in rows)
        lines.append(f"- {m} PTQ: mean accuracy one-term {mean['one_term']:.2f}, mixed {mean['mixed']:.2f}, two-term "
                     f"{mean['two_term']:.2f}; mixed >= the better uniform model in {met} of {len(rows)} models, >= "
                     f"the uniform model within the budget (all one-term) in {within} of {len(rows)}.")
    first = next((r for r in rows if "frontier" in r), None)
    if first is not None:
        lines += ["", f"Frontier of {first['model']} (the greedy's upgrades; predicted SQNR estimated, the rest "
                  "measured):", "", "| weight bytes | formats | predicted SQNR | nearest: accuracy / SQNR | "
                  "calibrated: accuracy / SQNR |", "|---|---|---|---|---|"]
        for p in first["frontier"]:
            lines.append(f"| {p['weight_bytes']} | {', '.join(f.split('/')[0] for f in p['formats'])} | "
                         f"{p['predicted_sqnr_db']:.1f} dB | {p['nearest']:.2f} / {p['nearest_sqnr']:.1f} dB | "
                         f"{p['calibrated']:.2f} / {p['calibrated_sqnr']:.1f} dB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    digits.add_digits_options(ap)
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    train, test = digits.digits_splits()
    rows = []
    for arch in args.archs:
        for seed in args.seeds:
            row = measure_model(arch, seed, args.epochs, args.calib, train, test, frontier=not rows)
            rows.append(row)
            print(f"{row['model']:<10} float {row['float']:.2f} | bytes 1t {row['one_term_bytes']} mixed "
                  f"{row['mixed_bytes']} 2t {row['two_term_bytes']} | nearest 1t/mixed/2t {row['nearest_one_term']:.2f}/"
                  f"{row['nearest_mixed']:.2f}/{row['nearest_two_term']:.2f} | calibrated "
                  f"{row['calibrated_one_term']:.2f}/{row['calibrated_mixed']:.2f}/{row['calibrated_two_term']:.2f} | "
                  f"{', '.join(row['formats'].values())}", flush=True)
    text = _markdown(rows, args, when, time.perf_counter() - start)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "quant_mixed.json").write_text(json.dumps({"command": COMMAND, "measured": when, "rows": rows},
                                                             indent=1) + "\n")
        (RESULTS / "quant_mixed.md").write_text(text)
    return rows


if __name__ == "__main__":
    main()
