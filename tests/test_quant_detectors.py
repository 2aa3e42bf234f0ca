"""Standard detector and backbone architectures from their float ONNX export to the fabric: `shiftpu quantize --calib`
(PTQ), then `shiftpu compile`. A Tiny-YOLOv2-like stack (Conv-BN-LeakyReLU(0.1), max pooling including darknet's
size-2 stride-1 one, exported as an edge Pad and a MaxPool), a mobilenet_v2-like one (Conv-BN-ReLU6, depthwise,
residual adds, global average pooling), a resnet-like one and a SkyNet-like one (ReLU6, a reorg and a concatenation):
every convolution on the fabric, one fabric segment, golden model == onnxruntime bit for bit. Also the LeakyReLU
slope rounding (PTQ report, `--leaky-slope cpu`, QAT)."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from shiftpu.cli.main import app
from shiftpu.compiler.ir import ConvOp, CpuReason
from shiftpu.compiler.partition import check_partition
from shiftpu.compiler.quant.activations import LeakySlope, rounded_leaky_shift
from shiftpu.compiler.quant.export import export_qdq
from shiftpu.compiler.quant.fold import fold_float_model
from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat
from shiftpu.compiler.quant.qat import QatError

torch.set_num_threads(1)
runner = CliRunner()


def _cbl(ci: int, co: int, k: int = 3, s: int = 1, act: str = "leaky", groups: int = 1) -> nn.Sequential:
    """Conv (no bias) - BatchNorm - activation, as darknet and torchvision build them."""
    acts = {"leaky": nn.LeakyReLU(0.1), "relu6": nn.ReLU6(), "relu": nn.ReLU(), "none": nn.Identity()}
    return nn.Sequential(nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co), acts[act])


class _MaxPoolStride1(nn.Module):
    """darknet's size-2 stride-1 maxpool, as PyTorch ports of Tiny-YOLOv2 write it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)


