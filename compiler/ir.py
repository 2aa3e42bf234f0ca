"""The compiler's typed intermediate representation.

A :class:`Graph` is the quantized ONNX model seen as a list of *steps* in execution order: fabric
operations (:class:`ConvOp`, :class:`PoolOp`, :class:`AddOp`, :class:`MoveOp`, :class:`ConcatOp`) that read
and write quantized tensors (:class:`QTensor`, integers with a power-of-two scale), and CPU nodes
(:class:`CpuNode`, an ONNX node left to the processor, with the reason it is not on the fabric). Consecutive CPU
nodes form a :class:`CpuRegion`, which the runtime executes as one onnxruntime session. Passes fill in tiling,
dataflow, partition, CPU regions and placement, each returning a new graph and leaving its input as it was (the
graphs share what a pass does not change, so nothing a graph holds is changed in place).
``Graph.describe()`` prints a graph for ``--dump-passes``; ``compiler/irfile.py`` writes it as JSON for ``--dump-ir``
and reads it back for ``--from-ir``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import onnx

from shiftpu.arch.isa import Dataflow
from shiftpu.arch.numerics import ActFormat, Activation
from shiftpu.errors import ShiftpuError


class CompileError(ShiftpuError):
    """A model cannot be compiled: the message names the node and the limit."""


@dataclass(frozen=True)
class QTensor:
    """A quantized activation tensor: integer values times 2^exp (zero point 0)."""

    name: str  #: the ONNX name (the QuantizeLinear output that produces it)
    onnx_shape: tuple[int, ...]  #: shape in the ONNX model, batch included: (1, C, H, W) or (1, K)
    fmt: ActFormat
    exp: int  #: scale = 2^exp

    @property
    def chw(self) -> tuple[int, int, int]:
        """The tensor as the accelerator sees it: C x H x W ((1, K) is K x 1 x 1)."""
        s = self.onnx_shape[1:]
        return (s[0], s[1], s[2]) if len(s) == 3 else (int(np.prod(s)), 1, 1)


class CpuReason(Enum):
    """Why a node runs on the CPU."""

    NO_FABRIC_OP = "no fabric implementation of this operator"
    QUANT_BOUNDARY = "converts between float and quantized values at the edge of the fabric"
    FLOAT_OPERANDS = "operates on float values (its inputs or output are not quantized tensors)"
    UNSUPPORTED_ATTRIBUTES = "attributes outside what the fabric implements"
    SHAPE_ONLY = "reshapes a float tensor (no arithmetic)"


@dataclass
class CpuNode:
    """An ONNX node executed on the CPU."""

    node: onnx.NodeProto
    reason: CpuReason
    detail: str = ""
    region: int | None = None  #: index of the CPU region that runs it (filled by the partition)

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]

    @property
    def why(self) -> str:
        """The reason in words, with its detail."""
        return self.reason.value + (f": {self.detail}" if self.detail else "")

    @property
    def inputs(self) -> list[str]:
        return [i for i in self.node.input if i]

    @property
    def outputs(self) -> list[str]:
        return list(self.node.output)

    def describe(self) -> str:
        where = "cpu" if self.region is None else f"cpu{self.region}"
        return (f"{where:<4} {self.node.op_type:<18} {self.name}: {', '.join(self.inputs)} -> {', '.join(self.outputs)}"
                f"  [{self.why}]")


@dataclass(frozen=True)
class ConvTiling:
    """Column-prior tiling of one CONV: strip width and channel tiles (see docs/architecture.md)."""

    strip_w: int
    ic_tile: int
    oc_tile: int


@dataclass
class FabricOp:
    """Base of the operations the accelerator executes; ``sources`` are the ONNX nodes it replaces."""

    name: str
    inputs: list[str]
    output: str
    sources: list[str]
    act: Activation = Activation.NONE
    leaky_shift: int = 0

    @classmethod
    def op_kind(cls) -> str:
        """The kind of the operations of this class: the opcode's name (CONV for ConvOp)."""
        return cls.__name__.removesuffix("Op").upper()

    @property
    def kind(self) -> str:
        return self.op_kind()

    def describe(self) -> str:
        return f"fab  {self.kind:<18} {self.name}: {', '.join(self.inputs)} -> {self.output}{self._extra()}"

    def _extra(self) -> str:
        return ""


@dataclass
class ConvOp(FabricOp):
    """Convolution (dense or depthwise; Gemm/MatMul as 1x1) with bias, requantisation and activation."""

    weights: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1, 1), np.int8))  #: OC x ICg x KH x KW
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  #: at the accumulator scale
    shift: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  #: requantisation shift per OC
    stride: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  #: top, left, bottom, right
    depthwise: bool = False
    tiling: ConvTiling | None = None
    dataflow: Dataflow | None = None
    #: estimated utilisation of each dataflow considered (filled by the dataflow choice)
    options: dict[Dataflow, float] = field(default_factory=dict)

    @property
    def kh(self) -> int:
        return int(self.weights.shape[2])

    @property
    def kw(self) -> int:
        return int(self.weights.shape[3])

    def _extra(self) -> str:
        oc, icg, kh, kw = self.weights.shape
        s = f"  k={kh}x{kw} s={self.stride} pads={self.pads} oc={oc} icg={icg}"
        s += " depthwise" if self.depthwise else ""
        s += f" act={self.act.name}" + (f"/2^-{self.leaky_shift}" if self.act is Activation.LEAKY else "")
        if self.tiling:
            s += f" strip_w={self.tiling.strip_w} ic_tile={self.tiling.ic_tile} oc_tile={self.tiling.oc_tile}"
        if self.dataflow is not None:
            s += f" dataflow={self.dataflow.name}"
        return s


