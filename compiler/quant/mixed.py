"""Accelerator-aware mixed precision: per layer a weight code and an activation width, chosen under a budget.

After Chen, Wang and Cheng (ICCV 2021) and HAWQ-V3: each Conv/Gemm layer may take any format the target
accelerator runs (``candidate_formats``); a format's *sensitivity* is the second-order estimate of the model's
relative output error it causes (``sensitivity``: the trace of the Gauss-Newton Hessian of the layer's weights,
resp. of its output activation, times the mean squared quantization error of its elements; the errors of
different layers add up), its *cost* the layer's weight bytes at that code. Choosing one format per layer of
least total sensitivity within a byte budget is a Multiple-Choice Knapsack Problem, solved by ``knapsack.greedy``.

What the accelerator can do decides what is offered. It has one weight code for the whole model
(``AccelConfig.weight_code``): one whose code is one-term runs one-term layers only, one whose code is two-term
runs both (one-term values are two-term values whose second term is 0) but stores every weight in 8 bits.
The budget therefore counts each layer's weights at its own code, 4 bits a one-term weight and 8 a two-term
one: what per-layer weight formats would store, not yet what this accelerator stores. The accelerator's cycles
do not depend on the formats of the layers (its weight code is fixed, and 4-bit activations are stored one per
byte), so a cycle budget cannot be met by choosing formats: ``cycle_budget_refusal`` says so. A 4-bit
activation saves no weight byte either: under a byte budget it is never chosen, and the report shows what it
would cost in output error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.numerics import ActFormat, WeightCode
from shiftpu.compiler.quant.activations import LeakySlope, choose_exponent, fake_quantize
from shiftpu.compiler.quant.calibrate import input_spec, validate_calibration
from shiftpu.compiler.quant.fold import fold_float_model
from shiftpu.compiler.quant.knapsack import KnapsackError, Option, greedy, total, upgrade_path
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError, node_label
from shiftpu.compiler.quant.ptq import LayerFormat, PtqOptions, quantized_layers
from shiftpu.compiler.quant.sensitivity import PROBES, SAMPLES, Curvature, curvatures
from shiftpu.compiler.quant.slopes import round_leaky_slopes
from shiftpu.compiler.quant.weights import quantize_weights
from shiftpu.errors import ShiftpuError


class MixedPrecisionError(ShiftpuError, ValueError):
    """Mixed precision cannot be done as asked (a budget that cannot be met, an accelerator with one format)."""


def cycle_budget_refusal() -> MixedPrecisionError:
    """Why a budget in cycles is refused (module docstring)."""
    return MixedPrecisionError(
        "--max-cycles: a cycle budget needs per-layer formats on the accelerator, which it does not have yet: it has "
        "one weight code for the whole model (AccelConfig.weight_code) and stores 4-bit activations one per byte, so "
        "a layer's cycles do not depend on the format chosen for it; give the budget in weight bytes "
        "(--max-weight-bytes)")


def weight_bytes(weights: int, code: WeightCode) -> int:
    """Bytes of ``weights`` weights at ``code`` (4 or 8 bits each), packed."""
    return (weights * code.bits + 7) // 8


def candidate_formats(accel: AccelConfig, act_bits: int = 8) -> list[LayerFormat]:
    """The formats a layer may take on this accelerator: one-term codes, and two-term ones where its weight code
    is two-term; activations of ``act_bits`` bits or fewer (4 or 8) within the accelerator's width."""
    codes = [WeightCode.SHIFT4] + ([WeightCode.SHIFT8_TWO_TERM] if accel.weight_code is WeightCode.SHIFT8_TWO_TERM
                                   else [])
    widths = [b for b in (8, 4) if b <= min(act_bits, accel.act_bits)]
    return [LayerFormat(c, b) for c in codes for b in widths]


