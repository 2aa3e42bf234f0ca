"""Timeline of a pipeline run: per-frame stage intervals, Chrome trace JSON (Perfetto) and a Gantt plot."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Span:
    """One stage working on one frame; times in seconds on the monotonic clock (measured)."""

    stage: str
    frame: int
    start: float
    end: float


class Trace:
    """Collects spans from the pipeline's threads (keeps at most ``limit`` spans, the first ones)."""

    def __init__(self, limit: int = 200_000):
        self.limit = limit
        self.spans: list[Span] = []
        self.origin = time.perf_counter()
        self._lock = threading.Lock()

    def add(self, stage: str, frame: int, start: float, end: float) -> None:
        with self._lock:
            if len(self.spans) < self.limit:
                self.spans.append(Span(stage, frame, start, end))

    def chrome_json(self) -> dict:
        """The Chrome trace event format (open in https://ui.perfetto.dev or chrome://tracing)."""
        stages = list(dict.fromkeys(s.stage for s in self.spans))
        events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "shiftpu pipeline"}}]
        for tid, name in enumerate(stages):
            events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
        for s in self.spans:
            events.append({"name": f"frame {s.frame}", "cat": s.stage, "ph": "X", "pid": 1,
                           "tid": stages.index(s.stage), "ts": round((s.start - self.origin) * 1e6, 3),
                           "dur": round((s.end - s.start) * 1e6, 3), "args": {"frame": s.frame}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"clock": "measured, time.perf_counter", "unit": "microseconds"}}

    def write_chrome(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.chrome_json()))
        return path

    def write_gantt(self, path: str | Path, max_frames: int = 24) -> Path:
        """A PNG Gantt chart of the first ``max_frames`` frames: one row per stage, one bar per frame."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        spans = [s for s in self.spans if s.frame < max_frames]
        stages = list(dict.fromkeys(s.stage for s in spans))
        fig, ax = plt.subplots(figsize=(10, 1 + 0.6 * len(stages)))
        cmap = plt.get_cmap("tab10")
        for s in spans:
            row = stages.index(s.stage)
            ax.barh(row, (s.end - s.start) * 1e3, left=(s.start - self.origin) * 1e3, height=0.6,
                    color=cmap(s.frame % 10), edgecolor="black", linewidth=0.3)
            ax.text((s.start + s.end) / 2 * 1e3 - self.origin * 1e3, row, str(s.frame), ha="center", va="center",
                    fontsize=6)
        ax.set_yticks(range(len(stages)), stages)
        ax.invert_yaxis()
        ax.set_xlabel("time since start (ms, measured)")
        ax.set_title(f"pipeline stages, first {max_frames} frames (colour and label: frame number)")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
