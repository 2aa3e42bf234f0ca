"""The clock of every fps figure: the decision on hand-made timing records (cleared, below the margin, stale,
missing), the design key that makes an old record unusable, the store, and the figures that use it
(`shiftpu.compiler.estimate`, `shiftpu estimate`, `build-hw --timing --record`)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from qdq_graphs import detector
from typer.testing import CliRunner

from shiftpu.boards import clock as clock_mod
from shiftpu.boards import load_board
from shiftpu.boards.clock import (
    ClockSource,
    FpsClock,
    TimingRecord,
    TimingStoreError,
    add_report,
    analysis_key,
    decide_clock,
    design_key,
    fps_clock,
    generator_digest,
    load_store,
    report_identity,
)
from shiftpu.boards.timing import CLOCK_MARGIN, TimingPath, TimingReport, delay_model
from shiftpu.cli.main import app
from shiftpu.compiled.folder import read_folder
from shiftpu.compiler.driver import compile_model
from shiftpu.compiler.estimate import estimate, format_table, simulation_estimate

BOARD = "pynq-z2"  # xc7, 125 MHz
COMMAND = "shiftpu build-hw --board pynq-z2 --timing --no-ecp5 --record"
WORST = {"start": "seq.conv.instr[173]", "end": "seq.elt.q_xs[4]", "start_type": "FDRE", "end_type": "FDRE",
         "lut_levels": 17, "carry_cells": 13, "dsp_stages": 3, "muxf_levels": 0, "delay_ns": 31.64}


def _record(fmax: float | None, board: str = BOARD, **changes) -> TimingRecord:
    """A record written by hand, keyed to the board's default design as these sources make it."""
    b = load_board(board)
    data = {"board": board, "family": b.yosys_family.value, "config": b.accel.to_dict(),
            "design_key": design_key(b.accel), "analysis_key": analysis_key(b.yosys_family.value),
            "fmax_mhz_estimated": fmax, "worst_delay_ns": None if fmax is None else round(1000 / fmax, 3),
            "worst_path": WORST, "delay_model": "hand-made", "ports_set_fmax": False, "synth_seconds": 186.0}
    return TimingRecord.from_json(data | changes)


def _store(tmp_path: Path, *records: dict) -> Path:
    path = tmp_path / "timing.json"
    path.write_text(json.dumps({"format": "shiftpu-timing-store/1", "designs": list(records)}))
    return path


# ------------------------------------------------------------------------------------------------ the decision

def test_record_that_clears_the_board_clock_gives_the_board_clock():
    clock = decide_clock(125.0, _record(160.0), COMMAND)
    assert clock == FpsClock(125.0, ClockSource.BOARD_CLOCK_MET, 125.0, 160.0,
                             "board clock, cleared by the estimated Fmax 160 MHz >= 1.25 x 125 MHz")
    assert decide_clock(125.0, _record(156.25), COMMAND).source is ClockSource.BOARD_CLOCK_MET  # exactly the margin
    unlimited = decide_clock(125.0, _record(None), COMMAND)
    assert (unlimited.clock_mhz, unlimited.label) == (125.0, "board clock, no register-to-register path limits it")


def test_record_below_the_margin_gives_the_clock_the_estimate_supports():
    clock = decide_clock(125.0, _record(31.6), COMMAND)
    assert clock == FpsClock(25.0, ClockSource.ESTIMATED_FMAX, 125.0, 31.6,
                             "from the estimated Fmax 31.6 MHz / 1.25: the 125 MHz board clock is not expected to be met")
    assert clock.describe() == ("25 MHz (from the estimated Fmax 31.6 MHz / 1.25: the 125 MHz board clock is not "
                                "expected to be met)")
    # just below the margin: one MHz less than the board clock, never the Fmax itself
    assert decide_clock(125.0, _record(156.2), COMMAND).clock_mhz == 124.0
    assert decide_clock(200.0, _record(240.0), COMMAND).clock_mhz == 192.0  # 240 / 1.25 exactly
    assert decide_clock(200.0, _record(0.9), COMMAND).clock_mhz == 0.72


