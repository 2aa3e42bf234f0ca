"""Deployment bundles: a compiled model and the overlay built for it, in one folder for the board.

``shiftpu package out/ hw_out/ -o bundle/ [--wheel dist/shiftpu-*.whl]`` writes::

    bundle/
      bundle.json          format, board, part, config hash, every file with its SHA-256
      README.md            what to install on the board and how to run the bundle
      run.sh               ``./run.sh INPUT``: ``shiftpu run`` of this bundle on the board backend
      overlay/shiftpu.bit  the bitstream (checked: a Xilinx bitstream for the board's part), and next to it
      overlay/shiftpu.hwh  the hardware handoff PYNQ reads
      overlay/hw.json      what build-hw recorded (config, register base, clock)
      model/...            the compiled model folder as the compiler wrote it (manifest.json, program, weights)
      shiftpu-*.whl        with --wheel: the shiftpu wheel to install on the board

The compiled model and the overlay must come from the same accelerator config (equal config hashes);
:meth:`Bundle.check_hardware` compares the hash with what the loaded overlay reports in its CONFIG_HASH
register, so a bundle never runs on an overlay built for another config. ``shiftpu run BUNDLE`` takes the model
from ``model/`` and, on the board backend, the overlay from ``overlay/`` (:func:`resolve_run_folder`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu import __version__
from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.boards.bitstream import check_bitstream
from shiftpu.boards.manifest import read_json_object
from shiftpu.boards.vivado import HW_MANIFEST, read_hw_manifest
from shiftpu.digest import sha256_file
from shiftpu.errors import ShiftpuError

BUNDLE_FORMAT = "shiftpu-bundle/1"
BUNDLE_MANIFEST = "bundle.json"
MODEL_MANIFEST = "manifest.json"
OVERLAY_DIR = "overlay"
MODEL_DIR = "model"
README = "README.md"
RUN_SCRIPT = "run.sh"


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


def check_sources(model_dir: Path, hw_dir: Path, out_dir: Path, wheel: Path | None = None) -> dict[str, Any]:
    """Everything :func:`make_bundle` refuses, checked before anything is written; returns hw.json.

    Refuses mismatched configs, a missing or implausible bitstream (not a Xilinx .bit for the board's part, or a
    .hwh of another device), a wheel that is not a shiftpu wheel, and a bundle folder inside a source."""
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
    check_bitstream(hw_dir / hw["bitstream"], hw_dir / hw["hwh"], hw["part"])
    if wheel is not None and not (wheel.is_file() and wheel.name.startswith("shiftpu-") and wheel.suffix == ".whl"):
        raise BundleError(f"--wheel {wheel}: not a shiftpu wheel file (shiftpu-*.whl, made by `make wheel`)")
    resolved_out = out_dir.resolve()
    for src in (model_dir, hw_dir):
        if resolved_out == src.resolve() or src.resolve() in resolved_out.parents:
            raise BundleError(f"the bundle folder {out_dir} must not be inside {src}")
    return hw


def make_bundle(model_dir: Path, hw_dir: Path, out_dir: Path, wheel: Path | None = None) -> Bundle:
    """Copy a compiled model, its overlay (and a shiftpu wheel to install on the board) into ``out_dir``, a new or
    empty folder, with a README and a run script, and record every file; refuses what :func:`check_sources` does."""
    hw = check_sources(model_dir, hw_dir, out_dir, wheel)
    hw_hash = parse_config_hash(hw["config_hash"], f"{hw_dir / HW_MANIFEST}: field 'config_hash'")
    model_hash = model_config_hash(model_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"the bundle folder {out_dir} is not empty")
    overlay = out_dir / OVERLAY_DIR
    overlay.mkdir(parents=True)
    shutil.copy2(hw_dir / hw["bitstream"], overlay / "shiftpu.bit")
    shutil.copy2(hw_dir / hw["hwh"], overlay / "shiftpu.hwh")
    shutil.copy2(hw_dir / HW_MANIFEST, overlay / HW_MANIFEST)
    shutil.copytree(model_dir, out_dir / MODEL_DIR)
    if wheel is not None:
        shutil.copy2(wheel, out_dir / wheel.name)
    (out_dir / README).write_text(bundle_readme(hw["board"], hw["part"], hw_hash, wheel.name if wheel else None))
    script = out_dir / RUN_SCRIPT
    script.write_text(RUN_SCRIPT_TEXT)
    script.chmod(0o755)
    files = {str(p.relative_to(out_dir)): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    manifest = {
        "format": BUNDLE_FORMAT, "shiftpu_version": __version__, "board": hw["board"], "part": hw["part"],
        "config_hash": f"0x{hw_hash:08x}", "model_config_hash": f"0x{model_hash:08x}",
        "overlay_config_hash": f"0x{hw_hash:08x}", "bitstream": f"{OVERLAY_DIR}/shiftpu.bit",
        "hwh": f"{OVERLAY_DIR}/shiftpu.hwh", "model": MODEL_DIR, "files": files,
    }
    (out_dir / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Bundle(root=out_dir, board=hw["board"], part=hw["part"], config_hash=hw_hash, files=files)


#: The bundle's run script: `shiftpu run` of the bundle folder on the board backend.
RUN_SCRIPT_TEXT = """#!/usr/bin/env bash
# Runs this bundle on the board: ./run.sh INPUT [more `shiftpu run` options, e.g. -o output.npy]
# INPUT: the model input as .npy, or a folder of images (detections go to ./detections unless -o says otherwise).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 INPUT.npy|IMAGE_FOLDER [shiftpu run options]" >&2
  exit 2
