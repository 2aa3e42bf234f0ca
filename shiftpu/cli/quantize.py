"""`shiftpu quantize` (post-training shift quantization), `shiftpu check` (does a model fit the fabric) and
`shiftpu import-qonnx` (QONNX / Brevitas QCDQ graphs to the quantized ONNX form)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shiftpu.boards import DEFAULT_BOARD
from shiftpu.cli.main import app
from shiftpu.cli.paths import atomic_file, check_output_file

if TYPE_CHECKING:
    import numpy as np
    import onnx

#: help of the --input-shape option of check and compile
INPUT_SHAPE_HELP = ("Fixed shape of a model input whose dimensions are symbolic: 1,3,224,224 for the only input, "
                    "name:1,3,224,224 per input (repeat the option). Without it, a symbolic batch (first) dimension "
                    "is bound to 1 and any other symbolic dimension is refused.")


class WeightCodeOption(str, Enum):
    """Weight coding named on the command line."""

    shift4 = "shift4"
    two_term = "two-term"


class LeakySlopeOption(str, Enum):
    """What quantize does with a LeakyReLU slope that is not a power of two, named on the command line."""

    round = "round"
    cpu = "cpu"


def _weight_code(option: WeightCodeOption):
    from shiftpu.arch.numerics import WeightCode

    return WeightCode.SHIFT4 if option is WeightCodeOption.shift4 else WeightCode.SHIFT8_TWO_TERM


def _calibration_data(float_model: onnx.ModelProto, calib: Path | None, data_free: bool, samples: int, steps: int,
                      input_range: str | None, seed: int) -> np.ndarray:
    """The calibration inputs: read from --calib, or synthesised (--data-free; its summary printed)."""
    from shiftpu.compiler.quant.calibrate import CalibrationError, load_calibration

    if (calib is None) == (not data_free):
        raise CalibrationError("give calibration inputs with --calib X.npy or synthesise them with --data-free "
                               "(one of the two, not both)")
    if not data_free:
        if input_range is not None:
            raise CalibrationError("--input-range belongs to --data-free (the range of the synthesised inputs)")
        return load_calibration(calib)
    from shiftpu.compiler.quant.datafree import DataFreeOptions, synthesize

    bounds = None
    if input_range is not None:
        try:
            lo, hi = (float(v) for v in input_range.split(","))
        except ValueError:
            raise CalibrationError(f"--input-range {input_range!r}: give two numbers, LO,HI (e.g. 0,1)") from None
        bounds = (lo, hi)
    synthesis = synthesize(float_model, DataFreeOptions(samples=samples, steps=steps, seed=seed, input_range=bounds))
    typer.echo(synthesis.summary())
    return synthesis.data


@app.command()
def quantize(
    model: Path = typer.Argument(..., help="Float ONNX model (Conv, Gemm/MatMul, Relu, pooling, Add, Concat, ...)."),
    calib: Path = typer.Option(None, "--calib", help="Calibration inputs: a .npy float array, NCHW, preprocessed "
                               "exactly as the model input (or --data-free)."),
    data_free: bool = typer.Option(False, "--data-free", help="No calibration data: synthesise the calibration inputs "
                                   "from the statistics of the model's BatchNormalization nodes (export it with "
                                   "them kept), then quantize as with --calib."),
    data_free_samples: int = typer.Option(128, "--data-free-samples", metavar="N",
                                          help="--data-free: calibration inputs to synthesise."),
    data_free_steps: int = typer.Option(300, "--data-free-steps", metavar="N", help="--data-free: optimisation "
                                        "steps per batch of 64 inputs (the time the synthesis takes)."),
    input_range: str = typer.Option(None, "--input-range", metavar="LO,HI", help="--data-free: the range the model "
                                    "input lies in, e.g. 0,1 for images scaled to [0, 1] (default: unbounded)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the shift-quantized QDQ ONNX model."),
    weight_code: WeightCodeOption = typer.Option(WeightCodeOption.shift4, "--weight-code",
                                                 help="shift4: weights 0 or +-2^e; two-term: +-2^e1 +- 2^e2."),
    act_bits: int = typer.Option(8, "--act-bits", help="Activation width in bits: 8 or 4."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration-driven methods (rows sampled, order of the "
                             "rounding sweeps): the same seed and inputs give the same model."),
    fast_ptq: bool = typer.Option(False, "--fast-ptq", help="No calibration-driven weight method: each weight "
                                  "rounded to the nearest shift level, scales by the weight error, no bias "
                                  "correction, equalisation or BatchNorm re-estimation (quickest, least accurate)."),
    no_adaround: bool = typer.Option(False, "--no-adaround", help="Skip the rounding optimisation (the slow part): "
                                     "weights rounded to the nearest level; the other methods still run."),
    no_scale_search: bool = typer.Option(False, "--no-scale-search", help="Per-channel weight scales chosen by the "
                                         "weight error instead of the layer output error."),
    no_bias_correction: bool = typer.Option(False, "--no-bias-correction",
                                            help="Keep the float bias (no removal of the mean output error)."),
    no_equalize: bool = typer.Option(False, "--no-equalize", help="Skip cross-layer equalisation (power-of-two "
                                     "factors between Conv/Gemm pairs, kept only where it helps)."),
    no_bn_reestimate: bool = typer.Option(False, "--no-bn-reestimate", help="Keep the statistics of BatchNorm nodes "
                                          "that stay float (not folded into a Conv)."),
    leaky_slope: LeakySlopeOption = typer.Option(LeakySlopeOption.round, "--leaky-slope",
                                                 help="LeakyReLU slopes that are not 2^-k: round (to the nearest 2^-k, "
                                                 "which the fabric runs; the report gives the change of the outputs) "
                                                 "or cpu (kept, run in float on the CPU)."),
    mixed_precision: bool = typer.Option(False, "--mixed-precision", help="Choose each layer's weight code (one-term "
                                         "or two-term) and activation width from a second-order sensitivity on the "
                                         "calibration data, within --max-weight-bytes, among the formats the "
                                         "accelerator of --board runs; prints the choice and the frontier."),
    board: str = typer.Option(None, "--board", "-b", metavar="<board>", help="--mixed-precision: the board (or board "
                              "file) whose accelerator the formats are chosen for; it must have two-term codes."),
    max_weight_bytes: int = typer.Option(None, "--max-weight-bytes", metavar="N", help="--mixed-precision: budget "
                                         "in weight bytes, each layer counted at its own code (4 bits a one-term "
                                         "weight, 8 a two-term one)."),
    max_cycles: int = typer.Option(None, "--max-cycles", metavar="N", help="--mixed-precision: budget in accelerator "
                                   "cycles (refused: the accelerator has no per-layer formats yet)."),
    mixed_report: Path = typer.Option(None, "--mixed-report", metavar="FILE.json", help="--mixed-precision: write "
                                      "the sensitivities, the choice and the frontier as JSON."),
) -> None:
    """Post-training quantization: float ONNX -> shift-quantized QDQ ONNX, with a per-layer SQNR report.

    By default the weights, scales and biases are chosen by each layer's output error on the calibration data
    (rounding optimisation, scale search, bias correction), layer pairs are equalised where it helps and float
    BatchNorms re-estimated; the report gives the SQNR after each method. Without calibration data, --data-free
    synthesises the calibration inputs from the statistics of the model's BatchNormalization nodes.
    """
    import onnx

    from shiftpu.compiler.quant.activations import LeakySlope
    from shiftpu.compiler.quant.onnxio import ModelError, load_model
    from shiftpu.compiler.quant.ptq import PtqOptions, quantize_model

    if act_bits not in (4, 8):
        raise ModelError(f"--act-bits must be 4 or 8, got {act_bits}")
    check_output_file(output, "--output")
    _check_mixed_options(mixed_precision, weight_code, board, max_weight_bytes, max_cycles, mixed_report)
    float_model = load_model(model)
    data = _calibration_data(float_model, calib, data_free, data_free_samples, data_free_steps, input_range, seed)
    code = _weight_code(weight_code)
    slope = LeakySlope(leaky_slope.value)
    if fast_ptq:
        options = PtqOptions.fast(code, act_bits, slope)
    else:
        options = PtqOptions(code, act_bits, adaround=not no_adaround, scale_search=not no_scale_search,
                             bias_correction=not no_bias_correction, equalize=not no_equalize,
                             bn_reestimate=not no_bn_reestimate, seed=seed, leaky_slope=slope)
    mixed = None
    if mixed_precision:
        options, mixed = _mixed_formats(float_model, data, options, board, max_weight_bytes)
    q, report = quantize_model(float_model, data, options)
    with atomic_file(output) as tmp:
        onnx.save(q, str(tmp))
    for line in report.lines():
        typer.echo(line)
    if mixed is not None:
        _print_mixed(mixed, report, mixed_report)
    typer.echo(f"wrote {output}")
    _warn_if_low_sqnr(report, options, mixed_precision)


def _check_mixed_options(mixed_precision: bool, weight_code: WeightCodeOption, board: str | None,
                         max_weight_bytes: int | None, max_cycles: int | None, mixed_report: Path | None) -> None:
    """Refuse the options of --mixed-precision without it, and budgets it cannot work to, before anything slow."""
    from shiftpu.compiler.quant.mixed import MixedPrecisionError, cycle_budget_refusal

    given = [flag for flag, value in (("--board", board), ("--max-weight-bytes", max_weight_bytes),
                                      ("--max-cycles", max_cycles), ("--mixed-report", mixed_report))
             if value is not None]
    if not mixed_precision:
        if given:
            raise MixedPrecisionError(f"{', '.join(given)}: only with --mixed-precision")
        return
    if weight_code is not WeightCodeOption.shift4:
        raise MixedPrecisionError("--mixed-precision chooses each layer's weight code: leave out --weight-code")
    if max_cycles is not None:
        raise cycle_budget_refusal()
    if board is None or max_weight_bytes is None:
        raise MixedPrecisionError("--mixed-precision needs --board B (the accelerator whose formats a layer may take) "
                                  "and --max-weight-bytes N (the budget)")
    if max_weight_bytes <= 0:
        raise MixedPrecisionError(f"--max-weight-bytes must be positive, got {max_weight_bytes}")
    if mixed_report is not None:
        check_output_file(mixed_report, "--mixed-report")


def _mixed_formats(float_model, data, options, board: str, max_weight_bytes: int):
    """The options with each layer's format chosen for the board's accelerator, and the mixed-precision report."""
    from shiftpu.boards import load_board
    from shiftpu.compiler.quant.mixed import choose_formats

    return choose_formats(float_model, data, options, load_board(board).accel, max_weight_bytes, board)


def _print_mixed(mixed, report, path: Path | None) -> None:
    """The mixed-precision report (with the quantized model's measured output SQNR), and its JSON at ``path``."""
    import json

    if report.output_sqnr_db:
        mixed.measured_sqnr_db = min(report.output_sqnr_db.values())
    for line in mixed.lines():
        typer.echo(line)
    if path is not None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(mixed.to_dict(), indent=1) + "\n")
        typer.echo(f"wrote {path}")


