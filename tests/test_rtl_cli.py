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


def test_rtl_check_with_a_ddr_latency_runs_bit_exact(tmp_path):
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(SMALL.to_dict()))
    args = ["rtl-check", "--config", str(cfg), "--seeds", "1", "--first-seed", "6", "--layers", "3",
            "--memory", "compiled"]
    fast = CliRunner().invoke(app, args)
    slow = CliRunner().invoke(app, [*args, "--ddr-latency-cycles", "41"])
    print(fast.output, slow.output)
    assert fast.exit_code == 0 and slow.exit_code == 0, fast.output + slow.output

    def cycles(out: str) -> int:
        return int(out.split("bit-exact, ")[1].split(" cycles")[0])

    assert cycles(slow.output) > cycles(fast.output)


def test_rtl_check_refuses_a_latency_without_the_compiled_ram():
    result = CliRunner().invoke(app, ["rtl-check", "--memory", "axiram", "--ddr-latency-cycles", "10"])
    assert result.exit_code != 0
    assert "needs --memory compiled" in str(result.exception)


def test_rtl_check_refuses_unknown_memory():
    result = CliRunner().invoke(app, ["rtl-check", "--memory", "sram"])
    assert result.exit_code != 0
    assert "choose axiram or compiled" in str(result.exception)
