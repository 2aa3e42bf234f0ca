"""`shiftpu quantize` (post-training shift quantization), `shiftpu check` (does a model fit the fabric) and
`shiftpu import-qonnx` (QONNX / Brevitas QCDQ graphs to the quantized ONNX form)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from shiftpu.boards import DEFAULT_BOARD
from shiftpu.cli.main import app
from shiftpu.cli.paths import atomic_file, check_output_file

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


@app.command()
def quantize(
    model: Path = typer.Argument(..., help="Float ONNX model (Conv, Gemm/MatMul, Relu, pooling, Add, Concat, ...)."),
    calib: Path = typer.Option(..., "--calib", help="Calibration inputs: a .npy float array, NCHW, preprocessed "
                               "exactly as the model input."),
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
) -> None:
    """Post-training quantization: float ONNX -> shift-quantized QDQ ONNX, with a per-layer SQNR report.

    By default the weights, scales and biases are chosen by each layer's output error on the calibration data
    (rounding optimisation, scale search, bias correction), layer pairs are equalised where it helps and float
    BatchNorms re-estimated; the report gives the SQNR after each method.
    """
    import onnx

    from shiftpu.compiler.quant.activations import LeakySlope
    from shiftpu.compiler.quant.calibrate import load_calibration
    from shiftpu.compiler.quant.onnxio import ModelError, load_model
    from shiftpu.compiler.quant.ptq import PtqOptions, quantize_model

    if act_bits not in (4, 8):
        raise ModelError(f"--act-bits must be 4 or 8, got {act_bits}")
    check_output_file(output, "--output")
    float_model = load_model(model)
    data = load_calibration(calib)
    code = _weight_code(weight_code)
    slope = LeakySlope(leaky_slope.value)
    if fast_ptq:
        options = PtqOptions.fast(code, act_bits, slope)
    else:
        options = PtqOptions(code, act_bits, adaround=not no_adaround, scale_search=not no_scale_search,
                             bias_correction=not no_bias_correction, equalize=not no_equalize,
                             bn_reestimate=not no_bn_reestimate, seed=seed, leaky_slope=slope)
    q, report = quantize_model(float_model, data, options)
    with atomic_file(output) as tmp:
        onnx.save(q, str(tmp))
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"wrote {output}")


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
