"""The frame pipeline of a compiled model: its stages in order, and the throughput model over their times.

A frame runs the manifest's schedule: CPU regions and fabric segments in turn. The pipeline cuts it into stages:
each CPU region is a stage of its own (``cpu<k>``, region k), each run of consecutive fabric segments is one
(``fabric`` where the model has one such run, else ``fabric<first>`` or ``fabric<first>-<last>`` after its segments);
the runtime adds ``preprocess`` before them and ``postprocess`` after (``shiftpu.sw.pipeline_model``). Every stage
works in its own thread on a different frame, so the CPU work of one frame runs while the fabric computes another.

:class:`PipelineModel` is what that gives in the steady state. The fabric stages share one accelerator, so they
take turns: together they are busy for the fabric total per frame. Every other stage has a thread (and, assumed,
a core) of its own. Hence the frame interval is the largest of the fabric total and each other stage's time,
that stage is the bottleneck, and a frame's latency (no queueing) is the sum of all stage times. The compiler
(``shiftpu estimate --cpu-times``) and the runtime (``shiftpu bench``) both use it, so it sits in this layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple


class StepKind(str, Enum):
    """What one step of a frame's schedule runs."""

    REGION = "region"  #: a CPU region (one onnxruntime session call)
    SEGMENT = "segment"  #: a fabric segment (one accelerator start)


class ScheduleStep(NamedTuple):
    """One step of a frame: CPU region ``index`` or fabric segment ``index`` (unpacks as ``kind, index``)."""

    kind: StepKind
    index: int


def schedule_steps(manifest: dict) -> list[ScheduleStep]:
    """The manifest's schedule with each CPU region's nodes (consecutive in it) collapsed into one step."""
    region_of = {node: r["index"] for r in manifest["cpu_regions"] for node in r["nodes"]}
    steps: list[ScheduleStep] = []
    for step in manifest["schedule"]:
        s = (ScheduleStep(StepKind.REGION, region_of[step["cpu"]]) if "cpu" in step
             else ScheduleStep(StepKind.SEGMENT, step["segment"]))
        if not steps or steps[-1] != s:
            steps.append(s)
    return steps


class StageKind(str, Enum):
    """What a pipeline stage does; the fabric stages share the one accelerator."""

    PREPROCESS = "preprocess"
    CPU = "cpu"  #: one CPU region
    FABRIC = "fabric"  #: consecutive fabric segments
    POSTPROCESS = "postprocess"


@dataclass(frozen=True)
class PlannedStage:
    """One stage of the frame pipeline and the schedule steps it runs."""

    name: str
    kind: StageKind
    steps: tuple[ScheduleStep, ...] = ()

    @property
    def indices(self) -> tuple[int, ...]:
        """The CPU region (one) or the fabric segments it runs."""
        return tuple(s.index for s in self.steps)


def _fabric_name(segments: list[int], runs: int) -> str:
    if runs == 1:
        return "fabric"
    return f"fabric{segments[0]}" if len(segments) == 1 else f"fabric{segments[0]}-{segments[-1]}"


def schedule_stages(manifest: dict) -> list[PlannedStage]:
    """The stages of a frame's schedule in order (without pre- and postprocessing)."""
    groups: list[list[ScheduleStep]] = []
    for step in schedule_steps(manifest):
        if step.kind is StepKind.SEGMENT and groups and groups[-1][-1].kind is StepKind.SEGMENT:
            groups[-1].append(step)
        else:
            groups.append([step])
    runs = sum(g[0].kind is StepKind.SEGMENT for g in groups)
    return [PlannedStage(_fabric_name([s.index for s in g], runs), StageKind.FABRIC, tuple(g))
            if g[0].kind is StepKind.SEGMENT else PlannedStage(f"cpu{g[0].index}", StageKind.CPU, tuple(g))
            for g in groups]


def frame_stages(manifest: dict) -> list[PlannedStage]:
    """Every stage of the frame pipeline: preprocess, the schedule's stages, postprocess."""
    return ([PlannedStage("preprocess", StageKind.PREPROCESS)] + schedule_stages(manifest)
            + [PlannedStage("postprocess", StageKind.POSTPROCESS)])


@dataclass(frozen=True)
class StageTime:
    """The time one stage spends on a frame (ms), and where the figure comes from."""

    name: str
    kind: StageKind
    ms: float
    #: e.g. "measured on this host (...)" or "estimated (performance model, at 150 MHz ...)"
    source: str


