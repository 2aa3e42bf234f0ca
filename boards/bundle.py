"""Deployment bundles: a compiled model and the overlay built for it, in one folder for the board.

``shiftpu package out/ hw_out/ -o bundle/`` writes::

    bundle/
      bundle.json          format, board, part, config hash, every file with its SHA-256
      overlay/shiftpu.bit  the bitstream, and next to it
      overlay/shiftpu.hwh  the hardware handoff PYNQ reads
      overlay/hw.json      what build-hw recorded (config, register base, clock)
      model/...            the compiled model folder as the compiler wrote it (manifest.json, program, weights)

The compiled model and the overlay must come from the same accelerator config (equal config hashes);
:meth:`Bundle.check_hardware` compares the hash with what the loaded overlay reports in its CONFIG_HASH
register, so a bundle never runs on an overlay built for another config.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu import __version__
from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.boards.manifest import read_json_object
from shiftpu.boards.vivado import HW_MANIFEST, read_hw_manifest
from shiftpu.digest import sha256_file
from shiftpu.errors import ShiftpuError

BUNDLE_FORMAT = "shiftpu-bundle/1"
BUNDLE_MANIFEST = "bundle.json"
MODEL_MANIFEST = "manifest.json"
OVERLAY_DIR = "overlay"
MODEL_DIR = "model"


class BundleError(ShiftpuError):
    """A bundle cannot be made or used: missing files, mismatched config hashes, changed contents."""


def parse_config_hash(value: Any, source: str) -> int:
    """A config hash written as an integer or a hex string ("0x1234abcd")."""
    if isinstance(value, bool):
        raise BundleError(f"{source}: config hash must be an integer or a hex string, got {value!r}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str):
        try:
            result = int(value, 16)
        except ValueError:
            raise BundleError(f"{source}: config hash {value!r} is not a hex number") from None
    else:
        raise BundleError(f"{source}: config hash must be an integer or a hex string, got {type(value).__name__}")
    if not 0 <= result < 1 << 32:
        raise BundleError(f"{source}: config hash {value!r} is not a 32-bit value")
    return result


def model_config_hash(model_dir: Path) -> int:
    """The config hash a compiled model folder was compiled for (its manifest's ``config_hash``, or its
    ``config`` when only that is recorded)."""
    path = model_dir / MODEL_MANIFEST
    data = read_json_object(path, f"{model_dir} is not a compiled model folder: {MODEL_MANIFEST} is missing",
                            BundleError)
    if "config_hash" in data:
        return parse_config_hash(data["config_hash"], f"{path}: field 'config_hash'")
    if isinstance(data.get("config"), dict):
        try:
            return AccelConfig.from_dict(data["config"], source=f"{path}: field 'config'").config_hash()
        except ConfigError as e:
            raise BundleError(str(e)) from None
    raise BundleError(f"{path}: missing field 'config_hash' (the accelerator config the model was compiled for)")


@dataclass(frozen=True)
class Bundle:
    """A bundle folder, read and checked."""

    root: Path
    board: str
    part: str
    config_hash: int
    files: dict[str, str]  #: relative path -> SHA-256

    @property
    def bitstream(self) -> Path:
        return self.root / OVERLAY_DIR / "shiftpu.bit"

    @property
    def hwh(self) -> Path:
        return self.root / OVERLAY_DIR / "shiftpu.hwh"

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    def check_hardware(self, hardware_config_hash: int) -> None:
        """Refuse an overlay whose CONFIG_HASH register differs from the bundle's config hash."""
        if hardware_config_hash != self.config_hash:
            raise BundleError(
                f"{self.root}: the loaded overlay reports config hash 0x{hardware_config_hash:08x} but the bundle "
                f"was built for 0x{self.config_hash:08x}: load this bundle's overlay ({self.bitstream.name})")

    def verify_files(self) -> None:
        """Check that every recorded file is present and unchanged."""
        for rel, digest in self.files.items():
            path = self.root / rel
            if not path.is_file():
                raise BundleError(f"{self.root}: file {rel} is missing")
            if sha256_file(path) != digest:
                raise BundleError(f"{self.root}: file {rel} changed since the bundle was made (SHA-256 differs)")


