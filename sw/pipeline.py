"""The CPU/fabric pipeline: stages in threads on successive frames, outputs in input order.

``Pipeline([Stage("preprocess", f), Stage("fabric", g), Stage("postprocess", h)]).run(frames)`` runs
each stage in its own thread, connected by bounded queues, so while the fabric works on frame n the
CPU pre-processes frame n+1 and post-processes frame n-1 (numpy and the accelerator wait release the
GIL). Every frame carries a sequence number; the consumer checks that results arrive complete and in
order. An exception in any stage, or Ctrl-C in the consumer, stops every thread and is re-raised
after they have ended: no thread is left hanging. Exceptions of the types given as ``frame_errors`` (a
faulty accelerator run the driver recovered from) fail only their frame: it comes out in its place as a
:class:`FrameFailure`, the later stages pass it by, and the frames after it go on.
"""

from __future__ import annotations

import queue
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shiftpu.errors import ShiftpuError
from shiftpu.sw.trace import Trace

_POLL_S = 0.05
#: Seconds to wait for each stage thread to end after a stop (a stage inside a long accelerator run
#: finishes that call first; the threads are daemons, so they never keep the process alive).
JOIN_TIMEOUT_S = 10.0
_END = object()


class PipelineError(ShiftpuError):
    """The pipeline lost, duplicated or reordered a frame, or a stage thread did not stop."""


@dataclass(frozen=True)
class Stage:
    """A named step applied to every frame in its own thread."""

    name: str
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class FrameFailure:
    """What the pipeline yields for a frame whose stage raised one of its ``frame_errors``."""

    seq: int
    stage: str
    error: BaseException


@dataclass
class PipelineStats:
    """Measured figures of one run (wall-clock, seconds)."""

    stages: list[str]
    frames: int = 0
    failed: int = 0  #: frames that came out as a :class:`FrameFailure`
    wall_s: float = 0.0
    busy_s: dict[str, float] = field(default_factory=dict)  #: per stage, summed over frames
    latencies_s: array = field(default_factory=lambda: array("d"))  #: per frame, first stage start -> last end

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def stage_mean_ms(self) -> dict[str, float]:
        return {s: 1e3 * self.busy_s.get(s, 0.0) / max(self.frames, 1) for s in self.stages}

    @property
    def slowest_stage_fps(self) -> float:
        """fps the slowest stage alone would sustain (1 / its mean time per frame)."""
        worst = max(self.stage_mean_ms().values(), default=0.0)
        return 1e3 / worst if worst > 0 else 0.0

    @property
    def efficiency(self) -> float:
        """Achieved fps / fps of the slowest stage alone (1.0: perfectly overlapped)."""
        best = self.slowest_stage_fps
        return self.fps / best if best > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return 1e3 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclass
class _Item:
    seq: int
    payload: Any
    started: float = 0.0


class Pipeline:
    """Stages in threads with bounded queues of ``depth`` frames between them."""

    def __init__(self, stages: list[Stage], depth: int = 2, trace: Trace | None = None,
                 on_stop: Callable[[], None] | None = None, frame_errors: tuple[type[BaseException], ...] = ()):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = stages
        self.depth = max(1, depth)
        self.trace = trace
        self.on_stop = on_stop  #: called when a run stops early, to wake stages blocked outside the queues
        self.frame_errors = frame_errors  #: exceptions that fail one frame, not the run
        self.stats = PipelineStats([s.name for s in stages])

    def run(self, frames: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(sequence number, result)`` for every frame, in input order."""
        stop = threading.Event()
        errors: list[BaseException] = []
        queues = [queue.Queue(maxsize=self.depth) for _ in range(len(self.stages) + 1)]
        busy = {s.name: 0.0 for s in self.stages}
        lock = threading.Lock()

        def put(q: queue.Queue, item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q: queue.Queue) -> Any:
            while not stop.is_set():
                try:
                    return q.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
            return _END

        def fail(e: BaseException) -> None:
            with lock:
                errors.append(e)
            stop.set()

        def source() -> None:
            try:
                for seq, frame in enumerate(frames):
                    if not put(queues[0], _Item(seq, frame)):
                        return
                put(queues[0], _END)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                fail(e)

        def worker(index: int, stage: Stage) -> None:
            first = index == 0
            while True:
                item = get(queues[index])
                if item is _END:
                    put(queues[index + 1], _END)
                    return
                t0 = time.perf_counter()
                if first:
                    item.started = t0
                if isinstance(item.payload, FrameFailure):  # failed in an earlier stage: passed on in its place
                    if not put(queues[index + 1], item):
                        return
                    continue
                try:
                    item.payload = stage.fn(item.payload)
                except self.frame_errors as e:
                    item.payload = FrameFailure(item.seq, stage.name, e)
                except BaseException as e:  # noqa: BLE001 - handed to the consumer
                    fail(e)
                    return
                t1 = time.perf_counter()
                with lock:
                    busy[stage.name] += t1 - t0
                if self.trace is not None:
                    self.trace.add(stage.name, item.seq, t0, t1)
                if not put(queues[index + 1], item):
                    return

        threads = [threading.Thread(target=source, name="shiftpu-source", daemon=True)]
        threads += [threading.Thread(target=worker, args=(i, s), name=f"shiftpu-{s.name}", daemon=True)
                    for i, s in enumerate(self.stages)]
        stats = self.stats = PipelineStats([s.name for s in self.stages])
        expected = 0
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        def shutdown(abnormal: bool) -> list[str]:
            stop.set()
            if abnormal and self.on_stop is not None:
                self.on_stop()
            for t in threads:
                t.join(timeout=JOIN_TIMEOUT_S)
            stats.wall_s = time.perf_counter() - t_start
            stats.busy_s = dict(busy)
            return [t.name for t in threads if t.is_alive()]

        try:
            while True:
                item = get(queues[-1])
                if item is _END:
                    break
                if item.seq != expected:
                    raise PipelineError(f"frame order broken: expected frame {expected}, got frame {item.seq}")
                expected += 1
                stats.latencies_s.append(time.perf_counter() - item.started)
                stats.frames = expected
                stats.failed += isinstance(item.payload, FrameFailure)
                stats.wall_s = time.perf_counter() - t_start
                yield item.seq, item.payload
        except BaseException:  # Ctrl-C, an order error, or the consumer closing the generator: stop, re-raise
            shutdown(abnormal=True)
            raise
        alive = shutdown(abnormal=bool(errors))
        if errors:
            raise errors[0]
        if alive:
            raise PipelineError(f"pipeline threads did not stop within {JOIN_TIMEOUT_S:g} s: {', '.join(alive)}")


def run_all(pipeline: Pipeline, frames: Iterable[Any], sink: Callable[[int, Any], None] | None = None) -> PipelineStats:
    """Drive a pipeline to the end, handing each in-order result to ``sink``; returns the stats."""
    for seq, result in pipeline.run(frames):
        if sink is not None:
            sink(seq, result)
    return pipeline.stats
