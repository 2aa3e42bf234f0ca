"""Where the Verilator builds go (the user's cache or a given folder, never the current folder) and what a build
says while it runs. Verilator itself is replaced here: these tests build nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from platformdirs import user_cache_dir
from rtl_support import SMALL

from shiftpu.sim.rtl import RtlAccelerator, build

pytest.importorskip("amaranth")  # the build fingerprint hashes the generator


@pytest.fixture()
def no_verilator(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Generation and Verilator replaced by stand-ins that write the files a build leaves (for either backend);
    returns the folders built."""
    import shiftpu.hw.emit
    import shiftpu.sim.rtl.bridge
    import shiftpu.sim.rtl.harness
    from shiftpu.sim.rtl.native import LIBRARY

    built: list[Path] = []

    def verilate(sources: list[Path], directory: Path, top: str) -> None:
        (directory / top).write_text("simulation executable\n")
        built.append(directory)

    def build_native(sources: list[Path], directory: Path, top: str, options) -> None:
        (directory / LIBRARY).write_text("simulation library\n")
        built.append(directory)

    monkeypatch.setattr(shiftpu.hw.emit, "write_verilog", lambda cfg, path: Path(path).write_text("module m;\n"))
    monkeypatch.setattr(shiftpu.sim.rtl.harness, "harness_verilog", lambda cfg: "module tb;\n")
    monkeypatch.setattr(shiftpu.sim.rtl.bridge, "native_verilog", lambda cfg: "module native;\n")
    monkeypatch.setattr(build, "_verilate", verilate)
    monkeypatch.setattr(build, "_build_native", build_native)
    return built


def test_builds_go_to_the_user_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path(user_cache_dir("shiftpu")) / "rtl"
    assert build.default_build_root() == root
    assert RtlAccelerator(SMALL).build_root == root
    assert root.is_absolute() and tmp_path not in root.parents
    folder = build.build_directory(SMALL)
    assert folder.parent == root.resolve()
    assert folder.name == f"{SMALL.config_hash():08x}-{build.generator_fingerprint(SMALL)}"


def test_a_given_folder_is_used_and_nothing_lands_in_the_current_folder(tmp_path, monkeypatch, no_verilator):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    rtl = RtlAccelerator(SMALL, build_root=cache, build_progress=lambda line: None)
    assert rtl.build.directory == build.build_directory(SMALL, cache)
    assert no_verilator == [rtl.build.directory] and cache in rtl.build.directory.parents
    assert list(work.iterdir()) == []


def test_a_build_says_when_it_starts_and_how_long_it_took(tmp_path, no_verilator, capsys):
    first = build.ensure_built(SMALL, tmp_path)
    folder = build.build_directory(SMALL, tmp_path)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"building the RTL simulation of accelerator 0x{SMALL.config_hash():08x} (4x4 PEs) "
                               f"with Verilator in {folder}")
    assert lines[0].endswith("(1-4 min; cached afterwards)")
    assert lines[1].startswith("Verilog generated in ")
    assert lines[1].endswith(f"s; compiling it with Verilator (log: {folder / 'build.log'})")
    assert lines[2] == f"RTL simulation built in {first.build_seconds:.0f} s (measured)"
    assert len(lines) == 3 and not first.reused
    heard: list[str] = []
    again = build.ensure_built(SMALL, tmp_path, progress=heard.append)
    assert again.reused and heard == [] and capsys.readouterr().err == ""
    assert no_verilator == [folder]


def test_each_backend_has_its_own_build(tmp_path, no_verilator):
    """The native library and the cocotb executable of one config live in two folders, each reused on its own."""
    native = build.ensure_built(SMALL, tmp_path, progress=lambda line: None)
    cocotb = build.ensure_built(SMALL, tmp_path, progress=lambda line: None, backend=build.SimBackend.COCOTB)
    assert native.backend is build.SimBackend.NATIVE and cocotb.backend is build.SimBackend.COCOTB
    assert native.directory != cocotb.directory and native.library.exists()
    assert no_verilator == [native.directory, cocotb.directory]
    assert build.ensure_built(SMALL, tmp_path, backend="cocotb").reused
    assert build.ensure_built(SMALL, tmp_path).reused and len(no_verilator) == 2
