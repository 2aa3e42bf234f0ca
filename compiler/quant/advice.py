"""The warning `shiftpu quantize` ends with when the quantized model is far from the float one.

An output SQNR below LOW_SQNR_DB on the calibration data means errors visible in the results (on the digits CNN
of docs/quantization.md, 8 dB costs 2 points of accuracy where 23 dB costs none). The warning names the layers
that lose the most SQNR between their input and their output (where the error is made, not where it has
accumulated) and the options that would lower it, leaving out those already in use.
"""

from __future__ import annotations

import math

from shiftpu.arch.numerics import WeightCode
from shiftpu.compiler.quant.ptq import PtqOptions
from shiftpu.compiler.quant.report import LayerReport, PtqReport

#: Output SQNR (dB) on the calibration data below which `shiftpu quantize` warns.
LOW_SQNR_DB = 15.0
#: Layers the warning names.
WORST_LAYERS = 3
#: Calibration samples below which the warning suggests more.
FEW_SAMPLES = 256


def added_noise(layer: LayerReport) -> float:
    """Quantization noise the layer adds, relative to the signal: 10^(-output SQNR / 10) - 10^(-input SQNR / 10)
    (an input not measured counts as exact)."""
    def noise(db: float) -> float:
        return 0.0 if math.isnan(db) or db == math.inf else 10.0 ** (-db / 10.0)

    return noise(layer.output_sqnr_db) - noise(layer.input_sqnr_db)


def low_sqnr_warning(report: PtqReport, options: PtqOptions, mixed_precision: bool = False,
                     threshold_db: float = LOW_SQNR_DB) -> list[str]:
    """The warning's lines when the worst model output's SQNR is below ``threshold_db``; else none."""
    if not report.output_sqnr_db:
        return []
    name, worst = min(report.output_sqnr_db.items(), key=lambda kv: kv[1])
    if not worst < threshold_db:
        return []
    lines = [f"WARNING: the quantized model's output {name!r} has an SQNR of {worst:.1f} dB on the calibration data "
             f"(measured), below {threshold_db:g} dB: expect it to lose accuracy against the float model."]
    ranked = sorted(report.layers, key=added_noise, reverse=True)[:WORST_LAYERS]
    if ranked:
        lines.append("  the layers that add the most noise (input -> output SQNR; weight code, weight SQNR):")
        for r in ranked:
            fmt = options.layer_format(r.name)
            code = "one-term" if fmt.weight_code is WeightCode.SHIFT4 else "two-term"
            lines.append(f"    {r.name}: {r.input_sqnr_db:.1f} -> {r.output_sqnr_db:.1f} dB; {code}, "
                         f"{r.weight_sqnr_db:.1f} dB")
    tips = []
    one_term = [r for r in report.layers if options.layer_format(r.name).weight_code is WeightCode.SHIFT4]
    if one_term and not mixed_precision:
        tips.append("--weight-code two-term (weights +-2^e1 +- 2^e2, 8 bits each: a finer grid for every layer)")
        tips.append("--mixed-precision --board B --max-weight-bytes N (two-term codes for the layers where they "
                    "matter most, within a budget)")
    elif one_term:
        tips.append("a larger --max-weight-bytes (more layers with two-term codes)")
    if any(options.layer_format(r.name).act_bits < 8 for r in report.layers) or options.act_bits < 8:
        tips.append("--act-bits 8")
    methods = options.layer_methods
    if not (methods.rounding or methods.scale_search or methods.bias_correction):
        tips.append("no --fast-ptq (the calibration-driven methods choose weights, scales and biases by each "
                    "layer's output error)")
    else:
        off = [flag for flag, on in (("--no-adaround", methods.rounding), ("--no-scale-search", methods.scale_search),
                                      ("--no-bias-correction", methods.bias_correction),
                                      ("--no-equalize", options.equalize)) if not on]
        if off:
            tips.append(f"without {', '.join(off)}")
    if report.n_calibration < FEW_SAMPLES:
        tips.append(f"more calibration data ({report.n_calibration} sample(s) given; a few hundred that cover the "
                    "inputs the model will see)")
    if tips:
        lines.append("  try: " + tips[0])
        lines += [f"       {t}" for t in tips[1:]]
    return lines
