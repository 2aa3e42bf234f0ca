"""Bad input and bad output paths: one clear line on stderr, exit status 1, and nothing half-written left behind."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from qdq_graphs import compile_one_conv

from shiftpu.cli.main import main
from shiftpu.cli.paths import OutputPathError, atomic_file, atomic_folder
from shiftpu.compiled.folder import ArtifactError, read_folder
from shiftpu.sw.executor import Executor, ExecutorError


def shiftpu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the `shiftpu` command in this process as its entry point does: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["shiftpu", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def one_error(rc: int, err: str) -> str:
    """The one error line of a failed command (asserting that there is exactly one and the status is 1)."""
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Every path under ``folder``, hidden ones included, so a leftover temporary file shows."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-convolution model compiled for pynq-z2, and a valid input for it."""
    return compile_one_conv(tmp_path_factory.mktemp("bad_input"))


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """An empty folder to write into, plus a plain file named ``file`` (an obstacle for paths below it)."""
    (tmp_path / "file").write_text("not a folder\n")
    return tmp_path


def test_non_finite_input_is_refused_by_run_and_executor(compiled, work, monkeypatch, capsys):
    out, x_path = compiled
    x = np.load(x_path)
    x.flat[[0, 5, 9]] = np.nan
    x.flat[17] = np.inf
    x.flat[30] = -np.inf
    np.save(work / "nan.npy", x)
    before = listing(work)
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", work / "nan.npy", "-o", work / "y.npy")
    assert one_error(rc, err) == ("error: input 'x' holds 5 non-finite value(s) (NaN or Inf) of 256: "
                                  "quantization has no code for them")
    assert listing(work) == before
    with pytest.raises(ExecutorError, match=r"input 'x' holds 5 non-finite value\(s\)"):
        Executor(out).run(x)


def test_run_output_name_gets_npy_and_the_printed_path_is_the_file(compiled, work, monkeypatch, capsys):
    out, x = compiled
    rc, stdout, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "-o", work / "result")
    assert rc == 0, err
    assert f"wrote {work / 'result.npy'}: float32 (1, 4, 8, 8)" in stdout.splitlines()
    assert listing(work) == ["file", "result.npy"]
    rc, stdout, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "-o", work / "y.npy")
    assert rc == 0, err
    assert stdout.startswith(f"wrote {work / 'y.npy'}: ")
    np.testing.assert_array_equal(np.load(work / "y.npy"), np.load(work / "result.npy"))


@pytest.mark.parametrize("command", ["compile", "run", "quantize", "bench"])
def test_output_below_a_file_is_one_clear_error(command, compiled, work, monkeypatch, capsys):
    out, x = compiled
    below = work / "file" / "sub"
    args = {
        "compile": ["compile", "missing.onnx", "-o", below],
        "run": ["run", out, "-i", x, "-o", below / "y.npy"],
        "quantize": ["quantize", "missing.onnx", "--calib", "missing.npy", "-o", below / "q.onnx"],
        "bench": ["bench", out, "--trace", below / "trace.json"],
    }[command]
    option = {"compile": "--out", "run": "--output", "quantize": "--output", "bench": "--trace"}[command]
    target = args[-1]
    rc, _, err = shiftpu(monkeypatch, capsys, *args)
    assert one_error(rc, err) == f"error: {option} {target}: cannot create a folder there, {work / 'file'} is a file"
    assert listing(work) == ["file"]


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


@pytest.mark.parametrize("command", ["compile", "run", "quantize"])
def test_output_in_a_read_only_folder_is_one_clear_error(command, compiled, read_only, work, monkeypatch, capsys):
    out, x = compiled
    target = {"compile": read_only / "new" / "out", "run": read_only / "y.npy", "quantize": read_only / "q.onnx"}
    args = {
        "compile": ["compile", "missing.onnx", "-o", target["compile"]],
        "run": ["run", out, "-i", x, "-o", target["run"]],
        "quantize": ["quantize", "missing.onnx", "--calib", "missing.npy", "-o", target["quantize"]],
    }[command]
    option = "--out" if command == "compile" else "--output"
    rc, _, err = shiftpu(monkeypatch, capsys, *args)
    assert one_error(rc, err) == f"error: {option} {target[command]}: cannot write in {read_only} (permission denied)"
    assert listing(work) == ["file", "ro"]