@given(fmax=st.floats(0.01, 3000.0), board_clock=st.floats(10.0, 400.0))
def test_decided_clock_is_one_the_estimate_supports(fmax, board_clock):
    clock = decide_clock(board_clock, _RECORD_TEMPLATE(fmax), COMMAND)
    assert 0 < clock.clock_mhz <= board_clock
    assert CLOCK_MARGIN * clock.clock_mhz <= fmax
    if clock.source is ClockSource.ESTIMATED_FMAX:
        step = 1.0 if fmax >= CLOCK_MARGIN else 1e-3
        assert CLOCK_MARGIN * (clock.clock_mhz + step) > fmax  # the highest step that it clears
        assert math.isclose(clock.clock_mhz / step, round(clock.clock_mhz / step))
    else:
        assert clock.clock_mhz == board_clock


def _RECORD_TEMPLATE(fmax: float) -> TimingRecord:  # noqa: N802 (built once: the key does not depend on fmax)
    return replace(_BASE_RECORD, fmax_mhz_estimated=fmax)


_BASE_RECORD = _record(100.0)


def test_missing_record_assumes_the_board_clock_and_names_the_command(tmp_path):
    clock = fps_clock(BOARD, store=_store(tmp_path))
    assert clock == FpsClock(125.0, ClockSource.ASSUMED, 125.0, None,
                             f"assumed board clock, timing not estimated: run `{COMMAND}`")
    assert clock.to_json() == {"clock_mhz": 125.0, "clock_source": "assumed", "clock_label": clock.label,
                               "board_clock_mhz": 125.0, "fmax_mhz_estimated": None}
    assert fps_clock(BOARD, store=tmp_path / "absent.json").source is ClockSource.ASSUMED
    other = load_board(BOARD).accel.with_(pe_oc=4)
    assert fps_clock(BOARD, other, store=_store(tmp_path)).label.endswith(
        "run `shiftpu build-hw --board pynq-z2 --config <config.json> --timing --no-ecp5 --record`")


def test_stored_record_sets_the_clock(tmp_path):
    store = _store(tmp_path, _record(31.6).to_json())
    assert fps_clock(BOARD, store=store).clock_mhz == 25.0
    assert fps_clock(load_board(BOARD), store=store).source is ClockSource.ESTIMATED_FMAX
    # another config on the same board has no estimate
    assert fps_clock(BOARD, load_board(BOARD).accel.with_(pe_oc=4), store=store).source is ClockSource.ASSUMED


def test_stale_record_is_not_used(tmp_path):
    stale = _record(160.0, design_key="0123456789abcdef").to_json()
    clock = fps_clock(BOARD, store=_store(tmp_path, stale))
    assert (clock.clock_mhz, clock.source) == (125.0, ClockSource.ASSUMED)
    assert clock.label == f"assumed board clock, the stored estimate is for other RTL or an older analysis: run `{COMMAND}`"
    old_analysis = _record(160.0, analysis_key="fedcba9876543210").to_json()
    assert fps_clock(BOARD, store=_store(tmp_path, old_analysis)).source is ClockSource.ASSUMED
    other_family = _record(160.0, family="xcup").to_json()  # the same key, timed for UltraScale+
    assert fps_clock(BOARD, store=_store(tmp_path, other_family)).source is ClockSource.ASSUMED


def test_design_key_follows_the_generator_sources(tmp_path, monkeypatch):
    package = tmp_path / "fakegen"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pe.py").write_text("WIDTH = 8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(clock_mod, "GENERATOR_PACKAGES", ("fakegen",))
    monkeypatch.setattr(clock_mod, "GENERATOR_MODULES", ())
    cfg = load_board(BOARD).accel
    generator_digest.cache_clear()
    try:
        before = (generator_digest(), design_key(cfg))
        assert len(before[0]) == 64 and len(before[1]) == 16
        assert design_key(cfg.with_(pe_oc=4)) != before[1]
        (package / "pe.py").write_text("WIDTH = 9\n")
        generator_digest.cache_clear()
        assert generator_digest() != before[0] and design_key(cfg) != before[1]
        (package / "pe.py").write_text("WIDTH = 8\n")
        (package / "line_buffer.py").write_text("")
        generator_digest.cache_clear()
        assert design_key(cfg) != before[1]  # a new file counts too
    finally:
        generator_digest.cache_clear()  # the next call reads the real sources again