@dataclass(frozen=True)
class LayerSensitivity:
    """What one layer's formats cost and what they do to the model output (second-order estimate)."""

    name: str
    op_type: str
    weights: int  #: weight count
    output: str  #: the tensor its activation format applies to
    weight_curvature: Curvature
    output_curvature: Curvature
    #: mean squared quantization error per weight (nearest level, per-channel scales by the weight error)
    weight_error: dict[WeightCode, float]
    #: mean squared quantization error per element of the output activation (scale chosen on calibration data)
    output_error: dict[int, float]

    def sensitivity(self, fmt: LayerFormat) -> float:
        """Predicted relative output error energy of the layer in format ``fmt`` (weights plus output)."""
        return (self.weight_curvature.output_error(self.weight_error[fmt.weight_code])
                + self.output_curvature.output_error(self.output_error[fmt.act_bits]))

    def cost(self, fmt: LayerFormat) -> int:
        """Weight bytes of the layer in format ``fmt``."""
        return weight_bytes(self.weights, fmt.weight_code)


def _prepared(model: onnx.ModelProto, data: np.ndarray, options: PtqOptions) -> tuple[onnx.ModelProto, np.ndarray]:
    """The float model as the quantizer sees it (folded, LeakyReLU slopes rounded as asked), and the data checked."""
    folded = fold_float_model(model)
    _, shape = input_spec(folded)
    data = validate_calibration(data, shape)
    if options.leaky_slope is LeakySlope.ROUND:
        folded, _ = round_leaky_slopes(folded, data)
    return folded, data


def sensitivity(model: onnx.ModelProto, data: np.ndarray, formats: list[LayerFormat],
                options: PtqOptions | None = None, probes: int = PROBES, samples: int = SAMPLES,
                seed: int = 0) -> list[LayerSensitivity]:
    """Each Conv/Gemm layer's sensitivity and cost for the given formats, in graph order (module docstring)."""
    options = options or PtqOptions()
    folded, data = _prepared(model, data, options)
    g = GraphIndex(folded)
    layers = quantized_layers(folded)
    if not layers:
        raise ModelError("the model has no quantizable layer (Conv, Gemm or MatMul with constant weights)")
    tensors = list(dict.fromkeys([n.input[1] for n, _, _ in layers] + [out for _, out, _ in layers]))
    curv, stats = curvatures(folded, data, tensors, probes, samples, seed)
    codes = sorted({f.weight_code for f in formats})
    widths = sorted({f.act_bits for f in formats})
    result = []
    for node, out, signed in layers:
        w = np.asarray(g.const(node.input[1]), np.float64)
        werr = {c: float(np.mean((quantize_weights(w, c).dequantize() - w) ** 2)) for c in codes}
        values = stats[out].values
        aerr = {}
        for b in widths:
            fmt = ActFormat(b, signed)
            e = choose_exponent(values, fmt)
            aerr[b] = float(np.mean((fake_quantize(values, e, fmt).astype(np.float64) - values) ** 2))
        result.append(LayerSensitivity(node_label(node), node.op_type, int(w.size), out, curv[node.input[1]],
                                       curv[out], werr, aerr))
    return result


@dataclass(frozen=True)
class FrontierPoint:
    """One budget's choice: its weight bytes and the predicted output SQNR (dB) of the layers' errors."""

    weight_bytes: int
    predicted_sqnr_db: float
    formats: tuple[LayerFormat, ...]


def predicted_sqnr_db(error: float) -> float:
    """The output SQNR a relative output error energy stands for."""
    return math.inf if error <= 0 else -10.0 * math.log10(error)


