"""`shiftpu report`: the HTML page of the shipped detector, with and without the optional inputs, and its errors."""

from __future__ import annotations

import json
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_report_support import (
    BOARD,
    TRACE_FRAMES,
    TRACE_STAGES,
    bench_file,
    compile_detector,
    read_page,
    resources_file,
    trace_file,
)

from shiftpu.boards import load_board
from shiftpu.boards.clock import fps_clock
from shiftpu.compiled.folder import read_folder
from shiftpu.compiler.estimate import estimate
from shiftpu.report import ReportError, write_report


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_detector(tmp_path_factory.mktemp("report") / "det")


@pytest.fixture(scope="module")
def bare_page(compiled, tmp_path_factory):
    return write_report(compiled, tmp_path_factory.mktemp("page") / "bare.html")


@pytest.fixture(scope="module")
def full_page(compiled, tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    return write_report(compiled, d / "full.html", resources=resources_file(d / "res.json", lut_used=35280.0),
                        trace=trace_file(d / "trace.json"), bench=bench_file(d / "bench.json"))


def _manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_table_has_one_row_per_fabric_operation_and_cpu_node(compiled, bare_page):
    m = _manifest(compiled)
    rows = read_page(bare_page).rows
    assert len(rows) == len(m["layers"]) + len(m["cpu_nodes"])
    names = [r[1] for r in rows]
    assert sorted(names) == sorted([la["name"] for la in m["layers"]] + [n["name"] for n in m["cpu_nodes"]])
    # execution order: the model's input QuantizeLinear first, its output DequantizeLinear last
    assert rows[0][2] == "QuantizeLinear" and rows[-1][2] == "DequantizeLinear"
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))


def test_rows_carry_the_manifest_and_the_performance_model(compiled, bare_page):
    c = read_folder(compiled)
    m = c.manifest
    board = load_board(BOARD)
    est = estimate(c.programs(), c.config, board.ddr_bytes_per_cycle,
                   {la["layer_id"]: la["name"] for la in m["layers"]}, BOARD,
                   read_latency=board.ddr_read_latency_cycles)
    by_name = {r[1]: r for r in read_page(bare_page).rows}
    per_layer = {la["name"]: la for la in est["layers"]}
    for la in m["layers"]:
        row = by_name[la["name"]]
        out_shape = "x".join(map(str, m["tensors"][la["output"]]["shape"]))
        assert row[2] == la["kind"] and row[4] == out_shape and row[11] == f"fabric {la['segment']}"
        if la["kind"] == "CONV":
            assert row[5] == la["dataflow"]
            assert row[6] == f"{la['strip_w']} / {la['ic_tile']} / {la['oc_tile']}"
        else:
            assert row[5] == row[6] == "-"
        e = per_layer.get(la["name"])
        if e is None:  # a concatenation stored in place has no instruction
            assert row[7:11] == ["0", "0", "0.0", "0"] and "in place" in row[12]
        else:
            assert row[7:11] == [str(e["macs"]), str(e["cycles"]), f"{100 * e['utilization']:.1f}", str(e["ddr_bytes"])]
    for node in m["cpu_nodes"]:
        row = by_name[node["name"]]
        assert row[2] == node["op_type"] and row[11] == "CPU" and row[7:11] == ["-"] * 4
        assert row[12].startswith(f"{node['reason']}: {node['why']}")
    first = by_name[m["cpu_nodes"][0]["name"]]
    assert first[3] == "x".join(map(str, m["inputs"][0]["shape"]))


def test_page_without_optional_inputs_says_what_is_missing(bare_page):
    page = read_page(bare_page)
    assert page.figures == ["estimated"] and page.svgs == 1
    roof = page.sections["roofline"]
    assert "Roofline" in roof and "estimated" in roof
    cfg = load_board(BOARD).accel
    clock = fps_clock(BOARD)
    assert f"peak {cfg.macs_per_cycle * clock.clock_mhz * 1e6 / 1e9:.1f} GMAC/s" in roof
    summary = " ".join(page.sections["summary"].split())
    assert f"fps (fabric only, rtl schedule) at {clock.clock_mhz:g} MHz ({clock.label})" in summary
    assert f"{load_board(BOARD).ddr_bandwidth_gbps:.2f} GB/s" in roof
    assert "No resource estimate given" in page.sections["resources"]
    assert "--resources FILE" in page.sections["resources"]
    assert "pipeline was not measured" in page.sections["gantt"]
    assert "not measured" in page.sections["summary"]


def test_roofline_draws_one_point_per_layer_with_macs(compiled, bare_page):
    text = bare_page.read_text()
    m = _manifest(compiled)
    conv_names = [la["name"] for la in m["layers"] if la["kind"] == "CONV"]
    svg = text[text.index('<section id="roofline">'):text.index("</section>", text.index('<section id="roofline">'))]
    for name in conv_names:
        assert f">{name}<" in svg, name  # every CONV has MACs and is annotated by name
    assert f"with MACs ({len(conv_names)})" in svg


def test_page_with_all_inputs_labels_every_figure(full_page):
    page = read_page(full_page)
    assert page.figures == ["estimated", "estimated", "measured"] and page.svgs == 3
    res = page.sections["resources"]
    assert "35280 / 70560 (50.0%)" in res and "Yosys ran 61 s" in res and "Not on this device: URAM" in res
    assert "estimated" in res
    gantt = page.sections["gantt"]
    assert f"{TRACE_FRAMES * len(TRACE_STAGES)} stage intervals of {TRACE_FRAMES} frames" in gantt
    assert all(stage in gantt for stage in TRACE_STAGES) and "ms, measured" in gantt
    summary = page.sections["summary"]
    assert "123.5 fps over 40 frames on backend golden" in summary and "p50 7.25 ms" in summary
    assert "power 3.50 W" in summary and "measured" in summary


