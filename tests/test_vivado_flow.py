"""The generated Vivado flow executed: build.tcl (with package_ip.tcl and block_design.tcl) run in a Tcl
interpreter against a stand-in of Vivado's commands (tests/data/vivado/mock_vivado.tcl), the batch runner
with a stand-in `vivado` executable, and `shiftpu build-hw` driving it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_boards_standin import standin_verilog

from shiftpu.boards import load_board
from shiftpu.boards.vivado import (
    LogEvent,
    Progress,
    TimingNotMetError,
    VivadoError,
    flow_error,
    render_tcl,
    run_vivado,
    write_flow,
)

tkinter = pytest.importorskip("tkinter", reason="running the Tcl scripts needs Python's Tcl interpreter (tkinter)")

DATA = Path(__file__).parent / "data" / "vivado"
MOCK = DATA / "mock_vivado.tcl"


@pytest.mark.parametrize("name", ["pynq-z2", "ultra96v2", "zcu104", "kv260"])
def test_templates_render_completely(name):
    b = load_board(name)
    scripts = render_tcl(b, b.accel)
    assert sorted(scripts) == ["block_design.tcl", "build.tcl", "package_ip.tcl"]
    interp = tkinter.Tcl()
    for script, text in scripts.items():
        assert "{{" not in text and "{%" not in text, script
        assert interp.eval(f"info complete {{{text}}}") == "1", f"{script} has unbalanced braces or quotes"


# -- the flow run in Tcl against the Vivado stand-in ------------------------------------------------------


def _flow(tmp_path: Path, board: str = "ultra96v2") -> Path:
    b = load_board(board)
    write_flow(b, b.accel, tmp_path, standin_verilog(b.accel))
    return tmp_path


def _run_tcl(hw_dir: Path, *, board_parts: str = "", wns: float = 0.318, whs: float = 0.010,
             util: str = "ultra96v2_utilization.rpt", timing: str = "ultra96v2_timing_summary.rpt",
             worst: str = "pynq-z2_worst_path.rpt", make_hwh: bool = True, clock_period: float = 5.0,
             accel_clocks: str = "clk_pl_0") -> tuple[list[list[str]], list[str], str | None]:
    interp = tkinter.Tcl()
    for name, value in (("argv", "2"), ("board_parts", board_parts), ("wns", str(wns)), ("whs", str(whs)),
                        ("sample_util", str(DATA / util)), ("sample_timing", str(DATA / timing)),
                        ("sample_worst", str(DATA / worst)), ("clock_period", str(clock_period)),
                        ("accel_clocks", accel_clocks), ("make_hwh", "1" if make_hwh else "0"), ("echo", "0")):
        interp.setvar(name, value)
    interp.eval(f"source {{{MOCK}}}")
    error = None
    try:
        interp.eval(f"source {{{hw_dir / 'build.tcl'}}}")
    except tkinter.TclError as e:
        error = str(e)
    calls = [list(interp.splitlist(c)) for c in interp.splitlist(interp.eval("set ::calls"))]
    messages = list(interp.splitlist(interp.eval("set ::messages")))
    return calls, messages, error


def test_flow_runs_to_bitstream_and_hwh(tmp_path):
    hw = _flow(tmp_path)
    calls, messages, error = _run_tcl(hw, board_parts="avnet.com:ultra96v2:part0:1.1 avnet.com:ultra96v2:part0:1.2")
    assert error is None, messages
    assert [m for m in messages if m.startswith("SHIFTPU-STEP")] == [
        "SHIFTPU-STEP 1/8 package IP", "SHIFTPU-STEP 2/8 block design", "SHIFTPU-STEP 3/8 synthesis",
        "SHIFTPU-STEP 4/8 placement", "SHIFTPU-STEP 5/8 routing", "SHIFTPU-STEP 6/8 reports",
        "SHIFTPU-STEP 7/8 timing check", "SHIFTPU-STEP 8/8 bitstream"]
    assert messages[-1] == "SHIFTPU-DONE shiftpu.bit shiftpu.hwh"
    assert ["set_property", "board_part", "avnet.com:ultra96v2:part0:1.2", ""] in calls
    assert ["set_param", "general.maxThreads", "2"] in calls
    assert ["ipx::infer_bus_interface", "clk", "xilinx.com:signal:clock_rtl:1.0", "core"] in calls
    assert ["ipx::add_bus_parameter", "POLARITY", "busif:rst"] in calls
    assert ["set_property", "value", "ACTIVE_HIGH", "param:busif:rst:POLARITY"] in calls
    assert ["set_property", "value", "LEVEL_HIGH", "param:busif:irq:SENSITIVITY"] in calls
    assert ["apply_bd_automation", "-rule", "xilinx.com:bd_rule:zynq_ultra_ps_e", "-config", "apply_board_preset 1",
            "zynq_ultra_ps_e_0"] in calls
    assert ["assign_bd_address", "-offset", "0xA0000000", "-range", "0x1000", "-target_address_space",
            "space:zynq_ultra_ps_e_0/Data", "seg:shiftpu_accel_0/s_axi/reg0", "-force"] in calls
    assert (hw / "shiftpu.bit").read_text() == "bitstream\n"
    assert (hw / "shiftpu.hwh").read_text() == "<hwh/>\n"
    assert (hw / "reports" / "utilization.rpt").read_text() == (DATA / "ultra96v2_utilization.rpt").read_text()


def test_flow_without_board_files_warns_and_skips_the_preset(tmp_path):
    calls, messages, error = _run_tcl(_flow(tmp_path))
    assert error is None
    assert any(m.startswith("SHIFTPU-WARNING board files for avnet.com:ultra96v2:part0 are not installed") for m in messages)
    assert ["apply_bd_automation", "-rule", "xilinx.com:bd_rule:zynq_ultra_ps_e", "-config", "apply_board_preset 0",
            "zynq_ultra_ps_e_0"] in calls
    assert not any(c[:2] == ["set_property", "board_part"] for c in calls)


def test_flow_stops_on_failed_timing(tmp_path):
    hw = _flow(tmp_path)
    calls, messages, error = _run_tcl(hw, wns=-0.412)
    assert error == "exit 2"
    assert messages[-1] == ("SHIFTPU-ERROR timing not met at 200 MHz: WNS -0.412 ns, WHS 0.01 ns "
                            "(see reports/timing_summary.rpt)")
    assert messages[-2] == ("SHIFTPU-INFO worst setup path: setup_start_reg/C -> setup_end_reg/D "
                            "(reports/worst_path.rpt)")
    assert messages[-3] == (DATA / "pynq-z2_worst_path.rpt").read_text()  # the worst path, printed to the log
    worst_file = str(hw / "reports" / "worst_path.rpt")
    assert ["report_timing", "-max_paths", "1", "-nworst", "1", "-delay_type", "max", "-file", worst_file] in calls
    assert (hw / "reports" / "worst_path.rpt").read_text() == (DATA / "pynq-z2_worst_path.rpt").read_text()
    assert not (hw / "shiftpu.bit").exists()
    assert (hw / "reports" / "timing_summary.rpt").exists()


def test_flow_stops_on_failed_hold(tmp_path):
    hw = _flow(tmp_path)
    calls, messages, error = _run_tcl(hw, whs=-0.05)
    assert error == "exit 2"
    assert "WHS -0.05 ns" in messages[-1]
    assert messages[-2].startswith("SHIFTPU-INFO worst hold path: hold_start_reg/C -> hold_end_reg/D")
    assert ["report_timing", "-max_paths", "1", "-nworst", "1", "-delay_type", "min", "-file",
            str(hw / "reports" / "worst_path.rpt")] in calls


def test_flow_stops_when_vivado_says_timing_is_not_met(tmp_path):
    # setup and hold slack positive, but the summary's verdict fails (a pulse-width check, say)
    hw = _flow(tmp_path)
    _calls, messages, error = _run_tcl(hw, timing="pynq-z2_timing_failed.rpt")
    assert error == "exit 2"
    assert messages[-1] == ("SHIFTPU-ERROR timing not met at 200 MHz: WNS 0.318 ns and WHS 0.01 ns, but Vivado "
                            "reports the timing constraints not met (pulse width or another check; see "
                            "reports/timing_summary.rpt)")
    assert not (hw / "shiftpu.bit").exists() and not (hw / "reports" / "worst_path.rpt").exists()


def test_flow_checks_the_clock_that_times_the_accelerator(tmp_path):
    calls, messages, error = _run_tcl(_flow(tmp_path))
    assert error is None
    assert "SHIFTPU-INFO accelerator clock clk_pl_0: period 5.0 ns (200 MHz, 200 MHz asked for)" in messages
    assert ["get_pins", "-quiet", "-hierarchical", "-filter", "NAME =~ */shiftpu_accel_0/clk"] in calls
    # the PS cannot make the clock asked for: timed (and reported) at the one it makes
    _calls, messages, error = _run_tcl(_flow(tmp_path / "slow"), clock_period=5.333, wns=-0.1)
    assert error == "exit 2"
    assert ("SHIFTPU-WARNING the PS makes 187.512 MHz (clock clk_pl_0, period 5.333 ns) for the 200 MHz asked for: "
            "timing is checked at 187.512 MHz") in messages
    assert messages[-1].startswith("SHIFTPU-ERROR timing not met at 187.512 MHz: WNS -0.1 ns")
    for clocks, count in (("", 0), ("clk_pl_0 clk_pl_1", 2)):
        _calls, messages, error = _run_tcl(_flow(tmp_path / f"clocks{count}"), accel_clocks=clocks)
        assert error == "exit 3"
        assert messages[-1] == (f"SHIFTPU-ERROR the accelerator's clk pin is timed by {count} clocks, not one: "
                                "fabric clock 0 (200 MHz) must constrain it")


def test_flow_stops_without_hwh(tmp_path):
    _calls, messages, error = _run_tcl(_flow(tmp_path), make_hwh=False)
    assert error == "exit 4"
    assert messages[-1] == "SHIFTPU-ERROR the block design's hardware handoff (shiftpu.hwh) was not generated"


FAKE_VIVADO = """#!{python}
import os, sys, tkinter
args = sys.argv[1:]
assert args[:2] == ["-mode", "batch"], args
interp = tkinter.Tcl()
for name, value in (("argv", args[args.index("-tclargs") + 1]), ("board_parts", ""), ("wns", os.environ["FAKE_WNS"]),
                    ("whs", "0.01"), ("sample_util", os.environ["FAKE_UTIL"]), ("sample_timing", os.environ["FAKE_TIMING"]),
                    ("sample_worst", os.environ["FAKE_WORST"]), ("clock_period", os.environ["FAKE_PERIOD"]),
                    ("make_hwh", "1"), ("echo", "1")):
    interp.setvar(name, value)
