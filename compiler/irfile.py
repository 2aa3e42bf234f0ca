"""The IR as a file: what ``shiftpu compile --dump-ir DIR`` writes after each pass and ``--from-ir FILE`` restarts from.

An IR file is JSON (``"format": "shiftpu-ir"``, ``"format_version"`` :data:`IR_VERSION`; the fields are in
docs/compiled-format.md): the graph (:func:`graph_to_json`), the pass it was written after, and what the
compilation was for (board, source file name, :class:`CompileOptions`). It holds everything the remaining passes
and code generation read, so a compilation restarted from it writes the same compiled folder, byte for byte, as
the run that dumped it. :func:`graph_from_json` inverts :func:`graph_to_json` exactly; a file of another format
or version is refused with :class:`IrFileError`.

The fabric operations are written field by field from their type hints (``compiler/ir.py``), so a new
``FabricOp`` subclass, or a new field, needs nothing here.
"""

from __future__ import annotations

import base64
import json
import types
from dataclasses import dataclass, fields, is_dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
import onnx

from shiftpu import __version__
from shiftpu.compiler.ir import CpuNode, CpuReason, CpuRegion, FabricOp, Graph, Placement, QTensor, Segment, Step
from shiftpu.compiler.passes import CompileOptions, PassObserver, passes_after
from shiftpu.errors import ShiftpuError

#: The ``format`` of an IR file.
IR_FORMAT = "shiftpu-ir"
#: The layout of an IR file; a file of another version is refused (dump it again with this shiftpu).
IR_VERSION = 1


class IrFileError(ShiftpuError):
    """An IR file that cannot be read, or cannot restart this compilation."""


@dataclass(frozen=True)
class IrFile:
    """The graph after one pass of the pipeline, and the compilation it belongs to."""

    graph: Graph
    number: int  #: the pass's place in the pipeline (0: after import)
    after: str  #: the pass's name (``passes.IMPORT`` for the graph before the first pass)
    board: str
    source: str  #: the file name of the compiled model (the manifest's ``source``)
    options: CompileOptions


