"""The AXI4 protocol checker of the simulation top catches what it claims to (Verilator + cocotb, tiny build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL  # noqa: E402

from shiftpu.sim.rtl.protocol import checker_module  # noqa: E402
from shiftpu.toolchain import apply_verilator_env  # noqa: E402

pytestmark = pytest.mark.rtl


def test_checker_counts_violations(tmp_path):
    from cocotb_tools.runner import get_results, get_runner

    src = tmp_path / "axi_checker.sv"
    src.write_text(checker_module(SMALL))
    apply_verilator_env()
    runner = get_runner("verilator")
    runner.build(sources=[src], hdl_toplevel="axi_checker", build_dir=tmp_path / "build",
                 build_args=["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL"],
                 log_file=tmp_path / "build.log")
    tests_dir = str(Path(__file__).parent)
    results = runner.test(hdl_toplevel="axi_checker", hdl_toplevel_lang="verilog", test_module="rtl_checker_bench",
                          build_dir=tmp_path / "build", test_dir=tmp_path,
                          extra_env={"PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])},
                          log_file=tmp_path / "sim.log")
    n_tests, n_failed = get_results(results)
    assert (n_tests, n_failed) == (5, 0), (tmp_path / "sim.log").read_text()[-3000:]
