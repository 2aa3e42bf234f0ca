"""Builds the Brevitas test fixtures in tests/data/brevitas/ (needs ``pip install shiftpu[brevitas]``).

Each model uses quantizers the accelerator can take: power-of-two (fixed-point) activation scales and
per-output-channel power-of-two weight scales, with float weights that round to ``±2^k`` multiples of their
scale so that every exported integer weight is shift-representable. One more model uses Brevitas'
default float-scaled quantizers, which shiftpu must refuse. Every model is exported three times: as QONNX
(``Quant`` nodes) through TorchScript (``<name>.qonnx.onnx``) and through torch.export
(``<name>.qonnx_dynamo.onnx``), and as QCDQ at opset 18 (``<name>.qcdq.onnx``; Brevitas' dynamo QCDQ export
does not take quantized biases). ``<name>.npz`` holds the inputs ``x`` (N x 1 x C x H x W), Brevitas' own
quantized PyTorch forward ``y_brevitas`` and qonnx's executor on the two QONNX files (``y_qonnx``,
``y_qonnx_dynamo``).

    python tools/make_brevitas_fixtures.py [out_dir]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from brevitas import nn as qnn
from brevitas.graph.calibrate import calibration_mode
from brevitas.quant import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Int32Bias,
    Uint8ActPerTensorFixedPoint,
)
from torch import nn

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "brevitas"
#: The exports of each model: QONNX through TorchScript and through torch.export (dynamo), QCDQ at opset 18.
KINDS = ("qonnx", "qonnx_dynamo", "qcdq")
#: Inputs per fixture (each a batch of one image).
N_INPUTS = 4
#: Magnitudes 2^0..2^6 of a shift weight, in units of the channel's scale.
SHIFT_MAGNITUDES = np.array([0, 1, 2, 4, 8, 16, 32, 64])


class ShiftWeightPerChannel(Int8WeightPerTensorFixedPoint):
    """8-bit narrow-range weights with one power-of-two scale per output channel (fixed point, per channel).

    Brevitas sets a channel's scale to ``2^ceil(log2 max|w|) / 128``: a channel whose largest weight lies in
    ``(64 s, 128 s]`` gets the scale ``s``. The integers are shift-representable when the float weights round
    to ``±2^k`` multiples of that scale (what :func:`set_shift_weights` arranges).
    """

    scaling_per_output_channel = True


def _value(t: torch.Tensor) -> torch.Tensor:
    """The float tensor of a QuantTensor (a plain tensor passes through, e.g. during calibration)."""
    return t.value if hasattr(t, "value") else t


class Uint4ActPerTensorFixedPoint(Uint8ActPerTensorFixedPoint):
    """4-bit unsigned activations with a power-of-two scale (the 4-bit activation option)."""

    bit_width = 4


def _act(quant: type, quant_tensor: bool = True) -> qnn.QuantIdentity:
    return qnn.QuantIdentity(act_quant=quant, return_quant_tensor=quant_tensor)


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True, **kw: object) -> qnn.QuantConv2d:
    return qnn.QuantConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias, weight_quant=ShiftWeightPerChannel,
                           bias_quant=Int32Bias if bias else None, return_quant_tensor=False, **kw)


def _relu(quant: type = Uint8ActPerTensorFixedPoint) -> qnn.QuantReLU:
    return qnn.QuantReLU(act_quant=quant, return_quant_tensor=True)


class ConvClassifier(nn.Module):
    """(a) input quantizer, conv3x3 + ReLU, conv1x1 to 10 classes, 8-bit output quantizer.

    The output is a QuantTensor, so the export also lists its scale, zero point and bit width as outputs.
    ``relu_quant`` is the ReLU's quantizer (8-bit, or 4-bit for the 4-bit activation fixture).
    """

    def __init__(self, relu_quant: type = Uint8ActPerTensorFixedPoint) -> None:
        super().__init__()
        self.inp = _act(Int8ActPerTensorFixedPoint)
        self.conv1, self.relu1 = _conv(3, 8, 3), _relu(relu_quant)
        self.conv2, self.out = _conv(8, 10, 1), _act(Int8ActPerTensorFixedPoint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv2(self.relu1(self.conv1(self.inp(x)))))


class ResidualPool(nn.Module):
    """(b) conv + ReLU, 2x2 max pool, a residual block (two convs and an Add), 8-bit output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = _act(Int8ActPerTensorFixedPoint)
        self.conv1, self.relu1 = _conv(3, 8, 3), _relu()
        self.pool = nn.MaxPool2d(2)
        self.pooled = _act(Uint8ActPerTensorFixedPoint)
        self.conv2, self.relu2 = _conv(8, 8, 3), _relu()
        self.conv3, self.branch = _conv(8, 8, 3), _act(Int8ActPerTensorFixedPoint)
        self.sum = _act(Int8ActPerTensorFixedPoint, quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.pooled(self.pool(self.relu1(self.conv1(self.inp(x)))))
        r = self.branch(self.conv3(self.relu2(self.conv2(t))))
        return self.sum(_value(t) + _value(r))


class ConvLinear(nn.Module):
    """(c) strided conv + ReLU, max pool, Flatten and a Linear classifier, 8-bit output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = _act(Int8ActPerTensorFixedPoint)
        self.conv1, self.relu1 = _conv(3, 8, 3, stride=2), _relu()
        self.pool = nn.MaxPool2d(2)
        self.pooled = _act(Uint8ActPerTensorFixedPoint)
        self.fc = qnn.QuantLinear(8 * 4 * 4, 10, bias=True, weight_quant=ShiftWeightPerChannel, bias_quant=Int32Bias,
                                  return_quant_tensor=False)
        self.out = _act(Int8ActPerTensorFixedPoint, quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.pooled(self.pool(self.relu1(self.conv1(self.inp(x)))))
        return self.out(self.fc(torch.flatten(t, 1)))


class FloatScaled(nn.Module):
    """Not representable: Brevitas' defaults (float per-tensor scales, arbitrary 8-bit weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(3, 8, 3, padding=1, bias=False, return_quant_tensor=False)
        self.relu1 = qnn.QuantReLU(return_quant_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu1(self.conv1(self.inp(x)))


def set_shift_weights(model: nn.Module, rng: np.random.Generator) -> None:
    """Give every quantized layer weights that round to ``±2^k`` times one power of two per output channel.

    A channel's weights are ``±(m + u) · 2^e`` with m in {0, 1, 2, ..., 64} and |u| < 0.4 (so they round to
    ``±m``), and one weight ``64 + u`` with 0 < u < 0.4 sets the channel's fixed-point scale to exactly ``2^e``.
    Biases are small floats (Brevitas quantizes them to int32 at the accumulator scale).
    """
    for m in model.modules():
        if not isinstance(m, qnn.QuantConv2d | qnn.QuantLinear):
            continue
        w = m.weight.detach().numpy()
        e = rng.integers(-11, -8, size=w.shape[0]) if w[0].size > 32 else rng.integers(-9, -6, size=w.shape[0])
        mags = rng.choice(SHIFT_MAGNITUDES, size=w.shape, p=[0.2, 0.2, 0.2, 0.15, 0.1, 0.06, 0.05, 0.04]).astype(float)
        mags += np.where(mags > 0, rng.uniform(0.0, 0.4, size=w.shape), rng.uniform(-0.4, 0.4, size=w.shape))
        mags.reshape(w.shape[0], -1)[:, 0] = 64 + rng.uniform(0.01, 0.4, size=w.shape[0])
        signs = rng.choice([-1.0, 1.0], size=w.shape)
        scale = np.exp2(e.astype(np.float64)).reshape((-1,) + (1,) * (w.ndim - 1))
        m.weight.data = torch.from_numpy((signs * mags * scale).astype(np.float32))
        if m.bias is not None:
            m.bias.data = torch.from_numpy(rng.uniform(-0.25, 0.25, size=w.shape[0]).astype(np.float32))


def calibrate(model: nn.Module, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    """Set the activation scales from a few random batches (Brevitas' own calibration), then evaluation mode."""
    model.eval()
    with torch.no_grad(), calibration_mode(model):
        for _ in range(8):
            model(torch.from_numpy(_inputs(rng, (4,) + shape)))
    model.eval()


def _inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) * 1.5).astype(np.float32)


def _self_contained(path: Path) -> None:
    """Rewrite an export as one file: no per-node metadata (torch.export's source locations, with local
    paths) and the weights inline; the ``.data`` file torch.export writes beside it is deleted."""
    external = {e.value for t in onnx.load(str(path), load_external_data=False).graph.initializer
                for e in t.external_data if e.key == "location"} | {f"{path.name}.data"}
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))
    for location in external:
        (path.parent / location).unlink(missing_ok=True)


