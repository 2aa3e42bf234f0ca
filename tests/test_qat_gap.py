"""Shift QAT with global average pooling: every PyTorch form of it prepares, exports exactly (onnxruntime equals
PyTorch), and compiles: to the fabric over a map of 2^k values, to the CPU otherwise, with no error."""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftpu.compiler.quant.check import check_model
from shiftpu.compiler.quant.export import export_qdq
from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat
from shiftpu.compiler.quant.qat import ActQuant, QatError

torch.set_num_threads(1)

#: The ways a model writes global average pooling, and the ONNX node each exports to.
FORMS = {"module": "GlobalAveragePool", "function": "GlobalAveragePool", "mean": "ReduceMean",
         "torch.mean": "GlobalAveragePool"}


class GapNet(nn.Module):
    """Conv-BN-ReLU, a second conv (ReLU or none), global average pooling written as ``form``, a classifier."""

    def __init__(self, form: str, relu: bool = True) -> None:
        super().__init__()
        self.form, self.relu = form, relu
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.c2(F.relu(self.b1(self.c1(x))))
        x = F.relu(x) if self.relu else x
        if self.form == "module":
            x = torch.flatten(self.pool(x), 1)
        elif self.form == "function":
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        elif self.form == "mean":
            x = x.mean((2, 3))
        else:
            x = torch.flatten(torch.mean(x, dim=(-2, -1), keepdim=True), 1)
        return self.fc(x)