@dataclass(frozen=True)
class PipelineModel:
    """Steady-state frame interval, throughput, latency and bottleneck of stages with the given times.

    The fabric stages take turns on one accelerator (their times add up); every other stage runs beside them in a
    thread of its own, assumed to have a core of its own. Queues and thread hand-overs cost nothing here.
    """

    stages: tuple[StageTime, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a pipeline model needs at least one stage")
        bad = [s.name for s in self.stages if not s.ms >= 0]
        if bad:
            raise ValueError(f"stage times must be finite and >= 0: {', '.join(bad)}")

    @property
    def fabric(self) -> tuple[StageTime, ...]:
        return tuple(s for s in self.stages if s.kind is StageKind.FABRIC)

    @property
    def fabric_ms(self) -> float:
        """The accelerator's busy time per frame: every fabric stage, one after the other."""
        return sum(s.ms for s in self.fabric)

    @property
    def cpu_ms(self) -> float:
        """CPU time per frame: every stage that is not a fabric stage."""
        return sum(s.ms for s in self.stages if s.kind is not StageKind.FABRIC)

    def _contenders(self) -> list[tuple[str, float]]:
        """(name, ms) of each resource that bounds the interval: the accelerator, then every other stage."""
        out = []
        if self.fabric:
            out.append(("+".join(s.name for s in self.fabric), self.fabric_ms))
        return out + [(s.name, s.ms) for s in self.stages if s.kind is not StageKind.FABRIC]

    @property
    def interval_ms(self) -> float:
        """Steady-state time between two finished frames: the busiest resource's time per frame."""
        return max(ms for _, ms in self._contenders())

    @property
    def bottleneck(self) -> str:
        """The stage that sets the interval (the fabric stages' names joined by '+' when the accelerator does; the
        accelerator wins a tie)."""
        return max(self._contenders(), key=lambda c: c[1])[0]

    @property
    def bottleneck_is_fabric(self) -> bool:
        return bool(self.fabric) and self.fabric_ms >= self.interval_ms

    @property
    def latency_ms(self) -> float:
        """One frame from the start of its first stage to the end of its last, nothing queued: the sum."""
        return sum(s.ms for s in self.stages)

    @property
    def fps(self) -> float:
        return 1e3 / self.interval_ms if self.interval_ms > 0 else 0.0

    @property
    def sequential_fps(self) -> float:
        """Frames per second with nothing overlapped: one frame's stages, then the next frame's."""
        return 1e3 / self.latency_ms if self.latency_ms > 0 else 0.0

    def assumptions(self) -> list[str]:
        return [
            "steady state, frames always waiting at the input",
            "the fabric stages share one accelerator and take turns: their times add up",
            f"each of the {len(self.stages) - len(self.fabric)} other stages has a CPU core of its own "
            f"(together {self.cpu_ms:.4f} ms of CPU per frame; fewer free cores lengthen the interval)",
            "queues, thread hand-overs and the GIL cost nothing",
        ]

    def to_json(self) -> dict:
        return {
            "kind": "estimated (pipeline model over the stage times below, each labelled with its source)",
            "stages": [{"name": s.name, "kind": s.kind.value, "ms": round(s.ms, 4), "source": s.source}
                       for s in self.stages],
            "fabric_ms": round(self.fabric_ms, 4), "cpu_ms": round(self.cpu_ms, 4),
            "interval_ms": round(self.interval_ms, 4), "fps": round(self.fps, 3),
            "latency_ms": round(self.latency_ms, 4), "sequential_fps": round(self.sequential_fps, 3),
            "bottleneck": self.bottleneck, "assumptions": self.assumptions(),
        }

    def format(self) -> str:
        """The stages with their times and sources, then the pipelined and sequential figures."""
        lines = ["pipeline stages (ms per frame):"]
        lines += [f"  {s.name:<16} {s.ms:>10.4f} ms  {s.source}" for s in self.stages]
        lines += [
            f"pipelined: a frame every {self.interval_ms:.4f} ms, {self.fps:.3f} fps (estimated, pipeline model: the "
            f"largest of the fabric total {self.fabric_ms:.4f} ms and each other stage), bottleneck: {self.bottleneck}; "
            f"latency {self.latency_ms:.4f} ms (sum of the stages); sequential {self.sequential_fps:.3f} fps",
            "assumptions: " + "; ".join(self.assumptions()),
        ]
        return "\n".join(lines)