interp.eval("source {{{mock}}}")
try:
    interp.eval("source {{" + os.path.abspath(args[args.index("-source") + 1]) + "}}")
except tkinter.TclError as e:
    sys.stdout.flush()
    sys.exit(int(str(e).split()[-1]) if str(e).startswith("exit") else 1)
"""


@pytest.fixture
def fake_vivado(tmp_path, monkeypatch):
    """A `vivado` on PATH that runs build.tcl in Tcl against the Vivado stand-in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vivado"
    exe.write_text(FAKE_VIVADO.format(python=sys.executable, mock=MOCK))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_WNS", "0.318")
    monkeypatch.setenv("FAKE_UTIL", str(DATA / "ultra96v2_utilization.rpt"))
    monkeypatch.setenv("FAKE_TIMING", str(DATA / "ultra96v2_timing_summary.rpt"))
    monkeypatch.setenv("FAKE_WORST", str(DATA / "pynq-z2_worst_path.rpt"))
    monkeypatch.setenv("FAKE_PERIOD", "5.0")
    return exe


def test_run_vivado_reports_progress(tmp_path, fake_vivado):
    hw = _flow(tmp_path / "hw")
    events: list[LogEvent] = []
    assert run_vivado(hw, events.append, jobs=3) == 0
    assert [e.text for e in events if e.kind is Progress.STEP][0] == "1/8 package IP"
    assert events[-1] == LogEvent(Progress.DONE, "shiftpu.bit shiftpu.hwh")
    assert any(e.kind is Progress.WARNING for e in events)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from shiftpu.cli.main import main; main()", *args],
                          capture_output=True, text=True, env=env)