def test_page_is_self_contained(full_page):
    text = full_page.read_text()
    assert "<script" not in text and "<link" not in text and "<img" not in text
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']+)""", text) + re.findall(r"url\(([^)]+)\)", text)
    assert [r for r in refs if not r.startswith("#")] == []


def test_default_output_is_inside_the_folder(compiled):
    out = write_report(compiled)
    assert out == compiled / "report.html" and out.is_file()
    out.unlink()


def _cli_error(monkeypatch, capsys, *args: str) -> str:
    from shiftpu.cli.main import main

    monkeypatch.setattr(sys, "argv", ["shiftpu", "report", *args])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_writes_the_report(compiled, tmp_path, monkeypatch, capsys):
    from shiftpu.cli.main import main

    out = tmp_path / "r.html"
    monkeypatch.setattr(sys, "argv", ["shiftpu", "report", str(compiled), "-o", str(out),
                                      "--bench", str(bench_file(tmp_path / "b.json"))])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert "123.5 fps" in read_page(out).sections["summary"]


def test_missing_and_foreign_folders_are_clear_errors(tmp_path, monkeypatch, capsys):
    assert "no such folder" in _cli_error(monkeypatch, capsys, str(tmp_path / "none"))
    (tmp_path / "notes.txt").write_text("x")
    assert "not a compiled shiftpu folder" in _cli_error(monkeypatch, capsys, str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    assert "not a shiftpu manifest" in _cli_error(monkeypatch, capsys, str(tmp_path))


def test_malformed_optional_files_are_clear_errors(compiled, tmp_path, monkeypatch, capsys):
    folder = str(compiled)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    for option in ("--resources", "--trace", "--bench"):
        assert f"{junk}: not a readable" in _cli_error(monkeypatch, capsys, folder, option, str(junk))
        assert "no such" in _cli_error(monkeypatch, capsys, folder, option, str(tmp_path / "absent.json"))
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert "bad or missing field" in _cli_error(monkeypatch, capsys, folder, "--resources", str(empty))
    assert "no 'traceEvents' list" in _cli_error(monkeypatch, capsys, folder, "--trace", str(empty))
    assert "missing field 'backend'" in _cli_error(monkeypatch, capsys, folder, "--bench", str(empty))
    bad_event = tmp_path / "bad_event.json"
    bad_event.write_text(json.dumps({"traceEvents": [{"ph": "X", "tid": 0, "ts": 1.0}]}))
    assert "malformed trace event" in _cli_error(monkeypatch, capsys, folder, "--trace", str(bad_event))
    no_spans = tmp_path / "no_spans.json"
    no_spans.write_text(json.dumps({"traceEvents": []}))
    assert "no stage intervals" in _cli_error(monkeypatch, capsys, folder, "--trace", str(no_spans))
    bad_type = tmp_path / "bad_type.json"
    bad_type.write_text(json.dumps(json.loads(bench_file(tmp_path / "b.json").read_text()) | {"fps": "fast"}))
    assert "field 'fps' has the wrong type" in _cli_error(monkeypatch, capsys, folder, "--bench", str(bad_type))


def test_optional_files_of_another_accelerator_or_board_are_refused(compiled, tmp_path):
    with pytest.raises(ReportError, match="resource estimate is for accelerator config 0x12345678"):
        write_report(compiled, tmp_path / "r.html", resources=resources_file(tmp_path / "r.json", 1.0, 0x12345678))
    with pytest.raises(ReportError, match="measured for board pynq-z2"):
        write_report(compiled, tmp_path / "r.html", bench=bench_file(tmp_path / "b.json", board="pynq-z2"))
    assert not (tmp_path / "r.html").exists()


def test_help_is_meaningful():
    from typer.testing import CliRunner

    from shiftpu.cli.main import app

    r = CliRunner().invoke(app, ["report", "--help"])
    assert r.exit_code == 0
    for option in ("--output", "--resources", "--trace", "--bench", "roofline", "Gantt"):
        assert option in r.output


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TRACE_STAGES), st.integers(0, 50), st.floats(0, 10), st.floats(0, 1)),
                min_size=1, max_size=30))
def test_trace_reads_back_the_spans_bench_writes(spans):
    import tempfile
    from pathlib import Path

    from shiftpu.report.inputs import load_trace
    from shiftpu.sw.trace import Trace

    t = Trace()
    t.origin = 0.0
    for stage, frame, start, dur in spans:
        t.add(stage, frame, start, start + dur)
    with tempfile.TemporaryDirectory() as d:
        got = load_trace(t.write_chrome(Path(d) / "t.json"))
    assert got.stages == tuple(dict.fromkeys(s for s, *_ in spans))
    assert [(s.stage, s.frame) for s in got.spans] == [(s, f) for s, f, *_ in spans]
    for s, (_, _, start, dur) in zip(got.spans, spans, strict=True):
        assert s.start_ms == pytest.approx(start * 1e3, abs=1e-3)
        assert s.end_ms - s.start_ms == pytest.approx(dur * 1e3, abs=2e-3)
