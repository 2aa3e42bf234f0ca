"""The outputs of report, build-hw, package and demo: a path that cannot be written is one clear error before any
work, and a failing command leaves nothing behind; the demo runs from the package alone (nothing from examples/),
without the report extra too; `shiftpu report` without matplotlib names the extra to install."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qdq_graphs import QdqBuilder, random_input
from test_cli_bad_input import listing, one_error, shiftpu

from shiftpu.compiler.driver import compile_model

ROOT = Path(__file__).resolve().parents[1]
#: The folders that make up the installed package (setup.py maps them onto shiftpu.*).
PACKAGE_FOLDERS = ("shiftpu", "compiler", "hw", "sim", "sw", "boards")
#: Top-level folders of the repository that are not installed.
NOT_INSTALLED = {"examples", "bench", "tools", "tests"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("outputs")
    b = QdqBuilder((4, 8, 8), seed=0)
    b.output(b.conv(b.x, 4, 3, act="relu"))
    m = b.model()
    compile_model(m, "pynq-z2", d / "out")
    np.save(d / "x.npy", random_input(m, 1))
    return d / "out"


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("not a folder\n")
    return tmp_path


@pytest.fixture()
def read_only(work: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder nobody may write in (for root, which writes anywhere, os.access answers as for other users)."""
    folder = work / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder else real_access(p, mode, **kw))
    yield folder
    folder.chmod(0o755)


def _args(command: str, compiled: Path, target: Path) -> tuple[list, str]:
    """The command line writing to ``target``, and the option that names it."""
    return {
        "report": (["report", compiled, "-o", target / "r.html"], "--output"),
        "build-hw": (["build-hw", "-b", "pynq-z2", "--no-run", "-o", target], "--out"),
        "package": (["package", compiled, "missing_hw_out", "-o", target], "--out"),
        "demo": (["demo", "--images", "1", "--rtl-frames", "0", "-o", target], "--out"),
    }[command]


@pytest.mark.parametrize("command", ["report", "build-hw", "package", "demo"])
def test_output_below_a_file_is_one_clear_error(command, compiled, work, monkeypatch, capsys):
    args, option = _args(command, compiled, work / "file" / "sub")
    rc, _, err = shiftpu(monkeypatch, capsys, *args)
    assert one_error(rc, err) == f"error: {option} {args[-1]}: cannot create a folder there, {work / 'file'} is a file"
    assert listing(work) == ["file"]


@pytest.mark.parametrize("command", ["report", "build-hw", "package", "demo"])
def test_output_in_a_read_only_folder_is_one_clear_error(command, compiled, work, read_only, monkeypatch, capsys):
    args, option = _args(command, compiled, read_only / "new")
    rc, _, err = shiftpu(monkeypatch, capsys, *args)
    assert one_error(rc, err) == f"error: {option} {args[-1]}: cannot write in {read_only} (permission denied)"
    assert listing(work) == ["file", "ro"]


def test_output_folders_holding_other_files_are_kept(compiled, work, monkeypatch, capsys):
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep me\n")
    for args, marker in ((["package", compiled, "missing_hw_out", "-o", work / "mine"], "bundle.json"),
                         (["demo", "--rtl-frames", "0", "-o", work / "mine"], "summary.json")):
        rc, _, err = shiftpu(monkeypatch, capsys, *args)
        assert one_error(rc, err) == (f"error: --out {work / 'mine'}: the folder holds other files (no {marker}, so "
                                      "not an earlier output): choose another folder or empty it")
    rc, _, err = shiftpu(monkeypatch, capsys, "demo", "-o", work / "file")
    assert one_error(rc, err) == f"error: --out {work / 'file'}: exists and is not a folder"
    assert listing(work) == ["file", "mine", "mine/notes.txt"]


def test_a_failed_demo_leaves_nothing_and_puts_an_earlier_output_back(work, monkeypatch, capsys):
    rc, _, err = shiftpu(monkeypatch, capsys, "demo", "-b", "no-such-board", "--images", "1", "--rtl-frames", "0",
                         "-o", work / "a" / "b" / "demo")
    assert rc == 1 and "no-such-board" in err
    assert listing(work) == ["file"]
    (work / "demo").mkdir()
    (work / "demo" / "summary.json").write_text("{}")
    (work / "demo" / "earlier.png").write_bytes(b"png")
    rc, _, err = shiftpu(monkeypatch, capsys, "demo", "-b", "no-such-board", "--images", "1", "--rtl-frames", "0",
                         "-o", work / "demo")
    assert rc == 1
    assert listing(work) == ["demo", "demo/earlier.png", "demo/summary.json", "file"]


def test_report_without_matplotlib_names_the_extra(compiled, work, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the report extra were not installed
    rc, _, err = shiftpu(monkeypatch, capsys, "report", compiled, "-o", work / "r.html")
    assert one_error(rc, err) == ("error: shiftpu report draws its figures with matplotlib, which is not installed: "
                                  "pip install 'shiftpu[report]'")
    assert listing(work) == ["file"]


def _imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_imports_nothing_that_is_not_installed():
    offenders = {str(p.relative_to(ROOT)): sorted(_imported_top_levels(p) & NOT_INSTALLED)
                 for folder in PACKAGE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_demo_runs_from_the_package_alone_without_the_report_extra(tmp_path):
    """The demo as an installed wheel without the report extra runs it: from another folder, with nothing of the
    repository's examples/ importable and matplotlib absent (golden model only: the RTL frames need a Verilator
    build)."""
    code = ("import sys; sys.modules['examples'] = sys.modules['matplotlib'] = None; "
            "from shiftpu.cli.main import main; main()")
    run = subprocess.run([sys.executable, "-c", code, "demo", "--images", "2", "--rtl-frames", "0", "-o", "out"],
                         cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no HTML report or Gantt chart: they are drawn with matplotlib, which is not installed " \
           "(pip install 'shiftpu[report]')" in run.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["golden_equals_onnxruntime"] is True and summary["report"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bench.json", "compiled", "detections", "summary.json", "test_images", "trace.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
