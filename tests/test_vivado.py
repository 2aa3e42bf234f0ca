"""The Vivado flow on any machine: the generated Tcl checked on its text, hw.json, Vivado log parsing, and
`shiftpu build-hw` without Vivado. (The scripts are run in Tcl in test_vivado_flow.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_boards_standin import standin_verilog

from shiftpu.boards import load_board, rtl
from shiftpu.boards.rtl import GeneratorMissingError, accelerator_verilog, generator_available
from shiftpu.boards.vivado import (
    LogEvent,
    Progress,
    VivadoError,
    parse_log_line,
    read_hw_manifest,
    render_tcl,
    write_flow,
)


def _tcl_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


# -- Tcl text ----------------------------------------------------------------------------------------


def test_build_tcl_zynqmp_text():
    b = load_board("ultra96v2")
    tcl = render_tcl(b, b.accel)["build.tcl"]
    lines = _tcl_lines(tcl)
    assert "create_project -force -part xczu3eg-sbva484-1-i shiftpu_ultra96v2 [file join $hw_dir build project]" in lines
    assert "set board_part [lindex [lsort -dictionary [get_board_parts -quiet avnet.com:ultra96v2:part0:*]] end]" in lines
    assert "synth_design -top shiftpu_wrapper -part xczu3eg-sbva484-1-i" in lines
    for step in ("opt_design", "place_design", "route_design", "set_property synth_checkpoint_mode None $bd_file"):
        assert step in lines
    assert "report_utilization -file [file join $hw_dir reports/utilization.rpt]" in lines
    assert "report_timing_summary -max_paths 10 -file [file join $hw_dir reports/timing_summary.rpt]" in lines
    assert "if {$wns < 0 || $whs < 0} {" in lines
    assert "write_bitstream -force [file join $hw_dir shiftpu.bit]" in lines
    assert "file copy -force $hwh [file join $hw_dir shiftpu.hwh]" in lines
    assert "#   vivado -mode batch -notrace -source build.tcl -log build/vivado.log -journal build/vivado.jou -tclargs 4" in lines
    # the clock that times the accelerator is checked against the config's, and a miss names the worst path
    assert ("set accel_clock [get_clocks -quiet -of_objects [get_pins -quiet -hierarchical -filter "
            "{NAME =~ */shiftpu_accel_0/clk}]]") in lines
    assert "if {abs($clock_mhz - 200) > 0.01 * 200} {" in lines
    assert ("report_timing -max_paths 1 -nworst 1 -delay_type $delay_type -file [file join $hw_dir "
            "reports/worst_path.rpt]") in lines
    assert "puts [report_timing -max_paths 1 -nworst 1 -delay_type $delay_type -return_string]" in lines
    assert 'if {[string first "Timing constraints are not met." $summary] >= 0} {' in lines
    assert ('puts "SHIFTPU-ERROR timing not met at $clock_mhz MHz: WNS $wns ns, WHS $whs ns '
            '(see reports/timing_summary.rpt)"') in lines
    assert lines.index("report_timing_summary -max_paths 10 -file [file join $hw_dir reports/timing_summary.rpt]") \
        < lines.index("if {$wns < 0 || $whs < 0} {") < lines.index("write_bitstream -force [file join $hw_dir shiftpu.bit]")


def test_package_ip_text():
    b = load_board("zcu104")
    tcl = render_tcl(b, b.accel)["package_ip.tcl"]
    lines = _tcl_lines(tcl)
    h = f"0x{b.accel.config_hash():08x}"
    assert "create_project -force -part xczu7ev-ffvc1156-2-e ip_package [file join $hw_dir build ip_package]" in lines
    assert ("ipx::package_project -root_dir $ip_dir -vendor shiftpu -library shiftpu -taxonomy /UserIP "
            "-import_files -force") in lines
    assert f"set_property display_name {{shiftpu accelerator (config {h})}} $core" in lines
    assert "set_property supported_families {zynquplus Production} $core" in lines
    assert "ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core" in lines
    assert ("foreach {port vlnv} {clk xilinx.com:signal:clock_rtl:1.0 rst xilinx.com:signal:reset_rtl:1.0 "
            "irq xilinx.com:signal:interrupt_rtl:1.0} {") in lines
    assert "ipx::associate_bus_interfaces -busif m_axi -clock clk $core" in lines
    assert "ipx::associate_bus_interfaces -busif s_axi -clock clk $core" in lines
    assert "ipx::associate_bus_interfaces -clock clk -reset rst $core" in lines
    assert "shiftpu_set_bus_parameter $rst_if POLARITY ACTIVE_HIGH" in lines
    assert "shiftpu_set_bus_parameter $irq_if SENSITIVITY LEVEL_HIGH" in lines
    assert not any("FREQ_HZ" in line for line in lines if not line.startswith("#"))
    assert "set_property range 0x1000 $regs" in lines


def test_block_design_zynqmp_text():
    b = load_board("ultra96v2")
    lines = _tcl_lines(render_tcl(b, b.accel)["block_design.tcl"])
    assert "set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]" in lines
    assert ("apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config [list apply_board_preset "
            "$use_board_preset] $ps") in lines
    for prop in ("CONFIG.PSU__USE__S_AXI_GP2 {1} \\", "CONFIG.PSU__SAXIGP2__DATA_WIDTH {128} \\",
                 "CONFIG.PSU__USE__M_AXI_GP0 {1} \\", "CONFIG.PSU__MAXIGP0__DATA_WIDTH {32} \\",
                 "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {200} \\", "CONFIG.PSU__USE__IRQ0 {1} \\"):
        assert prop in lines
    assert "set accel [create_bd_cell -type ip -vlnv shiftpu:shiftpu:shiftpu_accel:1.0 shiftpu_accel_0]" in lines
    assert "connect_bd_net [get_bd_pins $ps/pl_clk0] \\" in lines
    assert "[get_bd_pins $ps/maxihpm0_fpd_aclk] [get_bd_pins $ps/saxihp0_fpd_aclk] \\" in lines
    assert "connect_bd_net [get_bd_pins $ps/pl_resetn0] [get_bd_pins $reset/ext_reset_in]" in lines
    assert "connect_bd_net [get_bd_pins $reset/peripheral_reset] [get_bd_pins $accel/rst]" in lines
    assert "connect_bd_intf_net [get_bd_intf_pins $ps/M_AXI_HPM0_FPD] [get_bd_intf_pins $regs_ic/S00_AXI]" in lines
    assert "connect_bd_intf_net [get_bd_intf_pins $accel/m_axi] [get_bd_intf_pins $ps/S_AXI_HP0_FPD]" in lines
    assert "connect_bd_net [get_bd_pins $accel/irq] [get_bd_pins $ps/pl_ps_irq0]" in lines
    assert "assign_bd_address -offset 0xA0000000 -range 0x1000 \\" in lines
    assert ("-target_address_space [get_bd_addr_spaces zynq_ultra_ps_e_0/Data] "
            "[get_bd_addr_segs shiftpu_accel_0/s_axi/reg0] -force") in lines
    assert ("assign_bd_address -target_address_space [get_bd_addr_spaces shiftpu_accel_0/m_axi] "
            "[get_bd_addr_segs zynq_ultra_ps_e_0/SAXIGP2/HP0_DDR_LOW] -force") in lines
    assert not any("data_interconnect" in line for line in lines)


def test_block_design_zynq7000_text():
    b = load_board("pynq-z2")
    lines = _tcl_lines(render_tcl(b, b.accel)["block_design.tcl"])
    assert "set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7 processing_system7_0]" in lines
    assert ("apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config [list make_external "
            "{FIXED_IO, DDR} Master {Disable} Slave {Disable} apply_board_preset $use_board_preset] $ps") in lines
    for prop in ("CONFIG.PCW_USE_S_AXI_HP0 {1} \\", "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {64} \\",
                 "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {125} \\", "CONFIG.PCW_IRQ_F2P_INTR {1} \\"):
        assert prop in lines
    assert "connect_bd_net [get_bd_pins $accel/irq] [get_bd_pins $ps/IRQ_F2P]" in lines
    assert "connect_bd_net [get_bd_pins $ps/FCLK_RESET0_N] [get_bd_pins $reset/ext_reset_in]" in lines
    assert "assign_bd_address -offset 0x43C00000 -range 0x1000 \\" in lines
    assert ("assign_bd_address -target_address_space [get_bd_addr_spaces shiftpu_accel_0/m_axi] "
            "[get_bd_addr_segs processing_system7_0/S_AXI_HP0/HP0_DDR_LOWOCM] -force") in lines


def test_narrow_master_gets_a_width_converter():
    b = load_board("ultra96v2")
    cfg = b.accel.with_(axi_data_bits=64)
    lines = _tcl_lines(render_tcl(b, cfg)["block_design.tcl"])
    assert "set data_ic [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect data_interconnect]" in lines
    assert "connect_bd_intf_net [get_bd_intf_pins $accel/m_axi] [get_bd_intf_pins $data_ic/S00_AXI]" in lines
    assert "connect_bd_intf_net [get_bd_intf_pins $data_ic/M00_AXI] [get_bd_intf_pins $ps/S_AXI_HP0_FPD]" in lines
    assert "CONFIG.PSU__SAXIGP2__DATA_WIDTH {128} \\" in lines


def test_clock_follows_the_config():
    b = load_board("kv260")
    tcl = render_tcl(b, b.accel.with_(clock_mhz=187.5))
    assert "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {187.5} \\" in _tcl_lines(tcl["block_design.tcl"])
    build = _tcl_lines(tcl["build.tcl"])
    assert "if {abs($clock_mhz - 187.5) > 0.01 * 187.5} {" in build
    assert any("fabric clock 0 (187.5 MHz) must constrain it" in line for line in build)


# -- files and manifest ---------------------------------------------------------------------------------


def test_write_flow_files_and_manifest(tmp_path):
    b = load_board("pynq-z2")
    verilog = standin_verilog(b.accel)
    hw = write_flow(b, b.accel, tmp_path, verilog)
    assert hw.verilog.read_text() == verilog
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accel_config.json", "block_design.tcl", "build.tcl", "hw.json", "package_ip.tcl", "rtl"]
    manifest = read_hw_manifest(tmp_path)
    assert manifest["board"] == "pynq-z2"
    assert manifest["part"] == "xc7z020clg400-1"
    assert manifest["config_hash"] == f"0x{b.accel.config_hash():08x}"
    assert manifest["register_base"] == "0x43C00000"
    assert manifest["bitstream"] == "shiftpu.bit" and manifest["hwh"] == "shiftpu.hwh"
    assert json.loads((tmp_path / "accel_config.json").read_text()) == b.accel.to_dict()


def test_read_hw_manifest_errors(tmp_path):
    with pytest.raises(VivadoError, match="is not a build-hw output folder: hw.json is missing"):
        read_hw_manifest(tmp_path)
    (tmp_path / "hw.json").write_text('{"format": "other"}')
    with pytest.raises(VivadoError, match=r"hw.json: not a shiftpu-hw/1 manifest \(field 'format'\)"):
        read_hw_manifest(tmp_path)


# -- log parsing and build-hw without Vivado -------------------------------------------------------------


@pytest.mark.parametrize("line,expected", [
    ("SHIFTPU-STEP 3/8 synthesis\n", LogEvent(Progress.STEP, "3/8 synthesis")),
    ("SHIFTPU-ERROR timing not met", LogEvent(Progress.ERROR, "timing not met")),
    ("SHIFTPU-DONE shiftpu.bit shiftpu.hwh", LogEvent(Progress.DONE, "shiftpu.bit shiftpu.hwh")),
    ("ERROR: [BD 41-237] Bus Interface property FREQ_HZ does not match",
     LogEvent(Progress.ERROR, "ERROR: [BD 41-237] Bus Interface property FREQ_HZ does not match")),
    ("CRITICAL WARNING: [Timing 38-282] The design failed to meet the timing requirements.",
     LogEvent(Progress.WARNING, "CRITICAL WARNING: [Timing 38-282] The design failed to meet the timing requirements.")),
    ("INFO: [Synth 8-6157] synthesizing module 'shiftpu_accel'", None),
    ("Phase 1 Placer Initialization", None),
])
def test_parse_log_line(line, expected):
    assert parse_log_line(line) == expected


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from shiftpu.cli.main import main; main()", *args],
                          capture_output=True, text=True, env=env)


def _standin_file(tmp_path: Path, board: str) -> Path:
    path = tmp_path / "standin.v"
    path.write_text(standin_verilog(load_board(board).accel))
    return path


def test_cli_build_hw_without_vivado_prints_the_command(tmp_path):
    out = tmp_path / "hw_out"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    res = _cli("build-hw", "--board", "kv260", "-o", str(out), "--verilog", str(_standin_file(tmp_path, "kv260")), env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "vivado is not on PATH: to build shiftpu.bit and shiftpu.hwh, run on a machine with Vivado:",
        f"  cd {out} && vivado -mode batch -notrace -source build.tcl -log build/vivado.log -journal build/vivado.jou "
        "-tclargs 4"]
    assert (out / "build.tcl").is_file() and (out / "rtl" / "shiftpu_accel.v").is_file()


def test_generator_is_unavailable_without_amaranth(monkeypatch):
    real = rtl.find_spec
    monkeypatch.setattr(rtl, "find_spec", lambda name: None if name == "amaranth" else real(name))
    assert not generator_available()
    with pytest.raises(GeneratorMissingError, match="needs Amaranth: install shiftpu with the 'hw' extra"):
        accelerator_verilog(load_board("pynq-z2").accel)


@pytest.mark.skipif(not generator_available(), reason="the hardware generator needs Amaranth (the hw extra)")
def test_cli_build_hw_with_the_generator(tmp_path):
    out = tmp_path / "hw_out"
    res = _cli("build-hw", "--board", "pynq-z2", "-o", str(out), "--no-run")
    assert res.returncode == 0, res.stderr
    assert "module shiftpu_accel" in (out / "rtl" / "shiftpu_accel.v").read_text()
