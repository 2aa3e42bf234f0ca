"""CPU regions at run time: the CPU side of a compiled model, one onnxruntime session per region.

The compiler groups consecutive CPU nodes of the schedule into regions and writes each as an ONNX model of its
own (``cpu_region<k>.onnx`` in the compiled folder). :func:`load_regions` turns them into runners once, when the
model is loaded; a frame then pays one ``run`` per region. The onnxruntime sessions run with graph
optimisations off: the same kernels that compute the whole QDQ model as the reference, so a region's results
equal onnxruntime's on the whole graph bit for bit. Where onnxruntime is not installed (the PYNQ-Z2's armv7
image has no wheel) or :attr:`CpuRuntime.NUMPY` is asked for, a region's nodes run one by one on the numpy
kernels of :mod:`shiftpu.compiled.cpu_ops`, which cover the usual boundary operators (quantize, dequantize, Sigmoid,
pooling, reshapes, element-wise arithmetic); a region with another operator is then refused when it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from shiftpu.compiled.cpu_ops import has_kernel, run_node
from shiftpu.errors import ShiftpuError


class CpuRuntime(str, Enum):
    """What executes the CPU regions."""

    AUTO = "auto"  #: onnxruntime where it imports, else numpy
    ONNXRUNTIME = "onnxruntime"
    NUMPY = "numpy"  #: the numpy kernels of shiftpu.compiled.cpu_ops (the fallback)


class CpuRuntimeError(ShiftpuError):
    """A CPU region cannot run with the CPU runtime available or asked for."""


def onnxruntime_module() -> Any | None:
    """The onnxruntime module, or None where it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def resolve(runtime: CpuRuntime | str) -> CpuRuntime:
    """The runtime that will run the regions: AUTO becomes onnxruntime where it imports, numpy elsewhere."""
    runtime = CpuRuntime(runtime)
    have_ort = onnxruntime_module() is not None
    if runtime is CpuRuntime.AUTO:
        return CpuRuntime.ONNXRUNTIME if have_ort else CpuRuntime.NUMPY
    if runtime is CpuRuntime.ONNXRUNTIME and not have_ort:
        raise CpuRuntimeError("the onnxruntime CPU runtime was asked for, but onnxruntime is not installed "
                              "(pip install onnxruntime)")
    return runtime


def ort_session(model_bytes: bytes) -> Any:
    """An onnxruntime session of a region's model, with the reference's settings (graph optimisations off)."""
    ort = onnxruntime_module()
    if ort is None:
        raise CpuRuntimeError("onnxruntime is not installed (pip install onnxruntime)")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # one thread per session: the pipeline already runs the CPU stages beside each other, and onnxruntime's
    # spinning worker threads, competing with them for the cores, made a region up to 30 times slower (measured)
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: a region's unused-initializer notes are not the user's concern
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


@dataclass
class OrtRegion:
    """A region run by one onnxruntime session."""

    index: int
    inputs: list[str]
    outputs: list[str]
    session: Any

    def run(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, {name: values[name] for name in self.inputs})
        return dict(zip(self.outputs, outs, strict=True))


@dataclass
class NumpyRegion:
    """A region whose nodes run one by one on the numpy kernels."""

    index: int
    inputs: list[str]
    outputs: list[str]
    nodes: list[onnx.NodeProto]
    constants: dict[str, np.ndarray]

    def run(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        local = dict(self.constants)
        local.update((name, values[name]) for name in self.inputs)
        for node in self.nodes:
            outs = run_node(node, [local[i] if i else None for i in node.input])
            local.update(zip(node.output, outs, strict=False))
        return {name: local[name] for name in self.outputs}


CpuRegionRunner = OrtRegion | NumpyRegion


def load_region(index: int, model_bytes: bytes, runtime: CpuRuntime) -> CpuRegionRunner:
    """The runner of one region from its ONNX model; ``runtime`` is ONNXRUNTIME or NUMPY (see :func:`resolve`)."""
    model = onnx.ModelProto.FromString(model_bytes)
    inits = {i.name for i in model.graph.initializer}
    inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    outputs = [vi.name for vi in model.graph.output]
    if runtime is CpuRuntime.ONNXRUNTIME:
        return OrtRegion(index, inputs, outputs, ort_session(model_bytes))
    missing = [n for n in model.graph.node if not has_kernel(n)]
    if missing:
        n = missing[0]
        why = ("onnxruntime is not installed" if onnxruntime_module() is None
               else "the numpy CPU runtime was asked for")
        raise CpuRuntimeError(
            f"CPU region {index}: node '{n.name or n.output[0]}' ({n.op_type}) has no numpy kernel "
            f"({len(missing)} of its {len(model.graph.node)} nodes have none) and {why}: run it with onnxruntime "
            "(pip install onnxruntime)")
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return NumpyRegion(index, inputs, outputs, list(model.graph.node), constants)


def load_regions(count: int, region_bytes: Callable[[int], bytes], runtime: CpuRuntime | str = CpuRuntime.AUTO
                 ) -> list[CpuRegionRunner]:
    """Runners of regions 0..count-1 (``region_bytes(k)``: the ONNX model of region k), all on one runtime."""
    chosen = resolve(runtime)
    return [load_region(k, region_bytes(k), chosen) for k in range(count)]
