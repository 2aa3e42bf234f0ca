"""Deployment bundles: `shiftpu package` joins a compiled model and its overlay (refusing mismatched configs and a
.bit that is no bitstream for the board), adds a README and a run script; `shiftpu run BUNDLE` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qdq_graphs import QdqBuilder, random_input
from test_boards_standin import standin_verilog
from test_cli_bad_input import one_error, shiftpu

import shiftpu.sw.device_backends as backends
from shiftpu.boards import load_board
from shiftpu.boards.bitstream import MIN_DATA_BYTES, PREAMBLE, SYNC_WORD, BitstreamError, read_bit_header
from shiftpu.boards.bundle import BundleError, load_bundle, make_bundle, model_config_hash, parse_config_hash
from shiftpu.boards.vivado import write_flow
from shiftpu.compiler.driver import compile_model
from shiftpu.sw.device_hwh import write_hwh


def bit_file(part: str = "7z020clg400", data_bytes: int = MIN_DATA_BYTES, sync: bool = True,
             announced: int | None = None) -> bytes:
    """A .bit in the format of Vivado's write_bitstream (header fields a-e; padding, bus-width words, sync word and
    zeros as configuration data): not a design, but what a bitstream looks like from outside."""

    def field(tag: str, text: str) -> bytes:
        raw = text.encode() + b"\0"
        return tag.encode() + len(raw).to_bytes(2, "big") + raw

    data = b"\xff" * 32 + bytes.fromhex("000000bb11220044ffffffffffffffff") + (SYNC_WORD if sync else b"\0" * 4)
    data += bytes(data_bytes - len(data))
    header = (PREAMBLE + field("a", "shiftpu_wrapper;UserID=0XFFFFFFFF;Version=2023.2") + field("b", part)
              + field("c", "2026/01/02") + field("d", "03:04:05"))
    return header + b"e" + (len(data) if announced is None else announced).to_bytes(4, "big") + data


@pytest.fixture
def hw_dir(tmp_path: Path) -> Path:
    """A build-hw output folder for the PYNQ-Z2 with a bitstream-shaped .bit and the .hwh of its design."""
    b = load_board("pynq-z2")
    out = tmp_path / "hw_out"
    write_flow(b, b.accel, out, standin_verilog(b.accel))
    (out / "shiftpu.bit").write_bytes(bit_file())
    write_hwh(out / "shiftpu.hwh", b, b.accel)
    return out


def _model(tmp_path: Path, manifest: dict) -> Path:
    model = tmp_path / "out"
    (model / "weights").mkdir(parents=True)
    (model / "manifest.json").write_text(json.dumps(manifest))
    (model / "program.bin").write_bytes(bytes(range(64)))
    (model / "weights" / "const.bin").write_bytes(b"\x11" * 128)
    return model


def test_bundle_holds_everything(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    model = _model(tmp_path, {"config_hash": f"0x{h:08x}", "board": "pynq-z2"})
    bundle = make_bundle(model, hw_dir, tmp_path / "bundle")
    assert bundle.config_hash == h and bundle.board == "pynq-z2"
    assert sorted(bundle.files) == ["README.md", "model/manifest.json", "model/program.bin", "model/weights/const.bin",
                                    "overlay/hw.json", "overlay/shiftpu.bit", "overlay/shiftpu.hwh", "run.sh"]
    assert bundle.bitstream.read_bytes() == (hw_dir / "shiftpu.bit").read_bytes()
    assert bundle.hwh.with_suffix(".bit") == bundle.bitstream
    manifest = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert manifest["config_hash"] == manifest["model_config_hash"] == manifest["overlay_config_hash"] == f"0x{h:08x}"
    assert manifest["part"] == "xc7z020clg400-1"
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.config_hash == h and loaded.files == bundle.files


def test_bundle_refuses_mismatched_configs(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    model = _model(tmp_path, {"config_hash": 0x12345678})
    with pytest.raises(BundleError) as err:
        make_bundle(model, hw_dir, tmp_path / "bundle")
    assert str(err.value) == (f"config mismatch: the model in {model} was compiled for config 0x12345678 but the "
                              f"overlay in {hw_dir} was built for 0x{h:08x}")
    assert not (tmp_path / "bundle").exists()


def test_bundle_accepts_a_manifest_with_the_config_only(tmp_path, hw_dir):
    cfg = load_board("pynq-z2").accel
    model = _model(tmp_path, {"config": cfg.to_dict()})
    assert model_config_hash(model) == cfg.config_hash()
    assert make_bundle(model, hw_dir, tmp_path / "bundle").config_hash == cfg.config_hash()


def test_bundle_needs_the_bitstream(tmp_path, hw_dir):
    (hw_dir / "shiftpu.bit").unlink()
    model = _model(tmp_path, {"config_hash": load_board("pynq-z2").accel.config_hash()})
    with pytest.raises(BundleError, match=r"has no shiftpu.bit: run the Vivado build first \(cd .* && vivado -mode batch"):
        make_bundle(model, hw_dir, tmp_path / "bundle")


@pytest.mark.parametrize("manifest,expected", [
    ({}, "missing field 'config_hash'"),
    ({"config_hash": "zz"}, "config hash 'zz' is not a hex number"),
    ({"config_hash": 1 << 32}, "is not a 32-bit value"),
    ({"config_hash": True}, "config hash must be an integer or a hex string, got True"),
    ({"config": {"pe_oc": 3}}, "field 'config'"),
])
def test_model_manifest_errors(tmp_path, manifest, expected):
    model = _model(tmp_path, manifest)
    with pytest.raises(BundleError, match=expected):
        model_config_hash(model)


def test_model_folder_without_manifest(tmp_path):
    with pytest.raises(BundleError, match="is not a compiled model folder: manifest.json is missing"):
        model_config_hash(tmp_path)


def test_loaded_bundle_refuses_another_overlay(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    bundle = make_bundle(_model(tmp_path, {"config_hash": h}), hw_dir, tmp_path / "bundle")
    bundle.check_hardware(h)
    with pytest.raises(BundleError, match=f"reports config hash 0xdeadbeef but the bundle was built for 0x{h:08x}"):
        bundle.check_hardware(0xDEADBEEF)


def test_tampered_bundle_is_refused(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    make_bundle(_model(tmp_path, {"config_hash": h}), hw_dir, tmp_path / "bundle")
    (tmp_path / "bundle" / "model" / "program.bin").write_bytes(b"\x00")
    with pytest.raises(BundleError, match="file model/program.bin changed since the bundle was made"):
        load_bundle(tmp_path / "bundle")


def test_bundle_with_mismatched_hashes_is_refused(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    make_bundle(_model(tmp_path, {"config_hash": h}), hw_dir, tmp_path / "bundle")
    path = tmp_path / "bundle" / "bundle.json"
    data = json.loads(path.read_text())
    data["model_config_hash"] = "0x00000001"
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="were built for different configs"):
        load_bundle(tmp_path / "bundle")


def test_bundle_cannot_go_inside_its_sources(tmp_path, hw_dir):
    model = _model(tmp_path, {"config_hash": load_board("pynq-z2").accel.config_hash()})
    with pytest.raises(BundleError, match="must not be inside"):
        make_bundle(model, hw_dir, model / "bundle")


def test_cli_package(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    model = _model(tmp_path, {"config_hash": h})
    cmd = [sys.executable, "-c", "from shiftpu.cli.main import main; main()", "package", str(model), str(hw_dir)]
    ok = subprocess.run([*cmd, "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"wrote bundle {tmp_path / 'b'} for pynq-z2 (config 0x{h:08x}, 8 files)"
    (model / "manifest.json").write_text(json.dumps({"config_hash": "0x00000001"}))
    bad = subprocess.run([*cmd, "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: config mismatch: the model in")
    assert "Traceback" not in bad.stderr


def test_parse_config_hash_forms():
    assert parse_config_hash("0xAC681D8E", "x") == 0xAC681D8E
    assert parse_config_hash("ac681d8e", "x") == 0xAC681D8E
    assert parse_config_hash(5, "x") == 5


def test_bundle_readme_and_run_script(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    make_bundle(_model(tmp_path, {"config_hash": h}), hw_dir, tmp_path / "bundle")
    readme = (tmp_path / "bundle" / "README.md").read_text()
    assert readme.startswith("# shiftpu bundle for pynq-z2 (xc7z020clg400-1)\n")
    assert "shiftpu is not on PyPI" in readme and "`make wheel`" in readme
    assert "pip install shiftpu" not in readme
    assert f"refuses an\n   overlay whose CONFIG_HASH register is not 0x{h:08x}" in readme
    script = tmp_path / "bundle" / "run.sh"
    assert script.stat().st_mode & 0o111 == 0o111
    assert script.read_text().splitlines()[-1] == 'exec shiftpu run "$bundle" --backend board --input "$input" "$@"'
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith(f"usage: {script} INPUT.npy|IMAGE_FOLDER")


def test_bundle_ships_a_given_wheel(tmp_path, hw_dir):
    h = load_board("pynq-z2").accel.config_hash()
    wheel = tmp_path / "shiftpu-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK wheel")
    model = _model(tmp_path, {"config_hash": h})
    bundle = make_bundle(model, hw_dir, tmp_path / "bundle", wheel)
    assert bundle.files[wheel.name] and (tmp_path / "bundle" / wheel.name).read_bytes() == b"PK wheel"
    assert f"   pip install ./{wheel.name}\n" in (tmp_path / "bundle" / "README.md").read_text()
    with pytest.raises(BundleError, match=r"--wheel .*notes.txt: not a shiftpu wheel file"):
        make_bundle(model, hw_dir, tmp_path / "b2", tmp_path / "notes.txt")


@pytest.mark.parametrize("bit,message", [
    (b"shiftpu simulated bitstream\n", "not a Xilinx bitstream (.bit): its 28 bytes do not start with the header"),
    (bit_file()[:1000], "truncated or padded bitstream: the header announces 262144 bytes of configuration data, "
                        "the file holds"),
    (bit_file(sync=False), "no configuration sync word (AA995566) at the start of the configuration data"),
    (bit_file(data_bytes=4096), "only 4096 bytes of configuration data, too few for a xc7z020clg400-1 design"),
    (bit_file(part="xczu3eg-sbva484-1-i"), "built for part xczu3eg-sbva484-1-i, but the board's part is "
                                           "xc7z020clg400-1"),
    (bit_file()[:20], "damaged bitstream header: field 'a' cut short at byte 13"),
    (PREAMBLE + b"x", "damaged bitstream header: field 'a' missing at byte 13"),
])
def test_package_refuses_what_is_not_a_bitstream_for_the_board(tmp_path, hw_dir, bit, message):
    (hw_dir / "shiftpu.bit").write_bytes(bit)
    model = _model(tmp_path, {"config_hash": load_board("pynq-z2").accel.config_hash()})
    with pytest.raises(BitstreamError) as e:
        make_bundle(model, hw_dir, tmp_path / "bundle")
    assert str(e.value).startswith(f"{hw_dir / 'shiftpu.bit'}: {message}")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("hwh,message", [
    ("<hwh/>\n", "no SYSTEMINFO DEVICE: not a hardware handoff written by Vivado"),
    ("not xml", "not a readable hardware handoff (.hwh)"),
    ('<EDKSYSTEM><SYSTEMINFO DEVICE="xczu3eg"/></EDKSYSTEM>', "describes device xczu3eg, but the board's part is "
                                                               "xc7z020clg400-1"),
    ('<EDKSYSTEM><SYSTEMINFO DEVICE="7z020"/><MODULES/></EDKSYSTEM>',
     "has no shiftpu_accel_0 module: the overlay holds no shiftpu accelerator"),
])
def test_package_refuses_a_hwh_of_another_design(tmp_path, hw_dir, hwh, message):
    (hw_dir / "shiftpu.hwh").write_text(hwh)
    model = _model(tmp_path, {"config_hash": load_board("pynq-z2").accel.config_hash()})
    with pytest.raises(BitstreamError) as e:
        make_bundle(model, hw_dir, tmp_path / "bundle")
    assert str(e.value).startswith(f"{hw_dir / 'shiftpu.hwh'}: {message}")


def test_bit_header_is_read(tmp_path):
    (tmp_path / "a.bit").write_bytes(bit_file())
    h = read_bit_header(tmp_path / "a.bit")
    assert (h.design, h.part, h.date, h.time, h.data_bytes) == ("shiftpu_wrapper", "7z020clg400", "2026/01/02",
                                                                 "03:04:05", MIN_DATA_BYTES)


@pytest.fixture
def real_bundle(tmp_path: Path, hw_dir: Path) -> tuple[Path, Path, Path]:
    """A bundle of a one-convolution model compiled for pynq-z2, its compiled folder and an input."""
    b = QdqBuilder((4, 8, 8), seed=0)
    b.output(b.conv(b.x, 4, 3, act="relu"))
    m = b.model()
    compile_model(m, "pynq-z2", tmp_path / "out")
    np.save(tmp_path / "x.npy", random_input(m, 1))
    make_bundle(tmp_path / "out", hw_dir, tmp_path / "bundle")
    return tmp_path / "bundle", tmp_path / "out", tmp_path / "x.npy"


def test_run_bundle_on_the_board_backend(real_bundle, monkeypatch, capsys):
    """`shiftpu run BUNDLE --backend board`, as the docs say: the bundle's model on the bundle's overlay (the board
    replaced by the golden model behind the same driver)."""
    bundle, compiled, x = real_bundle
    opened = []
    real_open = backends.open_accelerator

    def open_board(backend, config, board, bitstream=None, **kwargs):
        opened.append((backend, board, bitstream))
        return real_open(backends.RuntimeBackend.GOLDEN, config, board, **kwargs)

    monkeypatch.setattr(backends, "open_accelerator", open_board)
    rc, _, err = shiftpu(monkeypatch, capsys, "run", bundle, "--backend", "board", "-i", x, "-o", bundle.parent / "y")
    assert rc == 0, err
    assert opened == [(backends.RuntimeBackend.BOARD, "pynq-z2", bundle / "overlay" / "shiftpu.bit")]
    rc, _, err = shiftpu(monkeypatch, capsys, "run", compiled, "-i", x, "-o", bundle.parent / "z")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(bundle.parent / "y.npy"), np.load(bundle.parent / "z.npy"))


def test_run_refuses_a_changed_bundle(real_bundle, monkeypatch, capsys):
    bundle, _, x = real_bundle
    (bundle / "overlay" / "shiftpu.bit").write_bytes(bit_file(data_bytes=MIN_DATA_BYTES + 64))
    rc, _, err = shiftpu(monkeypatch, capsys, "run", bundle, "--backend", "board", "-i", x)
    assert one_error(rc, err) == (f"error: {bundle}: file overlay/shiftpu.bit changed since the bundle was made "
                                  "(SHA-256 differs)")
