"""Second-order sensitivity of a float model's outputs to perturbations of its weights and activations.

Quantizing a tensor t (a layer's weights, or an activation) adds a perturbation d to it. On the calibration
inputs x_n, the error this causes in the model outputs y, relative to their energy, is to second order

    L(d) = sum_n ||y_n(t + d) - y_n(t)||^2 / sum_n ||y_n||^2  ~=  d^T G d,   G = sum_n J_n^T J_n / sum_n ||y_n||^2,

with J_n the Jacobian of the outputs with respect to t at x_n: G is the Gauss-Newton matrix, the Hessian of L
(halved) at d = 0, as in HAWQ (Dong et al.). Like HAWQ-V2 we take d to be spread evenly over the elements, so
that L ~= Tr(G) * E[d_i^2]: ``Curvature.trace`` is Tr(G), estimated with Hutchinson's method,
Tr(G) = E_v[v^T G v] over random +-1 vectors v, where v^T G v = sum_n ||J_n v||^2 / sum_n ||y_n||^2 and
J_n v = (y_n(t + h v) - y_n(t - h v)) / 2h is two onnxruntime runs of the float model (central differences).
No gradient code is needed: any model onnxruntime runs will do.

For an activation the perturbation differs per sample (v is drawn per sample), and Tr(G) sums the curvature of
all its elements in one sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from shiftpu.compiler.quant.calibrate import TensorStats, batches, input_spec, session
from shiftpu.compiler.quant.onnxio import GraphIndex, ModelError

#: Random +-1 vectors per tensor (Hutchinson probes).
PROBES = 16
#: Calibration samples the curvature is estimated on.
SAMPLES = 32
#: Finite-difference step, relative to the root mean square of the tensor's values.
STEP = 1e-3


@dataclass(frozen=True)
class Curvature:
    """Tr(G) of one tensor (module docstring): the model's relative output error per unit of mean squared
    perturbation of the tensor's elements."""

    tensor: str
    elements: int  #: elements perturbed: all of a constant, one sample's of an activation
    trace: float  #: Hutchinson estimate of Tr(G)
    stderr: float  #: its standard error over the probes
    probes: int

    def output_error(self, mean_square: float) -> float:
        """Predicted relative output error energy of a perturbation of mean square ``mean_square`` per element."""
        return self.trace * mean_square


def _with_perturbations(model: onnx.ModelProto, tensors: list[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The model with ``t + delta_t`` in place of each tensor t (delta_t a new float input); the inputs' names."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    taken = {n for node in g.node for n in (*node.input, *node.output)} | {i.name for i in g.initializer} \
        | {i.name for i in g.input}
    delta, before = {}, {}
    for t in tensors:
        for kind, table in (("delta", delta), ("unperturbed", before)):
            name, k = f"{t}__{kind}", 1
            while name in taken:
                name, k = f"{t}__{kind}{k}", k + 1
            taken.add(name)
            table[t] = name
    targets = set(tensors)
    nodes = []
    for init in g.initializer:
        if init.name in targets:
            nodes.append(helper.make_node("Add", [before[init.name], delta[init.name]], [init.name]))
            init.name = before[init.name]
    for inp in g.input:
        if inp.name in targets:  # an initializer also listed as an input
            inp.name = before[inp.name]
    for node in g.node:
        outs = list(node.output)
        node.output[:] = [before[o] if o in targets else o for o in outs]
        nodes.append(node)
        nodes += [helper.make_node("Add", [before[o], delta[o]], [o]) for o in outs if o in targets]
    del g.node[:]
    g.node.extend(nodes)
    g.input.extend(helper.make_tensor_value_info(delta[t], TensorProto.FLOAT, None) for t in tensors)
    return m, delta


def curvatures(model: onnx.ModelProto, data: np.ndarray, tensors: list[str], probes: int = PROBES,
               samples: int = SAMPLES, seed: int = 0) -> tuple[dict[str, Curvature], dict[str, TensorStats]]:
    """Tr(G) of each named tensor of a float model on the first ``samples`` calibration inputs (module docstring),
    and what the float model's activations among them took on those inputs (for their quantization error)."""
    g = GraphIndex(model)
    missing = [t for t in tensors if g.const(t) is None and t not in g.producer]
    if missing:
        raise ModelError(f"no tensor {', '.join(map(repr, missing))} in the model")
    input_name, shape = input_spec(model)
    probe_model, delta = _with_perturbations(model, tensors)
    activations = [t for t in tensors if g.const(t) is None]
    sess = session(probe_model, activations)
    outputs = list(g.graph_outputs)
    chunks = list(batches(data[:samples], shape))
    if not chunks:
        raise ModelError(f"{len(data)} calibration samples: the model's fixed batch is {shape[0]}")
    constants = {t: np.asarray(g.const(t), np.float32) for t in tensors if g.const(t) is not None}

    def run(batch: np.ndarray, deltas: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        feeds = {input_name: batch, **deltas}
        return sess.run(names, feeds)

    zero_feeds: list[dict[str, np.ndarray]] = []
    stats = {t: TensorStats() for t in activations}
    energy = 0.0
    for batch in chunks:
        zeros = {delta[t]: np.zeros_like(c) for t, c in constants.items()}
        # activations' shapes come from a first run with every delta 0 (a 0 of any broadcastable shape)
        first = run(batch, {**zeros, **{delta[t]: np.zeros((1,), np.float32) for t in activations}},
                    outputs + activations)
        for t, v in zip(activations, first[len(outputs):], strict=True):
            zeros[delta[t]] = np.zeros_like(v)
            stats[t].add(v)
        energy += sum(float(np.square(y, dtype=np.float64).sum()) for y in first[: len(outputs)])
        zero_feeds.append(zeros)
    if energy == 0.0:
        raise ModelError("the model's outputs are all zero on the calibration data: no output error to weigh")
    rms = {t: float(np.sqrt(np.mean(np.square(c, dtype=np.float64)))) for t, c in constants.items()}
    rms.update({t: float(np.sqrt(np.mean(np.square(s.values, dtype=np.float64)))) for t, s in stats.items()})
    rng = np.random.default_rng(seed)
    result = {}
    for t in tensors:
        h = STEP * (rms[t] or 1.0)
        quads = []
        for _ in range(probes):
            v_const = rng.choice(np.float32([-1, 1]), size=constants[t].shape) if t in constants else None
            total = 0.0
            for batch, zeros in zip(chunks, zero_feeds, strict=True):
                v = v_const if v_const is not None else rng.choice(np.float32([-1, 1]), size=zeros[delta[t]].shape)
                plus = run(batch, {**zeros, delta[t]: np.float32(h) * v}, outputs)
                minus = run(batch, {**zeros, delta[t]: np.float32(-h) * v}, outputs)
                total += sum(float(np.square((p.astype(np.float64) - q) / (2 * h)).sum())
                             for p, q in zip(plus, minus, strict=True))
            quads.append(total / energy)
        n = constants[t].size if t in constants else int(zero_feeds[0][delta[t]][0].size)
        q = np.asarray(quads)
        result[t] = Curvature(t, n, float(q.mean()), float(q.std(ddof=1) / np.sqrt(len(q))) if len(q) > 1 else 0.0,
                              probes)
    return result, stats
