"""The README's result tables are what bench/results say (`python -m bench.readme --write` regenerates them)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from shiftpu.boards import load_board

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks live next to the package, not in it

from bench import readme  # noqa: E402


def test_readme_tables_match_the_results():
    text = readme.README.read_text()
    assert readme.render(text, readme.tables(readme.load_results())) == text, (
        "README.md and bench/results disagree: run python -m bench.readme --write")


def test_a_changed_result_changes_the_readme():
    results = readme.load_results()
    text = readme.render(readme.README.read_text(), readme.tables(results))
    changed = copy.deepcopy(results)
    changed["compiler"]["boards"]["pynq-z2"]["rtl"]["fps"] = 99.94
    changed["resources"]["boards"]["pynq-z2"]["resources"]["LUT"]["used"] = 1234.0
    new = readme.render(text, readme.tables(changed))
    row = next(line for line in new.splitlines() if line.startswith("| pynq-z2 |")).split(" | ")
    old = next(line for line in text.splitlines() if line.startswith("| pynq-z2 |")).split(" | ")
    available = results["resources"]["boards"]["pynq-z2"]["resources"]["LUT"]["available"]
    assert row[2] == f"1,234 / {available:,} ({100 * 1234 / available:.0f}%)"
    assert row[6] == "99.9 fps"
    assert row[7] != old[7]  # the power at the new frame rate
    assert row[3:6] == old[3:6]
    assert new != text


def test_missing_fence_is_refused():
    with pytest.raises(readme.ReadmeError, match="no <!-- BEGIN bench:boards -->"):
        readme.render("# shiftpu\n", {"boards": "| x |"})


def test_results_for_another_config_are_refused():
    results = copy.deepcopy(readme.load_results())
    results["resources"]["boards"]["kv260"]["config_hash"] = "0x00000001"
    with pytest.raises(readme.ReadmeError, match="estimates kv260's config 0x00000001, its board file now gives"):
        readme.tables(results)


def test_check_mode_reports_a_stale_readme(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "README.md"
    shape = load_board("pynq-z2").accel.array_shape
    text = readme.README.read_text()
    assert f"| pynq-z2 | {shape}, " in text
    stale.write_text(text.replace(f"| pynq-z2 | {shape}, ", "| pynq-z2 | 4x4, ", 1))
    monkeypatch.setattr(readme, "README", stale)
    assert readme.main(["--check"]) == 1
    assert "run python -m bench.readme --write" in capsys.readouterr().err
    assert readme.main(["--write"]) == 0
    assert readme.main(["--check"]) == 0