# ---------------------------------------------------------------------------------------------------- the store

def _report_json(board: str = BOARD, delay_ns: float = 8.0) -> dict:
    """What `shiftpu build-hw --timing --json` prints, made by hand: one 8 ns path (Fmax 125 MHz)."""
    b = load_board(board)
    family = b.yosys_family.value
    path = TimingPath(**(WORST | {"delay_ns": delay_ns}))
    report = TimingReport(family=family, model=delay_model(family), paths=(path,), port_paths=(), cells=49091,
                          board=board, board_clock_mhz=b.fabric_clock_mhz, config_hash=b.accel.config_hash(),
                          synth_seconds=186.0)
    return json.loads(json.dumps(report.to_json() | report_identity(b.accel, family)))


def test_add_report_stores_a_record_and_replaces_an_older_one(tmp_path):
    store = tmp_path / "timing.json"
    record = add_report(_report_json(), store)
    assert (record.fmax_mhz_estimated, record.worst_path["end"], record.synth_seconds) == (125.0, WORST["end"], 186.0)
    assert fps_clock(BOARD, store=store).clock_mhz == 100.0  # 125 / 1.25
    stale = _record(20.0, design_key="0123456789abcdef").to_json()
    data = json.loads(store.read_text())
    store.write_text(json.dumps(data | {"designs": data["designs"] + [stale]}))
    add_report(_report_json(delay_ns=4.0), store)  # re-estimated: 250 MHz
    assert [r.fmax_mhz_estimated for r in load_store(store)] == [250.0]  # the old and the stale record replaced
    assert fps_clock(BOARD, store=store).source is ClockSource.BOARD_CLOCK_MET
    add_report(_report_json("ultra96v2"), store)
    assert sorted(r.board for r in load_store(store)) == ["pynq-z2", "ultra96v2"]
    assert json.loads(store.read_text())["kind"].startswith("estimated")


@pytest.mark.parametrize("change,message", [
    ({"design_key": None}, "made from a --verilog file"),
    ({"design_key": "0123456789abcdef"}, "the RTL changed since, estimate it again"),
    ({"analysis_key": "0123456789abcdef"}, "another analyser version, delay model or synthesis script"),
    ({"config": None}, "no config"),
])
def test_add_report_refuses_reports_it_cannot_tie_to_these_sources(tmp_path, change, message):
    data = _report_json() | change
    if change == {"config": None}:
        del data["config"]
    with pytest.raises(TimingStoreError, match=message):
        add_report(data, tmp_path / "timing.json")
    assert not (tmp_path / "timing.json").exists()


def test_unreadable_store_is_one_clear_error(tmp_path):
    bad = tmp_path / "timing.json"
    bad.write_text(json.dumps({"format": "shiftpu-timing-store/1", "designs": [{"board": "x"}]}))
    with pytest.raises(TimingStoreError, match="unreadable timing store"):
        fps_clock(BOARD, store=bad)
    bad.write_text(json.dumps({"format": "other", "designs": []}))
    with pytest.raises(TimingStoreError, match="not a shiftpu-timing-store/1 file"):
        load_store(bad)


def test_shipped_store_is_readable():
    assert all(r.family in ("xc7", "xcup") for r in load_store())


# ----------------------------------------------------------------------------------------------- the figures

@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("clock")
    onnx.save(detector(32, seed=7), d / "det.onnx")
    compile_model(d / "det.onnx", BOARD, d / "out")
    return d