class TinyYolo(nn.Module):
    """Tiny-YOLOv2's layer pattern, narrower and with one stride-2 pooling less (32x32 inputs)."""

    def __init__(self, w: int = 4, anchors: int = 5, classes: int = 3) -> None:
        super().__init__()
        layers, ci = [], 3
        for i, co in enumerate([w, 2 * w, 4 * w, 8 * w, 16 * w]):
            layers += [_cbl(ci, co), nn.MaxPool2d(2, 2) if i < 4 else _MaxPoolStride1()]
            ci = co
        layers += [_cbl(ci, 32 * w), _cbl(32 * w, 32 * w), nn.Conv2d(32 * w, anchors * (5 + classes), 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _InvertedResidual(nn.Module):
    def __init__(self, ci: int, co: int, s: int, t: int) -> None:
        super().__init__()
        h = ci * t
        self.residual = s == 1 and ci == co
        layers = [] if t == 1 else [_cbl(ci, h, 1, act="relu6")]
        self.conv = nn.Sequential(*layers, _cbl(h, h, 3, s, "relu6", groups=h), _cbl(h, co, 1, act="none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 blocks (ReLU6, depthwise, linear bottlenecks, residual adds), a few of them."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbl(3, 8, 3, 2, "relu6"), _InvertedResidual(8, 8, 1, 1),
                                      _InvertedResidual(8, 16, 2, 4), _InvertedResidual(16, 16, 1, 4),
                                      _InvertedResidual(16, 24, 2, 4), _InvertedResidual(24, 24, 1, 4),
                                      _cbl(24, 64, 1, act="relu6"))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class _BasicBlock(nn.Module):
    def __init__(self, ci: int, co: int, s: int) -> None:
        super().__init__()
        self.c1, self.c2 = _cbl(ci, co, 3, s, "relu"), _cbl(co, co, 3, 1, "none")
        self.down = None if s == 1 and ci == co else _cbl(ci, co, 1, s, "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.c2(self.c1(x)) + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """resnet18's stem (7x7 stride-2 conv, 3x3 stride-2 max pooling with padding) and basic blocks, a few."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(_BasicBlock(8, 8, 1), _BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def _export(net: nn.Module, path, seed: int = 0, size: int = 32) -> None:
    """Export ``net`` (BatchNorm statistics randomised with ``seed``) to float ONNX at ``path`` (or a file object)."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # trained-looking statistics (an untrained BN is the identity)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.25, 1.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, size, size), path if hasattr(path, "write") else str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])


def _quantize_and_compile(tmp_path, net: nn.Module, *options: str, size: int = 32) -> tuple[str, onnx.ModelProto]:
    """Float ONNX -> `shiftpu quantize --calib` -> `shiftpu compile`, and golden == onnxruntime with --compare."""
    torch.manual_seed(0)
    _export(net, tmp_path / "float.onnx", size=size)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "calib.npy", rng.uniform(-4, 4, (8, 3, size, size)).astype(np.float32))
    np.save(tmp_path / "x.npy", rng.uniform(-4, 4, (1, 3, size, size)).astype(np.float32))
    q = runner.invoke(app, ["quantize", str(tmp_path / "float.onnx"), "--calib", str(tmp_path / "calib.npy"),
                            "-o", str(tmp_path / "q.onnx"), *options])
    assert q.exit_code == 0, q.output
    c = runner.invoke(app, ["compile", str(tmp_path / "q.onnx"), "-b", "ultra96v2", "-o", str(tmp_path / "out")])
    assert c.exit_code == 0, c.output
    r = runner.invoke(app, ["run", str(tmp_path / "out"), "--backend", "golden", "--input", str(tmp_path / "x.npy"),
                            "--compare"])
    assert r.exit_code == 0, r.output
    assert "tensors equal to onnxruntime, bit for bit" in r.output, r.output
    return q.output, onnx.load(str(tmp_path / "q.onnx"))


def _assert_on_the_fabric(tmp_path, model: onnx.ModelProto, segments: int) -> list:
    """Every Conv and Gemm of the quantized model in a fabric CONV; only the model's quantizers on the CPU."""
    graph = check_partition(tmp_path / "q.onnx", "ultra96v2")
    layers = {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    on_fabric = {s for op in graph.fabric_ops() if isinstance(op, ConvOp) for s in op.sources}
    assert layers <= on_fabric
    cpu = graph.cpu_nodes()
    assert {n.reason for n in cpu} == {CpuReason.QUANT_BOUNDARY} and len(cpu) == 2  # the input Q, the output DQ
    assert len(graph.segments) == segments
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["segments"]) == segments
    return graph.fabric_ops()


def test_tiny_yolov2_runs_whole_on_the_fabric(tmp_path):
    report, q = _quantize_and_compile(tmp_path, TinyYolo())
    assert "7 LeakyReLU slope(s) rounded to the nearest 2^-k" in report
    assert report.count(": 0.1 -> 0.125 (2^-3), largest change of its output ") == 7
    assert "model output 'y' with the rounded slopes vs the original: SQNR " in report
    assert "no node stayed float" in report
    assert [n for n in q.graph.node if n.op_type == "Pad"] == []
    ops = _assert_on_the_fabric(tmp_path, q, segments=1)
    pools = [op for op in ops if op.kind == "POOL"]
    assert [(p.stride, p.pads) for p in pools][-1] == (1, (0, 0, 1, 1))  # the replicate Pad, folded
    assert {op.leaky_shift for op in ops if op.act.name == "LEAKY"} == {3}


def test_mobilenet_v2_runs_whole_on_the_fabric(tmp_path):
    _, q = _quantize_and_compile(tmp_path, MobileNetV2())
    ops = _assert_on_the_fabric(tmp_path, q, segments=1)
    clips = [n for n in q.graph.node if n.op_type == "Clip"]
    assert len(clips) == 11  # every ReLU6 kept as Clip(0, 6): the exported graph computes what the fabric does
    bounded = [op for op in ops if op.name.endswith("/clip")]
    assert bounded  # some ReLU6 outputs have the scale 2^-5, where 6 (192) is inside the range: bounded exactly
    assert all(op.depthwise and (op.bias == 192).all() for op in bounded)
    assert any(op.kind == "ADD" for op in ops)
    mean = next(op for op in ops if any("GlobalAveragePool" in s for s in op.sources))
    assert mean.depthwise and mean.weights.shape[2:] == (4, 4)


def test_resnet_runs_whole_on_the_fabric(tmp_path):
    _, q = _quantize_and_compile(tmp_path, ResNet())
    ops = _assert_on_the_fabric(tmp_path, q, segments=1)
    assert [op.kind for op in ops].count("ADD") == 2


def test_mean_of_a_7x7_map_runs_on_the_fabric_with_its_factor_in_the_classifier(tmp_path):
    """At 56x56 the resnet-like model pools a 7x7 map: 49 values, which no shift divides by. The quantizer makes it
    a sum times 2^-6 (a depthwise 7x7 Conv, weights 2^-6) and scales the classifier's weights by 64/49."""
    buf = io.BytesIO()
    _export(ResNet(), buf, size=56)
    float_model = onnx.load_from_string(buf.getvalue())
    folded = fold_float_model(float_model)
    mean = next(n for n in folded.graph.node if n.name == "/GlobalAveragePool")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mean.attribute}
    assert mean.op_type == "Conv" and attrs["kernel_shape"] == [7, 7] and attrs["group"] == 16
    assert (onnx.numpy_helper.to_array(next(i for i in folded.graph.initializer if i.name == mean.input[1]))
            == 2.0**-6).all()
    x = np.random.default_rng(1).uniform(-4, 4, (1, 3, 56, 56)).astype(np.float32)
    ref, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for m in (float_model, folded))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    _, q = _quantize_and_compile(tmp_path, ResNet(), "--fast-ptq", size=56)
    ops = _assert_on_the_fabric(tmp_path, q, segments=1)
    assert next(op for op in ops if op.name.startswith("_GlobalAveragePool")).weights.shape == (16, 1, 7, 7)


class _Reorg(nn.Module):
    """The reorg (space-to-depth) of SkyNet's PyTorch code, as view/transpose steps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).transpose(3, 4).contiguous()
        x = x.view(b, c, h // 2 * w // 2, 4).transpose(2, 3).contiguous()
        x = x.view(b, c, 4, h // 2, w // 2).transpose(1, 2).contiguous()
        return x.view(b, 4 * c, h // 2, w // 2)


class SkyNet(nn.Module):
    """SkyNet's pattern (DAC-SDC 2019): depthwise and pointwise Conv-BN-ReLU6, a bypass reorganised to half the size
    and concatenated with the deeper features, a 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(_cbl(3, 8, 3, 1, "relu6"), _cbl(8, 8, 3, 1, "relu6", groups=8),
                               _cbl(8, 16, 1, act="relu6"))
        self.b = nn.Sequential(nn.MaxPool2d(2), _cbl(16, 16, 3, 1, "relu6", groups=16), _cbl(16, 32, 1, act="relu6"))
        self.reorg = _Reorg()
        self.head = nn.Sequential(_cbl(96, 32, 1, act="relu6"), nn.Conv2d(32, 10, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return self.head(torch.cat([self.reorg(a), self.b(a)], 1))


def test_skynet_reorg_runs_on_the_fabric(tmp_path):
    report, q = _quantize_and_compile(tmp_path, SkyNet())
    assert "Reshape moves values only: a chain of such nodes that is a space-to-depth" in report
    ops = _assert_on_the_fabric(tmp_path, q, segments=1)
    reorg = next(op for op in ops if any("reorg" in s for s in op.sources))
    assert reorg.stride == 2 and reorg.weights.shape == (64, 16, 2, 2)
    assert (np.argwhere(reorg.weights)[:, 1] == np.tile(np.arange(16), 4)).all()  # offset-major, as darknet


def test_leaky_slope_cpu_keeps_the_slope_on_the_cpu(tmp_path):
    report, q = _quantize_and_compile(tmp_path, TinyYolo(), "--leaky-slope", "cpu", "--fast-ptq")
    assert "slope(s) rounded" not in report
    assert "(LeakyRelu): slope 0.10000000149011612 is not 2^-k (--leaky-slope cpu keeps it)" in report
    graph = check_partition(tmp_path / "q.onnx", "ultra96v2")
    leaky = [n for n in graph.cpu_nodes() if n.node.op_type == "LeakyRelu"]
    assert len(leaky) == 7 and len(graph.segments) == 8  # a CPU round trip after each of the 7 fabric layers


def test_pads_fold_into_the_float_model_exactly():
    buf = io.BytesIO()
    _export(TinyYolo(), buf)
    float_model = onnx.load_from_string(buf.getvalue())
    folded = fold_float_model(float_model)
    assert "Pad" not in {n.op_type for n in folded.graph.node}
    x = np.random.default_rng(1).uniform(-4, 4, (1, 3, 32, 32)).astype(np.float32)
    ref, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for m in (float_model, folded))
    np.testing.assert_array_equal(got, ref)


def test_pads_fold_with_a_symbolic_batch():
    """A model exported with a dynamic batch: the edge Pad of the stride-1 max pool still folds into the MaxPool
    (only the spatial size of the Pad's input matters), and the folded model computes the same for any batch."""
    torch.manual_seed(0)
    net = TinyYolo().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 3, 32, 32), buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    float_model = onnx.load_from_string(buf.getvalue())
    assert float_model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert "Pad" in {n.op_type for n in float_model.graph.node}
    folded = fold_float_model(float_model)
    assert "Pad" not in {n.op_type for n in folded.graph.node}
    pools = [n for n in folded.graph.node if n.op_type == "MaxPool"]
    assert [onnx.helper.get_attribute_value(a) for a in pools[-1].attribute if a.name == "pads"] == [[0, 0, 1, 1]]
    x = np.random.default_rng(1).uniform(-4, 4, (3, 3, 32, 32)).astype(np.float32)
    ref, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for m in (float_model, folded))
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(("alpha", "k"), [(0.1, 3), (0.2, 2), (0.125, 3), (0.7, 1), (0.9, 1), (1e-9, 15),
                                          (0.0, None), (-0.1, None)])
def test_slopes_round_to_the_nearest_power_of_two(alpha, k):
    assert rounded_leaky_shift(alpha) == k


class _LeakyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.a1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.c2(self.a1(self.c1(x))), 0.2)


