"""The calibration-driven PTQ methods end to end: accuracy on real digits, equalisation, BatchNorm
re-estimation, seeds, the compiled model staying bit-exact, and the `shiftpu quantize` options."""

import io
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from qdq_graphs import golden_vs_onnxruntime
from torch import nn
from typer.testing import CliRunner

from shiftpu.arch.numerics import WeightCode, is_pow2, shift_representable
from shiftpu.cli.main import app
from shiftpu.compiler.quant.check import check_model
from shiftpu.compiler.quant.equalize import apply_equalisation, channel_ranges, equalisation_factors, find_pairs
from shiftpu.compiler.quant.fold import fold_float_model
from shiftpu.compiler.quant.ptq import PtqOptions, quantize_model
from shiftpu.compiler.quant.weights import sqnr_db

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks live next to the package, not in it

from bench import quant_ptq as digits  # noqa: E402

torch.set_num_threads(1)

#: How close to float the one-term PTQ of the digits CNN must stay (points of test accuracy).
DIGITS_MARGIN = 1.5


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_digits_one_term_ptq_is_close_to_float():
    """A Conv-BN-ReLU x3 + Linear CNN trained on scikit-learn's digits (40 epochs, seed 0, 594 test images):
    the data-free one-term PTQ drops 2.2 points; the calibration-driven one stays within DIGITS_MARGIN points
    of float, and its output SQNR on the test images is at least 10 dB higher."""
    train, test = digits.digits_splits()
    fm = digits.float_onnx(digits.train_float("pooled", 0, 40, train))
    reference = _run(fm, test.images)
    acc_float = digits.accuracy(reference, test.labels)
    calib = train.images[:256]
    old = digits.quantize_and_measure(fm, calib, test, reference, PtqOptions.fast(WeightCode.SHIFT4))
    new = digits.quantize_and_measure(fm, calib, test, reference, PtqOptions(WeightCode.SHIFT4))
    print(f"float {acc_float:.2f} %, one-term PTQ data-free {old.accuracy:.2f} % ({old.output_sqnr_db:.1f} dB), "
          f"calibration-driven {new.accuracy:.2f} % ({new.output_sqnr_db:.1f} dB)")
    print("\n".join(new.report.lines()))
    assert acc_float > 98.0
    assert acc_float - new.accuracy <= DIGITS_MARGIN
    assert new.accuracy >= old.accuracy
    assert new.output_sqnr_db >= old.output_sqnr_db + 10.0
    # each method kept the layer output error on the calibration data from rising, every layer gained
    for layer in new.report.layers:
        values = [v for _, v in layer.steps]
        assert [n for n, _ in layer.steps] == ["nearest", "bias correction", "scale search", "rounding"]
        assert (np.diff(values) >= -1e-9).all(), layer
        assert values[-1] > values[0] + 2.0, layer
    assert all(not s.kept or s.after_db > s.before_db for s in new.report.equalisation)


def _export(net: nn.Module, shape, batch="N") -> onnx.ModelProto:
    buf = io.BytesIO()
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, *shape), buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}} if batch == "N" else None)
    return onnx.load_from_string(buf.getvalue())


def _unbalanced(flatten: bool = False) -> onnx.ModelProto:
    """Conv -> ReLU -> [MaxPool -> Flatten ->] Conv/Gemm whose shared channels differ in range by up to 2^7."""
    torch.manual_seed(0)
    c1 = nn.Conv2d(4, 8, 3, padding=1)
    second = nn.Linear(8 * 4 * 4, 4) if flatten else nn.Conv2d(8, 4, 3, padding=1)
    k = torch.ldexp(torch.ones(8), torch.arange(8) - 4)
    with torch.no_grad():
        c1.weight.mul_(k[:, None, None, None])
        c1.bias.mul_(k)
        if flatten:
            second.weight.div_(k.repeat_interleave(16)[None, :])
        else:
            second.weight.div_(k[None, :, None, None])
    tail = [nn.MaxPool2d(2), nn.Flatten(), second] if flatten else [second]
    return _export(nn.Sequential(c1, nn.ReLU(), *tail), (4, 8, 8))


