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
from test_report_support import bench_file, compile_detector, resources_file, trace_file

from shiftpu.report import write_report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
PROBE_TAG = "shiftpu-probe "
PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
console.log("@TAG@" + JSON.stringify({
  rows: document.querySelectorAll("#layer-table tbody tr").length,
  table: box(document.getElementById("layer-table")),
  figures: [...document.querySelectorAll("figure")].map(f => ({
    section: f.closest("section").id, provenance: f.dataset.provenance, svg: box(f.querySelector("svg"))})),
}));
</script>""".replace("@TAG@", PROBE_TAG)
CONSOLE = re.compile(r':CONSOLE[:(]\d+\)?\] "(.*)", source: ')


def _render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after loading ``page`` and the console messages, from one headless Chromium run."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-browser` (it installs Debian's chromium)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", "--window-size=1400,1000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, CONSOLE.findall(proc.stderr)


def _probe(page: Path, tmp_path: Path) -> tuple[str, dict, list[str]]:
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom, messages = _render(probed, tmp_path / f"profile-{page.stem}")
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