def _qat(form: str, size: int, seed: int, relu: bool = True) -> torch.fx.GraphModule:
    torch.manual_seed(seed)
    qat = prepare_qat(GapNet(form, relu), QatOptions(input_signed=False))
    opt = torch.optim.SGD(qat.parameters(), lr=0.01)
    qat.train()
    for _ in range(3):
        loss = qat(torch.rand(8, 3, size, size)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return qat.eval()


def _ort(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("size", [4, 6])  # 16 values (a shift divides) and 36 (not a power of two)
def test_every_form_exports_and_equals_pytorch_exactly(form, size):
    seed = size
    print("seed", seed)
    qat = _qat(form, size, seed)
    model = export_qdq(qat, [1, 3, size, size])
    ops = [n.op_type for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert ops == ["Conv", "Relu", "Conv", "Relu", FORMS[form]] + (["Flatten"] if FORMS[form] != "ReduceMean" else []) \
        + ["Gemm"]
    findings = [(f.op_type, f.detail) for f in check_model(model).findings]
    if size == 4:
        assert findings == []
    else:  # the fabric divides by shifting: the check names the mean, which then runs on the CPU
        assert findings == [(FORMS[form], "mean of a 6x6 map: the fabric averages maps of a power-of-two number of "
                             "values, at most 7x7 (one CONV, weights 1)")]
    x = torch.rand(64, 3, size, size, generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        ref = qat(x).numpy()
    got = _ort(model, x.numpy())
    assert np.array_equal(got, ref), f"max diff {np.abs(got - ref).max()}"


@pytest.mark.parametrize(("relu", "signed"), [(True, False), (False, True)])
def test_the_mean_keeps_the_sign_of_its_input(relu, signed):
    """After a ReLU the mean is never negative: uint8, one more bit of resolution than int8."""
    qat = _qat("module", 4, 0, relu=relu)
    modules = dict(qat.named_modules())
    mean = next(n for n in qat.graph.nodes if n.op == "call_module" and n.target == "pool")
    (after,) = mean.users
    assert isinstance(modules[after.target], ActQuant)
    assert modules[after.target].fmt.signed is signed


def _compiled(tmp_path, size: int):
    from shiftpu.compiler.driver import compile_model

    qat = _qat("module", size, 1)
    model = export_qdq(qat, [1, 3, size, size], tmp_path / "gap.onnx")
    return qat, model, compile_model(model, "pynq-z2", tmp_path / "out")


def _golden_equals_pytorch(qat, folder, size: int) -> None:
    from shiftpu.sw.executor import Executor

    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = qat(x).numpy()
    assert np.array_equal(Executor(folder).run(x.numpy())[0], ref)


def test_mean_of_16_values_runs_on_the_fabric_exactly(tmp_path):
    qat, _, res = _compiled(tmp_path, 4)
    cpu = [(n.node.op_type, n.reason.name) for n in res.graph.cpu_nodes()]
    assert all(reason in ("QUANT_BOUNDARY", "SHAPE_ONLY") for _, reason in cpu), cpu
    assert "GlobalAveragePool" not in [op for op, _ in cpu]
    _golden_equals_pytorch(qat, tmp_path / "out", 4)


def test_mean_of_9_values_runs_on_the_cpu_exactly(tmp_path):
    qat, _, res = _compiled(tmp_path, 3)
    cpu = {n.node.op_type: n.reason.name for n in res.graph.cpu_nodes()}
    assert cpu.get("GlobalAveragePool") == "UNSUPPORTED_ATTRIBUTES", cpu
    _golden_equals_pytorch(qat, tmp_path / "out", 3)


def test_shiftpu_compile_accepts_the_export(tmp_path, monkeypatch, capsys):
    from shiftpu.cli.main import main

    _qat_model = _qat("mean", 3, 2)
    export_qdq(_qat_model, [1, 3, 3, 3], tmp_path / "gap.onnx")
    monkeypatch.setattr(sys, "argv", ["shiftpu", "compile", str(tmp_path / "gap.onnx"), "--board", "pynq-z2", "-o",
                                      str(tmp_path / "out"), "--quiet"])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    assert (e.value.code or 0) == 0, err
    assert "Traceback" not in err and (tmp_path / "out").is_dir()


class _Pool2(nn.Module):
    def __init__(self, pool: nn.Module | None, dims: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.pool, self.dims = pool, dims

    def forward(self, x):
        x = F.relu(self.c(x))
        return self.pool(x) if self.pool is not None else x.mean(self.dims, keepdim=True)


@pytest.mark.parametrize(("model", "what"), [(_Pool2(nn.AdaptiveAvgPool2d(2)), "pool"), (_Pool2(None, (1,)), "mean")])
def test_pooling_that_is_not_global_is_refused_by_name(model, what):
    qat = prepare_qat(model, QatOptions(input_signed=False))
    qat.train()
    qat(torch.rand(2, 3, 4, 4))
    with pytest.raises(QatError, match=rf"{what}.*only global average pooling"):
        export_qdq(qat.eval(), [1, 3, 4, 4])


def test_digits_example_exports_compile_as_they_are(tmp_path, monkeypatch, capsys):
    """examples/digits writes fixed input shapes (no symbolic batch to bind) and keeps the float BatchNorms."""
    import onnx

    from shiftpu.cli.main import main

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.digits import train as digits

    digits.main(["--epochs", "1", "--qat-epochs", "1", "--calib", "32", "--out", str(tmp_path), "--threads", "1"])
    capsys.readouterr()
    for name in ("digits_float", "digits_ptq", "digits_qat"):
        dims = onnx.load(str(tmp_path / f"{name}.onnx")).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims] == [1, 1, 8, 8] and not any(d.dim_param for d in dims), name
    float_ops = [n.op_type for n in onnx.load(str(tmp_path / "digits_float.onnx")).graph.node]
    assert float_ops.count("BatchNormalization") == 3
    for name in ("digits_ptq", "digits_qat"):
        monkeypatch.setattr(sys, "argv", ["shiftpu", "compile", str(tmp_path / f"{name}.onnx"), "-b", "pynq-z2",
                                          "-o", str(tmp_path / name), "--quiet"])
        with pytest.raises(SystemExit) as e:
            main()
        out, err = capsys.readouterr()
        assert (e.value.code or 0) == 0, err
        assert "bound to" not in out + err and "1 fabric segment(s)" in out