@pytest.mark.parametrize("flatten", [False, True])
def test_equalisation_is_exact_and_kept_where_it_helps(flatten):
    x = np.random.default_rng(0).normal(size=(64, 4, 8, 8)).astype(np.float32)
    folded = fold_float_model(_unbalanced(flatten))
    (pair,) = find_pairs(folded)
    assert pair.flattened is flatten
    ranges = channel_ranges(_run_tensor(folded, x, pair.tensor), 8)
    factors = equalisation_factors(folded, pair, ranges)
    assert is_pow2(factors).all() and len(np.unique(factors)) > 3
    equalised = apply_equalisation(folded, pair, factors)
    np.testing.assert_array_equal(_run(equalised, x), _run(folded, x))  # bit for bit: power-of-two factors
    assert channel_ranges(_run_tensor(equalised, x, pair.tensor), 8).max() / \
        channel_ranges(_run_tensor(equalised, x, pair.tensor), 8).min() < ranges.max() / ranges.min() / 8

    fast = PtqOptions.fast()
    _, without = quantize_model(_unbalanced(flatten), x, fast)
    _, with_eq = quantize_model(_unbalanced(flatten), x, replace(fast, equalize=True))
    (step,) = with_eq.equalisation
    print(with_eq.method_lines())
    assert step.kept and step.after_db > step.before_db + 2.0
    assert with_eq.output_sqnr_db["y"] > without.output_sqnr_db["y"] + 2.0
    assert "cross-layer equalisation" in "\n".join(with_eq.lines()) and "kept" in "\n".join(with_eq.lines())


def test_equalisation_candidates_are_scored_without_the_report_measurement(monkeypatch):
    """Each equalisation candidate is quantized only to be scored: the report's SQNR measurement (a run with
    every layer's input and output kept) is made once, for the model returned, and its figures are unchanged."""
    from shiftpu.compiler.quant import ptq

    x = np.random.default_rng(0).normal(size=(32, 4, 8, 8)).astype(np.float32)
    options = replace(PtqOptions.fast(), equalize=True)
    q_before, before = quantize_model(_unbalanced(False), x, options)
    measured = []
    original = ptq._Quantizer.measure
    monkeypatch.setattr(ptq._Quantizer, "measure", lambda self, *a: (measured.append(1), original(self, *a))[1])
    q_after, after = quantize_model(_unbalanced(False), x, options)
    (step,) = after.equalisation
    assert step.kept and len(measured) == 1
    assert q_after.SerializeToString() == q_before.SerializeToString()
    assert after.output_sqnr_db == before.output_sqnr_db and after.layers == before.layers


def _two_unbalanced_pairs() -> onnx.ModelProto:
    """Conv -> ReLU -> Conv -> LeakyReLU -> MaxPool -> Conv, both shared sets of channels unbalanced (up to 2^7)."""
    torch.manual_seed(1)
    c1, c2, c3 = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
    k1 = torch.ldexp(torch.ones(8), torch.arange(8) - 4)
    k2 = torch.ldexp(torch.ones(8), 3 - torch.arange(8))
    with torch.no_grad():
        c1.weight.mul_(k1[:, None, None, None])
        c1.bias.mul_(k1)
        c2.weight.div_(k1[None, :, None, None])
        c2.weight.mul_(k2[:, None, None, None])
        c2.bias.mul_(k2)
        c3.weight.div_(k2[None, :, None, None])
    return _export(nn.Sequential(c1, nn.ReLU(), c2, nn.LeakyReLU(0.125), nn.MaxPool2d(2), c3), (4, 8, 8))


def _random_pair() -> onnx.ModelProto:
    torch.manual_seed(2)
    return _export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)), (3, 8, 8))


@pytest.mark.parametrize("make", [lambda: _unbalanced(False), lambda: _unbalanced(True), _two_unbalanced_pairs,
                                  _random_pair], ids=["conv", "flatten", "two-pairs", "random"])
