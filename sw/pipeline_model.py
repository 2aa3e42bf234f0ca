"""A compiled model as three pipeline stages, with double-buffered device activation arenas.

* preprocess (CPU): image -> letterbox -> model input, checked by the executor;
* fabric: the frame takes the next of two device arenas (``ACT_BASE`` alternates between them) and
  runs the executor's schedule in it (fabric segments on the accelerator, zero copy; CPU nodes such as
  the input QuantizeLinear in numpy); the outputs are copied out and the arena returns to the pool;
* postprocess (CPU): the outputs, decoded into detections when the model is a detector.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

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

    def close(self) -> None:
        self._closed.set()


@dataclass
class FrameResult:
    """What the pipeline yields per frame: the model outputs and, for a detector, its detections."""

    outputs: list[np.ndarray]
    detections: Detections | None = None


@dataclass
class _InFlight:
    frame: Frame
    letterbox: Letterbox | None


class ModelStages:
    """The stages of one compiled model; ``arenas`` (device buffers) enable zero-copy double buffering."""

    def __init__(self, executor: Executor, arenas: ArenaPool | None = None, decode_params: DecodeParams | None = None,
                 head: Callable[[list[np.ndarray]], np.ndarray] | None = None):
        self.executor = executor
        self.arenas = arenas
        self.decode_params = decode_params
        self.head = head or (lambda outs: outs[0])
        spec = executor.inputs[0]
        self.input_shape = tuple(spec["shape"])

    def stages(self) -> list[Stage]:
        return [Stage("preprocess", self.preprocess), Stage("fabric", self.fabric), Stage("postprocess", self.postprocess)]

    def preprocess(self, item: Any) -> _InFlight:
        lb = None
        x = item
        if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8:
            if len(self.input_shape) != 4:
                raise PreprocessError(f"the model input has shape {self.input_shape}, not an image batch")
            img, lb = letterbox(item, self.input_shape[2:])
            x = image_to_tensor(img)
        return _InFlight(self.executor.prepare(x), lb)

    def fabric(self, job: _InFlight) -> _InFlight:
        if self.arenas is not None:
            arena = self.arenas.acquire()
            arena[:] = 0
            job.frame.arena = arena
        try:
            self.executor.execute(job.frame)
        finally:
            if self.arenas is not None:
                self.arenas.release(job.frame.arena)
                job.frame.arena = np.zeros(0, np.uint8)
        return job

    def postprocess(self, job: _InFlight) -> FrameResult:
        outs = self.executor.finish(job.frame)
        if self.decode_params is None:
            return FrameResult(outs)
        det = decode(self.head(outs), self.decode_params)
        if job.letterbox is not None:
            det = Detections(unletterbox_boxes(det.boxes, job.letterbox), det.scores, det.labels)
        return FrameResult(outs, det)
