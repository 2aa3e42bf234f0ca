"""Calibration data: validation against the model input, and activation statistics from onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from shiftpu.errors import ShiftpuError

#: Values kept per tensor and batch for choosing activation scales (a strided subsample beyond that).
SAMPLES_PER_BATCH = 1 << 16


class CalibrationError(ShiftpuError, ValueError):
    """Calibration data is missing, unreadable, or does not match the model input."""


def input_spec(model: onnx.ModelProto) -> tuple[str, list[int | str]]:
    """Name and shape (ints, or names for symbolic dims) of the single float model input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise CalibrationError(f"the model has {len(inputs)} inputs; exactly one (the image tensor) is supported")
    t = inputs[0].type.tensor_type
    if t.elem_type != onnx.TensorProto.FLOAT:
        raise CalibrationError(f"model input {inputs[0].name!r} is not float32")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return inputs[0].name, dims


def load_calibration(path: str | Path) -> np.ndarray:
    """Read a .npy calibration array (float, N x C x H x W or N x features)."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"{p}: no such file")
    try:
        data = np.load(str(p), allow_pickle=False)
    except Exception as e:
        raise CalibrationError(f"{p}: not a .npy array ({type(e).__name__})") from e
    if not isinstance(data, np.ndarray):
        raise CalibrationError(f"{p}: holds several arrays; save one NCHW array with numpy.save")
    return data


def validate_calibration(data: np.ndarray, shape: list[int | str]) -> np.ndarray:
    """The data as float32, after checking dtype, rank and per-sample shape against the model input."""
    if not np.issubdtype(data.dtype, np.floating):
        raise CalibrationError(f"calibration data has dtype {data.dtype}; it must be float, preprocessed exactly "
                               "as the model input (e.g. images scaled to [0, 1])")
    if data.ndim != len(shape):
        raise CalibrationError(f"calibration data has shape {list(data.shape)}; the model input is {shape} "
                               f"(give a batch of {len(shape)}-d samples, NCHW for images)")
    for axis, (got, want) in enumerate(zip(data.shape[1:], shape[1:], strict=True), start=1):
        if isinstance(want, int) and want > 0 and got != want:
            raise CalibrationError(f"calibration data has shape {list(data.shape)}; the model input is {shape} "
                                   f"(axis {axis}: {got} != {want}; NCHW expected)")
    if data.shape[0] == 0:
        raise CalibrationError("calibration data holds no samples")
    if not np.isfinite(data).all():
        raise CalibrationError("calibration data contains NaN or infinity")
    return np.ascontiguousarray(data, dtype=np.float32)


def batches(data: np.ndarray, shape: list[int | str], limit: int = 64):
    """Batches the model accepts: its fixed batch size, or up to ``limit`` samples for a symbolic batch."""
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    step = fixed or limit
    for i in range(0, len(data) - (fixed or 1) + 1, step):
        yield data[i : i + step]


def session(model: onnx.ModelProto, outputs: list[str]):
    """An onnxruntime CPU session of ``model`` that also returns the named intermediate tensors."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in outputs:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@dataclass
class TensorStats:
    """What calibration saw of one tensor."""

    max_abs: float = 0.0
    min: float = np.inf
    samples: list[np.ndarray] = field(default_factory=list)
    #: for a tensor collected per channel (``collect``'s ``channels``): the channel of each value in
    #: ``samples``, and each channel's largest magnitude and smallest value
    sample_channels: list[np.ndarray] = field(default_factory=list)
    channel_max_abs: np.ndarray | None = None
    channel_min: np.ndarray | None = None

    def add(self, x: np.ndarray, channels: int = 0) -> None:
        """Take in one batch; ``channels`` > 0: also per channel (axis 1, or blocks of a flattened axis 1)."""
        flat = x.ravel()
        self.max_abs = max(self.max_abs, float(np.abs(flat).max(initial=0.0)))
        self.min = min(self.min, float(flat.min(initial=np.inf)))
        stride = max(1, flat.size // SAMPLES_PER_BATCH)
        self.samples.append(flat[::stride].astype(np.float32))
        if channels:
            per = x.reshape(x.shape[0], channels, -1)
            top, low = np.abs(per).max(axis=(0, 2)), per.min(axis=(0, 2))
            self.channel_max_abs = top if self.channel_max_abs is None else np.maximum(self.channel_max_abs, top)
            self.channel_min = low if self.channel_min is None else np.minimum(self.channel_min, low)
            self.sample_channels.append(np.arange(0, flat.size, stride) // per.shape[2] % channels)

    @property
    def values(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)

    def divided(self, factors: np.ndarray) -> TensorStats:
        """The statistics of the tensor with channel c divided by ``factors[c]`` (powers of two, so exactly what
        calibration sees of the tensor equalised by them); for a tensor collected per channel."""
        if self.channel_max_abs is None:
            raise ValueError("the tensor's statistics were not collected per channel")
        f = np.asarray(factors, dtype=np.float32)
        return TensorStats(float((self.channel_max_abs / f).max(initial=0.0)), float((self.channel_min / f).min()),
                           [s / f[c] for s, c in zip(self.samples, self.sample_channels, strict=True)],
                           list(self.sample_channels), self.channel_max_abs / f, self.channel_min / f)


def collect_stats(model: onnx.ModelProto, data: np.ndarray, names: list[str]) -> dict[str, TensorStats]:
    """Run the float model on the calibration data and gather statistics of the named tensors."""
    return collect(model, data, names)[0]


def collect(model: onnx.ModelProto, data: np.ndarray, names: list[str], channels: dict[str, int] | None = None,
            keep: tuple[str, ...] = ()) -> tuple[dict[str, TensorStats], dict[str, np.ndarray]]:
    """``collect_stats``, those in ``channels`` also per channel (with that many channels), and in the same run
    the values of the tensors named in ``keep`` (e.g. the model outputs)."""
    input_name, shape = input_spec(model)
    channels = channels or {}
    sess = session(model, [n for n in dict.fromkeys([*names, *keep]) if n != input_name])
    out_names = [o.name for o in sess.get_outputs()]
    stats = {n: TensorStats() for n in names}
    kept: dict[str, list[np.ndarray]] = {n: [] for n in keep}
    ran = False
    for batch in batches(data, shape):
        ran = True
        for name, value in zip(out_names, sess.run(out_names, {input_name: batch}), strict=True):
            if name in stats:
                stats[name].add(np.asarray(value), channels.get(name, 0))
            if name in kept:
                kept[name].append(np.asarray(value))
    if not ran:
        raise CalibrationError(f"calibration data has {len(data)} samples; the model's fixed batch is {shape[0]}")
    for batch in batches(data, shape):
        if input_name in stats:
            stats[input_name].add(batch, channels.get(input_name, 0))
        if input_name in kept:
            kept[input_name].append(batch)
    return stats, {n: np.concatenate(v) for n, v in kept.items()}
