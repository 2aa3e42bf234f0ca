"""Shift quantization-aware training layers for PyTorch.

``ActQuant`` fake-quantizes activations to a power-of-two scale (calibrated from a running maximum, or learned);
``QConv2d`` and ``QLinear`` fold an optional BatchNorm into their weights, quantize the folded weights to shift
levels with a per-output-channel power-of-two scale and the bias to int32 at the accumulator scale, all with
straight-through estimators. In eval mode the forward computes exactly what onnxruntime computes on the
exported QDQ graph (round half to even, saturation, float32 values that are exact).
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftpu.arch.numerics import INT8, ActFormat, WeightCode
from shiftpu.compiler.quant.activations import range_exponent
from shiftpu.compiler.quant.weights import ShiftWeights, quantize_weights
from shiftpu.errors import ShiftpuError

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class QatError(ShiftpuError, ValueError):
    """A model cannot be prepared for, or used in, shift quantization-aware training."""


class ScaleMode(Enum):
    """How an activation quantizer picks its power-of-two scale."""

    CALIBRATED = "calibrated"  #: from a running maximum of the observed values (frozen in eval mode)
    LEARNED = "learned"  #: a trained log2 scale, rounded to an integer exponent with a straight-through estimator


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def pow2(exponent: torch.Tensor | int) -> torch.Tensor:
    """2^exponent as a float32 tensor (exact)."""
    return torch.pow(2.0, torch.as_tensor(exponent, dtype=torch.float32))


class ActQuant(nn.Module):
    """Fake quantization of an activation tensor: one power-of-two scale, zero point 0, saturation."""

    def __init__(self, fmt: ActFormat = INT8, mode: ScaleMode = ScaleMode.CALIBRATED, momentum: float = 0.1) -> None:
        super().__init__()
        self.fmt = fmt
        self.mode = mode
        self.momentum = momentum
        #: Whether training-mode forwards still update the scale (see freeze_activation_scales).
        self.observing = True
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))
        self.log2_scale = nn.Parameter(torch.zeros(())) if mode is ScaleMode.LEARNED else None

    def extra_repr(self) -> str:
        return f"bits={self.fmt.bits}, signed={self.fmt.signed}, mode={self.mode.value}, exponent={self.exponent}"

    def _observe(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            top = x.detach().abs().max() if self.fmt.signed else x.detach().clamp(min=0).max()
            if bool(self.observed):
                self.running_max.mul_(1 - self.momentum).add_(self.momentum * top)
            else:
                self.running_max.copy_(top)
                self.observed.fill_(True)
                if self.log2_scale is not None:
                    self.log2_scale.fill_(float(range_exponent(float(top), self.fmt)))

    @property
    def exponent(self) -> int:
        """The scale exponent the quantizer uses now (the exported one)."""
        if self.log2_scale is not None:
            return int(torch.round(self.log2_scale.detach()))
        return range_exponent(float(self.running_max), self.fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and ((self.observing and self.log2_scale is None) or not bool(self.observed)):
            self._observe(x)
        if not bool(self.observed):
            raise QatError("an activation quantizer was used in eval mode before it observed any data")
        if self.log2_scale is not None:
            scale = torch.pow(2.0, round_ste(self.log2_scale))
        else:
            scale = pow2(self.exponent).to(x.device)
        return torch.clamp(round_ste(x / scale), self.fmt.qmin, self.fmt.qmax) * scale


class _ShiftLayer:
    """What QConv2d and QLinear share: BN folding, shift-weight and int32-bias fake quantization."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    bn: nn.Module | None
    weight_code: WeightCode

    def _link_input(self, input_quant: ActQuant | None) -> None:
        # a reference, not a submodule: the quantizer is owned by the graph that feeds this layer
        object.__setattr__(self, "input_quant", input_quant)

    def _input_exponent(self) -> int:
        if self.input_quant is None:
            raise QatError(f"{type(self).__name__} has no input quantizer: its bias scale is undefined")
        return self.input_quant.exponent

    def _fold_bn(self, float_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weights and bias with the BatchNorm folded in (running statistics, updated from float_out)."""
        if self.bn is None:
            return self.weight, self.bias
        bn = self.bn
        if float_out is not None:
            with torch.no_grad():
                dims = [d for d in range(float_out.dim()) if d != 1]
                mean = float_out.mean(dim=dims)
                var = float_out.var(dim=dims, unbiased=True)
                bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean)
                bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var)
                bn.num_batches_tracked.add_(1)
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight * inv_std if bn.affine else inv_std
        beta = bn.bias if bn.affine else torch.zeros_like(inv_std)
        w = self.weight * gamma.reshape((-1,) + (1,) * (self.weight.dim() - 1))
        b0 = self.bias if self.bias is not None else torch.zeros_like(gamma)
        return w, beta + (b0 - bn.running_mean) * gamma

    def shift_weights(self) -> ShiftWeights:
        """The integer shift weights and per-channel exponents this layer uses now."""
        w, _ = self._fold_bn(None)
        return quantize_weights(w.detach().cpu().numpy(), self.weight_code)

    def int_bias(self) -> np.ndarray:
        """The int32 bias at the accumulator scale (input exponent + weight exponent), zeros if there is none."""
        _, b = self._fold_bn(None)
        sw = self.shift_weights()
        if b is None:
            return np.zeros(sw.exponents.shape, dtype=np.int32)
        e = torch.as_tensor(self._input_exponent() + sw.exponents, dtype=torch.float32)
        q = torch.clamp(torch.round(b.detach().cpu() / torch.pow(2.0, e)), _INT32_MIN, _INT32_MAX)
        return q.numpy().astype(np.int32)

    def _quantized(self, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        sw = quantize_weights(w.detach().cpu().numpy(), self.weight_code)
        wq_value = torch.from_numpy(sw.dequantize()).to(w.device)
        wq = w + (wq_value - w).detach()
        if b is None:
            return wq, None
        acc_scale = pow2(torch.from_numpy(sw.exponents) + self._input_exponent()).to(b.device)
        bq = torch.clamp(round_ste(b / acc_scale), _INT32_MIN, _INT32_MAX) * acc_scale
        return wq, bq


class QConv2d(nn.Conv2d, _ShiftLayer):
    """A Conv2d (optionally with a folded BatchNorm2d) with shift-quantized weights and int32 bias."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None,
                 weight_code: WeightCode = WeightCode.SHIFT4, input_quant: ActQuant | None = None) -> None:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise QatError("QConv2d needs explicit zero padding (padding_mode='zeros', integer padding)")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None)
        self.load_state_dict(conv.state_dict())
        self.bn = bn
        self.weight_code = weight_code
        self._link_input(input_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        float_out = None
        if self.bn is not None and self.training:
            with torch.no_grad():
                float_out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        w, b = self._fold_bn(float_out)
        wq, bq = self._quantized(w, b)
        return F.conv2d(x, wq, bq, self.stride, self.padding, self.dilation, self.groups)


class QLinear(nn.Linear, _ShiftLayer):
    """A Linear layer with shift-quantized weights and int32 bias."""

    def __init__(self, linear: nn.Linear, weight_code: WeightCode = WeightCode.SHIFT4,
                 input_quant: ActQuant | None = None) -> None:
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None)
        self.load_state_dict(linear.state_dict())
        self.bn = None
        self.weight_code = weight_code
        self._link_input(input_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wq, bq = self._quantized(self.weight, self.bias)
        return F.linear(x, wq, bq)


def freeze_activation_scales(model: nn.Module) -> None:
    """Stop the calibrated activation quantizers of ``model`` from moving their scales (later QAT epochs).

    A scale that keeps following a growing maximum (e.g. of logits pushed apart by the loss) coarsens the
    other values of its tensor; freezing after the first epoch keeps fine-tuning stable.
    """
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.observing = False


def leaky_shift(negative_slope: float) -> int:
    """k with negative_slope == 2^-k (1 <= k <= 15), the only LeakyReLU slopes the fabric runs."""
    k = -math.log2(negative_slope) if negative_slope > 0 else math.inf
    if not (k == int(k) and 1 <= k <= 15):
        raise QatError(f"LeakyReLU slope {negative_slope} is not 2^-k with 1 <= k <= 15")
    return int(k)
