"""LeakyReLU slopes rounded to the powers of two the fabric runs, and what the rounding changes.

The requantiser applies a LeakyReLU by shifting negative values k further (slope 2^-k, one term: the ISA has
one ``leaky_shift`` field and no second term), so a slope such as YOLO's 0.1 runs on the fabric only once it
is rounded, here to the nearest 2^-k (0.1 -> 0.125). The change is measured on the calibration data with the
float model, before any quantization: the largest change of each activation's output, and the SQNR of the
model outputs with all slopes rounded against the original ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from shiftpu.compiler.quant.activations import leaky_shift_of, rounded_leaky_shift
from shiftpu.compiler.quant.calibrate import batches, input_spec, session
from shiftpu.compiler.quant.onnxio import attr, node_label
from shiftpu.compiler.quant.weights import sqnr_db

#: Calibration samples on which the change is measured.
SLOPE_SAMPLES = 128


@dataclass(frozen=True)
class SlopeRounding:
    """One LeakyReLU whose slope was rounded to 2^-shift."""

    name: str
    alpha: float  #: the slope of the float model
    shift: int  #: the slope the quantized model uses is 2^-shift
    #: the largest change of the activation's output on the calibration data, |x| |alpha - 2^-shift| over its
    #: negative inputs x (measured, float model)
    max_abs_change: float

    @property
    def rounded(self) -> float:
        return 2.0**-self.shift


@dataclass
class SlopeReport:
    """All slopes rounded in one model, and the change of the model outputs (measured on the float model)."""

    slopes: list[SlopeRounding]
    output_sqnr_db: dict[str, float]  #: model output: float model with rounded slopes vs the original
    output_max_abs_change: dict[str, float]
    n_samples: int

    def lines(self) -> list[str]:
        if not self.slopes:
            return []
        out = [f"{len(self.slopes)} LeakyReLU slope(s) rounded to the nearest 2^-k (--leaky-slope round; the fabric "
               f"applies one power-of-two term), change measured on {self.n_samples} calibration sample(s) with the "
               "float model:"]
        out += [f"  {s.name}: {s.alpha:g} -> {s.rounded:g} (2^-{s.shift}), largest change of its output "
                f"{s.max_abs_change:.4g}" for s in self.slopes]
        out += [f"  model output {name!r} with the rounded slopes vs the original: SQNR {v:.1f} dB, largest change "
                f"{self.output_max_abs_change[name]:.4g} (measured)" for name, v in self.output_sqnr_db.items()]
        return out


def _run(model: onnx.ModelProto, data: np.ndarray, names: list[str], wide: list[str]) -> dict[str, np.ndarray]:
    """The named tensors on ``data``; those in ``wide`` as float64, the others as the model gives them."""
    input_name, shape = input_spec(model)
    sess = session(model, names)
    values: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in batches(data, shape):
        for n, v in zip(names, sess.run(names, {input_name: batch}), strict=True):
            values[n].append(np.asarray(v, np.float64 if n in wide else None))
    return {n: np.concatenate(v) for n, v in values.items()}


def round_leaky_slopes(model: onnx.ModelProto, data: np.ndarray) -> tuple[onnx.ModelProto, SlopeReport]:
    """The float model with every LeakyReLU slope that is not 2^-k (1 <= k <= 15) rounded to the nearest one, and
    what that changes on (the first SLOPE_SAMPLES of) the calibration data."""
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    changed: list[tuple[onnx.NodeProto, float, int]] = []
    for node in rounded.graph.node:
        if node.op_type != "LeakyRelu":
            continue
        alpha = float(attr(node, "alpha", 0.01))
        k = rounded_leaky_shift(alpha)
        if leaky_shift_of(alpha) is not None or k is None:
            continue
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("alpha", float(2.0**-k)))
        changed.append((node, alpha, k))
    if not changed:
        return model, SlopeReport([], {}, {}, 0)
    sample = data[:SLOPE_SAMPLES]
    outputs = [o.name for o in model.graph.output]
    ref = _run(model, sample, outputs + list(dict.fromkeys(n.input[0] for n, _, _ in changed)), outputs)
    got = _run(rounded, sample, outputs, outputs)
    # the most negative input of each activation, taken in the model's precision (the same value as in float64)
    slopes = [SlopeRounding(node_label(n), alpha, k,
                            max(0.0, -float(ref[n.input[0]].min(initial=0.0))) * abs(alpha - 2.0**-k))
              for n, alpha, k in changed]
    return rounded, SlopeReport(slopes, {o: sqnr_db(ref[o], got[o]) for o in outputs},
                                {o: float(np.abs(ref[o] - got[o]).max(initial=0.0)) for o in outputs}, len(sample))
