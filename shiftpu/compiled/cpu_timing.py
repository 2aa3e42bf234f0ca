"""CPU time of a compiled model's CPU side, measured on this host: per CPU region and per CPU node.

:func:`measure_cpu_times` loads the regions as the executor does (one onnxruntime session each, or the numpy
kernels), runs each on representative inputs (random values of each region input's dtype and shape, or values the
caller gives, e.g. those of a real frame), and takes the median of ``runs`` runs after a warm-up. The time of each
node comes from onnxruntime's profiler (its kernel time) or, on the numpy kernels, from timing each node's kernel.
These are times on the machine that measures them, not on a board's ARM core: every figure says so
(:attr:`CpuTimes.label`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from shiftpu.compiled.cpu_ops import run_node
from shiftpu.compiled.cpu_regions import CpuRuntime, NumpyRegion, load_region, onnxruntime_module, resolve
from shiftpu.compiled.folder import CompiledFolder, read_folder

#: Runs per figure (after the warm-up) unless asked otherwise.
DEFAULT_RUNS = 20
#: Runs before the timed ones (session set-up, first-touch allocation).
WARMUP_RUNS = 2


@dataclass(frozen=True)
class NodeTime:
    """Median time of one CPU node of a region (ms, measured on this host)."""

    region: int
    name: str  #: the node's name, or its first output where it has none
    op: str
    #: None where onnxruntime ran the node as several kernels that cannot be told apart from other nodes' (two or
    #: more expanded functions in one region); the region's time includes it
    median_ms: float | None


@dataclass(frozen=True)
class RegionTime:
    """Median time of one CPU region run as a whole (one session call), and of each of its nodes."""

    index: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    median_ms: float
    nodes: tuple[NodeTime, ...]


@dataclass(frozen=True)
class CpuTimes:
    """CPU time of a compiled model's CPU regions and nodes, measured on this host."""

    runtime: str  #: what ran the regions: onnxruntime or numpy
    runs: int  #: timed runs per figure (medians)
    machine: str  #: platform.machine() of the host
    cores: int  #: os.cpu_count() of the host
    regions: tuple[RegionTime, ...]
    processor: str = ""  #: the host's processor model (:func:`host_processor`), where known

    @property
    def host(self) -> str:
        """The host in words: its processor, architecture and cores."""
        return ", ".join(([self.processor] if self.processor else []) + [self.machine, f"{self.cores} cores"])

    @property
    def label(self) -> str:
        return f"measured on this host ({self.host}), median of {self.runs} runs"

    @property
    def total_ms(self) -> float:
        """The CPU time of one frame: every region once."""
        return sum(r.median_ms for r in self.regions)

    @property
    def nodes(self) -> list[NodeTime]:
        return [n for r in self.regions for n in r.nodes]

    def to_json(self) -> dict:
        return {"kind": self.label, "label": self.label, "runtime": self.runtime, "runs": self.runs,
                "machine": self.machine, "cores": self.cores, "processor": self.processor, "host": self.host,
                "total_ms": round(self.total_ms, 4),
                "regions": [asdict(r) | {"median_ms": round(r.median_ms, 4),
                                         "nodes": [asdict(n) | {"median_ms": _round(n.median_ms)} for n in r.nodes]}
                            for r in self.regions]}


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 4)


