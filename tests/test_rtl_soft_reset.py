"""CTRL.SOFT_RESET on the RTL (Verilator + cocotb): a run cut off while AXI4 bursts are in flight drains the AXI4
master within the protocol, STATUS reads ABORTED with BUSY clear, and the next run is bit-exact.

The bench (tests/rtl_soft_reset_bench.py) serves the master with cocotbext-axi's AxiRam under random backpressure
on every channel (seeded); the simulation top's protocol checker counts every violation (VALID or payload changing
while waiting, WLAST not where the AW burst ends, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL, random_program  # noqa: E402

from shiftpu.arch.regmap import Status  # noqa: E402
from shiftpu.sim.golden import GoldenAccelerator  # noqa: E402
from shiftpu.sim.rtl.build import SimBackend, ensure_built  # noqa: E402
from shiftpu.sim.rtl.harness import TB_TOP  # noqa: E402
from shiftpu.toolchain import apply_verilator_env  # noqa: E402

pytestmark = pytest.mark.rtl

SEED = 41
ACT_BASE = 1 << 16
#: Where each run is cut off: after a number of cycles (the program takes some 3,700 under this backpressure), or once
#: the monitor sees a W beat waiting (WREADY held low from ``after`` cycles on), several read bursts open, write beats
#: owed to addressed bursts; and once with no run at all.
SCENARIOS = [
    {"kind": "idle"},
    {"kind": "cycles", "cycles": 3},
    {"kind": "w_waiting", "after": 0},
    {"kind": "reads", "at_least": 2},
    {"kind": "w_owed", "at_least": 6},
    *({"kind": "cycles", "cycles": n} for n in (250, 700, 1100, 1500, 2200, 3000, 3500)),
    {"kind": "w_waiting", "after": 1800},
]


def test_soft_reset_mid_run_drains_the_axi_master_and_the_next_run_is_bit_exact(tmp_path):
    from cocotb_tools.runner import get_runner

    image = random_program(SMALL, SEED, ["conv", "add", "ic", "pool", "move"])
    print(f"seed {SEED}")
    expected = image.act.copy()
    GoldenAccelerator(SMALL).run_program(image.const, expected)
    assert image.const.size <= ACT_BASE
    build = ensure_built(SMALL, backend=SimBackend.COCOTB)
    (tmp_path / "const.bin").write_bytes(image.const.tobytes())
    (tmp_path / "act.bin").write_bytes(image.act.tobytes())
    job = {"const": str(tmp_path / "const.bin"), "act": str(tmp_path / "act.bin"), "const_base": 0,
           "act_base": ACT_BASE, "mem_size": 2 * ACT_BASE + image.act.size, "seed": SEED, "backpressure": 0.4,
           "max_cycles": 2_000_000, "scenarios": SCENARIOS, "out_dir": str(tmp_path),
           "result": str(tmp_path / "result.json")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    apply_verilator_env()
    tests_dir = str(Path(__file__).parent)
    try:
        get_runner("verilator").test(
            hdl_toplevel=TB_TOP, hdl_toplevel_lang="verilog", test_module="rtl_soft_reset_bench",
            build_dir=build.directory, test_dir=tmp_path, log_file=tmp_path / "sim.log",
            extra_env={"SHIFTPU_RTL_JOB": str(tmp_path / "job.json"),
                       "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])})
    except SystemExit:
        pass
    log = (tmp_path / "sim.log").read_text() if (tmp_path / "sim.log").exists() else ""
    assert (tmp_path / "result.json").exists(), log[-3000:]
    results = json.loads((tmp_path / "result.json").read_text())
    assert len(results) == len(SCENARIOS)
    idle = {"reads": 0, "writes": 0, "w_owed": 0, "w_waiting": False}
    for r in results:
        print(r["scenario"], "in flight at the reset:", r["in_flight_at_reset"], "cycles to idle:",
              r["cycles_to_idle"], "run after it:", r["cycles"], "cycles")
        assert r.get("triggered", True), r
        assert not r["in_flight_at_reset"]["run_finished"]  # the interrupt had not come: cut off mid-run
        assert r["status_after"] == 1 << Status.ABORTED, r
        assert r["cycles_to_idle"] < 200
        assert r["in_flight_when_idle"] == idle  # every burst finished and every response taken before idle
        assert (r["pc_after"], r["error_code_after"]) == (0, 0)
        assert r["finished"] and r["status_final"] == 1 << Status.DONE, r
        assert r["instructions"] == len(image.instructions) + 1
        assert r["protocol_errors"] == 0, r
        arena = np.frombuffer(Path(r["arena"]).read_bytes(), dtype=np.uint8)
        diff = np.flatnonzero(arena != expected)
        assert diff.size == 0, f"{r['scenario']}: {diff.size} bytes differ, first at arena offset {diff[0]}"
    at_reset = [r["in_flight_at_reset"] for r in results]
    assert any(s["reads"] >= 2 for s in at_reset)  # read bursts were open
    assert any(s["w_owed"] > 0 for s in at_reset)  # write bursts addressed, beats still owed
    assert any(s["w_waiting"] for s in at_reset)  # a write beat waiting on W had to go out unchanged