@dataclass
class MixedPrecisionReport:
    """The layers' sensitivities, the choice within the budget and the frontier of cost against the proxy."""

    board: str
    accel: AccelConfig
    budget: int  #: weight bytes
    candidates: list[LayerFormat]
    layers: list[LayerSensitivity]
    chosen: list[LayerFormat]
    frontier: list[FrontierPoint] = field(default_factory=list)
    samples: int = SAMPLES
    probes: int = PROBES
    #: the quantized model's worst output SQNR on the calibration data (dB), once measured
    measured_sqnr_db: float | None = None

    def total(self, formats: list[LayerFormat] | tuple[LayerFormat, ...]) -> tuple[int, float]:
        """Weight bytes and predicted relative output error of one format per layer."""
        return (sum(s.cost(f) for s, f in zip(self.layers, formats, strict=True)),
                sum(s.sensitivity(f) for s, f in zip(self.layers, formats, strict=True)))

    def uniform(self, code: WeightCode) -> tuple[int, float]:
        """Weight bytes and predicted error of every layer at ``code`` with 8-bit (or the widest) activations."""
        bits = max(f.act_bits for f in self.candidates)
        return self.total([LayerFormat(code, bits)] * len(self.layers))

    def lines(self) -> list[str]:
        codes = sorted({f.weight_code for f in self.candidates})
        widths = sorted({f.act_bits for f in self.candidates}, reverse=True)
        names = {WeightCode.SHIFT4: "one-term", WeightCode.SHIFT8_TWO_TERM: "two-term"}
        out = [f"mixed precision for {self.board} (accelerator weight_code {self.accel.weight_code.name}, act_bits "
               f"{self.accel.act_bits}): budget {self.budget} weight bytes, each layer counted at its own code",
               "sensitivity: predicted relative output error energy of each layer's formats: Hutchinson trace of the "
               f"Gauss-Newton Hessian ({self.probes} probes, {self.samples} calibration samples) times the mean "
               "squared quantization error (estimated)",
               f"{'layer':<28} {'op':<5} {'weights':>8} " + " ".join(f"{'w ' + names[c]:>11}" for c in codes)
               + " " + " ".join(f"{'act ' + str(b) + '-bit':>11}" for b in widths) + f" {'chosen':>12} {'bytes':>8}"]
        for s, f in zip(self.layers, self.chosen, strict=True):
            w = " ".join(f"{s.weight_curvature.output_error(s.weight_error[c]):>11.2e}" for c in codes)
            a = " ".join(f"{s.output_curvature.output_error(s.output_error[b]):>11.2e}" for b in widths)
            out.append(f"{s.name[:28]:<28} {s.op_type:<5} {s.weights:>8} {w} {a} {f.label:>12} {s.cost(f):>8}")
        cost, error = self.total(self.chosen)
        out.append(f"chosen: {cost} weight bytes of the budget {self.budget}, predicted output SQNR "
                   f"{predicted_sqnr_db(error):.1f} dB (estimated for nearest rounding, from the layers' weights and "
                   "outputs)")
        for c in codes:
            b, e = self.uniform(c)
            out.append(f"  all {names[c]}: {b} weight bytes, predicted output SQNR {predicted_sqnr_db(e):.1f} dB")
        if self.measured_sqnr_db is not None:
            out.append(f"  the quantized model: output SQNR {self.measured_sqnr_db:.1f} dB on the calibration data "
                       "(measured, with the PTQ methods in use)")
        every = sum(s.weights for s in self.layers)
        out.append(f"on this accelerator (one weight code, {self.accel.weight_code.name}) every weight takes "
                   f"{self.accel.weight_code.bits} bits: {weight_bytes(every, self.accel.weight_code)} bytes; the "
                   "budget counts what per-layer weight formats would store")
        if len(widths) > 1:
            out.append("4-bit activations save no weight byte (the accelerator stores them one per byte), so under a "
                       "byte budget every layer keeps 8-bit activations; the act columns show their error")
        out.append("frontier: the greedy's upgrades from all one-term, largest predicted error reduction per byte "
                   "first (predicted, estimated):")
        out.append(f"  {'weight bytes':>12} {'predicted SQNR':>15}  two-term layers")
        points = list(self.frontier)
        if tuple(self.chosen) not in {p.formats for p in points}:
            points.append(FrontierPoint(cost, predicted_sqnr_db(error), tuple(self.chosen)))
            points.sort(key=lambda p: (p.weight_bytes, p.predicted_sqnr_db))
        for p in points:
            two = [s.name for s, f in zip(self.layers, p.formats, strict=True)
                   if f.weight_code is WeightCode.SHIFT8_TWO_TERM]
            mark = " <- chosen" if p.formats == tuple(self.chosen) else ""
            out.append(f"  {p.weight_bytes:>12} {p.predicted_sqnr_db:>12.1f} dB  "
                       f"{', '.join(two) if two else '(none)'}{mark}")
        return out

    def to_dict(self) -> dict:
        """The report as JSON-ready data."""
        def fmt(f: LayerFormat) -> dict:
            return {"weight_code": f.weight_code.name, "act_bits": f.act_bits, "label": f.label}

        cost, error = self.total(self.chosen)
        uniform = {}
        for code in sorted({f.weight_code for f in self.candidates}):
            b, e = self.uniform(code)
            uniform[code.name] = {"weight_bytes": b, "predicted_sqnr_db": predicted_sqnr_db(e)}
        return {
            "board": self.board, "accelerator_weight_code": self.accel.weight_code.name,
            "accelerator_act_bits": self.accel.act_bits, "budget_weight_bytes": self.budget,
            "samples": self.samples, "probes": self.probes,
            "chosen": {"weight_bytes": cost, "predicted_sqnr_db": predicted_sqnr_db(error)},
            "uniform": uniform,
            "measured_sqnr_db": self.measured_sqnr_db,
            "layers": [{"name": s.name, "op_type": s.op_type, "weights": s.weights, "output": s.output,
                        "weight_trace": s.weight_curvature.trace, "weight_trace_stderr": s.weight_curvature.stderr,
                        "output_trace": s.output_curvature.trace, "output_trace_stderr": s.output_curvature.stderr,
                        "formats": [{**fmt(f), "sensitivity": s.sensitivity(f), "weight_bytes": s.cost(f)}
                                    for f in self.candidates],
                        "chosen": fmt(c), "weight_bytes": s.cost(c)}
                       for s, c in zip(self.layers, self.chosen, strict=True)],
            "frontier": [{"weight_bytes": p.weight_bytes, "predicted_sqnr_db": p.predicted_sqnr_db,
                          "formats": [f.label for f in p.formats]} for p in self.frontier],
        }


