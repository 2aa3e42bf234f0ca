"""Shift QAT: prepare_qat, the fake-quant layers, and export to QDQ ONNX equal to onnxruntime bit for bit."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftpu.arch.numerics import WeightCode, is_pow2, shift_representable
from shiftpu.compiler.quant.check import check_model
from shiftpu.compiler.quant.export import export_qdq
from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat
from shiftpu.compiler.quant.qat import ActQuant, QatError, QConv2d, ScaleMode, leaky_shift

torch.set_num_threads(1)


class Net(nn.Module):
    """Every operation the exporter knows: conv+BN, depthwise, LeakyReLU, pooling, add, upsample, concat, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2 = nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        a = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        b = F.leaky_relu(self.dw(a), 0.125)
        c = F.relu(a + b)
        d = torch.cat([c, F.interpolate(F.max_pool2d(c, 2), scale_factor=2, mode="nearest")], 1)
        e = F.max_pool2d(self.c2(d), 2)
        return self.fc(torch.flatten(e, 1))


def _ort(model: onnx.ModelProto, x: np.ndarray, level) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _trained(options: QatOptions, seed: int, steps: int = 3) -> torch.fx.GraphModule:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        net.b1.running_mean.uniform_(-0.5, 0.5)
        net.b1.running_var.uniform_(0.5, 2.0)
    qat = prepare_qat(net, options)
    opt = torch.optim.SGD(qat.parameters(), lr=0.01)
    qat.train()
    for _ in range(steps):
        loss = qat(torch.rand(8, 3, 16, 16) * 2 - (0 if not options.input_signed else 1)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return qat.eval()


@pytest.mark.parametrize("options", [
    QatOptions(input_signed=False),
    QatOptions(weight_code=WeightCode.SHIFT8_TWO_TERM, input_signed=True),
    QatOptions(act_bits=4, input_signed=False),
    QatOptions(scale_mode=ScaleMode.LEARNED, input_signed=False),
], ids=["shift4", "two-term", "act4", "learned"])
@pytest.mark.parametrize("seed", [0, 1])
def test_onnxruntime_equals_pytorch_exactly(options, seed):
    print("seed", seed)
    qat = _trained(options, seed)
    model = export_qdq(qat, ["N", 3, 16, 16])
    x = (torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(seed + 100)) * 2
         - (1 if options.input_signed else 0))
    with torch.no_grad():
        ref = qat(x).numpy()
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        got = _ort(model, x.numpy(), level)
        assert np.array_equal(got, ref), f"max diff {np.abs(got - ref).max()}"
    report = check_model(model, _config(options.weight_code))
    assert report.ok, report.lines()


def _config(code):
    from dataclasses import replace

    from shiftpu.arch.config import AccelConfig

    return replace(AccelConfig(), weight_code=code)


def test_exported_form_follows_the_contract():
    model = export_qdq(_trained(QatOptions(input_signed=False), 5), [1, 3, 16, 16])
    assert [o.version for o in model.opset_import if o.domain == ""] == [19]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 3 and ops.count("Gemm") == 1
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert is_pow2(inits[n.input[1]]).all()
            assert not inits[n.input[2]].any()
        if n.op_type == "Conv":
            w_dq = next(m for m in model.graph.node if m.output[0] == n.input[1])
            b_dq = next(m for m in model.graph.node if m.output[0] == n.input[2])
            x_dq = next(m for m in model.graph.node if m.output[0] == n.input[0])
            w = inits[w_dq.input[0]]
            assert w.dtype == np.int8 and shift_representable(w).all()
            assert inits[b_dq.input[0]].dtype == np.int32
            np.testing.assert_array_equal(inits[b_dq.input[1]], inits[w_dq.input[1]] * inits[x_dq.input[1]])
    # the first layer reads the uint8 input; ReLU outputs are uint8, the LeakyReLU output int8
    q_types = [inits[n.input[2]].dtype for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q_types[:2] == [np.uint8, np.uint8]
    assert np.int8 in q_types


def test_batchnorm_is_folded_before_weight_quantization():
    torch.manual_seed(2)
    conv, bn = nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 16.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, 0.5, -0.5]))
    q = QConv2d(conv, bn).eval()
    sw = q.shift_weights()
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    from shiftpu.compiler.quant.weights import quantize_weights

    expected = quantize_weights((conv.weight * k.reshape(-1, 1, 1, 1)).detach().numpy())
    np.testing.assert_array_equal(sw.values, expected.values)
    np.testing.assert_array_equal(sw.exponents, expected.exponents)


