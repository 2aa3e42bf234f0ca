"""`shiftpu run` on every backend available here gives the golden model's output; the board needs a bitstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODEL = Path(__file__).resolve().parents[1] / "shiftpu" / "models" / "shapes_detector.onnx"


def _shiftpu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shiftpu.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("backends")
    out = tmp / "out"
    proc = _shiftpu("compile", str(MODEL), "--board", "pynq-z2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(7).random((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp / "x.npy", x)
    return out, tmp / "x.npy"


def test_pynq_sim_backend_equals_golden(compiled, tmp_path):
    out, x = compiled
    ys = {}
    for backend in ("golden", "pynq-sim"):
        y = tmp_path / f"{backend}.npy"
        proc = _shiftpu("run", str(out), "--input", str(x), "--backend", backend, "-o", str(y))
        assert proc.returncode == 0, proc.stderr
        ys[backend] = np.load(y)
    assert ys["golden"].shape == (1, 8, 8, 8)
    assert np.array_equal(ys["golden"], ys["pynq-sim"])


def test_board_backend_without_bitstream_is_one_clear_error(compiled):
    out, x = compiled
    proc = _shiftpu("run", str(out), "--input", str(x), "--backend", "board")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: the board backend needs the bitstream: pass --bitstream path/to/shiftpu.bit "
        "(the .hwh must lie next to it)"]