def test_equalisation_scores_are_those_of_a_whole_fast_ptq(make):
    """The candidates are scored from one float run (their statistics derived from it) and the pairs that help are
    kept: each score is the model output SQNR of a whole fast PTQ of the equalised model (statistics collected
    again), the statistics handed on are those of the model returned, and the decisions follow the scores."""
    from shiftpu.compiler.quant import ptq
    from shiftpu.compiler.quant.calibrate import collect_stats, input_spec

    folded = fold_float_model(make())
    _, shape = input_spec(folded)
    x = np.random.default_rng(0).normal(size=(40, *shape[1:])).astype(np.float32)
    options = replace(PtqOptions.fast(), equalize=True)
    fast = replace(PtqOptions.fast(), layer_formats=options.layer_formats)
    reference = ptq._run(folded, input_spec(folded)[0], x, [o.name for o in folded.graph.output])

    def whole(model: onnx.ModelProto) -> float:
        q = ptq._Quantizer(model, x, fast).run(measure=False)[0]
        return ptq._output_sqnr(reference, ptq._run(q, input_spec(q)[0], x, list(reference)))

    equalised, steps, stats = ptq._equalise(folded, x, options)
    assert steps and stats is not None
    model = folded
    for step, pair in zip(steps, find_pairs(folded), strict=True):
        assert step.before_db == pytest.approx(whole(model), abs=1e-9)
        if step.note:
            continue
        ranges = channel_ranges(_run_tensor(model, x, pair.tensor), len(stats[pair.tensor].channel_max_abs))
        candidate = apply_equalisation(model, pair, equalisation_factors(model, pair, ranges))
        assert step.after_db == pytest.approx(whole(candidate), abs=1e-9)
        assert step.kept == (step.after_db > step.before_db + ptq.EQUALISATION_MIN_GAIN_DB)
        if step.kept:
            model = candidate
    assert equalised.SerializeToString() == model.SerializeToString()
    again = collect_stats(equalised, x, ptq._Quantizer(equalised, x, fast).stat_names())
    for name, st in again.items():
        assert (st.max_abs, st.min) == (stats[name].max_abs, stats[name].min), name
        np.testing.assert_array_equal(st.values, stats[name].values)
    if make is _two_unbalanced_pairs:
        assert [s.kept for s in steps] == [True, True]


def _run_tensor(model: onnx.ModelProto, x: np.ndarray, name: str) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([name], {sess.get_inputs()[0].name: x})[0]


def test_balanced_pairs_are_left_alone():
    x = np.random.default_rng(1).random((16, 3, 8, 8), dtype=np.float32)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    with torch.no_grad():
        net[0].weight.fill_(0.1)
        net[0].bias.zero_()
        net[2].weight.fill_(0.1)
    _, report = quantize_model(_export(net, (3, 8, 8)), x)
    (step,) = report.equalisation
    assert not step.kept and step.note == "already balanced (every factor is 1)"


