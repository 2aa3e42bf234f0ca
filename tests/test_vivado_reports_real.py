"""The Vivado report parsers on real reports from public repositories (tests/data/vivado/real/, sources in its
README.md). Every expected value below was read off the report text, not produced by the parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftpu.boards.reports import (
    ReportError,
    SiteUse,
    parse_timing_summary,
    parse_utilization,
    reports_json,
)

REAL = Path(__file__).parent / "data" / "vivado" / "real"


# --- Zynq-7000: PYNQ Zybo overlay, xc7z010, Vivado 2015.3 (no "Prohibited" column) ---------------------------


def test_zynq7010_utilization_vivado_2015():
    rep = parse_utilization(REAL / "pynq_zybo_utilization_placed.rpt")
    assert rep.tool_version == "Vivado v.2015.3 (lin64) Build 1368829 Mon Sep 28 20:06:39 MDT 2015"
    assert rep.device == "7z010clg400-1"
    assert rep.design == "top"
    assert rep.design_state == "Fully Placed"
    assert rep.resource("LUT") == SiteUse(13358, 17600)
    assert rep.resource("FF") == SiteUse(14431, 35200)
    assert rep.resource("DSP") == SiteUse(0, 80)
    assert rep.resource("BRAM36") == SiteUse(32.5, 60)
    assert rep.resource("URAM") == SiteUse(0, 0)
    assert rep.sites["LUT as Memory"] == SiteUse(892, 6000)
    assert rep.sites["LUT as Distributed RAM"] == SiteUse(320, None)
    assert rep.sites["RAMB36/FIFO"] == SiteUse(32, 60)
    assert rep.sites["RAMB18"] == SiteUse(1, 120)
    assert rep.sites["Slice"] == SiteUse(4250, 4400)
    assert rep.sites["LUT Flip Flop Pairs"] == SiteUse(15563, 17600)
    assert rep.sites["Bonded IOPADs"] == SiteUse(130, 130)
    assert rep.sites["XADC"] == SiteUse(1, 1)
    # "2221(Lost)" is not a count: the row is left out rather than misread
    assert "Minimum number of registers lost to control set restriction" not in rep.sites
    res = rep.to_json()["resources"]
    assert res["LUT"] == {"used": 13358.0, "available": 17600, "percent": 75.9}  # report: 75.90
    assert res["FF"]["percent"] == 41.0  # report: 41.00
    assert res["BRAM36"]["percent"] == 54.17  # report: 54.17


def test_zynq7010_timing_three_clocks_vivado_2015():
    rep = parse_timing_summary(REAL / "pynq_zybo_timing_summary_routed.rpt")
    assert rep.tool_version == "Vivado v.2015.3 (lin64) Build 1368829 Mon Sep 28 20:06:39 MDT 2015"
    assert rep.device == "7z010-clg400"
    assert rep.design == "top"
    assert rep.met is True
    assert rep.summary == {
        "WNS(ns)": 0.290, "TNS(ns)": 0.0, "TNS Failing Endpoints": 0, "TNS Total Endpoints": 39070,
        "WHS(ns)": 0.020, "THS(ns)": 0.0, "THS Failing Endpoints": 0, "THS Total Endpoints": 39006,
        "WPWS(ns)": 3.750, "TPWS(ns)": 0.0, "TPWS Failing Endpoints": 0, "TPWS Total Endpoints": 15941,
    }
    assert [(c.name, c.period_ns, c.frequency_mhz, c.wns_ns, c.whs_ns) for c in rep.clocks] == [
        ("clk_fpga_0", 10.000, 100.000, 0.290, 0.020),
        ("system_i/mdm_1/U0/Use_E2.BSCANE2_I/DRCK", 33.333, 30.000, 10.772, 0.033),
        ("system_i/mdm_1/U0/Use_E2.BSCANE2_I/UPDATE", 33.333, 30.000, 8.436, 0.263),
    ]
    js = rep.to_json()
    assert (js["wns_ns"], js["tns_ns"], js["whs_ns"], js["ths_ns"]) == (0.290, 0.0, 0.020, 0.0)
    assert (js["failing_setup_endpoints"], js["failing_hold_endpoints"]) == (0, 0)
    assert js["clocks"][0]["fmax_mhz"] == round(1000 / (10.000 - 0.290), 1)


def test_zynq7010_reports_json():
    js = reports_json(REAL / "pynq_zybo_utilization_placed.rpt", REAL / "pynq_zybo_timing_summary_routed.rpt")
    assert js["utilization"]["device"] == "7z010clg400-1"
    assert js["utilization"]["resources"]["DSP"] == {"used": 0.0, "available": 80, "percent": 0.0}
    assert js["timing"]["met"] is True
    assert js["timing"]["wns_ns"] == 0.290


# --- Zynq UltraScale+: xczu3eg, Vivado 2021.2 (lakeroad-evaluation dot product) --------------------------------


def test_zu3eg_utilization_vivado_2021():
    rep = parse_utilization(REAL / "zu3eg_dot_product_utilization_placed.rpt")
    assert rep.tool_version == "Vivado v.2021.2 (lin64) Build 3367213 Tue Oct 19 02:47:39 MDT 2021"
    assert rep.device == "xczu3eg-sbva484-1-e"
    assert rep.design == "main"
    assert rep.design_state == "Fully Placed"
    assert rep.resource("LUT") == SiteUse(225, 70560)
    assert rep.resource("FF") == SiteUse(162, 141120)
    assert rep.resource("DSP") == SiteUse(3, 360)
    assert rep.resource("BRAM36") == SiteUse(0, 216)
    assert rep.resource("URAM") == SiteUse(0, 0)  # the xczu3eg has no URAM: the report has no URAM row
    assert rep.sites["CARRY8"] == SiteUse(13, 8820)
    assert rep.sites["F7 Muxes"] == SiteUse(1, 35280)  # Util% "<0.01"
    assert rep.sites["RAMB18"] == SiteUse(0, 432)
    assert rep.sites["GLOBAL CLOCK BUFFERs"] == SiteUse(0, 196)
    assert rep.sites["BUFGCTRL"] == SiteUse(0, 24)  # "BUFGCTRL*" in the report
    assert rep.sites["PS8"] == SiteUse(0, 1)
    assert rep.sites["Unique Control Sets"] == SiteUse(9, 17640)
    res = rep.to_json()["resources"]
    assert res["LUT"]["percent"] == 0.32  # report: 0.32
    assert res["FF"]["percent"] == 0.11  # report: 0.11
    assert res["DSP"]["percent"] == 0.83  # report: 0.83


def test_zu3eg_timing_vivado_2021_wide_header():
    """Header fields padded for "Temperature Grade" ("| Tool Version      : ...")."""
    rep = parse_timing_summary(REAL / "zu3eg_dot_product_timing_summary_routed.rpt")
    assert rep.tool_version == "Vivado v.2021.2 (lin64) Build 3367213 Tue Oct 19 02:47:39 MDT 2021"
    assert rep.device == "xczu3eg-sbva484"
    assert rep.design == "main"
    assert rep.met is True
    assert (rep.wns_ns, rep.whs_ns) == (7.221, 0.048)
    assert rep.summary["TNS Total Endpoints"] == 432
    assert rep.summary["THS Total Endpoints"] == 432
    assert rep.summary["WPWS(ns)"] == 4.725
    assert rep.summary["TPWS Total Endpoints"] == 164
    assert len(rep.clocks) == 1
    clk = rep.clocks[0]
    assert (clk.name, clk.period_ns, clk.frequency_mhz, clk.wns_ns, clk.whs_ns) == ("clk", 10.0, 100.0, 7.221, 0.048)
    assert rep.to_json()["clocks"][0]["fmax_mhz"] == round(1000 / (10.000 - 7.221), 1)


def test_zu3eg_timing_with_na_slack_is_a_clear_error():
    """A real report whose one clock times no setup or hold path: Vivado writes "NA" for WNS/TNS/WHS/THS
    (and still says the constraints are met). There is no slack to report, so the parser says so."""
    path = REAL / "zu3eg_vector_add_timing_summary_na.rpt"
    with pytest.raises(ReportError) as err:
        parse_timing_summary(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "WNS(ns)" in msg and "NA" in msg and "no setup paths" in msg


# --- Artix-7: xc7a100t, Vivado 2025.2 ("Prohibited" column, "Design State" in the timing header) ---------------


def test_artix7_utilization_vivado_2025():
    rep = parse_utilization(REAL / "artix7_cpu_utilization_placed.rpt")
    assert rep.tool_version == "Vivado v.2025.2 (win64) Build 6299465 Fri Nov 14 19:35:11 GMT 2025"
    assert rep.device == "xc7a100tcsg324-1"
    assert rep.design == "top"
    assert rep.design_state == "Fully Placed"
    assert rep.resource("LUT") == SiteUse(87, 63400)
    assert rep.resource("FF") == SiteUse(106, 126800)
    assert rep.resource("DSP") == SiteUse(0, 240)
    assert rep.resource("BRAM36") == SiteUse(0, 135)
    assert rep.resource("URAM") == SiteUse(0, 0)
    assert rep.sites["LUT as Distributed RAM"] == SiteUse(12, None)
    assert rep.sites["Unique Control Sets"] == SiteUse(7, 15850)  # empty "Fixed" cell
    assert rep.sites["Bonded IOB"] == SiteUse(34, 210)
    assert rep.sites["PCIE_2_1"] == SiteUse(0, 1)
    assert rep.to_json()["resources"]["LUT"]["percent"] == 0.14  # report: 0.14


def test_artix7_timing_vivado_2025():
    rep = parse_timing_summary(REAL / "artix7_cpu_timing_summary_routed.rpt")
    assert rep.tool_version == "Vivado v.2025.2 (win64) Build 6299465 Fri Nov 14 19:35:11 GMT 2025"
    assert rep.device == "7a100t-csg324"
    assert rep.design == "top"
    assert rep.met is True
    assert rep.summary == {
        "WNS(ns)": 4.844, "TNS(ns)": 0.0, "TNS Failing Endpoints": 0, "TNS Total Endpoints": 268,
        "WHS(ns)": 0.051, "THS(ns)": 0.0, "THS Failing Endpoints": 0, "THS Total Endpoints": 268,
        "WPWS(ns)": 3.750, "TPWS(ns)": 0.0, "TPWS Failing Endpoints": 0, "TPWS Total Endpoints": 131,
    }
    assert [(c.name, c.period_ns, c.frequency_mhz, c.wns_ns, c.whs_ns) for c in rep.clocks] == [
        ("sys_clk_pin", 10.0, 100.0, 4.844, 0.051),
    ]
    assert rep.to_json()["clocks"][0]["fmax_mhz"] == round(1000 / (10.000 - 4.844), 1)


# --- wrong report kind: a clear ReportError naming the file ------------------------------------------------------


def test_timing_report_given_as_utilization_is_a_clear_error():
    path = REAL / "artix7_cpu_timing_summary_routed.rpt"
    with pytest.raises(ReportError, match="no 'Site Type' tables") as err:
        parse_utilization(path)
    assert str(path) in str(err.value)


def test_utilization_report_given_as_timing_is_a_clear_error():
    path = REAL / "zu3eg_dot_product_utilization_placed.rpt"
    with pytest.raises(ReportError, match="no Design Timing Summary") as err:
        parse_timing_summary(path)
    assert str(path) in str(err.value)
