"""The compiled output folder (docs/compiled-format.md): writing it atomically, reading it back with checks."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from shiftpu import __version__
from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.arch.isa import ISA_VERSION, Instruction, IsaError, decode_program
from shiftpu.digest import sha256_file
from shiftpu.errors import ShiftpuError

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
REPORT_FILE = "partition.txt"
#: Version of the folder layout and manifest schema (2: CPU regions as ONNX models of their own).
FORMAT_VERSION = 2
FORMAT_NAME = "shiftpu-compiled"


def region_file(index: int) -> str:
    """The file of CPU region ``index``: its nodes as an ONNX model, run as one onnxruntime session."""
    return f"cpu_region{index}.onnx"


class ArtifactError(ShiftpuError):
    """A compiled folder is missing, damaged or from another shiftpu/ISA version."""


def write_folder(out_dir: Path, manifest: dict[str, Any], images: dict[str, np.ndarray], model: onnx.ModelProto,
                 report: str, regions: dict[str, bytes] | None = None) -> None:
    """Write the folder next to its destination, then move it into place: no half-written output remains.

    ``regions``: file name -> serialised ONNX model of each CPU region.

    The manifest written gains ``checksums``: the SHA-256 of every other file, verified by :func:`read_folder`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArtifactError(f"{out_dir}: exists and is not a folder")
    tmp = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        for name, img in images.items():
            (tmp / name).write_bytes(np.asarray(img, dtype=np.uint8).tobytes())
        for name, data in (regions or {}).items():
            (tmp / name).write_bytes(data)
        onnx.save(model, str(tmp / MODEL_FILE))
        (tmp / REPORT_FILE).write_text(report)
        checksums = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(manifest | {"checksums": checksums}, indent=1) + "\n")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "x")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ArtifactError(f"{out_dir}: cannot write the compiled folder: {e.strerror or e}") from None
        raise


@dataclass
class CompiledFolder:
    """A compiled model read back from disk."""

    path: Path
    manifest: dict[str, Any]
    config: AccelConfig
    images: list[np.ndarray]  #: constant image of each segment

    @property
    def board(self) -> str:
        return self.manifest["board"]

    def model(self) -> onnx.ModelProto:
        try:
            return onnx.load(str(self.path / MODEL_FILE))
        except Exception as e:
            raise ArtifactError(f"{self.path / MODEL_FILE}: cannot read the model copy: {e}") from None

    def region_bytes(self, index: int) -> bytes:
        """The ONNX model of CPU region ``index`` (checked against its checksum when the folder was read)."""
        return (self.path / self.manifest["cpu_regions"][index]["file"]).read_bytes()

    def programs(self) -> list[list[Instruction]]:
        """Decoded instructions of every segment (END included)."""
        out = []
        for seg, img in zip(self.manifest["segments"], self.images, strict=True):
            try:
                out.append(decode_program(img.tobytes(), self.config.config_hash())[1])
            except IsaError as e:
                raise ArtifactError(f"{self.path / seg['const']}: {e}") from None
        return out


def read_folder(path: str | Path) -> CompiledFolder:
    """Open a compiled folder; refuses one written by another shiftpu, ISA or format version."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{path}: not a compiled shiftpu folder (no {MANIFEST})")
    try:
        m = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mpath}: unreadable manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{mpath}: not a shiftpu manifest")
    if m.get("shiftpu_version") != __version__:
        raise ArtifactError(
            f"{path}: compiled by shiftpu {m.get('shiftpu_version')}, this is shiftpu {__version__}: recompile the model")
    if m.get("isa_version") != ISA_VERSION or m.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: compiled for ISA version {m.get('isa_version')} / format {m.get('format_version')}, this shiftpu "
            f"uses ISA {ISA_VERSION} / format {FORMAT_VERSION}: recompile the model")
    try:
        cfg = AccelConfig.from_dict(m["config"], source=str(mpath))
    except (ConfigError, KeyError) as e:
        raise ArtifactError(f"{mpath}: bad accelerator config: {e}") from None
    if int(m.get("config_hash", "0"), 16) != cfg.config_hash():
        raise ArtifactError(f"{mpath}: config_hash does not match the config it records")
    images = []
    for seg in m["segments"]:
        f = path / seg["const"]
        if not f.is_file():
            raise ArtifactError(f"{f}: missing constant image of segment {seg['index']}")
        img = np.fromfile(f, dtype=np.uint8)
        if img.size != seg["const_bytes"]:
            raise ArtifactError(f"{f}: {img.size} bytes, the manifest says {seg['const_bytes']} (damaged file)")
        images.append(img)
    regions = _region_files(path, m)
    _verify_checksums(path, m, [seg["const"] for seg in m["segments"]] + regions + [MODEL_FILE, REPORT_FILE])
    return CompiledFolder(path, m, cfg, images)


def _region_files(path: Path, manifest: dict[str, Any]) -> list[str]:
    """The CPU regions' files, each named as :func:`region_file` names it (a manifest naming others is damaged)."""
    regions = manifest.get("cpu_regions")
    if not isinstance(regions, list):
        raise ArtifactError(f"{path / MANIFEST}: no cpu_regions (damaged or edited manifest): recompile the model")
    files = []
    for k, r in enumerate(regions):
        if not isinstance(r, dict) or r.get("index") != k or r.get("file") != region_file(k):
            raise ArtifactError(f"{path / MANIFEST}: CPU region {k} is not described as the compiler writes it "
                                "(damaged or edited manifest): recompile the model")
        files.append(r["file"])
    return files


def _verify_checksums(path: Path, manifest: dict[str, Any], files: list[str]) -> None:
    """Refuse a folder whose files differ from the SHA-256 recorded in its manifest, or that records none."""
    sums = manifest.get("checksums")
    if not isinstance(sums, dict):
        raise ArtifactError(f"{path}: no checksums in {MANIFEST} (compiled before shiftpu recorded them, or edited): "
                            "recompile the model")
    for name in files:
        f = path / name
        if name not in sums:
            raise ArtifactError(f"{path / MANIFEST}: no checksum for {name}: recompile the model")
        if not f.is_file():
            raise ArtifactError(f"{f}: missing (the manifest records its checksum)")
        if sha256_file(f) != sums[name]:
            raise ArtifactError(f"{f}: SHA-256 differs from the checksum in {MANIFEST}: the file changed after "
                                "compilation (damaged or edited); recompile the model")