def test_estimate_at_a_slower_clock_is_the_model_run_at_that_clock(compiled):
    c = read_folder(compiled / "out")
    b = load_board(BOARD)
    progs = c.programs()
    at_board = estimate(progs, c.config, b.ddr_bytes_per_cycle, {}, BOARD, read_latency=b.ddr_read_latency_cycles,
                        clock=decide_clock(125.0, None, COMMAND))
    slow = decide_clock(125.0, _record(62.5), COMMAND)  # 50 MHz
    at_50 = estimate(progs, c.config, b.ddr_bytes_per_cycle, {}, BOARD, read_latency=b.ddr_read_latency_cycles,
                     clock=slow)
    # the same board DDR (GB/s, ns) seen from a 50 MHz accelerator
    direct = estimate(progs, c.config.with_(clock_mhz=50.0), b.ddr_bandwidth_gbps * 1e9 / 50e6, {}, BOARD,
                      read_latency=math.ceil(b.ddr_read_latency_ns * 50 / 1e3), clock=slow)
    assert at_50["cycles"] == direct["cycles"] < at_board["cycles"]  # DDR waits cost fewer cycles
    assert at_50["fps"] == round(50e6 / at_50["cycles"], 3) and at_50["ddr_read_latency_cycles"] == 10
    assert (at_50["clock_mhz"], at_50["clock_source"], at_50["fmax_mhz_estimated"]) == (50.0, "estimated_fmax", 62.5)
    assert at_board["fps"] == round(125e6 / at_board["cycles"], 3) and at_board["clock_source"] == "assumed"
    table = format_table(at_50)
    assert table.splitlines()[0].endswith(f"rtl schedule, at 50 MHz ({slow.label})")
    assert f"{at_50['fps']} fps (estimated, at 50 MHz, from the estimated Fmax)" in table.splitlines()[-1]
    # the simulation's memory runs on the fabric clock: its cycles do not change with the clock
    sim = simulation_estimate(progs, c.config, BOARD)
    assert estimate(progs, c.config, 2.0 * c.config.axi_bytes, {}, BOARD, clock=slow,
                    memory_at_fabric_clock=True)["cycles"] == sim["cycles"]


def test_cli_record_then_estimate_uses_the_recorded_clock(compiled, tmp_path, monkeypatch):
    store = tmp_path / "timing.json"
    monkeypatch.setattr(clock_mod, "STORE_PATH", store)
    hand_made = TimingReport.from_json(_report_json(delay_ns=10.0))  # Fmax 100 MHz
    monkeypatch.setattr("shiftpu.boards.timing.timing_estimate", lambda *args, **kwargs: hand_made)
    monkeypatch.setattr("shiftpu.boards.rtl.accelerator_verilog", lambda cfg: "module shiftpu_accel(); endmodule\n")
    runner = CliRunner()
    before = runner.invoke(app, ["estimate", str(compiled / "out"), "--json"])
    assert before.exit_code == 0, before.output
    assert json.loads(before.output)["clock_source"] == "assumed"
    res = runner.invoke(app, ["build-hw", "--board", BOARD, "-o", str(tmp_path / "hw"), "--timing", "--no-ecp5",
                              "--record"])
    assert res.exit_code == 0, res.output
    assert "fps figures of this design: 80 MHz (from the estimated Fmax 100 MHz / 1.25: the 125 MHz board clock " \
           "is not expected to be met)" in res.output
    assert [r.board for r in load_store(store)] == [BOARD]
    after = runner.invoke(app, ["estimate", str(compiled / "out"), "--json"])
    est = json.loads(after.output)
    assert (est["clock_mhz"], est["clock_source"], est["board_clock_mhz"]) == (80.0, "estimated_fmax", 125.0)
    assert est["fps"] == round(80e6 / est["cycles"], 3)
    table = runner.invoke(app, ["estimate", str(compiled / "out")]).output
    assert "at 80 MHz (from the estimated Fmax 100 MHz / 1.25" in table.splitlines()[0]


def test_cli_record_needs_timing_and_generated_verilog(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["build-hw", "--board", BOARD, "-o", str(tmp_path), "--record"])
    assert res.exit_code == 2 and "--record goes with --timing" in res.output
    verilog = tmp_path / "a.v"
    verilog.write_text("module shiftpu_accel(); endmodule\n")
    res = runner.invoke(app, ["build-hw", "--board", BOARD, "-o", str(tmp_path), "--timing", "--record",
                              "--verilog", str(verilog)])
    assert res.exit_code == 2 and "cannot be tied to a design" in res.output
