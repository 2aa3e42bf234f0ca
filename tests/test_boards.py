"""Boards as data: the shipped board files, the loader's errors (file and field named), the PS attachment
and `shiftpu boards`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shiftpu.arch.config import AccelConfig
from shiftpu.boards import BoardError, PsFamily, YosysFamily, board_names, load_board, load_board_file
from shiftpu.boards.clock import fps_clock
from shiftpu.boards.ps import ATTACHMENTS, ps_config, register_range

BOARD_DIR = Path(__file__).resolve().parents[1] / "boards"

#: Device resources from the vendors' data sheets (LUT, FF, DSP, BRAM36, URAM).
DATASHEET = {
    "pynq-z2": ("xc7z020clg400-1", PsFamily.ZYNQ7000, YosysFamily.XC7, (53200, 106400, 220, 140, 0)),
    "ultra96v2": ("xczu3eg-sbva484-1-i", PsFamily.ZYNQMP, YosysFamily.XCUP, (70560, 141120, 360, 216, 0)),
    "zcu104": ("xczu7ev-ffvc1156-2-e", PsFamily.ZYNQMP, YosysFamily.XCUP, (230400, 460800, 1728, 312, 96)),
    "kv260": ("xck26-sfvc784-2LV-c", PsFamily.ZYNQMP, YosysFamily.XCUP, (117120, 234240, 1248, 144, 64)),
}


def test_the_four_boards_are_shipped():
    assert board_names() == ["kv260", "pynq-z2", "ultra96v2", "zcu104"]


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_board_matches_datasheet(name):
    part, ps, family, (lut, ff, dsp, bram, uram) = DATASHEET[name]
    b = load_board(name)
    assert (b.part, b.ps_family, b.yosys_family) == (part, ps, family)
    assert b.resources == {"LUT": lut, "FF": ff, "DSP": dsp, "BRAM36": bram, "URAM": uram}
    assert b.accel.axi_data_bits <= b.hp_port_bits
    assert b.accel.clock_mhz == b.fabric_clock_mhz
    assert b.vivado_board_part.count(":") == 2 and b.vivado_board_part.endswith(":part0")


def test_board_can_be_loaded_from_a_file_path(tmp_path):
    src = json.loads((BOARD_DIR / "pynq-z2.json").read_text())
    src["name"] = "my-z2"
    path = tmp_path / "my-z2.json"
    path.write_text(json.dumps(src))
    b = load_board(str(path))
    assert b.name == "my-z2" and b.path == path and b.part == "xc7z020clg400-1"


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError, match="unknown board 'zedboard': known boards are kv260, pynq-z2, ultra96v2, zcu104"):
        load_board("zedboard")


def _drop(key):
    def change(d):
        del d[key]
    return change


def _set(path, value):
    def change(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


MALFORMED = [
    ("missing part", _drop("part"), "missing field 'part'"),
    ("missing accel", _drop("accel"), "missing field 'accel'"),
    ("part not a string", _set(["part"], 7020), "field 'part' has the wrong type (int)"),
    ("bool clock", _set(["fabric_clock_mhz"], True), "field 'fabric_clock_mhz' has the wrong type (bool)"),
    ("unknown field", _set(["colour"], "red"), "unknown field(s) colour"),
    ("name differs from file", _set(["name"], "other"), "field 'name' is 'other' but the file is named 'ultra96v2'"),
    ("bad ps family", _set(["ps_family"], "versal"), "field 'ps_family' is 'versal', must be one of 'zynq7000', 'zynqmp'"),
    ("bad yosys family", _set(["yosys_family"], "xc6"), "field 'yosys_family' is 'xc6', must be one of 'xc7', 'xcup'"),
    ("negative LUTs", _set(["resources", "LUT"], -1), "field 'resources.LUT' must be a non-negative integer"),
    ("missing URAM", _set(["resources"], {"LUT": 1, "FF": 1, "DSP": 1, "BRAM36": 1}),
     "field 'resources.URAM' must be a non-negative integer"),
    ("unknown resource", _set(["resources", "CLB"], 3), "field 'resources' has unknown kind(s) CLB"),
    ("HP port width", _set(["hp_port_bits"], 256), "field 'hp_port_bits' is 256, a zynqmp HP port is one of (32, 64, 128)"),
    ("zero bandwidth", _set(["ddr_bandwidth_gbps"], 0), "field 'ddr_bandwidth_gbps' must be positive"),
    ("missing latency", _drop("ddr_read_latency_ns"), "missing field 'ddr_read_latency_ns'"),
    ("negative latency", _set(["ddr_read_latency_ns"], -5), "field 'ddr_read_latency_ns' must be positive"),
    ("rail not a string", _set(["power_rails"], ["INT", 3]), "field 'power_rails' must be a list of rail names"),
    ("accel field unknown", _set(["accel", "pe_rows"], 8), "field 'accel': unknown AccelConfig field(s): pe_rows"),
    ("accel invalid", _set(["accel", "pe_oc"], 12), "field 'accel'"),
    ("accel wider than HP", _set(["hp_port_bits"], 64), "field 'accel.axi_data_bits' (128) exceeds hp_port_bits"),
]


@pytest.mark.parametrize("change,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_board_file_names_file_and_field(tmp_path, change, expected):
    data = json.loads((BOARD_DIR / "ultra96v2.json").read_text())
    change(data)
    path = tmp_path / "ultra96v2.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BoardError) as err:
        load_board_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


@pytest.mark.parametrize("text,expected", [("{not json", "cannot read board file"),
                                           ("[1, 2]", "a board file must hold a JSON object")])
def test_unreadable_board_file(tmp_path, text, expected):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(BoardError, match=expected) as err:
        load_board_file(path)
    assert str(path) in str(err.value)


def test_ps_config_zynqmp():
    b = load_board("ultra96v2")
    assert ps_config(b, 187.5) == {
        "PSU__USE__M_AXI_GP0": "1", "PSU__USE__S_AXI_GP2": "1", "PSU__FPGA_PL0_ENABLE": "1", "PSU__USE__IRQ0": "1",
        "PSU__USE__M_AXI_GP1": "0", "PSU__USE__M_AXI_GP2": "0", "PSU__SAXIGP2__DATA_WIDTH": "128",
        "PSU__MAXIGP0__DATA_WIDTH": "32", "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": "187.5",
    }


def test_ps_config_zynq7000():
    b = load_board("pynq-z2")
    assert ps_config(b, 125.0) == {
        "PCW_USE_M_AXI_GP0": "1", "PCW_USE_S_AXI_HP0": "1", "PCW_EN_CLK0_PORT": "1", "PCW_EN_RST0_PORT": "1",
        "PCW_USE_FABRIC_INTERRUPT": "1", "PCW_IRQ_F2P_INTR": "1", "PCW_USE_M_AXI_GP1": "0",
        "PCW_S_AXI_HP0_DATA_WIDTH": "64", "PCW_FPGA0_PERIPHERAL_FREQMHZ": "125",
    }


def test_register_bases_and_range():
    assert ATTACHMENTS[PsFamily.ZYNQMP].register_base == 0xA000_0000
    assert ATTACHMENTS[PsFamily.ZYNQ7000].register_base == 0x43C0_0000
    assert register_range() == 0x1000


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from shiftpu.cli.main import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_cli_boards_lists_resources():
    out = _cli("boards")
    assert out.returncode == 0, out.stderr
    for name, (part, *_rest) in DATASHEET.items():
        assert name in out.stdout and part in out.stdout
    assert "53,200" in out.stdout and "230,400" in out.stdout


def test_cli_boards_json():
    out = _cli("boards", "--json")
    assert out.returncode == 0, out.stderr
    data = {b["name"]: b for b in json.loads(out.stdout)}
    assert data["kv260"]["resources"]["URAM"] == 64
    assert data["pynq-z2"]["config_hash"] == f"0x{load_board('pynq-z2').accel.config_hash():08x}"
    assert data["pynq-z2"]["fps_clock"] == fps_clock("pynq-z2").to_json()


def test_cli_unknown_board_is_one_line():
    out = _cli("build-hw", "--board", "zedboard", "--no-run")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: unknown board 'zedboard': known boards are kv260, pynq-z2, ultra96v2, zcu104"]


def test_default_config_hashes_differ_per_board():
    hashes = {load_board(n).accel.config_hash() for n in board_names()}
    assert len(hashes) == 4
    assert AccelConfig().config_hash() not in hashes


def test_cli_json_needs_estimate():
    out = _cli("build-hw", "--board", "pynq-z2", "--json", "--no-run")
    assert out.returncode == 2
    assert "--json goes with --estimate" in out.stderr


def test_ddr_read_latency_in_accelerator_cycles():
    # 200 ns at 200 MHz is 40 cycles; at 125 MHz 25
    assert load_board("ultra96v2").ddr_read_latency_cycles == 40
    assert load_board("pynq-z2").ddr_read_latency_cycles == 25
