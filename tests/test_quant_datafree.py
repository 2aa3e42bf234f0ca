"""Data-free calibration: the ONNX graph rebuilt in PyTorch, the BatchNorm statistics loss, the synthesis, and
`shiftpu quantize --data-free`."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftpu.cli.main import main
from shiftpu.compiler.quant.datafree import (
    DataFreeError,
    DataFreeOptions,
    _RunningStats,
    statistics_loss,
    synthesize,
    synthesize_calibration,
)
from shiftpu.compiler.quant.ptq import PtqOptions, quantize_model
from shiftpu.compiler.quant.torchgraph import TorchGraph, UnsupportedNode

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


class OpsNet(nn.Module):
    """Most operations the graph rebuilder knows, BatchNorms at three depths (one after a concatenation)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 2, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.b2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(16, 8, 1)
        self.b3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        a = F.relu(self.b1(self.c1(F.pad(x, (1, 0, 1, 0)))))  # zeros before: 8 x 8 x 8
        b = F.leaky_relu(self.b2(self.c2(F.pad(a, (0, 1, 0, 1), mode="replicate"))), 0.125)  # edge, stride 2: 8 x 4 x 4
        c = torch.cat([F.interpolate(b, scale_factor=2, mode="nearest"), F.max_pool2d(a, 3, 1, 1)], 1)
        d = self.c3(c) + F.relu6(a)
        e = self.b3(torch.cat([d, a], 1))
        return self.fc(F.adaptive_avg_pool2d(torch.sigmoid(e), 1).flatten(1))


def _with_stats(net: nn.Module, seed: int) -> nn.Module:
    """``net`` in eval mode with running statistics that are not the defaults (so that matching them means
    something): means in [-1, 1], variances in [0.25, 4]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
                m.running_var.copy_(0.25 * 16 ** torch.rand(m.num_features, generator=g))
    return net.eval()


def _export(net: nn.Module, shape: tuple[int, ...], fold: bool = False, batch: str | int = "N") -> onnx.ModelProto:
    """torch.onnx (TorchScript exporter) with the BatchNorms kept, unless ``fold`` (the exporter's default)."""
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, *shape), buf, dynamo=False, opset_version=17,
                          do_constant_folding=fold, input_names=["input"], output_names=["y"],
                          dynamic_axes={"input": {0: batch}} if isinstance(batch, str) else None)
    return onnx.load_from_string(buf.getvalue())