def _standin_file(tmp_path: Path, board: str) -> Path:
    path = tmp_path / "standin.v"
    path.write_text(standin_verilog(load_board(board).accel))
    return path


def test_cli_build_hw_with_vivado(tmp_path, fake_vivado):
    out = tmp_path / "hw_out"
    res = _cli("build-hw", "--board", "ultra96v2", "-o", str(out), "--verilog", str(_standin_file(tmp_path, "ultra96v2")),
               env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"built {out / 'shiftpu.bit'} and {out / 'shiftpu.hwh'}"
    assert "step 8/8 bitstream" in res.stderr
    report = json.loads((out / "reports" / "report.json").read_text())
    assert report["utilization"]["resources"]["LUT"] == {"used": 31874.0, "available": 70560, "percent": 45.17}
    assert report["timing"]["met"] is True and report["timing"]["wns_ns"] == 0.318


def test_cli_build_hw_timing_failure_is_one_clear_error(tmp_path, fake_vivado, monkeypatch):
    monkeypatch.setenv("FAKE_WNS", "-0.412")
    monkeypatch.setenv("FAKE_TIMING", str(DATA / "pynq-z2_timing_failed.rpt"))
    monkeypatch.setenv("FAKE_UTIL", str(DATA / "pynq-z2_utilization.rpt"))
    monkeypatch.setenv("FAKE_PERIOD", "8.0")
    out = tmp_path / "hw_out"
    res = _cli("build-hw", "--board", "pynq-z2", "-o", str(out), "--verilog", str(_standin_file(tmp_path, "pynq-z2")),
               env=dict(os.environ))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: timing not met at 125 MHz: WNS -0.412 ns, WHS 0.01 ns (see reports/timing_summary.rpt); worst path "
        "shiftpu_i/shiftpu_accel_0/inst/pe_array/row_7/acc_reg[29]/C -> shiftpu_i/shiftpu_accel_0/inst/requant/"
        "sat_reg[6]/D (setup, slack -0.412 ns, data path 8.203 ns for 8 ns, logic levels 14: CARRY4=8 LUT3=2 LUT5=2 "
        f"LUT6=2) (reports/worst_path.rpt) (log: {out}/build/vivado.log)")
    assert (out / "reports" / "worst_path.rpt").read_text() == (DATA / "pynq-z2_worst_path.rpt").read_text()
    report = json.loads((out / "reports" / "report.json").read_text())
    assert report["timing"]["met"] is False