def test_act_quant_rounds_half_to_even_and_saturates():
    aq = ActQuant()
    aq.train()
    aq(torch.tensor([1.0]))  # observes max 1.0 -> exponent -6 (127 / 64 >= 1)
    aq.eval()
    assert aq.exponent == -6
    x = torch.tensor([0.5 / 64, 1.5 / 64, 2.5 / 64, -2.5 / 64, 5.0, -5.0])
    assert (aq(x) * 64).tolist() == [0.0, 2.0, 2.0, -2.0, 127.0, -128.0]


def test_straight_through_gradients_reach_weights_and_scales():
    aq = ActQuant(mode=ScaleMode.LEARNED)
    aq.train()
    x = torch.linspace(-3, 3, 50, requires_grad=True)
    aq(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert aq.log2_scale.grad is not None
    qat = prepare_qat(Net(), QatOptions())
    qat.train()
    qat(torch.rand(2, 3, 16, 16)).sum().backward()
    assert qat.c1.weight.grad.abs().sum() > 0 and qat.c1.bn.weight.grad.abs().sum() > 0


def test_prepare_leaves_the_original_model_alone():
    net = Net()
    prepare_qat(net)
    assert isinstance(net.c1, nn.Conv2d) and not isinstance(net.c1, QConv2d)


def test_errors_name_the_cause():
    with pytest.raises(QatError, match="no Conv2d or Linear"):
        prepare_qat(nn.Sequential(nn.ReLU()))
    with pytest.raises(QatError, match="slope 0.1 is not 2\\^-k"):
        leaky_shift(0.1)
    with pytest.raises(QatError, match="before it observed"):
        ActQuant().eval()(torch.zeros(1))

    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return torch.sigmoid(self.c(x))

    qat = prepare_qat(Sig())
    qat.train()
    qat(torch.rand(1, 1, 2, 2))
    with pytest.raises(QatError, match="sigmoid"):
        export_qdq(qat, [1, 1, 2, 2])


def test_frozen_activation_scales_stay_put():
    from shiftpu.compiler.quant.qat import freeze_activation_scales

    qat = prepare_qat(Net(), QatOptions(input_signed=False))
    qat.train()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5
    x[0, 0, 0, 0] = 1.0
    qat(x)
    before = {n: m.exponent for n, m in qat.named_modules() if isinstance(m, ActQuant)}
    freeze_activation_scales(qat)
    qat(torch.rand(2, 3, 16, 16) * 50)
    assert {n: m.exponent for n, m in qat.named_modules() if isinstance(m, ActQuant)} == before
    assert before["act_quant_0"] == -7  # input maximum 1.0: 255 * 2^-7 >= 1 > 255 * 2^-8


@pytest.mark.parametrize("input_signed", [False, True])
def test_4bit_activations_compile_to_the_fabric_exactly(tmp_path, input_signed):
    """The 4-bit export (Clip to the 4-bit range before each QuantizeLinear) runs whole on the fabric, exactly."""
    from shiftpu.compiler.driver import compile_model
    from shiftpu.sw.executor import Executor

    qat = _trained(QatOptions(act_bits=4, input_signed=input_signed), 3)
    model = export_qdq(qat, [1, 3, 16, 16])
    res = compile_model(model, "pynq-z2", tmp_path / "out")
    cpu = [(n.node.op_type, n.reason.name) for n in res.graph.cpu_nodes()]
    assert all(reason in ("QUANT_BOUNDARY", "SHAPE_ONLY") for _, reason in cpu), cpu
    assert {t.fmt.bits for t in res.graph.tensors.values()} == {4}
    out_bits = {i.out_bits for img in res.images for i in img.instructions}
    assert out_bits == {4}
    x = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - (1 if input_signed else 0))
    golden = Executor(tmp_path / "out").run(x.numpy())[0]
    with torch.no_grad():
        ref = qat(x).numpy()
    assert np.array_equal(golden, _ort(model, x.numpy(), ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    assert np.array_equal(golden, ref)
