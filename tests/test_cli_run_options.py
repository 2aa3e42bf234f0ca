"""`run --timeout`, and the simulated DDR's latency named alike in `run` and `rtl-check` (`--ddr-latency` for the
board's, `--ddr-latency-cycles N` for any); `rtl-check` on the default board's accelerator unless told otherwise.
No Verilator build here: rtl-check's accelerator is the real class with its build replaced."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from qdq_graphs import compile_one_conv
from test_cli_bad_input import listing, one_error, shiftpu

from shiftpu.boards import DEFAULT_BOARD, load_board
from shiftpu.sim import rtl as sim_rtl
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.rtl import RtlAccelerator, SimMemory
from shiftpu.sw.driver import SOFT_RESET_DONE


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return compile_one_conv(tmp_path_factory.mktemp("run_options"))


@pytest.fixture()
def hung_golden(monkeypatch: pytest.MonkeyPatch):
    """The golden model never finishes a run until the test ends (a hung accelerator)."""
    release = threading.Event()

    def hang(self, const, act):
        release.wait()
        raise RuntimeError("released")

    monkeypatch.setattr(GoldenAccelerator, "run_program", hang)
    yield
    release.set()


def test_run_timeout_stops_a_hung_run_with_one_error(compiled, tmp_path, hung_golden, monkeypatch, capsys):
    out, x = compiled
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "--timeout", "0.2", "-o", tmp_path / "y.npy")
    line = one_error(rc, err)
    assert line.startswith("error: accelerator did not finish within 0.2 s (the limit given (--timeout)); registers "
                           "STATUS=0x1, ERROR_CODE=0x0, PC=0x0, ")
    assert line.endswith(f"the device was reset ({SOFT_RESET_DONE}) and the driver's buffers freed")
    assert listing(tmp_path) == []


def test_run_timeout_lets_a_run_that_finishes_through(compiled, tmp_path, monkeypatch, capsys):
    out, x = compiled
    rc, stdout, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "--timeout", "60", "-o", tmp_path / "y.npy")
    assert rc == 0, err
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "-o", tmp_path / "z.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "z.npy"))


@pytest.mark.parametrize("args,message", [
    (["--timeout", "0"], "--timeout must be more than 0 seconds, got 0"),
    (["--timeout", "-1"], "--timeout must be more than 0 seconds, got -1"),
    (["--ddr-latency-cycles", "40"], "--ddr-latency-cycles applies to the rtl backend only"),
    (["--build-dir", "cache"], "--build-dir applies to the rtl backend only"),
    (["--backend", "rtl", "--ddr-latency", "--ddr-latency-cycles", "40"],
     "give --ddr-latency (the board's) or --ddr-latency-cycles N, not both"),
    (["--backend", "rtl", "--ddr-latency-cycles", "-3"], "--ddr-latency-cycles must be >= 0, got -3"),
])
def test_run_refuses_options_it_cannot_apply(args, message, compiled, tmp_path, monkeypatch, capsys):
    out, x = compiled
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, *args)
    assert one_error(rc, err) == f"error: {message}"


def test_an_image_folder_refuses_the_timeout(compiled, tmp_path, monkeypatch, capsys):
    out, _ = compiled
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", tmp_path, "--timeout", "5")
    assert one_error(rc, err) == "error: --timeout applies to a .npy input only, not to a folder of images"


class Unbuilt(RtlAccelerator):
    """The RTL accelerator with its Verilator build replaced: records what rtl-check asked for."""

    made: list[Unbuilt] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Unbuilt.made.append(self)

    @property
    def build(self):
        return SimpleNamespace(reused=True, build_seconds=0.0)


@pytest.fixture()
def unbuilt(monkeypatch: pytest.MonkeyPatch) -> list[Unbuilt]:
    Unbuilt.made = []
    monkeypatch.setattr(sim_rtl, "RtlAccelerator", Unbuilt)
    return Unbuilt.made


def test_rtl_check_uses_the_default_boards_config(unbuilt, monkeypatch, capsys):
    rc, stdout, err = shiftpu(monkeypatch, capsys, "rtl-check", "--seeds", "0")
    assert rc == 0, err
    board = load_board(DEFAULT_BOARD)
    (accel,) = unbuilt
    assert accel.config == board.accel and accel.memory is SimMemory.AXI_RAM and accel.read_latency is None
    assert stdout.splitlines()[0] == f"accelerator 0x{board.accel.config_hash():08x} (board {DEFAULT_BOARD}; memory axiram)"


def test_rtl_check_latency_options_match_run(unbuilt, monkeypatch, capsys):
    board = load_board("pynq-z2")
    rc, stdout, err = shiftpu(monkeypatch, capsys, "rtl-check", "-b", "pynq-z2", "--seeds", "0", "--ddr-latency")
    assert rc == 0, err
    assert (unbuilt[-1].memory, unbuilt[-1].read_latency) == (SimMemory.COMPILED, board.ddr_read_latency_cycles)
    assert f"memory compiled, reads {board.ddr_read_latency_cycles} cycles late" in stdout
    rc, _, err = shiftpu(monkeypatch, capsys, "rtl-check", "--seeds", "0", "--ddr-latency-cycles", "41")
    assert rc == 0, err
    assert (unbuilt[-1].memory, unbuilt[-1].read_latency) == (SimMemory.COMPILED, 41)


def test_rtl_check_keeps_the_old_latency_option_as_a_deprecated_alias(unbuilt, monkeypatch, capsys):
    rc, _, err = shiftpu(monkeypatch, capsys, "rtl-check", "--seeds", "0", "--extra-read-latency", "40")
    assert rc == 0, err
    assert unbuilt[-1].read_latency == 41 and unbuilt[-1].extra_read_latency == 40
    assert err.strip() == ("warning: --extra-read-latency is deprecated: --ddr-latency-cycles 41 gives the same "
                           "latency")
    rc, stdout, _ = shiftpu(monkeypatch, capsys, "rtl-check", "-h")
    assert "--ddr-latency-cycles" in stdout and "--extra-read-latency" not in stdout


@pytest.mark.parametrize("args,message", [
    (["--memory", "axiram", "--ddr-latency-cycles", "10"],
     "a DDR latency (--ddr-latency, --ddr-latency-cycles) needs --memory compiled"),
    (["--ddr-latency", "--ddr-latency-cycles", "10"], "give --ddr-latency (the board's) or --ddr-latency-cycles N, "
                                                      "not both"),
    (["--config", "cfg.json", "--ddr-latency"], "--ddr-latency takes the DDR latency from a board file: give "
                                                "--board, or --ddr-latency-cycles N with --config"),
])
def test_rtl_check_refuses_contradictory_latencies(args, message, unbuilt, monkeypatch, capsys):
    rc, _, err = shiftpu(monkeypatch, capsys, "rtl-check", "--seeds", "0", *args)
    assert one_error(rc, err) == f"error: {message}"
    assert unbuilt == []
