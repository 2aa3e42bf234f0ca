"""Deployment bundles: `shiftpu package` joins a compiled model and its overlay, and refuses mismatched configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_boards_standin import standin_verilog

from shiftpu.boards import load_board
from shiftpu.boards.bundle import BundleError, load_bundle, make_bundle, model_config_hash, parse_config_hash
from shiftpu.boards.vivado import write_flow


@pytest.fixture
def hw_dir(tmp_path: Path) -> Path:
    """A build-hw output folder for the PYNQ-Z2 with a (placeholder) bitstream and hwh."""
    b = load_board("pynq-z2")
    out = tmp_path / "hw_out"
    write_flow(b, b.accel, out, standin_verilog(b.accel))
    (out / "shiftpu.bit").write_bytes(b"\x00\x09\x0f\xf0bitstream")
    (out / "shiftpu.hwh").write_text("<hwh/>\n")
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
    assert sorted(bundle.files) == ["model/manifest.json", "model/program.bin", "model/weights/const.bin",
                                    "overlay/hw.json", "overlay/shiftpu.bit", "overlay/shiftpu.hwh"]
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
    assert ok.stdout.strip() == f"wrote bundle {tmp_path / 'b'} for pynq-z2 (config 0x{h:08x}, 6 files)"
    (model / "manifest.json").write_text(json.dumps({"config_hash": "0x00000001"}))
    bad = subprocess.run([*cmd, "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: config mismatch: the model in")
    assert "Traceback" not in bad.stderr


def test_parse_config_hash_forms():
    assert parse_config_hash("0xAC681D8E", "x") == 0xAC681D8E
    assert parse_config_hash("ac681d8e", "x") == 0xAC681D8E
    assert parse_config_hash(5, "x") == 5
