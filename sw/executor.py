"""The model executor: runs a compiled folder on an accelerator backend plus the CPU operators.

``Executor(folder, backend="golden").run(x)`` checks the input, quantizes it with the model's own
QuantizeLinear (a CPU node), packs quantized tensors into the activation arena (shiftpu.arch.layout),
runs each fabric segment with one ``run_program`` on the backend and each CPU region (the CPU nodes between
two segments) with one onnxruntime session call (shiftpu.compiled.cpu_regions; the numpy kernels of
shiftpu.compiled.cpu_ops where onnxruntime is absent), and returns the model outputs. ``prepare`` / ``execute`` /
``finish`` split a run for pipelining, and ``execute_step`` runs one step of ``execute`` (the pipeline's
stages); a backend given by name comes from
:func:`shiftpu.sw.device_backends.open_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from shiftpu.arch.isa import encode_program
from shiftpu.arch.layout import pack_activation, unpack_activation
from shiftpu.compiled.cpu_regions import CpuRuntime, CpuRuntimeError, load_regions
from shiftpu.compiled.folder import CompiledFolder, read_folder
from shiftpu.compiled.pipeline_stages import ScheduleStep, StepKind, schedule_steps
from shiftpu.errors import ShiftpuError
from shiftpu.sim.accelerator import Accelerator, RunStats
from shiftpu.sw.device_backends import BackendError, open_model


class ExecutorError(ShiftpuError):
    """Bad input for a compiled model, or a backend that cannot be used."""


@dataclass
class Frame:
    """One inference in flight: the value of every tensor computed so far and the activation arena."""

    values: dict[str, np.ndarray]
    arena: np.ndarray
    packed: set[str] = field(default_factory=set)
    stats: list[RunStats] = field(default_factory=list)
    #: with keep_intermediates: the tensors written into the arena so far (packed or computed by the fabric)
    written: set[str] = field(default_factory=set)


class Executor:
    """Runs a compiled model; one instance serves any number of frames.

    ``cpu_runtime`` chooses what runs the CPU regions: onnxruntime where it is installed (``auto``), or the numpy
    kernels (``numpy``, the fallback); the regions' sessions are built here, once.
    """

    def __init__(self, folder: str | Path | CompiledFolder, backend: str | Accelerator = "golden",
                 keep_intermediates: bool = False, cpu_runtime: CpuRuntime | str = CpuRuntime.AUTO):
        self.compiled = folder if isinstance(folder, CompiledFolder) else read_folder(folder)
        m = self.compiled.manifest
        self.manifest = m
        self.model = self.compiled.model()
        outputs = {o.name for o in self.model.graph.output}
        #: model outputs that are constants (folded by the compiler): no step computes them
        self.constant_outputs = {i.name: numpy_helper.to_array(i) for i in self.model.graph.initializer
                                 if i.name in outputs}
        try:
            self.cpu_regions = load_regions(len(m["cpu_regions"]), self.compiled.region_bytes, cpu_runtime)
        except CpuRuntimeError as e:
            raise ExecutorError(f"{self.compiled.path}: {e}") from None
        #: the frame's steps in order: CPU region k or fabric segment k
        self.steps = schedule_steps(m)
        if isinstance(backend, str):
            try:
                backend = open_model(backend, self.compiled.config, self.compiled.board)
            except BackendError as e:
                raise ExecutorError(str(e)) from None
        self.accel = backend
        self.keep_intermediates = keep_intermediates
        self.tensors = m["tensors"]
        self.inputs = m["inputs"]
        self.output_names = [o["name"] for o in m["outputs"]]
        self._layer_output = {la["layer_id"]: la["output"] for la in m["layers"]}
        self._container = {name: t["inside"][0] for name, t in self.tensors.items() if "inside" in t}
        self._parts: dict[str, set[str]] = {}
        for name, container in self._container.items():
            self._parts.setdefault(container, set()).add(name)

    # -- one frame --------------------------------------------------------------------------------

    def check_inputs(self, inputs: np.ndarray | list[np.ndarray] | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by name, with their dtype and shape checked against the model and every float value finite."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != len(self.inputs):
                raise ExecutorError(f"the model has {len(self.inputs)} input(s), got {len(inputs)}")
            inputs = {spec["name"]: x for spec, x in zip(self.inputs, inputs, strict=True)}
        out = {}
        for spec in self.inputs:
            name = spec["name"]
            if name not in inputs:
                raise ExecutorError(f"missing model input '{name}'")
            x = inputs[name]
            if not isinstance(x, np.ndarray):
                raise ExecutorError(f"input '{name}' must be a numpy array, got {type(x).__name__}")
            if x.dtype != np.dtype(spec["dtype"]) or list(x.shape) != spec["shape"]:
                raise ExecutorError(
                    f"input '{name}' must be {spec['dtype']} of shape {tuple(spec['shape'])}, "
                    f"got {x.dtype} of shape {tuple(x.shape)}")
            if np.issubdtype(x.dtype, np.inexact):
                bad = x.size - int(np.count_nonzero(np.isfinite(x)))
                if bad:
                    raise ExecutorError(f"input '{name}' holds {bad} non-finite value(s) (NaN or Inf) of {x.size}: "
                                        "quantization has no code for them")
            out[name] = x
        return out

    def prepare(self, inputs: np.ndarray | list[np.ndarray] | dict[str, np.ndarray]) -> Frame:
        """Check the inputs and set up a frame (arena zeroed)."""
        return Frame(self.constant_outputs | self.check_inputs(inputs), np.zeros(self.manifest["arena_bytes"], dtype=np.uint8))

    def execute(self, frame: Frame) -> Frame:
        """Run the schedule: CPU regions (one session call each) and fabric segments in order."""
        for step in self.steps:
            self.execute_step(frame, step)
        return frame

    def execute_step(self, frame: Frame, step: ScheduleStep) -> None:
        """Run one step of the schedule on a frame whose earlier steps have run (the pipeline's stages call it)."""
        if step.kind is StepKind.REGION:
            frame.values.update(self.cpu_regions[step.index].run(frame.values))
        else:
            self._run_segment(frame, self.manifest["segments"][step.index])

    def finish(self, frame: Frame) -> list[np.ndarray]:
        """The model outputs of a finished frame."""
        return [frame.values[name] for name in self.output_names]

    def run(self, inputs: np.ndarray | list[np.ndarray] | dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference: model inputs -> model outputs (as onnxruntime returns them)."""
        return self.finish(self.execute(self.prepare(inputs)))

    # -- fabric segments --------------------------------------------------------------------------

    def _run_segment(self, frame: Frame, seg: dict) -> None:
        cfg = self.compiled.config
        fresh = [name for name in seg["inputs"] if name not in frame.packed]
        for name in fresh:
            t = self.tensors[name]
            data = pack_activation(frame.values[name].reshape(t["chw"]), cfg)
            frame.arena[t["offset"]: t["offset"] + data.size] = data
            frame.packed.add(name)
        image = self.compiled.images[seg["index"]]
        if self.keep_intermediates:
            for name in fresh:
                self._mark_written(frame, name)
            self._run_stepwise(frame, seg, image)
        else:
            frame.stats.append(self.accel.run_program(image, frame.arena))
        for name in seg["outputs"]:
            frame.values[name] = self.read_tensor(frame, name)

    def _run_stepwise(self, frame: Frame, seg: dict, image: np.ndarray) -> None:
        """Run a segment one instruction at a time and read every result back before the arena reuses it.

        Each step is the program [instruction, END] placed over the segment's own instruction list, so
        weight and table addresses stay valid.
        """
        for instr in self.compiled.programs()[seg["index"]][:-1]:
            step = image.copy()
            program = np.frombuffer(encode_program([instr], self.compiled.config.config_hash()), dtype=np.uint8)
            step[: program.size] = program
            frame.stats.append(self.accel.run_program(step, frame.arena))
            out = self._layer_output[instr.layer_id]
            frame.values[out] = self.read_tensor(frame, out)
            self._mark_written(frame, out)

    def _mark_written(self, frame: Frame, name: str) -> None:
        """Note that ``name`` is now in the arena and read back the concatenation it completes, if any.

        A concatenation is read exactly once, when its last part lands: later its bytes may hold other tensors.
        """
        frame.written.add(name)
        container = self._container.get(name)
        if container is not None and container not in frame.written and self._parts[container] <= frame.written:
            frame.values[container] = self.read_tensor(frame, container)
            self._mark_written(frame, container)

    def read_tensor(self, frame: Frame, name: str) -> np.ndarray:
        """A quantized tensor from the arena, in its ONNX shape and dtype."""
        t = self.tensors[name]
        c, h, w = t["chw"]
        raw = frame.arena[t["offset"]: t["offset"] + t["nbytes"]]
        arr = unpack_activation(raw, c, h, w, t["dtype"] == "int8", self.compiled.config)
        return arr.reshape(t["shape"])
