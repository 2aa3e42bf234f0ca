"""The report's optional inputs: a resource estimate, a pipeline trace and a bench result, each checked on load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu.boards.estimate import ResourceEstimate
from shiftpu.errors import ShiftpuError


class ReportError(ShiftpuError):
    """A report cannot be written: a missing or foreign folder, or a malformed optional input file."""


@dataclass(frozen=True)
class TraceSpan:
    """One pipeline stage working on one frame (measured), times in milliseconds from the trace's origin."""

    stage: str
    frame: int
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class PipelineTrace:
    """The spans of a Chrome trace written by `shiftpu bench --trace`."""

    path: Path
    stages: tuple[str, ...]  #: in the order the trace names them
    spans: tuple[TraceSpan, ...]


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ReportError(f"{path}: no such {what} file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not a readable {what} JSON file: {e}") from None


def load_resources(path: Path) -> ResourceEstimate:
    """The JSON of `shiftpu build-hw --board B --estimate --json`."""
    data = _read_json(path, "resource estimate")
    try:
        return ResourceEstimate.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReportError(f"{path}: not a resource estimate of `shiftpu build-hw --estimate --json` "
                          f"(bad or missing field {e})") from None


def load_trace(path: Path) -> PipelineTrace:
    """The Chrome trace JSON of `shiftpu bench --trace`: complete events ("ph": "X") named by thread."""
    data = _read_json(path, "trace")
    events = data.get("traceEvents") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise ReportError(f"{path}: not a Chrome trace (no 'traceEvents' list)")
    try:
        names = {e["tid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
        spans = tuple(TraceSpan(names.get(e["tid"], e.get("cat", str(e["tid"]))), int(e["args"]["frame"]),
                                float(e["ts"]) / 1e3, (float(e["ts"]) + float(e["dur"])) / 1e3)
                      for e in events if e.get("ph") == "X")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReportError(f"{path}: malformed trace event (bad or missing field {e})") from None
    if not spans:
        raise ReportError(f"{path}: the trace holds no stage intervals (events with \"ph\": \"X\")")
    stages = tuple(dict.fromkeys(s.stage for s in spans))
    return PipelineTrace(path, stages, spans)


#: Fields of the `shiftpu bench --json` result the report shows, with their types.
BENCH_FIELDS: dict[str, type | tuple[type, ...]] = {
    "backend": str, "device": str, "board": str, "frames": int, "fps": (int, float), "latency_ms": dict,
    "stages": dict, "pipeline_efficiency": (int, float), "power_w": (int, float), "power_source": str,
}


def load_bench(path: Path) -> dict[str, Any]:
    """The JSON of `shiftpu bench --json`, with the fields the report shows checked."""
    data = _read_json(path, "bench result")
    if not isinstance(data, dict):
        raise ReportError(f"{path}: a bench result must be a JSON object (from `shiftpu bench --json`)")
    for key, typ in BENCH_FIELDS.items():
        if key not in data:
            raise ReportError(f"{path}: not a `shiftpu bench --json` result (missing field '{key}')")
        if not isinstance(data[key], typ) or isinstance(data[key], bool):
            raise ReportError(f"{path}: field '{key}' has the wrong type ({type(data[key]).__name__})")
    return data
