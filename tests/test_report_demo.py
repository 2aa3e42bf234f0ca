"""The report's demo section (bit-exactness, mAP, RTL cycles against the model, detections), its power lines, a layer
table that fits the page and roofline labels that never overlap."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from test_report_support import (
    BOARD,
    DEMO_FRAMES,
    DEMO_LAYERS,
    bench_file,
    compile_detector,
    demo_folder,
    read_page,
)

from shiftpu.boards import load_board
from shiftpu.report import ReportError, write_report
from shiftpu.report.data import Roofline, gather
from shiftpu.report.figures import _pyplot, roofline_plot, roofline_points
from shiftpu.report.labels import text_box
from shiftpu.sw.power import estimate_power_at_fps


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_detector(tmp_path_factory.mktemp("report_demo") / "det")


@pytest.fixture(scope="module")
def demo_page(compiled, tmp_path_factory):
    d = tmp_path_factory.mktemp("demo_page")
    return write_report(compiled, d / "demo.html", bench=bench_file(d / "bench.json"),
                        demo=demo_folder(d / "demo_out"))


def _text(page, section: str) -> str:
    return " ".join(read_page(page).sections[section].split())


def test_demo_section_shows_the_verdict_and_the_map(demo_page):
    demo = _text(demo_page, "demo")
    assert "What the demo measured measured" in demo  # the heading with its label
    assert "RTL simulation == golden model == onnxruntime, bit for bit: golden model against onnxruntime on 64 " \
           "test images (equal); RTL frame 0 against the golden model (equal); RTL frame 0 with the simulated DDR " \
           "40 cycles late against the golden model (equal); the layer-by-layer RTL run against the golden model " \
           "(equal)" in demo
    assert "mAP@0.5 on 64 generated test images: golden model 0.9558, onnxruntime 0.9558" in demo
    assert 'class="verdict ok"' in demo_page.read_text()


def test_rtl_cycles_stand_beside_the_model_per_frame_and_per_layer(demo_page):
    tables = read_page(demo_page).tables
    assert tables["rtl-frames"] == [
        ["frame 0, whole program", "the simulation's AXI RAM", "84892", "84907", "+15 (+0.018%)",
         "equal to the golden model"],
        ["frame 0, whole program", f"40 cycles (as the {BOARD}'s DDR)", "87711", "87726", "+15 (+0.017%)",
         "equal to the golden model"]]
    assert len(DEMO_FRAMES) == 2
    assert tables["rtl-layers"] == [[str(i), n, op, str(m), str(e), f"{e - m:+d} ({100 * (e / m - 1):+.3f}%)"]
                                    for i, n, op, m, e in DEMO_LAYERS]
    assert tables["rtl-layers"][0][5] == "+52 (+0.325%)" and tables["rtl-layers"][1][5] == "-14 (-0.248%)"


def test_detections_are_drawn_images_inside_the_page(demo_page):
    text = demo_page.read_text()
    images = re.findall(r'<img alt="(frame\d+\.png) with its detections" src="data:image/png;base64,([^"]+)">', text)
    assert [name for name, _ in images] == ["frame000.png", "frame001.png"]
    assert base64.b64decode(images[0][1]).startswith(b"\x89PNG")
    demo = _text(demo_page, "demo")
    assert "frame000.png: found circle 0.97; ground truth circle" in demo
    assert "frame001.png: found nothing; ground truth square" in demo
    refs = re.findall(r"""(?:href|src)\s*=\s*["']([^"']+)""", text)
    assert [r for r in refs if not r.startswith(("#", "data:image/png;base64,"))] == []  # still self-contained


def test_without_demo_results_the_section_says_how_to_get_them(compiled, tmp_path):
    page = write_report(compiled, tmp_path / "bare.html")
    demo = _text(page, "demo")
    assert "No demo results given: pass --demo FOLDER, the output folder of shiftpu demo" in demo


def test_a_demo_without_the_rtl_says_so(compiled, tmp_path):
    folder = demo_folder(tmp_path / "demo_out")
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("rtl", "rtl_board_latency", "rtl_layers"):
        summary.pop(key)
    (folder / "summary.json").write_text(json.dumps(summary))
    demo = _text(write_report(compiled, tmp_path / "r.html", demo=folder), "demo")
    assert "golden model == onnxruntime, bit for bit (the RTL simulation was not run)" in demo
    assert "The RTL simulation was not run by the demo" in demo


@pytest.mark.parametrize(("change", "message"), [
    ({"board": "pynq-z2"}, "ran for board pynq-z2, {compiled} was compiled for ultra96v2"),
    ({"config_hash": "0x00000001"}, "ran accelerator config 0x00000001, {compiled} was compiled for 0x"),
    ({"map50_golden": None}, "not a summary of `shiftpu demo` (bad or missing field"),
])
def test_a_foreign_or_damaged_demo_is_refused(compiled, tmp_path, change, message):
    folder = demo_folder(tmp_path / "demo_out")
    summary = json.loads((folder / "summary.json").read_text()) | change
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError) as e:
        write_report(compiled, tmp_path / "r.html", demo=folder)
    assert message.format(compiled=compiled) in str(e.value)
    assert not (tmp_path / "r.html").exists()