fi
bundle="$(cd "$(dirname "$0")" && pwd)"
input="$1"
shift
exec shiftpu run "$bundle" --backend board --input "$input" "$@"
"""


def bundle_readme(board: str, part: str, config_hash: int, wheel: str | None) -> str:
    """The bundle's README: what to copy, which image, how to install shiftpu on the board, how to run."""
    if wheel is not None:
        install = (f"   pip install ./{wheel}\n\n"
                   "   (the wheel shipped in this folder; PYNQ itself comes with the image).")
    else:
        install = ("   shiftpu is not on PyPI. In a checkout of the shiftpu repository, `make wheel` builds\n"
                   "   dist/shiftpu-<version>-py3-none-any.whl: copy it to the board and `pip install` it there\n"
                   "   (or `shiftpu package ... --wheel dist/shiftpu-*.whl` puts it into the bundle).\n"
                   "   `pip install` of the checkout itself works too.")
    return f"""# shiftpu bundle for {board} ({part})

A compiled model and the overlay built for it, accelerator config 0x{config_hash:08x}, made by shiftpu
{__version__}. `bundle.json` lists every file with its SHA-256; `shiftpu run` checks them before it runs.

## On the board

1. Boot the board's PYNQ image (from pynq.io for pynq-z2, ultra96v2 and zcu104; Kria-PYNQ on Ubuntu for
   kv260) and work in its Python environment (as root: `source /etc/profile.d/pynq_venv.sh`). shiftpu's
   runtime is written against the pynq 4.0.0 package.
2. Copy this whole folder to the board, e.g. `scp -r bundle/ xilinx@<board>:~/bundle`.
3. Install shiftpu into that environment:

{install}

   On the 32-bit Zynq-7000 boards (pynq-z2) PyPI has no onnxruntime wheel: install with `pip install --no-deps`
   and then its other dependencies (numpy, onnx, typer, rich, jinja2, pillow, platformdirs) by name.
4. Run (as root, which PYNQ needs to load an overlay):

       ./run.sh input.npy -o output.npy     # a model input as .npy; the first output to output.npy
       ./run.sh images/                     # a folder of images: detections.json and drawn images in detections/

   `run.sh` is `shiftpu run <this folder> --backend board --input ...`: it loads overlay/shiftpu.bit, refuses an
   overlay whose CONFIG_HASH register is not 0x{config_hash:08x}, and runs the model in model/ with the CPU
   operators on the ARM cores.

This bundle has not been run on a board by the tests of shiftpu: the register-level path is tested on PYNQ's
own Overlay/MMIO code against a simulated device (`--backend pynq-sim`).
"""


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a bundle folder (holds bundle.json) rather than a compiled model folder."""
    return (Path(path) / BUNDLE_MANIFEST).is_file()


def resolve_run_folder(folder: Path, board_backend: bool, bitstream: Path | None) -> tuple[Path, Path | None]:
    """What ``shiftpu run FOLDER`` runs: (compiled model folder, bitstream). A bundle is checked (format, config
    hashes, every file's SHA-256) and gives its model, and on the board backend its overlay unless ``bitstream``
    is given; a compiled folder is returned as it is."""
    if not is_bundle(folder):
        return folder, bitstream
    bundle = load_bundle(folder)
    return bundle.model_dir, (bundle.bitstream if board_backend and bitstream is None else bitstream)


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