# -- values, by type hint ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fabric_kinds() -> dict[str, type[FabricOp]]:
    """Every FabricOp subclass by its ``kind`` (CONV, POOL, ...)."""
    found, todo = {}, [FabricOp]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found[sub.op_kind()] = sub
            todo.append(sub)
    return found


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _optional(hint: Any) -> Any | None:
    """X for ``X | None``, else None."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def _encode(value: Any, hint: Any) -> Any:
    if (inner := _optional(hint)) is not None:
        return None if value is None else _encode(value, inner)
    origin, args = get_origin(hint), get_args(hint)
    if hint is np.ndarray:
        little = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False)
        return {"dtype": value.dtype.name, "shape": list(value.shape), "data": _b64(little.tobytes())}
    if isinstance(hint, type) and issubclass(hint, Enum):
        return value.name
    if is_dataclass(hint):
        return {f.name: _encode(getattr(value, f.name), _hints(hint)[f.name]) for f in fields(hint)}
    if origin is list:
        return [_encode(v, args[0]) for v in value]
    if origin is tuple:
        items = args if Ellipsis not in args else (args[0],) * len(value)
        return [_encode(v, h) for v, h in zip(value, items, strict=True)]
    if origin is dict:  # as pairs: keys of any type, in their order
        return [[_encode(k, args[0]), _encode(v, args[1])] for k, v in value.items()]
    if hint in (int, float, bool, str):
        return hint(value)
    raise TypeError(f"no JSON form for {hint}")


def _decode(data: Any, hint: Any) -> Any:
    if (inner := _optional(hint)) is not None:
        return None if data is None else _decode(data, inner)
    origin, args = get_origin(hint), get_args(hint)
    if hint is np.ndarray:
        dtype = np.dtype(data["dtype"])
        raw = np.frombuffer(base64.b64decode(data["data"], validate=True), dtype=dtype.newbyteorder("<"))
        return raw.astype(dtype).reshape(data["shape"])
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint[data]
    if is_dataclass(hint):
        return hint(**{f.name: _decode(data[f.name], _hints(hint)[f.name]) for f in fields(hint)})
    if origin is list:
        return [_decode(v, args[0]) for v in data]
    if origin is tuple:
        items = args if Ellipsis not in args else (args[0],) * len(data)
        return tuple(_decode(v, h) for v, h in zip(data, items, strict=True))
    if origin is dict:
        return {_decode(k, args[0]): _decode(v, args[1]) for k, v in data}
    if hint in (int, float, bool, str):
        if not isinstance(data, hint) and not (hint is float and isinstance(data, int)):
            raise TypeError(f"expected {hint.__name__}, got {data!r}")
        return hint(data)
    raise TypeError(f"no JSON form for {hint}")


# -- the graph -----------------------------------------------------------------------------------------


def graph_to_json(graph: Graph) -> dict[str, Any]:
    """The graph as JSON values. Steps are listed once; segments and CPU regions name them by index, a CPU node
    names its ONNX node by index in the model (which is kept whole, as serialised protobuf in base64)."""
    node_index = {id(n): k for k, n in enumerate(graph.model.graph.node)}
    step_index = {id(st): k for k, st in enumerate(graph.steps)}

    def step(st: Step) -> dict[str, Any]:
        if isinstance(st, CpuNode):
            if id(st.node) not in node_index:
                raise ValueError(f"CPU node '{st.name}' is not a node of the graph's model")
            return {"kind": "CPU", "node": node_index[id(st.node)], "reason": st.reason.name, "detail": st.detail,
                    "region": st.region}
        return {"kind": st.kind} | _encode(st, type(st))

    def indices(items: list) -> list[int]:
        missing = [s.name for s in items if id(s) not in step_index]
        if missing:
            raise ValueError(f"step '{missing[0]}' of a segment or CPU region is not one of the graph's steps")
        return [step_index[id(s)] for s in items]

    return {
        "model": _b64(graph.model.SerializeToString()),
        "tensors": [_encode(t, QTensor) for t in graph.tensors.values()],
        "steps": [step(st) for st in graph.steps],
        "segments": [{"index": s.index, "steps": indices(s.ops)} for s in graph.segments],
        "cpu_regions": [{"index": r.index, "steps": indices(r.nodes), "inputs": r.inputs, "outputs": r.outputs}
                        for r in graph.cpu_regions],
        "aliases": [[name, container, c0] for name, (container, c0) in graph.aliases.items()],
        "placements": [[name, _encode(p, Placement)] for name, p in graph.placements.items()],
        "arena_bytes": graph.arena_bytes,
        "warnings": list(graph.warnings),
    }


def graph_from_json(data: dict[str, Any]) -> Graph:
    """The graph that :func:`graph_to_json` wrote (``KeyError``, ``TypeError`` or ``ValueError`` when malformed)."""
    model = onnx.ModelProto.FromString(base64.b64decode(data["model"], validate=True))
    nodes = list(model.graph.node)
    kinds = _fabric_kinds()

    def step(d: dict[str, Any]) -> Step:
        kind = d["kind"]
        if kind == "CPU":
            return CpuNode(nodes[d["node"]], CpuReason[d["reason"]], d["detail"], d["region"])
        if kind not in kinds:
            raise ValueError(f"unknown step kind '{kind}' (known: CPU, {', '.join(sorted(kinds))})")
        return _decode(d, kinds[kind])

    steps = [step(d) for d in data["steps"]]
    tensors = [_decode(t, QTensor) for t in data["tensors"]]
    return Graph(
        model, tensors={t.name: t for t in tensors}, steps=steps,
        segments=[Segment(s["index"], [steps[k] for k in s["steps"]]) for s in data["segments"]],
        cpu_regions=[CpuRegion(r["index"], [steps[k] for k in r["steps"]], list(r["inputs"]), list(r["outputs"]))
                     for r in data["cpu_regions"]],
        aliases={name: (container, int(c0)) for name, container, c0 in data["aliases"]},
        placements={name: _decode(p, Placement) for name, p in data["placements"]},
        arena_bytes=int(data["arena_bytes"]), warnings=list(data["warnings"]))


# -- files ---------------------------------------------------------------------------------------------


def ir_file_name(number: int, after: str) -> str:
    """``NN_<pass>.json``: the file the graph after pass ``number`` is dumped to."""
    return f"{number:02d}_{after}.json"


def write_ir(path: str | Path, ir: IrFile) -> None:
    """Write an IR file."""
    doc = {"format": IR_FORMAT, "format_version": IR_VERSION, "shiftpu_version": __version__,
           "pass": {"number": ir.number, "name": ir.after}, "board": ir.board, "source": ir.source,
           "options": ir.options.to_dict(), "graph": graph_to_json(ir.graph)}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def read_ir(path: str | Path) -> IrFile:
    """Read an IR file; :class:`IrFileError` names what is wrong with one that is not a readable IR file of
    this version."""
    path = Path(path)
    if not path.is_file():
        raise IrFileError(f"{path}: no such IR file")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IrFileError(f"{path}: not a shiftpu IR file (not readable JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != IR_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise IrFileError(f"{path}: not a shiftpu IR file (format {found!r}, expected {IR_FORMAT!r})")
    if doc.get("format_version") != IR_VERSION:
        raise IrFileError(f"{path}: IR format version {doc.get('format_version')!r}, but this shiftpu "
                          f"({__version__}) reads version {IR_VERSION} only: dump the IR again with this shiftpu "
                          "(shiftpu compile MODEL --dump-ir DIR)")
    try:
        after = doc["pass"]["name"]
        passes_after(after)
        return IrFile(graph_from_json(doc["graph"]), int(doc["pass"]["number"]), after, doc["board"],
                      doc["source"], CompileOptions.from_dict(doc["options"]))
    except (KeyError, IndexError, TypeError, ValueError, ShiftpuError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise IrFileError(f"{path}: malformed IR file: {what}") from None


@dataclass(frozen=True)
class PassDump:
    """A :data:`PassObserver` that writes the graph after import and after each pass, numbered by its place in
    the pipeline: ``NN_<pass>.txt`` (``Graph.describe``) in ``text_dir``, ``NN_<pass>.json`` (an IR file) in
    ``ir_dir``."""

    board: str
    source: str
    options: CompileOptions
    text_dir: Path | None = None
    ir_dir: Path | None = None

    def __call__(self, number: int, after: str, graph: Graph) -> None:
        if self.text_dir is not None:
            self.text_dir.mkdir(parents=True, exist_ok=True)
            (self.text_dir / f"{number:02d}_{after}.txt").write_text(graph.describe())
        if self.ir_dir is not None:
            self.ir_dir.mkdir(parents=True, exist_ok=True)
            write_ir(self.ir_dir / ir_file_name(number, after),
                     IrFile(graph, number, after, self.board, self.source, self.options))


def pass_dump(board: str, source: str, options: CompileOptions, text_dir: str | Path | None = None,
              ir_dir: str | Path | None = None) -> PassObserver | None:
    """The observer that writes the dumps asked for (None when neither is)."""
    if text_dir is None and ir_dir is None:
        return None
    return PassDump(board, source, options, None if text_dir is None else Path(text_dir),
                    None if ir_dir is None else Path(ir_dir))
