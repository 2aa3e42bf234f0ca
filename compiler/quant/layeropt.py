"""Calibration-driven quantization of one layer's weights and bias, one method after another.

Starting from the data-free choice (each weight rounded to the nearest shift level, per-channel scales
minimising the weight error), each enabled method changes the weights or bias only where it lowers the
layer's output error on the calibration data (``LayerStats``), so the error never rises from one step to the
next; the SQNR after each step goes to the report:

1. bias correction: the mean output error of the quantized weights is removed through the bias;
2. scale search: each output channel's power-of-two scale chosen among the same candidates as before, now
   by the output error (with the corrected bias when 1 is on);
3. rounding (``rounding.optimise_rounding``): each weight's level (down, up or zero) chosen by the output
   error at the chosen scale, plus DAMPING times the weight error (so that directions the calibration data
   hardly excites are not exploited); a channel keeps the new levels only if its output error fell. The
   bias is corrected again for the new weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftpu.arch.numerics import WeightCode
from shiftpu.compiler.quant.layerstats import LayerStats
from shiftpu.compiler.quant.rounding import optimise_rounding, rounding_candidates
from shiftpu.compiler.quant.weights import (
    SCALE_SEARCH_STEPS,
    ShiftWeights,
    max_fit_exponent,
    nearest_level,
    quantize_weights,
    weight_levels,
)

#: Weight of the weight error next to the output error in the rounding objective, relative to the mean input
#: energy: it keeps the rounding from exploiting directions the calibration data does not excite.
DAMPING = 0.1


@dataclass(frozen=True)
class LayerMethods:
    """Which calibration-driven methods run on a layer."""

    bias_correction: bool = True
    scale_search: bool = True
    rounding: bool = True


@dataclass(frozen=True)
class LayerResult:
    """A layer's quantized weights, the float bias to quantize, and the output SQNR (dB) after each step."""

    weights: ShiftWeights
    bias: np.ndarray
    steps: tuple[tuple[str, float], ...]


def _sqnr(energy: float, mse: float) -> float:
    if mse <= 0.0:
        return float("inf")
    return 10.0 * float(np.log10(energy / mse)) if energy > 0 else float("-inf")


def optimise_layer(w: np.ndarray, bias: np.ndarray, stats: LayerStats, code: WeightCode, methods: LayerMethods,
                   rng: np.random.Generator) -> LayerResult:
    """Quantize weights ``w`` [C, ...] and bias [C] of one layer with the enabled methods (module docstring)."""
    shape = w.shape
    wf = np.asarray(w, dtype=np.float64).reshape(shape[0], -1)
    bf = np.asarray(bias, dtype=np.float64)
    levels = weight_levels(code)
    base = quantize_weights(w, code)
    q = base.values.reshape(shape[0], -1).astype(np.float64)
    exps = base.exponents.astype(np.int64)
    error = stats.error_of(wf, bf)
    energy = float(error.energy().sum())

    def real(q: np.ndarray, e: np.ndarray) -> np.ndarray:
        return q * np.ldexp(1.0, e)[:, None]

    def channel_error(q: np.ndarray, e: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Output error of the channels ``rows`` (all: None) with levels q at exponents e, the bias corrected
        for them when bias correction is on."""
        terms = error.terms(real(q, e), rows)
        bq = error.corrected_bias(terms, rows) if methods.bias_correction else bf if rows is None else bf[rows]
        return error.mse(terms, bq, rows)

    b = bf.copy()
    terms = error.terms(real(q, exps))
    #: per channel, the output error of (q, exps) with the bias the enabled methods give it
    current = error.mse(terms, b)
    steps = [("nearest", _sqnr(energy, float(current.sum())))]
    if methods.bias_correction:
        b = error.corrected_bias(terms)
        current = error.mse(terms, b)
        steps.append(("bias correction", _sqnr(energy, float(current.sum()))))

    if methods.scale_search:
        first = exps.copy()
        top = max_fit_exponent(np.abs(wf).max(axis=1), code).astype(np.int64)
        for step in range(SCALE_SEARCH_STEPS):
            e = top - step
            rows = np.flatnonzero(e != first)  # at its first exponent a channel's error is ``current`` already
            qe = nearest_level(wf[rows] / np.ldexp(1.0, e[rows])[:, None], levels)
            # the same real weights at another exponent have the same error: not better
            new = (real(qe, e[rows]) != real(q[rows], exps[rows])).any(axis=1)
            rows, qe = rows[new], qe[new]
            if rows.size == 0:
                continue
            err = channel_error(qe, e[rows], rows)
            better = err < current[rows]
            at = rows[better]
            q[at], exps[at], current[at] = qe[better], e[at], err[better]
        if methods.bias_correction:
            b = stats.corrected_bias(real(q, exps), wf, bf)
        steps.append(("scale search", _sqnr(energy, float(current.sum()))))

    if methods.rounding:
        scale = np.ldexp(1.0, exps)
        cand = rounding_candidates(wf / scale[:, None], levels)
        chosen = q.copy()
        for channels, h, t in stats.objective(wf, centred=methods.bias_correction, error=error):
            damp = DAMPING * float(np.mean(np.diag(h)))
            h = h + damp * np.eye(len(h))
            t = t + damp * wf[channels]
            chosen[channels] = optimise_rounding(cand.levels[channels], q[channels], h, t, scale[channels], rng)
        rows = np.flatnonzero((chosen != q).any(axis=1))  # a channel whose levels did not change keeps its error
        if rows.size:
            err = channel_error(chosen[rows], exps[rows], rows)
            better = err < current[rows]
            at = rows[better]
            q[at], current[at] = chosen[at], err[better]
        b = stats.corrected_bias(real(q, exps), wf, bf) if methods.bias_correction else bf
        steps.append(("rounding", _sqnr(energy, float(current.sum()))))

    weights = ShiftWeights(q.reshape(shape).astype(np.int8), exps.astype(np.int32))
    return LayerResult(weights, b, tuple(steps))
