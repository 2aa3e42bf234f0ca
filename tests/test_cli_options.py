"""The command line itself: -h everywhere, switches without placeholders, choices shown and checked, no option
silently ignored."""

from __future__ import annotations

import pytest
import typer
from qdq_graphs import compile_one_conv
from typer.testing import CliRunner

from shiftpu.cli.main import app

runner = CliRunner()
#: wide enough that no help line wraps inside a choice list
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
COMMANDS = sorted(typer.main.get_command(app).commands)
BACKENDS = "'golden', 'pynq-sim', 'rtl', 'board'"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):
    return compile_one_conv(tmp_path_factory.mktemp("options"))


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_dash_h_is_help_and_switches_show_no_placeholder(command):
    args = [command, "-h"] if command else ["-h"]
    short = runner.invoke(app, args, env=WIDE)
    assert short.exit_code == 0, short.output
    assert short.output == runner.invoke(app, [*args[:-1], "--help"], env=WIDE).output
    assert "Usage:" in short.output and "<bool>" not in short.output


def test_expected_commands_are_registered():
    assert {"compile", "run", "bench", "quantize", "estimate", "disasm", "package", "build-hw"} <= set(COMMANDS)


def test_choices_are_shown_as_choices():
    run_help = runner.invoke(app, ["run", "-h"], env=WIDE).output
    assert "<golden|pynq-sim|rtl|board>" in run_help and "<str>" not in run_help
    assert "<golden|pynq-sim|rtl|board>" in runner.invoke(app, ["bench", "-h"], env=WIDE).output
    compile_help = runner.invoke(app, ["compile", "-h"], env=WIDE).output
    assert "<rtl|overlapped>" in compile_help and "<str>" not in compile_help


@pytest.mark.parametrize("command", ["run", "bench"])
def test_an_unknown_backend_lists_every_backend(command, compiled):
    out, x = compiled
    args = [command, str(out), "--backend", "fpga"] + (["-i", str(x)] if command == "run" else [])
    r = runner.invoke(app, args, env=WIDE)
    assert r.exit_code == 2
    assert f"'fpga' is not one of {BACKENDS}" in r.output


def test_an_unknown_schedule_lists_the_schedules(compiled):
    r = runner.invoke(app, ["estimate", str(compiled[0]), "--schedule", "fast"], env=WIDE)
    assert r.exit_code == 2 and "'fast' is not one of 'rtl', 'overlapped'" in r.output


@pytest.mark.parametrize("backend", ["golden", "rtl"])
def test_run_refuses_a_bitstream_its_backend_would_ignore(backend, compiled, tmp_path):
    out, x = compiled
    r = runner.invoke(app, ["run", str(out), "-i", str(x), "--backend", backend, "--bitstream",
                            str(tmp_path / "shiftpu.bit"), "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 1
    assert str(r.exception) == (f"--bitstream applies to the board and pynq-sim backends only: the {backend} "
                                "backend loads no bitstream")
    assert list(tmp_path.iterdir()) == []


def test_bench_refuses_a_bitstream_on_golden(compiled, tmp_path):
    r = runner.invoke(app, ["bench", str(compiled[0]), "--bitstream", str(tmp_path / "shiftpu.bit")])
    assert r.exit_code == 1
    assert str(r.exception) == ("--bitstream applies to the board, pynq-sim and rtl backends only: the golden "
                                "backend loads no bitstream")


def test_estimate_with_a_schedule_choice(compiled):
    r = runner.invoke(app, ["estimate", str(compiled[0]), "--schedule", "overlapped", "--json"])
    assert r.exit_code == 0, r.output
    assert "overlapped" in r.output