def test_flow_error_names_the_worst_path_or_says_why_not(tmp_path):
    (tmp_path / "reports").mkdir()
    log = f"(log: {tmp_path}/build/vivado.log)"
    cause = "timing not met at 125 MHz: WNS 0.1 ns and WHS 0.01 ns, but Vivado reports ..."
    other = flow_error(tmp_path, 4, "the block design's hardware handoff (shiftpu.hwh) was not generated")
    assert type(other) is VivadoError and str(other) == (
        f"the block design's hardware handoff (shiftpu.hwh) was not generated {log}")
    assert str(flow_error(tmp_path, 1, None)) == f"vivado exited with status 1 {log}"
    no_path = flow_error(tmp_path, 2, cause)  # setup and hold met: no worst path report is written
    assert isinstance(no_path, TimingNotMetError) and str(no_path) == f"{cause} {log}"
    (tmp_path / "reports" / "worst_path.rpt").write_text("Timing Report\n\nNo timing paths found.\n")
    unreadable = flow_error(tmp_path, 2, "timing not met at 125 MHz: WNS -1 ns, WHS 0.01 ns")
    assert str(unreadable) == (f"timing not met at 125 MHz: WNS -1 ns, WHS 0.01 ns; the worst path cannot be named: "
                               f"{tmp_path / 'reports' / 'worst_path.rpt'}: no 'Slack' line: not a Vivado report_timing "
                               f"report with a path {log}")
    (tmp_path / "reports" / "worst_path.rpt").write_text((DATA / "pynq-z2_worst_path.rpt").read_text())
    named = flow_error(tmp_path, 2, None)
    assert isinstance(named, TimingNotMetError) and str(named).startswith(
        "vivado exited with status 2; worst path shiftpu_i/shiftpu_accel_0/inst/pe_array/row_7/acc_reg[29]/C -> ")




def test_run_vivado_removes_outputs_of_an_earlier_run(tmp_path, fake_vivado, monkeypatch):
    hw = _flow(tmp_path / "hw")
    (hw / "reports").mkdir()
    (hw / "reports" / "report.json").write_text("{}")
    (hw / "shiftpu.bit").write_text("old")
    (hw / "reports" / "worst_path.rpt").write_text("old")
    assert run_vivado(hw, lambda event: None) == 0
    assert not (hw / "reports" / "worst_path.rpt").exists()  # timing met: no worst path of this run
    monkeypatch.setenv("FAKE_WNS", "-1.0")
    (hw / "reports" / "report.json").write_text("{}")
    assert run_vivado(hw, lambda event: None) == 2
    assert not (hw / "shiftpu.bit").exists()
    assert not (hw / "reports" / "report.json").exists()