def test_a_folder_that_is_no_demo_output_is_refused(compiled, tmp_path):
    with pytest.raises(ReportError, match=r"not the output of `shiftpu demo` \(no summary.json\)"):
        write_report(compiled, tmp_path / "r.html", demo=tmp_path)


def test_power_lines_are_one_model_and_say_what_each_includes(compiled, demo_page):
    """The summary's power is the demo table's (the model at the modelled fps); the bench's is the same model at the
    fps the pipeline reached, labelled so: 3.50 W here against 2.90 W static."""
    d = gather(compiled)
    board = load_board(BOARD)
    model = estimate_power_at_fps(board, d.estimate["macs"], d.estimate["fps"])
    assert d.power == model and model.static_w == board.static_power_w == 2.9
    summary = _text(demo_page, "summary")
    assert (f"{model.watts:.2f} W with the fabric at the {d.estimate['fps']:.1f} fps modelled above: "
            f"{model.static_w:.2f} W static (the board with the fabric idle, board file) + {model.dynamic_w:.2f} W "
            "dynamic") in summary
    assert "The demo's board table prints this figure." in summary
    assert ("power 3.50 W (estimated: the same power model with the fabric at the 123.5 fps this pipeline reached on "
            "backend golden: 2.90 W static + 0.60 W dynamic; it differs from the power line above only by the frame "
            "rate its dynamic part is taken at)") in summary


def test_demo_board_table_and_report_print_the_same_power(compiled):
    """The demo's table computes its power as the report does (shiftpu.demo calls estimate_power_at_fps with the
    compile estimate): same estimate, same watts."""
    from shiftpu.compiler.driver import compile_model
    from shiftpu.demo import MODEL

    est = compile_model(MODEL, BOARD).estimate
    assert estimate_power_at_fps(load_board(BOARD), est["macs"], est["fps"]) == gather(compiled).power


def test_layer_table_is_laid_out_to_fit_the_page(demo_page):
    """Without a browser: the rules that let the table fit a 1280 px page (checked in Chromium by
    test_report_browser.py): it takes the box's width, names break anywhere, shapes only between shapes, notes wrap,
    and a narrower window scrolls the table's box, not the page."""
    text = demo_page.read_text()
    css = text[text.index("<style>"):text.index("</style>")]
    assert ".table-box { overflow-x: auto; max-width: 100%; }" in css
    assert "table.fit { width: 100%; }" in css
    assert "td.name, td.op { overflow-wrap: anywhere;" in css
    assert "td.note { min-width: 12em; }" in css
    assert not re.search(r"td\.(name|note|shape|op)[^{}]*\{[^}]*nowrap", css)
    assert '<div class="table-box">\n<table id="layer-table" class="fit">' in text
    rows = re.findall(r'<tr class="(?:fabric|cpu)">(.*?)</tr>', text, re.S)
    assert rows and all('<td class="name">' in r and '<td class="note">' in r for r in rows)
    add = next(r for r in rows if "<td class=\"op\">ADD</td>" in r)
    assert re.search(r'<td class="shape"><span class="nowrap">[0-9x]+</span>, <span class="nowrap">[0-9x]+</span></td>',
                     add)


def _label_boxes(fig):
    ax = fig.axes[0]
    labels = [t for t in ax.texts if (t.get_gid() or "").startswith("label-")]
    return labels, [text_box(t) for t in labels], ax.get_legend().get_window_extent(fig.canvas.get_renderer())


def _assert_apart(boxes, legend):
    for i, a in enumerate(boxes):
        assert not a.overlaps(legend), i
        for j in range(i):
            assert not a.overlaps(boxes[j]), (i, j)


def test_roofline_labels_of_the_detector_do_not_overlap(compiled):
    d = gather(compiled)
    points = roofline_points(d.roofline, d.rows)
    with _pyplot("roofline") as plt:
        fig = roofline_plot(plt, d.roofline, points, d.board.title)
        labels, boxes, legend = _label_boxes(fig)
        inside = fig.axes[0].get_window_extent(fig.canvas.get_renderer())
        plt.close(fig)
    assert sorted(t.get_text() for t in labels) == sorted(name for _, _, name in points) and len(labels) == 8
    _assert_apart(boxes, legend)
    assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1 for b in boxes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roofline_labels_of_a_crowded_cluster_do_not_overlap(seed):
    """40 layers within a factor 1.3 of each other, long and short names: every label finds a free place."""
    rng = np.random.default_rng(seed)
    print("seed", seed)
    roof = Roofline(clock_hz=200e6, macs_per_cycle=64, ddr_bytes_per_s=3.9e9)
    points = [(float(8 * rng.uniform(1, 1.3)), float(5 * rng.uniform(1, 1.3)),
               f"layer{i}" + "_conv_block" * int(rng.integers(0, 3))) for i in range(40)]
    with _pyplot("roofline") as plt:
        fig = roofline_plot(plt, roof, points, "a crowded board")
        labels, boxes, legend = _label_boxes(fig)
        plt.close(fig)
    assert len(labels) == 40
    _assert_apart(boxes, legend)