def host_processor() -> str:
    """The processor model of this host: /proc/cpuinfo's model name (Linux), else platform.processor(); "" where
    neither names one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor()


def representative_input(vi: onnx.ValueInfoProto, rng: np.random.Generator) -> np.ndarray:
    """Random values of a tensor's dtype and shape: normal floats, integers over their range (int64/int32: 0..3)."""
    t = vi.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
    shape = tuple(max(d.dim_value, 1) for d in t.shape.dim)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    info = np.iinfo(dtype)
    hi = min(int(info.max), 3) if dtype.itemsize > 2 else int(info.max)
    return rng.integers(max(int(info.min), -hi - 1), hi, shape, endpoint=True).astype(dtype)


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def _node_label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _ort_node_times(index: int, model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int
                    ) -> tuple[NodeTime, ...]:
    """Each node's kernel time from onnxruntime's profiler, on a copy of the region whose nodes have unique names."""
    ort = onnxruntime_module()
    named = onnx.ModelProto()
    named.CopyFrom(model)
    labels = {}
    for i, node in enumerate(named.graph.node):
        labels[f"n{i}"] = (_node_label(node), node.op_type)
        node.name = f"n{i}"
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "region")
        sess = ort.InferenceSession(named.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for _ in range(WARMUP_RUNS + runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    samples: dict[str, list[float]] = {name: [] for name in labels}
    run_spans = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run"][-runs:]
    # kernels of nodes onnxruntime expands into others (functions such as GroupNormalization) carry names of their
    # own: their time, per run, goes to the one node that has no kernel of its own name
    expanded = [0.0] * len(run_spans)
    for e in events:
        full = e.get("name", "")
        if e.get("cat") != "Node" or not full.endswith("_kernel_time"):
            continue
        name = full.removesuffix("_kernel_time")
        if name in samples:
            samples[name].append(e["dur"] * 1e-6)
            continue
        for r, (start, end) in enumerate(run_spans):
            if start <= e["ts"] <= end:
                expanded[r] += e["dur"] * 1e-6
    unnamed = [n for n, s in samples.items() if not s]
    if len(unnamed) == 1 and any(expanded):
        samples[unnamed[0]] = expanded
    return tuple(NodeTime(index, *labels[n], _median_ms(s[-runs:]) if s else None) for n, s in samples.items())


def _numpy_node_times(region: NumpyRegion, feeds: dict[str, np.ndarray], runs: int) -> tuple[NodeTime, ...]:
    """Each node's numpy kernel, timed on the region's own intermediate values."""
    samples: list[list[float]] = [[] for _ in region.nodes]
    for _ in range(WARMUP_RUNS + runs):
        local = dict(region.constants) | feeds
        for k, node in enumerate(region.nodes):
            args = [local[i] if i else None for i in node.input]
            t0 = time.perf_counter()
            outs = run_node(node, args)
            samples[k].append(time.perf_counter() - t0)
            local.update(zip(node.output, outs, strict=False))
    return tuple(NodeTime(region.index, _node_label(n), n.op_type, _median_ms(s[-runs:]))
                 for n, s in zip(region.nodes, samples, strict=True))


def measure_cpu_times(folder: str | Path | CompiledFolder, runs: int = DEFAULT_RUNS,
                      runtime: CpuRuntime | str = CpuRuntime.AUTO, values: Mapping[str, np.ndarray] | None = None,
                      seed: int = 0) -> CpuTimes:
    """Median CPU time of every CPU region of a compiled model and of each of its nodes, measured on this host.

    ``values``: tensors by name to feed the regions (a frame's values); any region input not among them gets
    random values of its dtype and shape (:func:`representative_input`).
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    compiled = folder if isinstance(folder, CompiledFolder) else read_folder(folder)
    chosen = resolve(runtime)
    rng = np.random.default_rng(seed)
    regions = []
    for k in range(len(compiled.manifest["cpu_regions"])):
        data = compiled.region_bytes(k)
        model = onnx.ModelProto.FromString(data)
        runner = load_region(k, data, chosen)
        inits = {i.name for i in model.graph.initializer}
        feeds = {vi.name: np.asarray(values[vi.name]) if values is not None and vi.name in values
                 else representative_input(vi, rng) for vi in model.graph.input if vi.name not in inits}
        samples = []
        for _ in range(WARMUP_RUNS + runs):
            t0 = time.perf_counter()
            runner.run(feeds)
            samples.append(time.perf_counter() - t0)
        nodes = (_ort_node_times(k, model, feeds, runs) if chosen is CpuRuntime.ONNXRUNTIME
                 else _numpy_node_times(runner, feeds, runs))
        regions.append(RegionTime(k, tuple(runner.inputs), tuple(runner.outputs), _median_ms(samples[-runs:]), nodes))
    return CpuTimes(chosen.value, runs, platform.machine() or "unknown machine", os.cpu_count() or 1, tuple(regions),
                    host_processor())


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_cpu_nodes(cpu: dict, on_the_board: bool = False) -> list[str]:
    """The lines of a table of :meth:`CpuTimes.to_json`: each region's time, then each of its nodes' (ms).
    ``on_the_board``: measured on the board itself (else the label says the figures are not the board's ARM's)."""
    where = "" if on_the_board else "; not the board's ARM"
    lines = [f"CPU regions and nodes, ms per frame ({cpu['runtime']}; {cpu['label']}{where})",
             f"{'region':>6} {'node':<34} {'op':<22} {'ms':>10}"]
    for r in cpu["regions"]:
        lines.append(f"{r['index']:>6} {'(whole region, one session call)':<34} {'':<22} {_ms(r['median_ms']):>10}")
        lines += [f"{'':>6} {n['name'][:34]:<34} {n['op'][:22]:<22} {_ms(n['median_ms']):>10}" for n in r["nodes"]]
    return lines