@dataclass
class PoolOp(FabricOp):
    """Max pooling with requantisation."""

    kernel: int = 2
    stride: int = 2
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    out_shift: int = 0

    def _extra(self) -> str:
        return f"  k={self.kernel} s={self.stride} pads={self.pads} out_shift={self.out_shift}"


@dataclass
class AddOp(FabricOp):
    """Element-wise add with alignment shifts and requantisation."""

    shift_a: int = 0
    shift_b: int = 0
    out_shift: int = 0

    def _extra(self) -> str:
        return f"  shift_a={self.shift_a} shift_b={self.shift_b} out_shift={self.out_shift} act={self.act.name}"


@dataclass
class MoveOp(FabricOp):
    """Copy with requantisation, optionally nearest-upsampled 2x."""

    upsample: int = 1
    out_shift: int = 0

    def _extra(self) -> str:
        return f"  upsample={self.upsample} out_shift={self.out_shift}"


@dataclass
class ConcatOp(FabricOp):
    """Channel concatenation: producers write into the result in place (no instruction of its own)."""

    def _extra(self) -> str:
        return "  (in place)"


Step = FabricOp | CpuNode


@dataclass(frozen=True)
class Placement:
    """Where a quantized tensor lives in the activation arena."""

    offset: int  #: bytes from ACT_BASE
    nbytes: int


@dataclass
class Segment:
    """A fabric subgraph: consecutive fabric steps run from one START."""

    index: int
    ops: list[FabricOp]


@dataclass
class CpuRegion:
    """Consecutive CPU nodes of the schedule (between two fabric segments), run as one onnxruntime session.

    ``inputs`` are what its nodes read from outside it (model inputs, fabric results, earlier regions; constants
    excluded: they travel inside the region's model); ``outputs`` what fabric segments, later regions or the
    model outputs read of its results.
    """

    index: int
    nodes: list[CpuNode]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class Graph:
    """The model during compilation."""

    model: onnx.ModelProto  #: the quantized ONNX model after import (constants folded)
    tensors: dict[str, QTensor] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    cpu_regions: list[CpuRegion] = field(default_factory=list)
    #: tensors stored inside another (in-place concatenation): name -> (containing tensor, first channel)
    aliases: dict[str, tuple[str, int]] = field(default_factory=dict)
    placements: dict[str, Placement] = field(default_factory=dict)
    arena_bytes: int = 0
    #: things the user should know that do not stop compilation (e.g. onnxruntime may round a sum)
    warnings: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        inits = {i.name for i in self.model.graph.initializer}
        return [i.name for i in self.model.graph.input if i.name not in inits]

    @property
    def outputs(self) -> list[str]:
        return [o.name for o in self.model.graph.output]

    def fabric_ops(self) -> list[FabricOp]:
        return [s for s in self.steps if isinstance(s, FabricOp)]

    def cpu_nodes(self) -> list[CpuNode]:
        return [s for s in self.steps if isinstance(s, CpuNode)]

    def substitute(self, new: Mapping[int, Step]) -> Graph:
        """The graph with each step whose ``id`` is a key of ``new`` replaced by its value, in the steps, the
        segments and the CPU regions alike."""
        def sub(st: Step) -> Step:
            return new.get(id(st), st)

        return replace(self, steps=[sub(st) for st in self.steps],
                       segments=[Segment(s.index, [sub(op) for op in s.ops]) for s in self.segments],
                       cpu_regions=[replace(r, nodes=[sub(n) for n in r.nodes]) for r in self.cpu_regions])

    def describe(self) -> str:
        """A readable listing: tensors, steps (in order), segments, placements."""
        lines = [f"inputs: {', '.join(self.inputs)}", f"outputs: {', '.join(self.outputs)}", "", "quantized tensors:"]
        for t in self.tensors.values():
            sign = "int" if t.fmt.signed else "uint"
            p = self.placements.get(t.name)
            where = f"  @ {p.offset:#x} ({p.nbytes} B)" if p else ""
            if t.name in self.aliases:
                where += f" inside {self.aliases[t.name][0]} from channel {self.aliases[t.name][1]}"
            lines.append(f"  {t.name}: {sign}{t.fmt.bits} {t.chw} scale 2^{t.exp}{where}")
        lines += ["", "steps:"]
        seg_of = {id(op): s.index for s in self.segments for op in s.ops}
        for st in self.steps:
            tag = f"[seg {seg_of[id(st)]}] " if id(st) in seg_of else ""
            lines.append(f"  {tag}{st.describe()}")
        if self.cpu_regions:
            lines += ["", "CPU regions:"]
            lines += [f"  cpu{r.index}: {len(r.nodes)} node(s), {', '.join(r.inputs) or '-'} -> {', '.join(r.outputs) or '-'}"
                      for r in self.cpu_regions]
        if self.arena_bytes:
            lines.append(f"\narena: {self.arena_bytes} bytes")
        return "\n".join(lines) + "\n"
