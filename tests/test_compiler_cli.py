"""The compile, disasm, run and estimate commands, end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from qdq_graphs import detector, random_input, run_onnxruntime
from typer.testing import CliRunner

from shiftpu.boards import load_board
from shiftpu.boards.clock import fps_clock
from shiftpu.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    m = detector(32, seed=7)
    onnx.save(m, d / "det.onnx")
    x = random_input(m, 3)
    np.save(d / "x.npy", x)
    r = runner.invoke(app, ["compile", str(d / "det.onnx"), "--board", "pynq-z2", "-o", str(d / "out")])
    assert r.exit_code == 0, r.output
    assert "fabric0" in r.output and "because: converts between float and quantized values" in r.output
    return d, m, x


def test_run_writes_what_onnxruntime_gives(compiled):
    d, m, x = compiled
    r = runner.invoke(app, ["run", str(d / "out"), "--input", str(d / "x.npy"), "--output", str(d / "y.npy"),
                            "--compare"])
    assert r.exit_code == 0, r.output
    assert "compare: all 20 tensors equal to onnxruntime, bit for bit" in r.output
    y = np.load(d / "y.npy")
    ref = run_onnxruntime(m, x)[0]
    assert y.dtype == ref.dtype and y.shape == ref.shape
    np.testing.assert_array_equal(y, ref)


def test_estimate_json(compiled):
    d, _, _ = compiled
    r = runner.invoke(app, ["estimate", str(d / "out"), "--json"])
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    assert {"fps", "cycles", "macs", "clock_mhz", "utilization", "overall_pe_utilization", "peak_macs_per_cycle",
            "clock_source", "layers"} <= set(est)
    assert est["peak_macs_per_cycle"] == load_board("pynq-z2").accel.macs_per_cycle
    assert 0 < est["utilization"] <= 1 and est["fps"] > 0 and "estimated" in est["kind"]
    conv = [la for la in est["layers"] if la["op"] == "CONV"]
    assert len(conv) == 15
    assert all({"cycles", "dataflow", "utilization", "ddr_bytes"} <= set(la) for la in est["layers"])
    assert est["cycles"] > sum(la["cycles"] for la in est["layers"])  # plus header fetch and END
    clock = fps_clock("pynq-z2")  # the board clock only where the stored timing estimate of the design clears it
    assert (est["clock_mhz"], est["clock_source"], est["clock_label"]) == (clock.clock_mhz, clock.source.value,
                                                                           clock.label)
    assert est["fps"] == round(clock.clock_mhz * 1e6 / est["cycles"], 3)
    table = runner.invoke(app, ["estimate", str(d / "out")]).output.splitlines()
    assert table[0].endswith(f"rtl schedule, at {clock.describe()}")
    assert f"{est['fps']} fps (estimated, at {clock.clock_mhz:g} MHz, {clock.source.words})" in table[-1]


def test_disasm_lists_every_instruction(compiled):
    d, _, _ = compiled
    r = runner.invoke(app, ["disasm", str(d / "out")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert sum(" CONV  layer_id=" in la for la in lines) == 15
    assert any(la.strip().endswith(": END") for la in lines)
    assert "memory map (ACT_BASE +):" in r.output


def test_bad_inputs_give_one_line_errors(compiled, tmp_path):
    d, _, x = compiled
    np.save(tmp_path / "bad.npy", x[:, :, :16])
    for args, msg in [
        (["run", str(d / "out"), "--input", str(tmp_path / "bad.npy")], "must be float32 of shape (1, 3, 32, 32)"),
        (["run", str(d / "out"), "--input", str(tmp_path / "none.npy")], "no such input file"),
        (["run", str(tmp_path), "--input", str(d / "x.npy")], "not a compiled shiftpu folder"),
        (["compile", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "o")], "no such ONNX file"),
        (["run", str(d / "out"), "--input", str(d / "x.npy"), "--backend", "board"], "the board backend needs the bitstream"),
    ]:
        from shiftpu.cli.main import main

        with pytest.raises(SystemExit) as e:
            import sys

            sys.argv = ["shiftpu", *args]
            main()
        assert e.value.code == 1
        r = runner.invoke(app, args)
        assert msg in str(r.exception), (args, r.exception)


def test_help_is_meaningful():
    for cmd in ("compile", "disasm", "run", "estimate"):
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and len(r.output) > 200


def test_ddr_latency_is_for_the_rtl_backend_only(tmp_path):
    from qdq_graphs import QdqBuilder

    from shiftpu.compiler.driver import compile_model

    b = QdqBuilder((4, 8, 8), seed=0)
    b.output(b.conv(b.x, 4, 3, act="relu"))
    m = b.model()
    compile_model(m, "pynq-z2", tmp_path / "out")
    np.save(tmp_path / "x.npy", random_input(m))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "out"), "--ddr-latency", "--input", str(tmp_path / "x.npy")])
    assert result.exit_code != 0
    assert "--ddr-latency applies to the rtl backend only" in str(result.exception) + result.output