def test_qat_trains_and_exports_with_the_rounded_slope():
    gm = prepare_qat(_LeakyNet())
    assert gm.a1.negative_slope == 0.125
    gm.train()
    gm(torch.randn(2, 3, 8, 8))
    m = export_qdq(gm, [1, 3, 8, 8])
    slopes = [onnx.helper.get_attribute_value(n.attribute[0]) for n in m.graph.node if n.op_type == "LeakyRelu"]
    assert slopes == [0.125, 0.25]
    gm.eval()
    x = torch.randn(1, 3, 8, 8)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    np.testing.assert_array_equal(got[0], gm(x).detach().numpy())
    kept = prepare_qat(_LeakyNet(), QatOptions(leaky_slope=LeakySlope.CPU))
    kept.train()
    kept(torch.randn(2, 3, 8, 8))
    with pytest.raises(QatError, match="LeakyReLU slope 0.1 is not 2\\^-k"):
        export_qdq(kept, [1, 3, 8, 8])  # the quantized form has no float activation: a kept slope is refused


def test_qat_relu6_exports_as_clip_and_runs_on_the_fabric(tmp_path):
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sw.executor import Executor

    torch.manual_seed(2)
    net = nn.Sequential(_cbl(3, 8, 3, 1, "relu6"), _cbl(8, 8, 3, 1, "relu6", groups=8), _cbl(8, 4, 1, act="none"))
    with torch.no_grad():
        for block in net[:2]:
            block[0].weight.mul_(8)
    gm = prepare_qat(net)
    gm.train()
    for _ in range(3):
        gm(torch.rand(4, 3, 8, 8) * 8)  # ReLU6 inputs well beyond 6: the quantizers' scales become 2^-5
    gm.eval()
    m = export_qdq(gm, [1, 3, 8, 8])
    clips = [n for n in m.graph.node if n.op_type == "Clip"]
    assert len(clips) == 2
    x = (torch.rand(1, 3, 8, 8) * 8).numpy()
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(ref, gm(torch.from_numpy(x)).detach().numpy())
    r = compile_model(m, "ultra96v2", tmp_path / "out")
    assert [n.node.op_type for n in r.graph.cpu_nodes()] == ["QuantizeLinear", "DequantizeLinear"]
    assert any(op.name.endswith("/clip") for op in r.graph.fabric_ops())
    np.testing.assert_array_equal(Executor(tmp_path / "out").run(x)[0], ref)