def _warn_if_low_sqnr(report, options, mixed_precision: bool) -> None:
    """The warning (on stderr, in bold) when the quantized model's output SQNR is low (``advice``)."""
    from shiftpu.compiler.quant.advice import low_sqnr_warning

    for line in low_sqnr_warning(report, options, mixed_precision):
        typer.secho(line, err=True, fg=typer.colors.YELLOW, bold=True)


@app.command()
def check(
    model: Path = typer.Argument(..., help="Quantized ONNX model (QDQ form) to check."),
    weight_code: WeightCodeOption = typer.Option(WeightCodeOption.shift4, "--weight-code",
                                                 help="Weight coding of the target accelerator."),
    input_shape: list[str] = typer.Option([], "--input-shape", help=INPUT_SHAPE_HELP),
    board: str = typer.Option(DEFAULT_BOARD, "--board", "-b", metavar="<board>",
                              help="Board whose accelerator the partition is made for (as `shiftpu compile --board`)."),
) -> None:
    """Name every node that keeps the model from running whole on the accelerator, then print the fabric/CPU
    partition that `shiftpu compile` makes (where each operation runs and why); exit 0 only if no node keeps the
    model from running whole and compile accepts it."""
    from dataclasses import replace

    from shiftpu.arch.config import AccelConfig
    from shiftpu.compiler.onnx_import import bind_input_shapes, parse_input_shapes, require_pow2_scales
    from shiftpu.compiler.partition import partition_prediction
    from shiftpu.compiler.quant.check import check_model
    from shiftpu.compiler.quant.onnxio import load_model

    shapes = parse_input_shapes(input_shape)
    onnx_model, bound = bind_input_shapes(load_model(model), shapes, str(model))
    require_pow2_scales(onnx_model, str(model))
    for line in bound:
        typer.echo(line)
    report = check_model(onnx_model, replace(AccelConfig(), weight_code=_weight_code(weight_code)))
    for line in report.lines():
        typer.echo(line)
    lines, accepted = partition_prediction(model, board, shapes)
    typer.echo("")
    for line in lines:
        typer.echo(line)
    raise typer.Exit(0 if report.ok and accepted else 1)


@app.command("import-qonnx")
def import_qonnx(
    model: Path = typer.Argument(..., help="QONNX model (Quant nodes) or Brevitas QCDQ model (QuantizeLinear -> Clip -> "
                                 "DequantizeLinear)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the model in shiftpu's QDQ form."),
    weight_code: WeightCodeOption = typer.Option(WeightCodeOption.shift4, "--weight-code",
                                                 help="Weight coding the weights must be representable in."),
) -> None:
    """Convert a QONNX or Brevitas QCDQ graph with power-of-two scales and shift weights to the QDQ form."""
    import onnx

    from shiftpu.compiler.quant.check import check_model
    from shiftpu.compiler.quant.onnxio import load_model
    from shiftpu.compiler.quant.qonnx_import import import_quantized

    check_output_file(output, "--output")
    converted = import_quantized(load_model(model, validate=False), _weight_code(weight_code))
    with atomic_file(output) as tmp:
        onnx.save(converted, str(tmp))
    report = check_model(converted)
    typer.echo(f"wrote {output}; shiftpu check: {'ok' if report.ok else f'{len(report.findings)} problem(s)'}")