def _bn_model() -> onnx.ModelProto:
    """A BatchNorm that stays float: after a ReLU, not after a Conv."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[4].running_mean.uniform_(0.0, 0.5)
        net[4].running_var.uniform_(0.5, 2.0)
        net[4].weight.uniform_(0.5, 2.0)
    return _export(net, (3, 8, 8))


def test_float_batchnorm_is_reestimated_on_the_quantized_model():
    x = np.random.default_rng(0).random((64, 3, 8, 8), dtype=np.float32)
    only_bn = PtqOptions(adaround=False, scale_search=False, bias_correction=False, equalize=False)
    q, report = quantize_model(_bn_model(), x, only_bn)
    (step,) = report.bn_reestimation
    assert step.kept and step.after_db > step.before_db
    assert [f.op_type for f in report.float_nodes] == ["BatchNormalization"]
    _, plain = quantize_model(_bn_model(), x, PtqOptions.fast())
    assert report.output_sqnr_db["y"] > plain.output_sqnr_db["y"]
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    bn = next(n for n in q.graph.node if n.op_type == "BatchNormalization")
    float_bn = next(n for n in _bn_model().graph.node if n.op_type == "BatchNormalization")
    float_inits = {t.name: numpy_helper.to_array(t) for t in _bn_model().graph.initializer}
    assert not np.allclose(inits[bn.input[3]], float_inits[float_bn.input[3]])  # the mean moved
    np.testing.assert_array_equal(inits[bn.input[1]], float_inits[float_bn.input[1]])  # gamma kept


def _small_net(batch="N") -> onnx.ModelProto:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1,
                                                                                         groups=16),
                        nn.LeakyReLU(0.125), nn.Flatten(), nn.Linear(16 * 2 * 2, 5))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return _export(net, (3, 8, 8), batch)


def test_same_seed_same_model_and_legal_codes():
    x = np.random.default_rng(5).random((48, 3, 8, 8), dtype=np.float32)
    a, ra = quantize_model(_small_net(), x, PtqOptions(seed=7))
    b, _ = quantize_model(_small_net(), x, PtqOptions(seed=7))
    assert a.SerializeToString() == b.SerializeToString()
    assert ra.seed == 7 and "seed 7" in "\n".join(ra.lines())
    inits = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    for n in a.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert is_pow2(inits[n.input[1]]).all() and not inits[n.input[2]].any()
            if n.input[0] in inits and inits[n.input[0]].dtype == np.int8:
                assert shift_representable(inits[n.input[0]]).all()
    assert check_model(a).ok


def test_fast_ptq_is_the_data_free_quantization():
    x = np.random.default_rng(5).random((16, 3, 8, 8), dtype=np.float32)
    _, report = quantize_model(_small_net(), x, PtqOptions.fast())
    assert all(not r.steps for r in report.layers)
    assert not report.equalisation and not report.bn_reestimation and not report.method_lines()


def test_default_ptq_model_compiles_and_runs_bit_exact(tmp_path):
    x = np.random.default_rng(6).random((32, 3, 8, 8), dtype=np.float32)
    q, report = quantize_model(_small_net(batch=1), x)
    assert all(r.steps for r in report.layers)
    got, ref = golden_vs_onnxruntime(q, tmp_path / "out", "ultra96v2", seed=1)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)


runner = CliRunner()


def test_cli_options(tmp_path):
    onnx.save(_small_net(), str(tmp_path / "f.onnx"))
    np.save(tmp_path / "calib.npy", np.random.default_rng(2).random((16, 3, 8, 8), dtype=np.float32))
    base = ["quantize", str(tmp_path / "f.onnx"), "--calib", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "q.onnx")]
    r = runner.invoke(app, [*base, "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "calibration-driven methods (seed 3)" in r.output and "rounding" in r.output
    r = runner.invoke(app, [*base, "--no-adaround", "--no-equalize"])
    assert r.exit_code == 0, r.output
    assert "scale search" in r.output and " rounding" not in r.output and "equalisation" not in r.output
    r = runner.invoke(app, [*base, "--fast-ptq"])
    assert r.exit_code == 0, r.output
    assert "calibration-driven" not in r.output and check_model(onnx.load(str(tmp_path / "q.onnx"))).ok
    r = runner.invoke(app, ["quantize", "--help"])
    for flag in ("--seed", "--fast-ptq", "--no-adaround", "--no-scale-search", "--no-bias-correction",
                 "--no-equalize", "--no-bn-reestimate"):
        assert flag in r.output


def test_tiny_gemm_model_without_conv():
    """MatMul + Add folded to a Gemm: one-row patches, the methods run and the bias is corrected."""
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(64, 6)).astype(np.float32)
    q, report = quantize_model(m, x)
    (layer,) = report.layers
    assert layer.steps[-1][1] >= layer.steps[0][1]
    assert sqnr_db(_run(m, x), _run(q, x)) > sqnr_db(_run(m, x), _run(quantize_model(m, x, PtqOptions.fast())[0], x))
