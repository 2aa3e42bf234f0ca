"""Parsers of Vivado's report_utilization, report_timing_summary and report_timing, on stored reports in Vivado's
text format (tests/data/vivado/: Zynq-7000 without and UltraScale+ with the "Prohibited" column, timing met and
failed, the worst failing path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftpu.boards.reports import (
    ReportError,
    SiteUse,
    WorstPath,
    parse_timing_summary,
    parse_utilization,
    parse_worst_path,
    reports_json,
)

DATA = Path(__file__).parent / "data" / "vivado"


def test_utilization_ultrascale_plus():
    rep = parse_utilization(DATA / "ultra96v2_utilization.rpt")
    assert rep.device == "xczu3eg-sbva484-1-i"
    assert rep.design == "shiftpu_wrapper"
    assert rep.design_state == "Routed"
    assert rep.tool_version.startswith("Vivado v.2022.2 (lin64)")
    assert rep.resource("LUT") == SiteUse(31874, 70560)
    assert rep.resource("FF") == SiteUse(38415, 141120)
    assert rep.resource("DSP") == SiteUse(12, 360)
    assert rep.resource("BRAM36") == SiteUse(74.5, 216)
    assert rep.resource("URAM") == SiteUse(0, 0)
    assert rep.sites["LUT as Memory"] == SiteUse(2352, 28800)
    assert rep.sites["LUT as Distributed RAM"] == SiteUse(1880, None)
    assert rep.sites["RAMB36/FIFO"] == SiteUse(68, 216)
    assert rep.sites["BUFGCTRL"] == SiteUse(0, 24)
    assert rep.sites["PS8"] == SiteUse(1, 1)
    assert round(rep.resource("LUT").percent, 2) == 45.17


def test_utilization_with_uram():
    rep = parse_utilization(DATA / "zcu104_utilization.rpt")
    assert rep.device == "xczu7ev-ffvc1156-2-e"
    assert rep.resource("URAM") == SiteUse(16, 96)
    assert rep.resource("BRAM36") == SiteUse(131, 312)
    assert rep.to_json()["resources"]["URAM"] == {"used": 16.0, "available": 96, "percent": 16.67}


def test_utilization_zynq7000_without_prohibited_column():
    rep = parse_utilization(DATA / "pynq-z2_utilization.rpt")
    assert rep.device == "7z020clg400-1"
    assert rep.resource("LUT") == SiteUse(17934, 53200)
    assert rep.resource("FF") == SiteUse(21870, 106400)
    assert rep.resource("DSP") == SiteUse(8, 220)
    assert rep.resource("BRAM36") == SiteUse(41.5, 140)
    assert rep.resource("URAM") == SiteUse(0, 0)
    assert rep.to_json()["resources"]["URAM"] == {"used": 0.0, "available": 0, "percent": None}
    assert rep.sites["RAMB18"] == SiteUse(9, 280)


def test_utilization_reads_thousands_separators_and_footnote_stars(tmp_path):
    path = tmp_path / "u.rpt"
    path.write_text(
        "| Device       : xc7z020clg400-1\n\n"
        "+----------------+--------+-------+------------+-----------+-------+\n"
        "|    Site Type   |  Used  | Fixed | Prohibited | Available | Util% |\n"
        "+----------------+--------+-------+------------+-----------+-------+\n"
        "| Slice LUTs*    | 12,345 |     0 |          0 |    53,200 | 23.20 |\n"
        "| Slice Registers|     10 |     0 |          0 |   106,400 | <0.01 |\n"
        "| Block RAM Tile |    0.5 |     0 |          0 |       140 |  0.36 |\n"
        "| DSPs           |      0 |     0 |          0 |       220 |  0.00 |\n"
        "+----------------+--------+-------+------------+-----------+-------+\n")
    rep = parse_utilization(path)
    assert rep.resource("LUT") == SiteUse(12345, 53200)
    assert rep.resource("FF") == SiteUse(10, 106400)
    assert rep.resource("BRAM36") == SiteUse(0.5, 140)


def test_timing_met():
    rep = parse_timing_summary(DATA / "ultra96v2_timing_summary.rpt")
    assert rep.met is True
    assert rep.device == "xczu3eg-sbva484"
    assert rep.wns_ns == 0.318 and rep.whs_ns == 0.010
    assert rep.summary["TNS Total Endpoints"] == 118734
    assert rep.summary["TPWS Total Endpoints"] == 41287
    assert len(rep.clocks) == 1
    clk = rep.clocks[0]
    assert (clk.name, clk.period_ns, clk.frequency_mhz, clk.wns_ns, clk.whs_ns) == ("clk_pl_0", 5.0, 200.0, 0.318, 0.010)
    assert clk.fmax_mhz == pytest.approx(1000 / 4.682)


def test_timing_failed():
    rep = parse_timing_summary(DATA / "pynq-z2_timing_failed.rpt")
    assert rep.met is False
    assert rep.wns_ns == -0.412
    data = rep.to_json()
    assert data["tns_ns"] == -18.905
    assert data["failing_setup_endpoints"] == 97
    assert data["failing_hold_endpoints"] == 0
    assert data["clocks"] == [{"name": "clk_fpga_0", "period_ns": 8.0, "frequency_mhz": 125.0, "wns_ns": -0.412,
                               "whs_ns": 0.024, "fmax_mhz": 118.9}]


def test_reports_json_combines_both():
    data = reports_json(DATA / "pynq-z2_utilization.rpt", DATA / "pynq-z2_timing_failed.rpt")
    assert data["utilization"]["resources"]["LUT"] == {"used": 17934.0, "available": 53200, "percent": 33.71}
    assert data["timing"]["met"] is False
    assert data["source"].startswith("Vivado implementation reports")


def test_wrong_report_kind_is_a_clear_error():
    with pytest.raises(ReportError, match="no 'Site Type' tables: not a Vivado utilization report"):
        parse_utilization(DATA / "ultra96v2_timing_summary.rpt")
    with pytest.raises(ReportError, match="no Design Timing Summary: not a Vivado timing summary report"):
        parse_timing_summary(DATA / "ultra96v2_utilization.rpt")


def test_missing_report_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="cannot read report"):
        parse_utilization(tmp_path / "absent.rpt")


def test_utilization_without_lut_row(tmp_path):
    path = tmp_path / "u.rpt"
    path.write_text("+-----------+------+\n| Site Type | Used |\n+-----------+------+\n| DSPs      |    3 |\n"
                    "+-----------+------+\n")
    with pytest.raises(ReportError, match=r"no row for LUT \(looked for CLB LUTs, Slice LUTs\)"):
        parse_utilization(path)


def test_worst_path_of_report_timing():
    path = parse_worst_path(DATA / "pynq-z2_worst_path.rpt")
    assert path == WorstPath(slack_ns=-0.412, source="shiftpu_i/shiftpu_accel_0/inst/pe_array/row_7/acc_reg[29]/C",
                             destination="shiftpu_i/shiftpu_accel_0/inst/requant/sat_reg[6]/D",
                             path_type="Setup (Max at Slow Process Corner)", requirement_ns=8.0,
                             data_path_delay_ns=8.203, logic_levels="14  (CARRY4=8 LUT3=2 LUT5=2 LUT6=2)")
    assert path.describe() == ("shiftpu_i/shiftpu_accel_0/inst/pe_array/row_7/acc_reg[29]/C -> "
                               "shiftpu_i/shiftpu_accel_0/inst/requant/sat_reg[6]/D (setup, slack -0.412 ns, data path "
                               "8.203 ns for 8 ns, logic levels 14: CARRY4=8 LUT3=2 LUT5=2 LUT6=2)")
    # the first path of a timing summary's details is its worst
    assert parse_worst_path(DATA / "pynq-z2_timing_failed.rpt") == path


def test_worst_hold_path_and_missing_fields(tmp_path):
    hold = tmp_path / "hold.rpt"
    hold.write_text("Timing Report\n\nSlack (VIOLATED) :        -0.051ns  (arrival time - required time)\n"
                    "  Source:                 a_reg/C\n  Destination:            b_reg/D\n"
                    "  Path Group:             clk_pl_0\n  Path Type:              Hold (Min at Fast Process Corner)\n"
                    "  Requirement:            0.000ns  (clk_pl_0 rise@0.000ns - clk_pl_0 rise@0.000ns)\n"
                    "  Data Path Delay:        0.112ns  (logic 0.040ns (35.714%)  route 0.072ns (64.286%))\n"
                    "  Logic Levels:           0  \n")
    assert parse_worst_path(hold).describe() == ("a_reg/C -> b_reg/D (hold, slack -0.051 ns, data path 0.112 ns for "
                                                 "0 ns, logic levels 0)")
    broken = tmp_path / "broken.rpt"
    broken.write_text("Slack (VIOLATED) :        -0.051ns\n  Source:                 a_reg/C\n")
    with pytest.raises(ReportError, match="the path has no 'Destination' line"):
        parse_worst_path(broken)
