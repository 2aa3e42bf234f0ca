"""The report rendered by headless Chromium (Debian's `chromium`): no console errors, the table and plots laid out.

Run with `make test-browser` (installs chromium when missing). A probe script appended to a copy of the page
logs the size of the table and of every plot; any other console message (a script error, a resource that failed
to load) fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from test_report_support import bench_file, compile_detector, demo_folder, resources_file, trace_file

from shiftpu.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
PROBE_TAG = "shiftpu-probe "
PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
console.log("@TAG@" + JSON.stringify({
  rows: document.querySelectorAll("#layer-table tbody tr").length,
  table: box(document.getElementById("layer-table")),
  figures: [...document.querySelectorAll("figure")].map(f => ({
    section: f.closest("section").id, provenance: f.dataset.provenance, svg: box(f.querySelector("svg"))})),
  window: window.innerWidth, page: document.documentElement.scrollWidth,
  tables: Object.fromEntries([...document.querySelectorAll("table")].map(t => [t.id,
    [Math.ceil(t.getBoundingClientRect().width), t.parentElement.clientWidth]])),
  labels: [...document.querySelectorAll("#roofline g[id^='label-'] text")].map(t => [t.textContent, rect(t)]),
  images: [...document.querySelectorAll("#demo img")].map(i => [i.naturalWidth, Math.round(i.width)]),
}));
</script>""".replace("@TAG@", PROBE_TAG)
CONSOLE = re.compile(r':CONSOLE[:(]\d+\)?\] "(.*)", source: ')


def _render(page: Path, profile: Path, width: int = 1400) -> tuple[str, list[str]]:
    """The DOM after loading ``page`` and the console messages, from one headless Chromium run."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-browser` (it installs Debian's chromium)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", f"--window-size={width},1000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, CONSOLE.findall(proc.stderr)


def _probe(page: Path, tmp_path: Path, width: int = 1400) -> tuple[str, dict, list[str]]:
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom, messages = _render(probed, tmp_path / f"profile-{page.stem}-{width}", width)
    probes = [json.loads(m[len(PROBE_TAG):].replace('\\"', '"')) for m in messages if m.startswith(PROBE_TAG)]
    others = [m for m in messages if not m.startswith(PROBE_TAG)]
    assert len(probes) == 1, messages
    return dom, probes[0], others


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_detector(tmp_path_factory.mktemp("browser") / "det")


def test_probe_sees_console_errors(tmp_path):
    """The check can fail: a page with a script error is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><table id='layer-table'><tbody><tr><td>x</td></tr></tbody></table>"
                    "<script>undefinedFunction();</script></body></html>")
    _, probe, errors = _probe(page, tmp_path)
    assert probe["rows"] == 1 and probe["figures"] == []
    assert errors == ["Uncaught ReferenceError: undefinedFunction is not defined"]


def test_full_report_renders_without_errors(compiled, tmp_path):
    page = write_report(compiled, tmp_path / "full.html", resources=resources_file(tmp_path / "r.json", 35280.0),
                        trace=trace_file(tmp_path / "t.json"), bench=bench_file(tmp_path / "b.json"))
    dom, probe, errors = _probe(page, tmp_path)
    assert errors == []
    manifest = json.loads((compiled / "manifest.json").read_text())
    assert probe["rows"] == len(manifest["layers"]) + len(manifest["cpu_nodes"])
    assert probe["table"][0] > 600 and probe["table"][1] > 200
    assert [(f["section"], f["provenance"]) for f in probe["figures"]] == [
        ("roofline", "estimated"), ("resources", "estimated"), ("gantt", "measured")]
    for f in probe["figures"]:
        assert f["svg"][0] > 300 and f["svg"][1] > 100, f
    assert "Pipeline Gantt chart" in dom and "roofline on Avnet Ultra96-V2" in dom


def test_bare_report_renders_without_errors(compiled, tmp_path):
    page = write_report(compiled, tmp_path / "bare.html")
    dom, probe, errors = _probe(page, tmp_path)
    assert errors == []
    assert [f["section"] for f in probe["figures"]] == ["roofline"]
    assert "No resource estimate given" in dom and "pipeline was not measured" in dom


@pytest.mark.parametrize("width", [1280, 1400])
def test_tables_fit_the_page_and_labels_do_not_overlap(compiled, tmp_path, width):
    """With every input and the demo's results: no table wider than its box, the page no wider than the window,
    the drawn detections shown, and no two roofline labels overlapping as Chromium lays them out."""
    page = write_report(compiled, tmp_path / "demo.html", bench=bench_file(tmp_path / "b.json"),
                        resources=resources_file(tmp_path / "r.json", 35280.0), trace=trace_file(tmp_path / "t.json"),
                        demo=demo_folder(tmp_path / "demo_out"))
    _, probe, errors = _probe(page, tmp_path, width)
    assert errors == []
    assert probe["window"] == width and probe["page"] <= width
    assert set(probe["tables"]) == {"layer-table", "rtl-frames", "rtl-layers"}
    for name, (table, box) in probe["tables"].items():
        assert table <= box, f"{name} is {table} px wide in a {box} px box"
    assert probe["tables"]["layer-table"][0] > 0.9 * probe["tables"]["layer-table"][1]
    assert [w for w, _ in probe["images"]] == [8, 8] and all(shown >= 150 for _, shown in probe["images"])
    labels = probe["labels"]
    assert len(labels) == 8
    for i, (name, (x0, y0, x1, y1)) in enumerate(labels):
        for other, (a0, b0, a1, b1) in labels[:i]:
            assert x1 <= a0 or a1 <= x0 or y1 <= b0 or b1 <= y0, f"labels {name} and {other} overlap"
