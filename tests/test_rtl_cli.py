"""`shiftpu rtl-check`: random programs on the RTL against the golden model, from the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL  # noqa: E402

from shiftpu.cli.main import app  # noqa: E402

pytestmark = pytest.mark.rtl


def test_rtl_check_runs_bit_exact(tmp_path):
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(SMALL.to_dict()))
    result = CliRunner().invoke(app, ["rtl-check", "--config", str(cfg), "--seeds", "1", "--first-seed", "5",
                                      "--layers", "3", "--memory", "compiled"])
    print(result.output)
    assert result.exit_code == 0, result.output
    assert "seed 5 [" in result.output and "bit-exact" in result.output and "cycles measured" in result.output


def test_rtl_check_refuses_unknown_memory():
    result = CliRunner().invoke(app, ["rtl-check", "--memory", "sram"])
    assert result.exit_code != 0
    assert "choose axiram or compiled" in str(result.exception)
