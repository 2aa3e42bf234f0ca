"""`shiftpu doctor`: a missing optional extra is reported as optional (with what it enables) and does not fail the
check; a missing core package or a broken tool does. Verilator and Yosys are replaced here (they take minutes)."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from shiftpu import toolchain
from shiftpu.cli.main import app

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}


@pytest.fixture(autouse=True)
def tools_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "check_verilator", lambda: toolchain.ToolStatus("verilator", "5", True, "ran"))
    monkeypatch.setattr(toolchain, "check_yosys", lambda: toolchain.ToolStatus("yosys", "0.5", True, "ran"))


def test_missing_optional_extras_are_optional(monkeypatch):
    for module in ("torch", "sklearn", "pynq", "matplotlib"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    result = CliRunner().invoke(app, ["doctor"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "BROKEN" not in result.output
    rows = {line.split("│")[2].strip(): line for line in result.output.splitlines() if line.count("│") > 4}
    for tool in ("torch", "pynq", "matplotlib"):
        assert "optional, not installed" in rows[tool]
    assert "optional, not installed" not in rows["onnx"]
    assert ("optional extra 'board' not installed (pynq): it enables the board and pynq-sim backends "
            "(run/bench --backend board|pynq-sim); pip install 'shiftpu[board]'") in result.output
    assert "optional extra 'quant' not installed (torch, scikit-learn): it enables quantization-aware training" in result.output
    assert "optional extra 'report' not installed (matplotlib): it enables shiftpu report" in result.output
    assert result.output.rstrip().endswith("the core works")


def test_a_missing_core_package_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = CliRunner().invoke(app, ["doctor"], env=WIDE)
    assert result.exit_code == 1
    assert "missing or broken: onnxruntime" in result.output


def test_an_installed_but_broken_tool_fails(monkeypatch):
    monkeypatch.setattr(toolchain, "check_verilator",
                        lambda: toolchain.ToolStatus("verilator", "5", False, "building a test model failed"))
    result = CliRunner().invoke(app, ["doctor"], env=WIDE)
    assert result.exit_code == 1
    assert "BROKEN" in result.output and "missing or broken: verilator" in result.output


def test_an_absent_verilator_is_not_installed_rather_than_broken(monkeypatch):
    def absent():
        raise toolchain.ToolNotInstalledError("Verilator not found")

    monkeypatch.undo()
    monkeypatch.setattr(toolchain, "verilator_version", absent)
    status = toolchain.check_verilator()
    assert (status.ok, status.installed) == (False, False)