def test_odd_output_paths(compiled, work, monkeypatch, capsys):
    out, x = compiled
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep me\n")
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "-o", work / "mine.npy")
    assert rc == 0, err
    (work / "folder.npy").mkdir()
    cases = [
        (["run", out, "-i", x, "-o", work / "folder.npy"], f"--output {work / 'folder.npy'}: is a folder; give a file name"),
        (["compile", "missing.onnx", "-o", work / "file"], f"--out {work / 'file'}: exists and is not a folder"),
        (["compile", "missing.onnx", "-o", work / "mine"],
         f"--out {work / 'mine'}: the folder holds other files (no manifest.json, so not an earlier output): "
         "choose another folder or empty it"),
        (["run", out, "-i", work, "-o", work / "mine"],
         f"--output {work / 'mine'}: the folder holds other files (no detections.json, so not an earlier output): "
         "choose another folder or empty it"),
    ]
    before = listing(work)
    for args, message in cases:
        rc, _, err = shiftpu(monkeypatch, capsys, *args)
        assert one_error(rc, err) == f"error: {message}", args
    assert listing(work) == before
    assert (work / "mine" / "notes.txt").read_text() == "keep me\n"


def test_a_failing_command_removes_the_folders_it_made(compiled, work, monkeypatch, capsys):
    out, x = compiled
    rc, _, err = shiftpu(monkeypatch, capsys, "compile", work / "missing.onnx", "-o", work / "a" / "b" / "out")
    assert "no such ONNX file" in one_error(rc, err)
    rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", x, "--backend", "board", "-o", work / "c" / "y.npy")
    assert "the board backend needs the bitstream" in one_error(rc, err)
    assert listing(work) == ["file"]


def test_atomic_file_and_folder_leave_nothing_when_the_writer_fails(work):
    with pytest.raises(RuntimeError), atomic_file(work / "n" / "y.npy") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    with pytest.raises(RuntimeError), atomic_folder(work / "m" / "det") as tmp:
        (tmp / "a.png").write_bytes(b"half")
        raise RuntimeError("writer failed")
    with pytest.raises(FileNotFoundError), atomic_file(work / "z.json") as tmp:  # the command's own error, as it is
        tmp.write_text("{")
        (work / "missing-input.npy").read_bytes()
    assert listing(work) == ["file"]
    (work / "det").mkdir()
    (work / "det" / "old.png").write_bytes(b"old")
    with atomic_folder(work / "det") as tmp:
        (tmp / "detections.json").write_text("{}")
    assert listing(work) == ["det", "det/detections.json", "file"]
    with pytest.raises(OutputPathError, match=r"cannot write: (Not a directory|Is a directory)"), \
            atomic_file(work / "det") as tmp:
        tmp.write_bytes(b"x")  # renaming a file over a folder fails at the end
    assert listing(work) == ["det", "det/detections.json", "file"]


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["segment0.bin", "model.onnx", "cpu_region0.onnx"])
def test_a_flipped_byte_in_a_compiled_file_is_refused(name, compiled, work, monkeypatch, capsys):
    out, x = compiled
    copy = work / "out"
    shutil.copytree(out, copy)
    _flip_last_byte(copy / name)
    message = (f"{copy / name}: SHA-256 differs from the checksum in manifest.json: the file changed after "
               "compilation (damaged or edited); recompile the model")
    with pytest.raises(ArtifactError) as e:
        read_folder(copy)
    assert str(e.value) == message
    rc, _, err = shiftpu(monkeypatch, capsys, "run", copy, "-i", x, "-o", work / "y.npy")
    assert one_error(rc, err) == f"error: {message}"
    assert not (work / "y.npy").exists()


def test_a_folder_without_checksums_is_refused(compiled, work):
    out, _ = compiled
    copy = work / "out"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert sorted(manifest["checksums"]) == ["cpu_region0.onnx", "cpu_region1.onnx", "model.onnx", "partition.txt",
                                             "segment0.bin"]
    del manifest["checksums"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"no checksums in manifest.json .*: recompile the model$"):
        read_folder(copy)


def test_options_an_image_folder_would_ignore_are_refused(compiled, work, monkeypatch, capsys):
    out, _ = compiled
    for flag, backend in (("--compare", "golden"), ("--ddr-latency", "rtl")):
        rc, _, err = shiftpu(monkeypatch, capsys, "run", out, "-i", work, "--backend", backend, flag)
        assert one_error(rc, err) == f"error: {flag} applies to a .npy input only, not to a folder of images"
    assert listing(work) == ["file"]
