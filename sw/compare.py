"""The per-layer first-divergence finder: every quantized tensor of a run against onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from shiftpu.compiled.cpu_regions import onnxruntime_module
from shiftpu.errors import ShiftpuError
from shiftpu.sw.executor import Executor, Frame


@dataclass(frozen=True)
class Divergence:
    tensor: str
    layer: str
    mismatches: int
    size: int
    max_abs_diff: float


@dataclass(frozen=True)
class CompareReport:
    compared: int  #: tensors compared (fabric results and model outputs)
    first: Divergence | None

    @property
    def equal(self) -> bool:
        return self.first is None

    def text(self) -> str:
        if self.first is None:
            return f"compare: all {self.compared} tensors equal to onnxruntime, bit for bit"
        d = self.first
        return (f"compare: first difference at tensor '{d.tensor}' (layer {d.layer}): {d.mismatches} of {d.size} "
                f"values differ, max |difference| {d.max_abs_diff:g} (in quantized units for integer tensors)")


class CompareError(ShiftpuError):
    """The reference cannot be computed here."""


def _reference(model: onnx.ModelProto, names: list[str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ort = onnxruntime_module()
    if ort is None:
        raise CompareError("--compare needs onnxruntime, the reference, which is not installed here "
                           "(pip install onnxruntime, or compare on the host)")

    m = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in m.graph.output}
    for n in names:
        if n not in present:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, inputs), strict=True))


def first_divergence(ex: Executor, frame: Frame, x) -> CompareReport:
    """Compare the tensors of a finished frame (run with keep_intermediates) with onnxruntime, in layer order."""
    known = {o for n in ex.model.graph.node for o in n.output}
    order = [(la["output"], la["name"]) for la in ex.manifest["layers"] if la["output"] in known]
    order += [(o, "model output") for o in ex.output_names]
    order = [(t, la) for t, la in order if t in frame.values]
    ref = _reference(ex.model, [t for t, _ in order], ex.check_inputs(x))
    for tensor, layer in order:
        a, b = frame.values[tensor], ref[tensor]
        if a.shape != b.shape or a.dtype != b.dtype:
            return CompareReport(len(order), Divergence(tensor, layer, a.size, a.size, float("inf")))
        diff = a.astype(np.float64) - b.astype(np.float64)
        bad = int(np.count_nonzero(diff))
        if bad:
            return CompareReport(len(order), Divergence(tensor, layer, bad, a.size, float(np.abs(diff).max())))
    return CompareReport(len(order), None)