def _brevitas_forward(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return _value(y).detach().numpy().astype(np.float32)


def _qonnx_forward(path: Path, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = ModelWrapper(str(path)).transform(InferShapes())
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    return np.asarray(execute_onnx(wrapper, {iname: x})[oname], np.float32)


#: name -> (model factory, input shape C, H, W, whether the weights are set to shift values)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int], bool]] = {
    "conv_classifier": (ConvClassifier, (3, 16, 16), True),
    "residual_pool": (ResidualPool, (3, 16, 16), True),
    "conv_linear": (ConvLinear, (3, 16, 16), True),
    "conv_classifier_act4": (lambda: ConvClassifier(Uint4ActPerTensorFixedPoint), (3, 16, 16), True),
    "float_scaled": (FloatScaled, (3, 8, 8), False),
}


def make_fixture(name: str, out_dir: Path, seed: int = 0) -> list[Path]:
    """Build, calibrate and export one model; write its three ONNX files and its .npz; return the paths."""
    from brevitas.export import export_onnx_qcdq, export_qonnx

    factory, shape, shift = MODELS[name]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = factory()
    if shift:
        set_shift_weights(model, rng)
    calibrate(model, shape, rng)
    example = torch.from_numpy(_inputs(rng, (1,) + shape))
    paths = {kind: out_dir / f"{name}.{kind}.onnx" for kind in KINDS}
    export_qonnx(model, args=example, export_path=str(paths["qonnx"]), dynamo=False)
    export_qonnx(model, args=example, export_path=str(paths["qonnx_dynamo"]), dynamo=True)
    export_onnx_qcdq(model, args=example, export_path=str(paths["qcdq"]), opset_version=18, dynamo=False)
    for path in paths.values():
        _self_contained(path)
    xs = _inputs(rng, (N_INPUTS, 1) + shape)
    y_brevitas = np.stack([_brevitas_forward(model, x) for x in xs])
    y_qonnx = np.stack([_qonnx_forward(paths["qonnx"], x) for x in xs])
    y_qonnx_dynamo = np.stack([_qonnx_forward(paths["qonnx_dynamo"], x) for x in xs])
    np.savez_compressed(out_dir / f"{name}.npz", x=xs, y_brevitas=y_brevitas, y_qonnx=y_qonnx,
                        y_qonnx_dynamo=y_qonnx_dynamo)
    return [*paths.values(), out_dir / f"{name}.npz"]


def make_all(out_dir: Path) -> list[Path]:
    """All fixtures into ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    return [p for i, name in enumerate(MODELS) for p in make_fixture(name, out_dir, seed=i)]


if __name__ == "__main__":
    for path in make_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT):
        print(f"{path} ({path.stat().st_size} bytes)")
