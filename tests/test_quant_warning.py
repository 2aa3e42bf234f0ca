"""The warning `shiftpu quantize` ends with when the quantized model's output SQNR is low."""

import re
import sys

import numpy as np
import onnx
import pytest
from test_quant_mixed import _calib, _tiny

from shiftpu.arch.numerics import ActFormat, WeightCode
from shiftpu.cli.main import main
from shiftpu.compiler.quant.advice import low_sqnr_warning
from shiftpu.compiler.quant.ptq import LayerFormat, PtqOptions
from shiftpu.compiler.quant.report import LayerReport, PtqReport


def _layer(name: str, input_db: float, output_db: float) -> LayerReport:
    return LayerReport(name, "Conv", 14.0, output_db, -4, ActFormat(8, False), "relu", input_sqnr_db=input_db)


def _report(output_db: float, n: int = 64) -> PtqReport:
    # noise added, relative: a 1e-3 - 1e-4, b 0.0631 - 0.001, c 0.0794 - 0.0631, d 0.1259 - 0.0794
    layers = [_layer("a", 40.0, 30.0), _layer("b", 30.0, 12.0), _layer("c", 12.0, 11.0), _layer("d", 11.0, 9.0)]
    return PtqReport(n_calibration=n, layers=layers, output_sqnr_db={"y": output_db, "z": 30.0})


def test_warning_names_the_worst_layers_and_the_options_not_in_use():
    lines = low_sqnr_warning(_report(9.0), PtqOptions.fast())
    assert lines[0] == ("WARNING: the quantized model's output 'y' has an SQNR of 9.0 dB on the calibration data "
                        "(measured), below 15 dB: expect it to lose accuracy against the float model.")
    assert lines[2:5] == ["    b: 30.0 -> 12.0 dB; one-term, 14.0 dB", "    d: 11.0 -> 9.0 dB; one-term, 14.0 dB",
                          "    c: 12.0 -> 11.0 dB; one-term, 14.0 dB"]
    text = "\n".join(lines)
    for tip in ("--weight-code two-term", "--mixed-precision --board B --max-weight-bytes N", "no --fast-ptq",
                "more calibration data (64 sample(s) given"):
        assert tip in text, text
    assert "--act-bits 8" not in text and "--no-adaround" not in text


def test_warning_leaves_out_what_is_already_done():
    options = PtqOptions(adaround=False, act_bits=4,
                         layer_formats={n: LayerFormat(WeightCode.SHIFT8_TWO_TERM, 8) for n in "abcd"})
    text = "\n".join(low_sqnr_warning(_report(9.0, n=512), options, mixed_precision=True))
    assert "b: 30.0 -> 12.0 dB; two-term" in text
    assert "--weight-code" not in text and "--mixed-precision" not in text and "--max-weight-bytes" not in text
    assert "more calibration data" not in text and "--fast-ptq" not in text
    assert "try: --act-bits 8" in text and "without --no-adaround" in text


@pytest.mark.parametrize("db", [15.0, 20.0])
def test_no_warning_at_15_db_and_above(db):
    assert low_sqnr_warning(_report(db), PtqOptions.fast()) == []


def _quantize(tmp_path, monkeypatch, capsys, *options: str) -> tuple[str, str]:
    onnx.save(_tiny(), str(tmp_path / "f.onnx"))
    np.save(tmp_path / "calib.npy", _calib(32))
    monkeypatch.setattr(sys, "argv", ["shiftpu", "quantize", str(tmp_path / "f.onnx"), "--calib",
                                      str(tmp_path / "calib.npy"), "-o", str(tmp_path / "q.onnx"), *options])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    return capsys.readouterr()


def test_cli_warns_on_stderr_after_a_poor_quantization(tmp_path, monkeypatch, capsys):
    """The tiny CNN with one-term nearest rounding: about 7 dB at the output, most of the noise from its first
    layer; with the calibration-driven methods over 30 dB, and no warning."""
    out, err = _quantize(tmp_path, monkeypatch, capsys, "--fast-ptq")
    assert "WARNING" not in out and out.rstrip().endswith(f"wrote {tmp_path / 'q.onnx'}")
    reported = re.search(r"model output 'y': SQNR (-?[\d.]+) dB", out).group(1)
    lines = err.splitlines()
    assert lines[0].startswith(f"WARNING: the quantized model's output 'y' has an SQNR of {reported} dB")
    assert float(reported) < 15.0
    assert lines[2].startswith("    /0/Conv: ") and "; one-term, " in lines[2]
    assert "no --fast-ptq" in err and "more calibration data (32 sample(s) given" in err
    out, err = _quantize(tmp_path, monkeypatch, capsys)
    assert err == "" and float(re.search(r"model output 'y': SQNR (-?[\d.]+) dB", out).group(1)) >= 15.0