def make_bundle(model_dir: Path, hw_dir: Path, out_dir: Path) -> Bundle:
    """Copy a compiled model and its overlay into ``out_dir`` and record them; refuses mismatched configs."""
    hw = read_hw_manifest(hw_dir)
    hw_hash = parse_config_hash(hw["config_hash"], f"{hw_dir / HW_MANIFEST}: field 'config_hash'")
    model_hash = model_config_hash(model_dir)
    if model_hash != hw_hash:
        raise BundleError(f"config mismatch: the model in {model_dir} was compiled for config 0x{model_hash:08x} "
                          f"but the overlay in {hw_dir} was built for 0x{hw_hash:08x}")
    for key in ("bitstream", "hwh"):
        if not (hw_dir / hw[key]).is_file():
            raise BundleError(f"{hw_dir} has no {hw[key]}: run the Vivado build first "
                              f"(cd {hw_dir} && {hw.get('vivado_command', 'vivado -mode batch -source build.tcl')})")
    resolved_out = out_dir.resolve()
    for src in (model_dir, hw_dir):
        if resolved_out == src.resolve() or src.resolve() in resolved_out.parents:
            raise BundleError(f"the bundle folder {out_dir} must not be inside {src}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    overlay = out_dir / OVERLAY_DIR
    overlay.mkdir(parents=True)
    shutil.copy2(hw_dir / hw["bitstream"], overlay / "shiftpu.bit")
    shutil.copy2(hw_dir / hw["hwh"], overlay / "shiftpu.hwh")
    shutil.copy2(hw_dir / HW_MANIFEST, overlay / HW_MANIFEST)
    shutil.copytree(model_dir, out_dir / MODEL_DIR)
    files = {str(p.relative_to(out_dir)): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    manifest = {
        "format": BUNDLE_FORMAT, "shiftpu_version": __version__, "board": hw["board"], "part": hw["part"],
        "config_hash": f"0x{hw_hash:08x}", "model_config_hash": f"0x{model_hash:08x}",
        "overlay_config_hash": f"0x{hw_hash:08x}", "bitstream": f"{OVERLAY_DIR}/shiftpu.bit",
        "hwh": f"{OVERLAY_DIR}/shiftpu.hwh", "model": MODEL_DIR, "files": files,
    }
    (out_dir / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Bundle(root=out_dir, board=hw["board"], part=hw["part"], config_hash=hw_hash, files=files)


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle and check it: format, matching config hashes, files present and unchanged."""
    root = Path(path)
    manifest_path = root / BUNDLE_MANIFEST
    data = read_json_object(manifest_path, f"{root} is not a shiftpu bundle: {BUNDLE_MANIFEST} is missing",
                            BundleError)
    if data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: not a {BUNDLE_FORMAT} manifest (field 'format')")
    for key in ("board", "part"):
        if not isinstance(data.get(key), str):
            raise BundleError(f"{manifest_path}: field '{key}' is missing or not a string")
    if not isinstance(data.get("files"), dict):
        raise BundleError(f"{manifest_path}: field 'files' is missing or not an object")
    hashes = {key: parse_config_hash(data.get(key), f"{manifest_path}: field '{key}'")
              for key in ("config_hash", "model_config_hash", "overlay_config_hash")}
    if len(set(hashes.values())) != 1:
        raise BundleError(f"{manifest_path}: the model (0x{hashes['model_config_hash']:08x}) and the overlay "
                          f"(0x{hashes['overlay_config_hash']:08x}) were built for different configs")
    bundle = Bundle(root=root, board=data["board"], part=data["part"], config_hash=hashes["config_hash"],
                    files={str(k): str(v) for k, v in data["files"].items()})
    bundle.verify_files()
    return bundle
