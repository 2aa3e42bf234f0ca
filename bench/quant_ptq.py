"""Post-training shift quantization on real data: float vs the data-free PTQ vs the calibration-driven PTQ.

    .venv/bin/python -m bench.quant_ptq [--seeds 0 1 2] [--epochs 40] [--calib 256] [--threads 1]

Trains small float CNNs on scikit-learn's handwritten digits (8x8, 1,797 images, no download; 67/33 split,
stratified, fixed seed: 594 test images), exports each to float ONNX and quantizes it with
``shiftpu.compiler.quant.ptq`` four ways: one-term and two-term shift codes, each with ``PtqOptions.fast``
(each weight rounded to the nearest power of two: the PTQ before calibration-driven methods) and with the
default options (equalisation, bias correction, scale search, rounding optimisation). Prints, per model, the
test accuracy of each (measured, onnxruntime), the model output SQNR on the test images against the float
model, and the quantization wall time. Two architectures: ``pooled`` (the layout of examples/digits: three
3x3 Conv-BN-ReLU, two max pools, a Linear) and ``strided`` (three Conv-BN-ReLU, the last two with stride 2,
no pooling, a Linear).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass

import numpy as np

#: Test share of the split (stratified, with the example's seed).
TEST_FRACTION = 0.33


def digits_splits():
    """The scikit-learn digits scaled to [0, 1], split 67/33 (examples/digits/train.py's split, its seed)."""
    from examples.digits.train import load_digits_splits

    return load_digits_splits(TEST_FRACTION)


def make_model(arch: str):
    """A float digits CNN: ``pooled`` or ``strided`` (module docstring)."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    if arch == "pooled":
        body = [*cbr(1, 16), *cbr(16, 32), nn.MaxPool2d(2), *cbr(32, 32), nn.MaxPool2d(2)]
        features = 32 * 2 * 2
    elif arch == "strided":
        body = [*cbr(1, 16), *cbr(16, 32, 2), *cbr(32, 64, 2)]
        features = 64 * 2 * 2
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return nn.Sequential(*body, nn.Flatten(), nn.Linear(features, 10)).to(torch.float32)


def train_float(arch: str, seed: int, epochs: int, train):
    """A float model trained with Adam (lr 3e-3, cosine decay), batch 64, seeded init and shuffling."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = make_model(arch)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = 64
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * ((len(x) + batch - 1) // batch)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def float_onnx(model):
    """The float model as ONNX (symbolic batch), the input of post-training quantization."""
    import io

    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 8, 8), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    return onnx.load_from_string(buf.getvalue())


def run_onnx(model, images: np.ndarray) -> np.ndarray:
    """onnxruntime (CPU) logits of a model on all images."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images})[0]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((logits.argmax(axis=1) == labels).mean())


@dataclass
class Measured:
    """One quantized model on the test split."""

    accuracy: float  #: %
    output_sqnr_db: float  #: logits against the float model's
    seconds: float  #: quantize_model wall time
    report: object


def quantize_and_measure(float_model, calib: np.ndarray, test, reference: np.ndarray, options) -> Measured:
    """Quantize with ``options``, then measure on the test split."""
    from shiftpu.compiler.quant.ptq import quantize_model
    from shiftpu.compiler.quant.weights import sqnr_db

    t0 = time.perf_counter()
    q, report = quantize_model(float_model, calib, options)
    seconds = time.perf_counter() - t0
    logits = run_onnx(q, test.images)
    return Measured(accuracy(logits, test.labels), sqnr_db(reference, logits), seconds, report)


def add_digits_options(ap: argparse.ArgumentParser, calib_help: str = "calibration images (first of the training "
                       "split)", threads_help: str = "torch threads for training") -> None:
    """The options every digits benchmark takes: the models (architectures, seeds, epochs), the calibration images
    and torch's threads."""
    ap.add_argument("--archs", nargs="+", default=["pooled", "strided"], choices=["pooled", "strided"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (one model each)")
    ap.add_argument("--epochs", type=int, default=40, help="float training epochs")
    ap.add_argument("--calib", type=int, default=256, help=calib_help)
    ap.add_argument("--threads", type=int, default=1, help=threads_help)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_digits_options(ap)
    ap.add_argument("--report", action="store_true", help="print the PTQ report of each new one-term model")
    args = ap.parse_args(argv)

    import torch

    from shiftpu.arch.numerics import WeightCode
    from shiftpu.compiler.quant.ptq import PtqOptions

    torch.set_num_threads(args.threads)
    train, test = digits_splits()
    calib = train.images[: args.calib]
    print(f"scikit-learn digits: {len(train.labels)} training, {len(test.labels)} test images; {len(calib)} "
          f"calibration images; test accuracy in % and model output SQNR in dB on the test images (measured, "
          "onnxruntime); PTQ time in s (measured, wall clock)")
    header = (f"{'model':<12} {'float':>6} | {'one-term old':>12} {'one-term new':>12} | {'two-term old':>12} "
              f"{'two-term new':>12} | {'SQNR 1t old/new':>15} {'SQNR 2t old/new':>15} | {'time old/new':>12}")
    print(header)
    print("-" * len(header))
    rows = []
    for arch in args.archs:
        for seed in args.seeds:
            model = train_float(arch, seed, args.epochs, train)
            fm = float_onnx(model)
            reference = run_onnx(fm, test.images)
            acc_float = accuracy(reference, test.labels)
            row: dict = {"model": f"{arch}/{seed}", "float": acc_float}
            for code, tag in ((WeightCode.SHIFT4, "1t"), (WeightCode.SHIFT8_TWO_TERM, "2t")):
                for options, kind in ((PtqOptions.fast(code), "old"), (PtqOptions(code), "new")):
                    m = quantize_and_measure(fm, calib, test, reference, options)
                    row[f"{tag}_{kind}"] = m.accuracy
                    row[f"{tag}_{kind}_sqnr"] = m.output_sqnr_db
                    row[f"{tag}_{kind}_s"] = m.seconds
                    if args.report and tag == "1t" and kind == "new":
                        print("\n".join(m.report.lines()))
            rows.append(row)
            print(f"{row['model']:<12} {acc_float:>6.2f} | {row['1t_old']:>12.2f} {row['1t_new']:>12.2f} | "
                  f"{row['2t_old']:>12.2f} {row['2t_new']:>12.2f} | "
                  f"{row['1t_old_sqnr']:>7.1f}/{row['1t_new_sqnr']:<7.1f} {row['2t_old_sqnr']:>7.1f}/"
                  f"{row['2t_new_sqnr']:<7.1f} | {row['1t_old_s']:>5.1f}/{row['1t_new_s']:<6.1f}", flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "model"}
    print(f"{'mean':<12} {mean['float']:>6.2f} | {mean['1t_old']:>12.2f} {mean['1t_new']:>12.2f} | "
          f"{mean['2t_old']:>12.2f} {mean['2t_new']:>12.2f} | {mean['1t_old_sqnr']:>7.1f}/{mean['1t_new_sqnr']:<7.1f} "
          f"{mean['2t_old_sqnr']:>7.1f}/{mean['2t_new_sqnr']:<7.1f} | {mean['1t_old_s']:>5.1f}/{mean['1t_new_s']:<6.1f}")
    print(f"one-term drop from float: old {mean['float'] - mean['1t_old']:.2f} points, "
          f"new {mean['float'] - mean['1t_new']:.2f} points (mean over {len(rows)} models)")
    return rows


if __name__ == "__main__":
    main()
