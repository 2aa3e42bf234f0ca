"""Hybrid dataflow: for each CONV, the PE-array mapping and tiling with the fewest estimated cycles.

Dense convolutions choose between PIXEL (output pixels x output channels) and INPUT_CHANNEL (input
channels summed by the adder tree x output channels); depthwise convolutions use DEPTHWISE. The
estimated utilisation of the best tiling of every option is kept for the report. When the target
accelerator lacks DEPTHWISE, a depthwise convolution runs as a dense one with a diagonal weight tensor.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shiftpu.arch.isa import Dataflow
from shiftpu.compiler.ir import CompileError, ConvOp, ConvTiling, QTensor
from shiftpu.compiler.lower import conv_instruction
from shiftpu.compiler.perf import CostModel
from shiftpu.compiler.tiling import candidates


def options(op: ConvOp) -> list[Dataflow]:
    return [Dataflow.DEPTHWISE] if op.depthwise else [Dataflow.PIXEL, Dataflow.INPUT_CHANNEL]


def best_tiling(op: ConvOp, x: QTensor, y: QTensor, dataflow: Dataflow,
                model: CostModel) -> tuple[ConvTiling, int, float]:
    """(tiling, estimated cycles, utilisation) of the fastest tiling for one dataflow."""
    best = None
    cfg = model.config
    for t in candidates(op, x, y, dataflow, cfg):
        cost = model.cost(conv_instruction(op, x, y, t, dataflow))
        key = (cost.cycles, -t.strip_w, -t.oc_tile)
        if best is None or key < best[0]:
            best = (key, t, cost)
    assert best is not None
    return best[1], best[2].cycles, best[2].utilization(cfg)


def densify(op: ConvOp) -> ConvOp:
    """The dense CONV equivalent to a depthwise one (weight o, i is zero unless i == o)."""
    c, _, kh, kw = op.weights.shape
    dense = np.zeros((c, c, kh, kw), dtype=op.weights.dtype)
    dense[np.arange(c), np.arange(c)] = op.weights[:, 0]
    return replace(op, weights=dense, depthwise=False)


def choose(op: ConvOp, x: QTensor, y: QTensor, model: CostModel,
           allowed: frozenset[Dataflow] = frozenset(Dataflow)) -> ConvOp:
    """``op`` with its ``dataflow``, ``tiling`` and ``options`` (utilisation per dataflow considered) chosen.

    A dataflow for which no tiling passes ``shiftpu.arch.limits`` is skipped; a depthwise convolution
    whose DEPTHWISE mapping is not allowed or does not fit runs as a dense one.
    """
    if op.depthwise and Dataflow.DEPTHWISE not in allowed:
        op = densify(op)
    results, problems = _evaluate(op, x, y, model, allowed)
    if not results and op.depthwise:
        op = densify(op)
        results, problems = _evaluate(op, x, y, model, allowed)
    if not results:
        if problems:
            raise problems[0]
        names = ", ".join(sorted(df.name for df in allowed))
        raise CompileError(f"node '{op.name}': no dense dataflow among the accelerator's ({names})")
    pick = min(results, key=lambda df: results[df][1])
    return replace(op, options={df: r[2] for df, r in results.items()}, dataflow=pick, tiling=results[pick][0])


def _evaluate(op: ConvOp, x: QTensor, y: QTensor, model: CostModel, allowed: frozenset[Dataflow]) -> tuple[dict[Dataflow, tuple[ConvTiling, int, float]], list[CompileError]]:
    results, problems = {}, []
    for df in options(op):
        if df not in allowed:
            continue
        try:
            results[df] = best_tiling(op, x, y, df, model)
        except CompileError as e:
            problems.append(e)
    return results, problems