def solve(layers: list[LayerSensitivity], formats: list[LayerFormat], budget: int) -> list[LayerFormat]:
    """One format per layer, least total sensitivity within ``budget`` weight bytes (``knapsack.greedy``)."""
    items = [[Option(s.cost(f), s.sensitivity(f)) for f in formats] for s in layers]
    try:
        return [formats[k] for k in greedy(items, budget)]
    except KnapsackError:
        floor = sum(min(s.cost(f) for f in formats) for s in layers)
        raise MixedPrecisionError(f"--max-weight-bytes {budget} is below the cheapest choice: every layer one-term "
                                  f"takes {floor} weight bytes") from None


def frontier(layers: list[LayerSensitivity], formats: list[LayerFormat]) -> list[FrontierPoint]:
    """The greedy's choices from the cheapest to the least sensitive, one more upgrade each
    (``knapsack.upgrade_path``); of choices with the same weight bytes, the last."""
    items = [[Option(s.cost(f), s.sensitivity(f)) for f in formats] for s in layers]
    points: list[FrontierPoint] = []
    for choice in upgrade_path(items):
        cost, error = total(items, choice)
        if points and cost == points[-1].weight_bytes:
            points.pop()
        points.append(FrontierPoint(cost, predicted_sqnr_db(error), tuple(formats[k] for k in choice)))
    return points


def choose_formats(model: onnx.ModelProto, data: np.ndarray, options: PtqOptions, accel: AccelConfig,
                   max_weight_bytes: int, board: str = "", probes: int = PROBES, samples: int = SAMPLES,
                   seed: int | None = None) -> tuple[PtqOptions, MixedPrecisionReport]:
    """``options`` with one format per layer chosen within ``max_weight_bytes`` for ``accel``, and the report."""
    formats = candidate_formats(accel, options.act_bits)
    if len({f.weight_code for f in formats}) < 2:
        raise MixedPrecisionError(
            f"mixed precision for {board or 'this accelerator'}: its accelerator has one-term weight codes only "
            f"(weight_code {accel.weight_code.name}), so every layer is one-term and there is nothing to choose; "
            "target an accelerator with weight_code SHIFT8_TWO_TERM (a board file whose accel sets it, "
            "docs/boards.md), which runs one-term and two-term layers")
    layers = sensitivity(model, data, formats, options, probes, samples, options.seed if seed is None else seed)
    chosen = solve(layers, formats, max_weight_bytes)
    report = MixedPrecisionReport(board, accel, max_weight_bytes, formats, layers, chosen, frontier(layers, formats),
                                  min(samples, len(data)), probes)
    return replace(options, layer_formats={s.name: f for s, f in zip(layers, chosen, strict=True)}), report
