"""What `shiftpu demo` measured, read back from its output folder for the report: bit-exactness, mAP, RTL cycles
against the performance model (per frame and per layer) and the drawn detections."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu.report.inputs import ReportError

#: The demo's summary file (``shiftpu.demo.SUMMARY``; the report does not import the demo).
SUMMARY = "summary.json"
#: Drawn frames the report shows.
DRAWN_FRAMES = 4


@dataclass(frozen=True)
class RtlFrame:
    """A whole frame on the RTL simulation: cycles measured against the performance model's for that memory."""

    frame: int
    equals_golden: bool
    cycles_measured: int
    cycles_estimated: int
    read_latency_cycles: int | None  #: the simulated DDR's read latency; None: the simulation's default memory

    @property
    def delta(self) -> float:
        """(estimated - measured) / measured."""
        return self.cycles_estimated / self.cycles_measured - 1


@dataclass(frozen=True)
class RtlLayer:
    """One fabric instruction run alone on the RTL (a one-instruction program) against the model of that program."""

    layer_id: int
    name: str
    op: str
    cycles_measured: int
    cycles_estimated: int

    @property
    def delta(self) -> float:
        return self.cycles_estimated / self.cycles_measured - 1


@dataclass(frozen=True)
class DrawnFrame:
    """A test image with the boxes the golden model found drawn on it (PNG written by the demo)."""

    name: str
    png_base64: str
    detections: tuple[str, ...]  #: "class score" of each box
    truth: tuple[str, ...]  #: classes of the ground-truth boxes


@dataclass(frozen=True)
class DemoResults:
    """The demo's measured figures (everything here is measured unless its name says estimated)."""

    folder: Path
    board: str
    config_hash: int | None
    images: int
    golden_equals_onnxruntime: bool
    map50_golden: float
    map50_onnxruntime: float
    rtl_frames: tuple[RtlFrame, ...]
    rtl_layers: tuple[RtlLayer, ...]
    rtl_layers_read_latency: int | None
    rtl_layers_equal: bool | None  #: the layer-by-layer run's output equals the golden model's
    drawn: tuple[DrawnFrame, ...]

    @property
    def rtl_equal(self) -> bool:
        return all(f.equals_golden for f in self.rtl_frames) and self.rtl_layers_equal is not False

    @property
    def bit_exact(self) -> bool:
        """RTL simulation == golden model == onnxruntime on everything the demo compared."""
        return self.golden_equals_onnxruntime and self.rtl_equal

    @property
    def verdict(self) -> str:
        if not self.rtl_frames:
            return ("golden model == onnxruntime, bit for bit" if self.golden_equals_onnxruntime
                    else "golden model and onnxruntime DIFFER") + " (the RTL simulation was not run)"
        if self.bit_exact:
            return "RTL simulation == golden model == onnxruntime, bit for bit"
        return "NOT bit-exact: " + ", ".join(
            part for part, ok in (("golden model vs onnxruntime", self.golden_equals_onnxruntime),
                                  ("RTL simulation vs golden model", self.rtl_equal)) if not ok) + " differ"


def _drawn(folder: Path, limit: int) -> tuple[DrawnFrame, ...]:
    det_dir = folder / "detections"
    try:
        found = json.loads((det_dir / "detections.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ()
    try:
        truth = json.loads((folder / "test_images" / "ground_truth.json").read_text())
    except (OSError, json.JSONDecodeError):
        truth = {}
    frames = []
    for name in sorted(found)[:limit]:
        png = det_dir / name
        if not png.is_file():
            continue
        boxes = found[name]
        frames.append(DrawnFrame(
            name, base64.b64encode(png.read_bytes()).decode("ascii"),
            tuple(f"{b.get('class', b.get('label'))} {b['score']:.2f}" for b in boxes),
            tuple(str(t["class"]) for t in truth.get(name, []))))
    return tuple(frames)


def demo_results(folder: Path, summary: dict[str, Any], drawn_frames: int = DRAWN_FRAMES) -> DemoResults:
    """The demo's figures from its summary (as written to ``summary.json``) and the drawn images in ``folder``."""
    rtl = tuple(RtlFrame(int(f["frame"]), bool(f["equals_golden"]), int(f["cycles_measured"]),
                         int(f["cycles_estimated"]), None) for f in summary.get("rtl", []))
    late = summary.get("rtl_board_latency")
    if late:
        rtl += (RtlFrame(0, bool(late["equals_golden"]), int(late["cycles_measured"]), int(late["cycles_estimated"]),
                         int(late["read_latency_cycles"])),)
    per_layer = summary.get("rtl_layers") or {}
    layers = tuple(RtlLayer(int(la["layer_id"]), str(la["name"]), str(la["op"]), int(la["cycles_measured"]),
                            int(la["cycles_estimated"])) for la in per_layer.get("layers", []))
    config_hash = summary.get("config_hash")
    return DemoResults(
        folder=folder, board=str(summary["board"]),
        config_hash=int(config_hash, 16) if config_hash is not None else None,
        images=int(summary.get("images", 0)),
        golden_equals_onnxruntime=bool(summary["golden_equals_onnxruntime"]),
        map50_golden=float(summary["map50_golden"]), map50_onnxruntime=float(summary["map50_onnxruntime"]),
        rtl_frames=rtl, rtl_layers=layers,
        rtl_layers_read_latency=int(per_layer["read_latency_cycles"]) if per_layer else None,
        rtl_layers_equal=bool(per_layer["equals_golden"]) if per_layer else None,
        drawn=_drawn(folder, drawn_frames))


def load_demo(folder: Path) -> DemoResults:
    """The output folder of `shiftpu demo` (its summary.json, drawn detections and ground truth)."""
    path = folder / SUMMARY
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder (expected the output folder of `shiftpu demo`)")
    if not path.is_file():
        raise ReportError(f"{folder}: not the output of `shiftpu demo` (no {SUMMARY})")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not a readable demo summary: {e}") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: a demo summary must be a JSON object")
    try:
        return demo_results(folder, summary)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReportError(f"{path}: not a summary of `shiftpu demo` (bad or missing field {e})") from None
