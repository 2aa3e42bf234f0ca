"""Data-free calibration: calibration inputs synthesised from the BatchNorm statistics of a float model.

Without data, the running mean and variance that each BatchNorm layer kept during training are what is known of
the activations of the training data. After ZeroQ (Cai et al., CVPR 2020) and GZNQ (He et al., arXiv
2101.08430), batches of inputs are optimised with Adam, through the float model, so that the per-channel
statistics of every BatchNorm input over the batch match the running ones. The loss is GZNQ's distribution
matching: the Kullback-Leibler divergence of the running statistics' Gaussian from the batch's, per channel,
averaged over the channels of a layer and summed over the layers (near its minimum it is ZeroQ's squared distance
of the means and standard deviations, each relative to the running variance, so that no layer dominates by its
scale). The inputs start as N(0, 1) noise (ZeroQ), or uniform noise in ``input_range`` when the model input is known
to lie in a range (e.g. images scaled to [0, 1]), where they are kept by projection after each step. The
synthesised inputs then calibrate the ordinary post-training quantization (``ptq.quantize_model``).

The model is either a PyTorch module (its ``nn.BatchNorm*`` layers with running statistics) or a float ONNX
model with BatchNormalization nodes (exported with BatchNorm kept, see docs/quantization.md), which ``torchgraph``
rebuilds in PyTorch. The same model, options and seed give the same inputs (CPU, the same torch thread count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from shiftpu.compiler.quant.calibrate import input_spec
from shiftpu.compiler.quant.onnxio import attr
from shiftpu.compiler.quant.torchgraph import TorchGraph
from shiftpu.errors import ShiftpuError

#: How to export a PyTorch model so that its BatchNorms stay in the ONNX file (named in the refusals).
KEEP_BN_EXPORT = ("torch.onnx.export(model, x, path, dynamo=False, do_constant_folding=False) (or "
                  "training=torch.onnx.TrainingMode.PRESERVE; the dynamo exporter: optimize=False)")


class DataFreeError(ShiftpuError, ValueError):
    """Calibration inputs cannot be synthesised for this model (no BatchNorm statistics, unknown input shape)."""


@dataclass(frozen=True)
class DataFreeOptions:
    """How calibration inputs are synthesised."""

    #: Calibration inputs to synthesise.
    samples: int = 128
    #: Inputs optimised together: the batch whose statistics must match the running ones (the last batches
    #: are made equal in size rather than one small remainder).
    batch: int = 64
    #: Adam steps per batch: the time bound (steps x samples / batch forward and backward passes).
    steps: int = 300
    #: Adam learning rate, relative to the width of ``input_range`` when one is given.
    lr: float = 0.1
    #: Seed of the initial noise (each batch draws from ``[seed, batch index]``).
    seed: int = 0
    #: (low, high) the model input is known to lie in (e.g. (0, 1) for images scaled to [0, 1]); None: unbounded.
    input_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch < 1 or self.steps < 0 or not self.lr > 0:
            raise DataFreeError(f"data-free calibration needs samples >= 1, batch >= 1, steps >= 0 and lr > 0 "
                                f"(got {self.samples}, {self.batch}, {self.steps}, {self.lr})")
        if self.input_range is not None and not self.input_range[0] < self.input_range[1]:
            raise DataFreeError(f"input range {self.input_range}: the low end must be below the high end")


@dataclass(frozen=True)
class Synthesis:
    """Synthesised calibration inputs and how well they match the BatchNorm statistics."""

    data: np.ndarray  #: float32, samples x the model input's shape
    n_batchnorms: int  #: BatchNorm layers whose statistics were matched
    loss_start: float  #: ``statistics_loss`` before the first step, in nats (mean over the batches)
    loss_end: float  #: the same after the last step
    seconds: float  #: wall time of the synthesis (measured)

    def summary(self) -> str:
        """One line for the user."""
        return (f"data-free calibration: {len(self.data)} inputs synthesised from the statistics of "
                f"{self.n_batchnorms} BatchNorm layers (statistics loss {self.loss_start:.3g} -> {self.loss_end:.3g} "
                f"nats, {self.seconds:.1f} s measured)")


@dataclass(frozen=True)
class _RunningStats:
    """The running statistics of one BatchNorm layer."""

    mean: torch.Tensor
    var: torch.Tensor
    eps: float


#: inputs -> the input of every BatchNorm layer, in the order of the statistics
StatsProbe = Callable[[torch.Tensor], list[torch.Tensor]]


def _module_probe(model: nn.Module) -> tuple[StatsProbe, list[_RunningStats], Callable[[], None]]:
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats and m.running_mean is not None]
    if not layers:
        raise DataFreeError("the model has no BatchNorm layer with running statistics: data-free calibration "
                            "matches them (give calibration data instead)")
    stats = [_RunningStats(m.running_mean.detach().clone().float(), m.running_var.detach().clone().float(),
                           float(m.eps)) for m in layers]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0]))
             for i, m in enumerate(layers)]

    def probe(x: torch.Tensor) -> list[torch.Tensor]:
        seen.clear()
        model(x)
        missing = [i for i in range(len(layers)) if i not in seen]
        if missing:
            raise DataFreeError(f"{len(missing)} BatchNorm layer(s) of the model are not used by its forward pass")
        return [seen[i] for i in range(len(layers))]

    def restore() -> None:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training

    return probe, stats, restore


def _onnx_probe(model: onnx.ModelProto) -> tuple[StatsProbe, list[_RunningStats]]:
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not bns:
        raise DataFreeError("the model has no BatchNormalization node, so there are no statistics to synthesise "
                            "calibration inputs from: give --calib, or export the float model with its "
                            f"BatchNorms kept: {KEEP_BN_EXPORT}")
    graph = TorchGraph(model, [n.input[0] for n in bns])
    const = graph.g.const
    kept = [n for n in bns if const(n.input[3]) is not None and const(n.input[4]) is not None
            and const(n.input[0]) is None]
    if not kept:
        raise DataFreeError("no BatchNormalization node of the model has constant running statistics")
    stats = [_RunningStats(torch.tensor(const(n.input[3]), dtype=torch.float32),
                           torch.tensor(const(n.input[4]), dtype=torch.float32),
                           float(attr(n, "epsilon", 1e-5))) for n in kept]
    names = [n.input[0] for n in kept]

    def probe(x: torch.Tensor) -> list[torch.Tensor]:
        values = graph(x)
        return [values[name] for name in names]

    return probe, stats


def statistics_loss(inputs: list[torch.Tensor], stats: list[_RunningStats]) -> torch.Tensor:
    """The sum over BatchNorm layers of the mean over channels of KL(batch Gaussian || running Gaussian)."""
    total = torch.zeros(())
    for x, s in zip(inputs, stats, strict=True):
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        var_b = x.var(dim=dims, unbiased=False) + s.eps
        var_r = s.var + s.eps
        kl = 0.5 * (torch.log(var_r / var_b) + (var_b + (mean - s.mean) ** 2) / var_r - 1.0)
        total = total + kl.mean()
    return total


def _sample_shape(model: nn.Module | onnx.ModelProto, shape: Sequence[int] | None) -> tuple[int, ...]:
    if shape is not None:
        dims = tuple(int(d) for d in shape)
    elif isinstance(model, onnx.ModelProto):
        _, spec = input_spec(model)
        dims = tuple(d if isinstance(d, int) else 0 for d in spec[1:])
        if not dims or min(dims) < 1:
            raise DataFreeError(f"the model input's shape {spec} is not fixed beyond the batch axis: give the shape "
                                "of one input (e.g. 3,224,224)")
    else:
        raise DataFreeError("give the shape of one input of the PyTorch module (without the batch axis)")
    if not dims or min(dims) < 1:
        raise DataFreeError(f"input shape {list(dims)}: every dimension must be positive")
    return dims


def synthesize(model: nn.Module | onnx.ModelProto, options: DataFreeOptions | None = None,
               shape: Sequence[int] | None = None) -> Synthesis:
    """Calibration inputs for ``model`` (a PyTorch module or a float ONNX model) matching its BatchNorm statistics.

    ``shape`` is one input's shape without the batch axis (e.g. ``(3, 224, 224)``); for an ONNX model it defaults
    to the model input's.
    """
    options = options or DataFreeOptions()
    dims = _sample_shape(model, shape)
    restore: Callable[[], None] = lambda: None  # noqa: E731
    if isinstance(model, onnx.ModelProto):
        probe, stats = _onnx_probe(model)
    elif isinstance(model, nn.Module):
        probe, stats, restore = _module_probe(model)
    else:
        raise DataFreeError(f"data-free calibration takes a PyTorch module or an ONNX model, not {type(model).__name__}")
    t0 = time.perf_counter()
    lo, hi = options.input_range or (None, None)
    lr = options.lr * (hi - lo if options.input_range else 1.0)
    sizes = [len(s) for s in np.array_split(np.arange(options.samples), math.ceil(options.samples / options.batch))]
    parts, start, end = [], [], []
    try:
        for index, size in enumerate(sizes):
            rng = np.random.default_rng([options.seed, index])
            if options.input_range is None:
                init = rng.standard_normal((size, *dims))
            else:
                init = rng.uniform(lo, hi, (size, *dims))
            x = torch.tensor(init, dtype=torch.float32, requires_grad=True)
            opt = torch.optim.Adam([x], lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(options.steps, 1))
            with torch.no_grad():
                start.append(float(statistics_loss(probe(x), stats)))
            for _ in range(options.steps):
                loss = statistics_loss(probe(x), stats)
                (grad,) = torch.autograd.grad(loss, [x])
                x.grad = grad
                opt.step()
                sched.step()
                if options.input_range is not None:
                    with torch.no_grad():
                        x.clamp_(lo, hi)
            with torch.no_grad():
                end.append(float(statistics_loss(probe(x), stats)))
            parts.append(x.detach().numpy().copy())
    finally:
        restore()
    return Synthesis(np.concatenate(parts).astype(np.float32), len(stats), float(np.mean(start)),
                     float(np.mean(end)), time.perf_counter() - t0)


def synthesize_calibration(model: nn.Module | onnx.ModelProto, shape: Sequence[int] | None = None, n: int = 128,
                           seed: int = 0, input_range: tuple[float, float] | None = None,
                           steps: int = DataFreeOptions.steps) -> np.ndarray:
    """``n`` calibration inputs (float32, ``n`` x ``shape``) synthesised from the BatchNorm statistics of ``model``
    (see ``synthesize``); pass them to ``ptq.quantize_model`` as calibration data."""
    options = DataFreeOptions(samples=n, seed=seed, input_range=input_range, steps=steps)
    return synthesize(model, options, shape).data