def test_rebuilt_graph_computes_what_onnxruntime_computes():
    torch.manual_seed(0)
    model = _export(_with_stats(OpsNet(), 1), (3, 8, 8))
    ops = {n.op_type for n in model.graph.node}
    assert {"Pad", "BatchNormalization", "LeakyRelu", "Resize", "MaxPool", "Clip", "Concat", "Gemm",
            "GlobalAveragePool", "Flatten", "Sigmoid"} <= ops, ops
    x = np.random.default_rng(2).standard_normal((5, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        got = TorchGraph(model, ["y"])(torch.from_numpy(x))["y"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_only_the_nodes_the_outputs_need_are_rebuilt():
    """A node without a PyTorch form after the last BatchNorm does not matter; one before it is named."""

    class After(nn.Module):
        def __init__(self, before: bool) -> None:
            super().__init__()
            self.c, self.b, self.before = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), before

        def forward(self, x):
            return torch.sin(self.b(self.c(torch.sin(x) if self.before else x)))

    fine = _export(After(False).eval(), (1, 6, 6))
    bn = next(n for n in fine.graph.node if n.op_type == "BatchNormalization")
    assert [n.op_type for n in TorchGraph(fine, [bn.input[0]]).nodes] == ["Conv"]
    with pytest.raises(UnsupportedNode, match=r"\(Sin\) has no PyTorch form"):
        synthesize(_export(After(True).eval(), (1, 6, 6)), DataFreeOptions(samples=4, steps=1))


def test_statistics_loss_is_the_gaussian_kl_divergence():
    # one channel, batch values 1 and 3: mean 2, variance 1 (over the batch); running mean 0, variance 4
    x = torch.tensor([[[[1.0]]], [[[3.0]]]])
    kl = 0.5 * (math.log(4.0) + (1.0 + 4.0) / 4.0 - 1.0)
    stats = _RunningStats(torch.tensor([0.0]), torch.tensor([4.0]), 0.0)
    assert float(statistics_loss([x], [stats])) == pytest.approx(kl, rel=1e-6)
    matched = _RunningStats(torch.tensor([2.0]), torch.tensor([1.0]), 0.0)
    assert float(statistics_loss([x, x], [matched, stats])) == pytest.approx(kl, rel=1e-6)


def _bn_input_stats(net: nn.Module, data: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance over ``data`` of the input of every BatchNorm of ``net`` (forward hooks)."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
             for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        net(torch.from_numpy(data))
    for h in hooks:
        h.remove()
    return [(x.mean(dim=(0, 2, 3)).numpy(), x.var(dim=(0, 2, 3), unbiased=False).numpy()) for x in seen]


def _cbr_net(seed: int) -> nn.Module:
    """Two Conv-BN-ReLU blocks and a classifier (input 2 x 6 x 6) whose BatchNorm running statistics are those of
    hidden data (smooth noise with a per-channel offset): statistics that some inputs do have."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    g = torch.Generator().manual_seed(seed + 1000)
    hidden = F.avg_pool2d(torch.randn(512, 2, 8, 8, generator=g), 3, 1) * 2 + torch.rand(1, 2, 1, 1, generator=g)
    net.train()
    with torch.no_grad():
        net(hidden)  # momentum None, one batch: the running statistics are the hidden data's
    return net.eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_synthesised_inputs_match_the_running_statistics(seed):
    print("seed", seed)
    net = _cbr_net(seed)
    noise = synthesize(net, DataFreeOptions(samples=64, steps=0, seed=seed), (2, 6, 6))
    result = synthesize(net, DataFreeOptions(samples=64, seed=seed), (2, 6, 6))
    assert result.n_batchnorms == 2 and result.data.shape == (64, 2, 6, 6) and result.data.dtype == np.float32
    assert result.loss_end < 0.01 * noise.loss_start
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for (mean, var), bn in zip(_bn_input_stats(net, result.data), bns, strict=True):
        std_r = bn.running_var.sqrt().numpy()
        np.testing.assert_allclose(mean, bn.running_mean.numpy(), atol=0.03 * std_r.min())
        np.testing.assert_allclose(np.sqrt(var), std_r, rtol=0.02)
    assert not net.training and all(p.grad is None for p in net.parameters())


def test_onnx_and_module_give_the_same_inputs_and_seeds_repeat():
    net = _cbr_net(3)
    opts = DataFreeOptions(samples=16, steps=20, seed=5)
    from_module = synthesize(net, opts, (2, 6, 6)).data
    from_onnx = synthesize(_export(net, (2, 6, 6)), opts).data
    np.testing.assert_allclose(from_onnx, from_module, atol=1e-4)
    assert np.array_equal(synthesize(net, opts, (2, 6, 6)).data, from_module)
    other = synthesize(net, DataFreeOptions(samples=16, steps=20, seed=6), (2, 6, 6)).data
    assert not np.allclose(other, from_module)
    # a module in training mode is synthesised from in eval mode (its statistics untouched) and left as it was
    before = [m.running_mean.clone() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    net.train()
    assert np.array_equal(synthesize(net, opts, (2, 6, 6)).data, from_module)
    assert all(m.training for m in net.modules())
    after = [m.running_mean for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_input_range_is_kept():
    net = _cbr_net(4)
    data = synthesize_calibration(net, (2, 6, 6), n=70, seed=0, input_range=(0.0, 1.0), steps=60)
    assert data.shape == (70, 2, 6, 6) and data.dtype == np.float32
    assert data.min() >= 0.0 and data.max() <= 1.0
    assert 0.0 < float((data == 0.0).mean()) < 0.9 or 0.0 < float((data == 1.0).mean()) < 0.9  # the bound is active
    unmoved = synthesize(net, DataFreeOptions(samples=70, steps=0, input_range=(0.0, 1.0)), (2, 6, 6))
    moved = synthesize(net, DataFreeOptions(samples=70, steps=60, input_range=(0.0, 1.0)), (2, 6, 6))
    assert np.array_equal(moved.data, data) and moved.loss_end < 0.5 * unmoved.loss_start


def test_models_without_batchnorm_statistics_are_refused():
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    with pytest.raises(DataFreeError, match="no BatchNorm layer"):
        synthesize(plain, shape=(1, 6, 6))
    folded = _export(_cbr_net(0), (2, 6, 6), fold=True)
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    with pytest.raises(DataFreeError, match="no BatchNormalization node.*do_constant_folding=False"):
        synthesize(folded)
    with pytest.raises(DataFreeError, match="give the shape"):
        synthesize(_cbr_net(0))
    with pytest.raises(DataFreeError, match="low end"):
        DataFreeOptions(input_range=(1.0, 0.0))


def test_batchnorms_are_folded_after_data_free_calibration():
    """The BatchNormalization nodes the synthesis read are folded into their convolutions by the PTQ."""
    model = _export(_cbr_net(5), (2, 6, 6), batch=1)
    data = synthesize(model, DataFreeOptions(samples=16, steps=50)).data
    q, report = quantize_model(model, data, PtqOptions.fast())
    assert "BatchNormalization" not in {n.op_type for n in q.graph.node}
    assert report.float_nodes == [] and len(report.layers) == 3


def _shiftpu(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["shiftpu", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def test_cli_data_free(tmp_path, monkeypatch, capsys):
    onnx.save(_export(_cbr_net(6), (2, 6, 6)), str(tmp_path / "f.onnx"))
    rc, out, err = _shiftpu(monkeypatch, capsys, "quantize", tmp_path / "f.onnx", "--data-free", "--data-free-samples",
                            "16", "--data-free-steps", "40", "--input-range", "0,1", "--fast-ptq", "-o",
                            tmp_path / "q.onnx")
    assert rc == 0, err
    assert out.startswith("data-free calibration: 16 inputs synthesised from the statistics of 2 BatchNorm layers "
                          "(statistics loss ")
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert {n.op_type for n in q.graph.node} == {"QuantizeLinear", "DequantizeLinear", "Conv", "Relu", "Flatten", "Gemm"}
    # inputs kept in [0, 1]: the model input is quantized unsigned
    first_q = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    zero = next(i for i in q.graph.initializer if i.name == first_q.input[2])
    assert zero.data_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize(("args", "message"), [
    (["--calib", "c.npy", "--data-free"], "one of the two, not both"),
    ([], "give calibration inputs with --calib X.npy or synthesise them with --data-free"),
    (["--data-free", "--input-range", "1"], "--input-range '1': give two numbers"),
    (["--calib", "c.npy", "--input-range", "0,1"], "--input-range belongs to --data-free"),
    (["--data-free", "--folded"], "no BatchNormalization node"),
])
def test_cli_refusals_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    folded = "--folded" in args
    onnx.save(_export(_cbr_net(0), (2, 6, 6), fold=folded), str(tmp_path / "f.onnx"))
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 6, 6), np.float32))
    args = [str(tmp_path / a) if a.endswith(".npy") else a for a in args if a != "--folded"]
    rc, _, err = _shiftpu(monkeypatch, capsys, "quantize", tmp_path / "f.onnx", *args, "-o", tmp_path / "q.onnx")
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "q.onnx").exists()


def test_data_free_ptq_on_digits_is_close_to_calibrated_ptq():
    """A digits CNN (bench/quant_ptq.py's ``pooled``, briefly trained): data-free PTQ within 2 points of PTQ
    calibrated on real images (the bench measures the trained models)."""
    sys.path.insert(0, str(ROOT))
    from bench.quant_ptq import accuracy, digits_splits, run_onnx, train_float

    train, test = digits_splits()
    model = _export(train_float("pooled", 0, 8, train), (1, 8, 8))
    fast = PtqOptions(adaround=False, equalize=False)
    calibrated = accuracy(run_onnx(quantize_model(model, train.images[:128], fast)[0], test.images), test.labels)
    data = synthesize(model, DataFreeOptions(samples=64, steps=150, input_range=(0.0, 1.0))).data
    data_free = accuracy(run_onnx(quantize_model(model, data, fast)[0], test.images), test.labels)
    print(f"calibrated {calibrated:.2f} %, data-free {data_free:.2f} %")
    assert calibrated > 90.0
    assert data_free >= calibrated - 2.0
