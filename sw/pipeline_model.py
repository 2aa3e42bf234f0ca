"""A compiled model as pipeline stages, with device activation arenas handed from frame to frame.

The stages are those of :func:`shiftpu.compiled.pipeline_stages.frame_stages`:

* preprocess (CPU): image -> letterbox -> model input, checked by the executor;
* one stage per CPU region (``cpu<k>``: one onnxruntime session call, e.g. the input QuantizeLinear or a Softmax
  between two fabric segments), so a region of frame n runs while the fabric computes frame n+1;
* one stage per run of consecutive fabric segments (``fabric``, or ``fabric<k>`` where CPU regions split the
  fabric work): the segments run on the accelerator in the frame's device arena, zero copy. The fabric stages
  share the one accelerator and take turns (a lock). The first of them takes the next free arena of the pool
  (``ACT_BASE`` changes from frame to frame); the frame keeps it through the CPU regions between fabric stages,
  whose tensors it holds, and the last fabric stage returns it, once its outputs are copied out;
* postprocess (CPU): the outputs, decoded into detections when the model is a detector.

Each stage runs exactly the executor's steps in the executor's order on the frame's own values, so the outputs
equal those of :meth:`Executor.run` bit for bit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftpu.compiled.pipeline_stages import PlannedStage, StageKind, frame_stages
from shiftpu.sw.detection import DecodeParams, Detections, decode
from shiftpu.sw.executor import Executor, Frame
from shiftpu.sw.pipeline import Stage
from shiftpu.sw.preprocess import Letterbox, PreprocessError, image_to_tensor, letterbox, unletterbox_boxes

_POLL_S = 0.05


class ArenaPool:
    """Device arenas handed out in turn; ``acquire`` blocks while all are in use, until :meth:`close`."""

    def __init__(self, arenas: list[np.ndarray]):
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for a in arenas:
            self._free.put(a)
        self.size = len(arenas)
        self._closed = threading.Event()

    def acquire(self) -> np.ndarray:
        while not self._closed.is_set():
            try:
                return self._free.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        raise InterruptedError("arena pool closed")

    def release(self, arena: np.ndarray) -> None:
        self._free.put(arena)

    @property
    def available(self) -> int:
        """Arenas free now (all of them once every frame has ended)."""
        return self._free.qsize()

    def close(self) -> None:
        self._closed.set()


@dataclass
class FrameResult:
    """What the pipeline yields per frame: the model outputs and, for a detector, its detections."""

    outputs: list[np.ndarray]
    detections: Detections | None = None


def arenas_wanted(manifest: dict) -> int:
    """Arenas for every stage from the first fabric stage to the last to hold a frame, and one more frame to wait
    ready: 2 where one fabric stage runs all segments (then ``ACT_BASE`` alternates between two arenas)."""
    fabric = [i for i, p in enumerate(frame_stages(manifest)) if p.kind is StageKind.FABRIC]
    return fabric[-1] - fabric[0] + 2 if fabric else 1


@dataclass
class _InFlight:
    frame: Frame
    letterbox: Letterbox | None
    arena: np.ndarray | None = None  #: the pool's arena the frame holds, from its first fabric stage to its last


class ModelStages:
    """The stages of one compiled model; ``arenas`` (device buffers) enable zero-copy runs, one arena per frame
    between its first and last fabric stage (:func:`arenas_wanted` of them let every such stage work at once)."""

    def __init__(self, executor: Executor, arenas: ArenaPool | None = None, decode_params: DecodeParams | None = None,
                 head: Callable[[list[np.ndarray]], np.ndarray] | None = None):
        self.executor = executor
        self.arenas = arenas
        self.decode_params = decode_params
        self.head = head or (lambda outs: outs[0])
        spec = executor.inputs[0]
        self.input_shape = tuple(spec["shape"])
        self.plan = frame_stages(executor.manifest)
        fabric = [i for i, p in enumerate(self.plan) if p.kind is StageKind.FABRIC]
        self._first_fabric = fabric[0] if fabric else None
        self._last_fabric = fabric[-1] if fabric else None
        self._accelerator = threading.Lock()  # one accelerator: the fabric stages take turns
        #: seconds each fabric stage waited, summed over frames: for a free arena (the first fabric stage) and for the
        #: accelerator (while another fabric stage runs); each stage's thread adds to its own entry
        self.wait_s = {p.name: 0.0 for p in self.plan if p.kind is StageKind.FABRIC}

    def stages(self) -> list[Stage]:
        ends = {StageKind.PREPROCESS: self.preprocess, StageKind.POSTPROCESS: self.postprocess}
        return [Stage(p.name, ends.get(p.kind) or self._schedule_stage(i, p)) for i, p in enumerate(self.plan)]

    def preprocess(self, item: Any) -> _InFlight:
        lb = None
        x = item
        if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8:
            if len(self.input_shape) != 4:
                raise PreprocessError(f"the model input has shape {self.input_shape}, not an image batch")
            img, lb = letterbox(item, self.input_shape[2:])
            x = image_to_tensor(img)
        return _InFlight(self.executor.prepare(x), lb)

    def _schedule_stage(self, position: int, planned: PlannedStage) -> Callable[[_InFlight], _InFlight]:
        """The function of a CPU-region or fabric stage: its steps of the executor's schedule on the frame."""
        takes_arena = position == self._first_fabric
        returns_arena = position == self._last_fabric
        fabric = planned.kind is StageKind.FABRIC

        def run(job: _InFlight) -> _InFlight:
            try:
                if fabric:
                    waited = self._take_arena(job) if takes_arena else 0.0
                    t0 = time.perf_counter()
                    with self._accelerator:
                        self.wait_s[planned.name] += waited + time.perf_counter() - t0
                        for step in planned.steps:
                            self.executor.execute_step(job.frame, step)
                else:
                    for step in planned.steps:
                        self.executor.execute_step(job.frame, step)
            except BaseException:  # the frame ends here (failed, or the run stops): its arena goes back
                self._return_arena(job)
                raise
            if returns_arena:
                self._return_arena(job)
            return job

        return run

    def _take_arena(self, job: _InFlight) -> float:
        """Give the frame a free arena of the pool, zeroed; returns the seconds it waited for one."""
        if self.arenas is None:
            return 0.0
        t0 = time.perf_counter()
        arena = self.arenas.acquire()
        waited = time.perf_counter() - t0
        arena[:] = 0
        job.arena = job.frame.arena = arena
        return waited

    def _return_arena(self, job: _InFlight) -> None:
        if job.arena is not None:
            self.arenas.release(job.arena)
            job.arena = None
            job.frame.arena = np.zeros(0, np.uint8)

    def postprocess(self, job: _InFlight) -> FrameResult:
        outs = self.executor.finish(job.frame)
        if self.decode_params is None:
            return FrameResult(outs)
        det = decode(self.head(outs), self.decode_params)
        if job.letterbox is not None:
            det = Detections(unletterbox_boxes(det.boxes, job.letterbox), det.scores, det.labels)
        return FrameResult(outs, det)
