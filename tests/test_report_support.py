"""Shared pieces of the report tests (no tests here): the shipped detector compiled, optional inputs, a page reader."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import shiftpu
from shiftpu.boards import load_board
from shiftpu.boards.estimate import BOARD_KIND, ESTIMATE_KINDS, ResourceEstimate
from shiftpu.compiler.driver import compile_model
from shiftpu.sw.trace import Trace

DETECTOR = Path(shiftpu.__file__).parent / "models" / "shapes_detector.onnx"
BOARD = "ultra96v2"
#: Stages and frames of the synthetic trace: every span lasts 2 ms, stage s of frame f starts at 3 f + s ms.
TRACE_STAGES = ("preprocess", "fabric", "postprocess")
TRACE_FRAMES = 4


def compile_detector(out: Path) -> Path:
    compile_model(DETECTOR, BOARD, out)
    return out


def resources_file(path: Path, lut_used: float, config_hash: int | None = None) -> Path:
    """A resource estimate in the JSON form of `shiftpu build-hw --estimate --json` (hand-chosen numbers)."""
    board = load_board(BOARD)
    available = {k: board.resources[BOARD_KIND[k]] for k in ESTIMATE_KINDS}
    used = {"LUT": lut_used, "FF": 1000.0, "DSP": 0.0, "BRAM": 54.0, "URAM": 0.0}
    est = ResourceEstimate(board=BOARD, part=board.part, yosys_family=board.yosys_family.value,
                           config_hash=board.accel.config_hash() if config_hash is None else config_hash,
                           used=used, available=available, cells={"LUT6": int(lut_used)}, synth_seconds=61.0)
    path.write_text(json.dumps(est.to_json()))
    return path


def trace_file(path: Path) -> Path:
    """A Chrome trace as `shiftpu bench --trace` writes it, with known spans."""
    t = Trace()
    t.origin = 0.0
    for f in range(TRACE_FRAMES):
        for s, stage in enumerate(TRACE_STAGES):
            start = (3 * f + s) * 1e-3
            t.add(stage, f, start, start + 2e-3)
    return t.write_chrome(path)


def bench_file(path: Path, board: str = BOARD) -> Path:
    """A `shiftpu bench --json` result with hand-chosen figures."""
    path.write_text(json.dumps({
        "model": "x", "backend": "golden", "device": "sim", "board": board, "frames": 40, "fps": 123.456,
        "measured": True, "latency_ms": {"p50": 7.25, "p90": 8.0, "p99": 9.5},
        "stages": {"preprocess": 0.5, "fabric": 7.0, "postprocess": 0.1}, "pipeline_efficiency": 0.875,
        "power_w": 3.5, "power_source": "estimated"}))
    return path


#: The RTL figures of :func:`demo_folder`: (frame, read latency or None, equal, measured, estimated) per whole frame,
#: and (layer id, name, op, measured, estimated) per layer.
DEMO_FRAMES = ((0, None, True, 84892, 84907), (0, 40, True, 87711, 87726))
DEMO_LAYERS = ((0, "c1_0_Conv", "CONV", 16000, 16052), (1, "max_pool2d_MaxPool", "POOL", 5640, 5626))


def demo_folder(path: Path, board: str = BOARD, config_hash: str | None = None) -> Path:
    """An output folder of `shiftpu demo` with hand-chosen figures and two drawn 8x8 frames."""
    from PIL import Image

    path.mkdir(parents=True)
    summary = {
        "board": board, "model": "shapes_detector.onnx", "images": 64,
        "config_hash": config_hash or f"0x{load_board(BOARD).accel.config_hash():08x}",
        "golden_equals_onnxruntime": True, "map50_golden": 0.9558, "map50_onnxruntime": 0.9558,
        "rtl": [{"frame": f, "equals_golden": eq, "cycles_measured": m, "cycles_estimated": e}
                for f, lat, eq, m, e in DEMO_FRAMES if lat is None],
        "rtl_board_latency": next({"read_latency_cycles": lat, "equals_golden": eq, "cycles_measured": m,
                                   "cycles_estimated": e, "board_cycles_estimated": e}
                                  for f, lat, eq, m, e in DEMO_FRAMES if lat is not None),
        "rtl_layers": {"read_latency_cycles": 40, "equals_golden": True, "layers": [
            {"layer_id": i, "name": n, "op": op, "cycles_measured": m, "cycles_estimated": e}
            for i, n, op, m, e in DEMO_LAYERS]},
        "report": None}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "detections").mkdir()
    (path / "test_images").mkdir()
    for i, colour in enumerate(((255, 0, 0), (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(path / "detections" / f"frame{i:03d}.png")
    (path / "detections" / "detections.json").write_text(json.dumps({
        "frame000.png": [{"box": [1, 1, 5, 5], "score": 0.9712, "label": 0, "class": "circle"}],
        "frame001.png": []}))
    (path / "test_images" / "ground_truth.json").write_text(json.dumps({
        "frame000.png": [{"class": "circle", "box": [1, 1, 5, 5]}], "frame001.png": [{"class": "square"}]}))
    return path


class TableReader(HTMLParser):
    """Cell texts of the body rows of every table by id (``rows``: those of ``layer-table``), and the ids of
    sections and figures."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}  #: table id -> cell texts of its body rows
        self.rows: list[list[str]] = self.tables.setdefault("layer-table", [])
        self._table: list[list[str]] = []
        self.sections: dict[str, str] = {}  #: section id -> its text
        self.figures: list[str] = []  #: data-provenance of each figure
        self.svgs = 0
        self._in_body = False
        self._cell: list[str] | None = None
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section or ""] = ""
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id") or "", [])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._table.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "figure":
            self.figures.append(a.get("data-provenance") or "")
        elif tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self.sections[self._section] += data


def read_page(path: Path) -> TableReader:
    reader = TableReader()
    reader.feed(path.read_text(encoding="utf-8"))
    return reader
