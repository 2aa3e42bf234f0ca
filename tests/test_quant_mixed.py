"""Mixed precision: the knapsack solvers, the second-order sensitivity, per-layer formats in the PTQ, what the
compiler does with a mixed model, and `shiftpu quantize --mixed-precision`."""

import io
import itertools
import json
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

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.numerics import WeightCode, shift_representable
from shiftpu.cli.main import app, main
from shiftpu.compiler.ir import CompileError
from shiftpu.compiler.quant.knapsack import KnapsackError, Option, exact, greedy, total, upgrade_path
from shiftpu.compiler.quant.mixed import (
    MixedPrecisionError,
    candidate_formats,
    choose_formats,
    sensitivity,
    weight_bytes,
)
from shiftpu.compiler.quant.onnxio import ModelError
from shiftpu.compiler.quant.ptq import LayerFormat, PtqOptions, quantize_model
from shiftpu.compiler.quant.sensitivity import curvatures

ROOT = Path(__file__).resolve().parents[1]
ONE, TWO = WeightCode.SHIFT4, WeightCode.SHIFT8_TWO_TERM
TWO_TERM_ACCEL = AccelConfig(weight_code=TWO)

torch.set_num_threads(1)


# -- the knapsack ---------------------------------------------------------------------------------


def _brute_force(items, budget):
    best = None
    for choice in itertools.product(*(range(len(opts)) for opts in items)):
        cost, loss = total(items, choice)
        if cost <= budget and (best is None or loss < best):
            best = loss
    return best


def _layer_like(rng, n):
    """An instance shaped like the mixed-precision problem: per layer w weights, one-term (w/2 bytes) or
    two-term (w bytes) codes, 8- or 4-bit outputs (4-bit: no byte saved, far more error)."""
    items = []
    for _ in range(n):
        w = int(rng.integers(10, 2000))
        trace = rng.lognormal(0, 1.5)
        one = rng.uniform(0.03, 0.06) * trace
        two = one * rng.uniform(0.02, 0.1)
        act8 = rng.lognormal(-4, 1)
        act4 = act8 * rng.uniform(100, 300)
        items.append([Option((w + 1) // 2, one + act8), Option(w, two + act8),
                      Option((w + 1) // 2, one + act4), Option(w, two + act4)])
    return items


def _milp(items, budget):
    """HAWQ-V3's integer linear program: binary x[i, k], one option per item, total cost <= budget."""
    opt = pytest.importorskip("scipy.optimize")
    sizes = [len(o) for o in items]
    c = np.array([o.loss for opts in items for o in opts])
    cost = np.array([o.cost for opts in items for o in opts], float)
    one_each = np.zeros((len(items), len(c)))
    start = np.cumsum([0, *sizes[:-1]])
    for i, (s, k) in enumerate(zip(start, sizes, strict=True)):
        one_each[i, s : s + k] = 1
    res = opt.milp(c, integrality=np.ones(len(c)), bounds=opt.Bounds(0, 1),
                   constraints=[opt.LinearConstraint(one_each, 1, 1), opt.LinearConstraint(cost[None], -np.inf, budget)])
    assert res.success, res.message
    return float(res.fun)


def test_exact_solver_is_the_brute_force_optimum():
    seed = 11
    rng = np.random.default_rng(seed)
    for case in range(200):
        n = int(rng.integers(1, 6))
        items = [[Option(int(rng.integers(0, 40)), float(rng.random())) for _ in range(int(rng.integers(1, 5)))]
                 for _ in range(n)]
        floor = sum(min(o.cost for o in opts) for opts in items)
        budget = floor + int(rng.integers(0, 60))
        choice = exact(items, budget)
        cost, loss = total(items, choice)
        assert cost <= budget
        assert loss == pytest.approx(_brute_force(items, budget), abs=1e-12), (seed, case)


def test_greedy_is_within_one_percent_of_the_ilp_optimum():
    """Many small instances shaped like the real problem, each solved exactly as HAWQ-V3's ILP (scipy's milp)
    and by the dynamic program; the greedy's total loss is within 1 % of the optimum at every budget."""
    seed = 2021
    rng = np.random.default_rng(seed)
    worst = 0.0
    for case in range(150):
        items = _layer_like(rng, int(rng.integers(2, 11)))
        low = sum(min(o.cost for o in opts) for opts in items)
        high = sum(max(o.cost for o in opts) for opts in items)
        budget = int(rng.integers(low, high + 1))
        optimum = _milp(items, budget)
        assert total(items, exact(items, budget))[1] == pytest.approx(optimum, rel=1e-9)
        cost, loss = total(items, greedy(items, budget))
        assert cost <= budget, (seed, case)
        worst = max(worst, loss / optimum - 1)
        assert loss <= optimum * 1.01, (seed, case, loss, optimum)
    print(f"seed {seed}: worst greedy / optimum - 1 = {worst:.2e}")


def test_greedy_looks_past_the_best_ratio():
    """The best loss reduction per byte (item B) leaves no room for the better whole (item A)."""
    items = [[Option(0, 10.0), Option(100, 0.0)], [Option(0, 9.0), Option(60, 0.0)]]
    assert greedy(items, 100) == [1, 0]  # loss 9; B alone would leave 10
    assert greedy(items, 160) == [1, 1]
    assert greedy(items, 59) == [0, 0]


def test_budget_below_the_cheapest_choice_is_refused():
    items = [[Option(5, 1.0), Option(9, 0.5)], [Option(3, 1.0)]]
    with pytest.raises(KnapsackError, match="below the cheapest choice"):
        greedy(items, 7)
    with pytest.raises(KnapsackError, match="below the cheapest choice"):
        exact(items, 7)


def test_upgrade_path_takes_the_best_loss_reduction_per_byte_first():
    items = [[Option(10, 5.0), Option(20, 1.0)],  # 4 / 10 = 0.4 per byte
             [Option(4, 3.0), Option(8, 1.0), Option(12, 0.0)],  # 2 / 4 = 0.5 (3 / 8 straight to 12), then 1 / 4
             [Option(1, 1.0), Option(1, 2.0)]]  # nothing to gain
    assert upgrade_path(items) == [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 2, 0]]


# -- sensitivity ----------------------------------------------------------------------------------


def _gemm_scale_model(w: np.ndarray, c: np.ndarray) -> onnx.ModelProto:
    """y = c * (x W^T): a Gemm, then a constant per-output factor (a Mul)."""
    nodes = [helper.make_node("Gemm", ["x", "w"], ["t"], transB=1), helper.make_node("Mul", ["t", "c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[1]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[0]])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_hutchinson_traces_of_weights_and_activations_are_exact_where_the_curvature_is_diagonal():
    """x one-hot rows: sum_n x_n x_n^T is diagonal, so G of the weights is diagonal and every +-1 probe gives
    the trace; G of t is diag(c^2) per sample. Expected values by hand: Tr G_w = sum_o c_o^2 * sum_n ||x_n||^2 /
    sum_n ||y_n||^2, Tr G_t = N sum_o c_o^2 / sum_n ||y_n||^2."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    c = np.float32([1.0, -2.0, 0.5])
    x = np.repeat(np.eye(5, dtype=np.float32), 2, axis=0) * np.float32(1.5)  # 10 samples, one-hot rows
    y = (x @ w.T) * c
    energy = float((y.astype(np.float64) ** 2).sum())
    curv, stats = curvatures(_gemm_scale_model(w, c), x, ["w", "t"], probes=3, samples=10)
    assert curv["w"].trace == pytest.approx(float((c**2).sum()) * float((x**2).sum()) / energy, rel=1e-3)
    assert curv["t"].trace == pytest.approx(10 * float((c**2).sum()) / energy, rel=1e-3)
    assert curv["w"].elements == 15 and curv["t"].elements == 3 and curv["w"].stderr < 1e-3 * curv["w"].trace
    np.testing.assert_allclose(np.sort(stats["t"].values), np.sort((x @ w.T).ravel()), rtol=1e-6)


def _export(net: nn.Module, shape, batch="N") -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), torch.zeros(1, *shape), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["y"],
                          dynamic_axes={"input": {0: "N"}} if batch == "N" else None)
    return onnx.load_from_string(buf.getvalue())


def _tiny(batch="N") -> onnx.ModelProto:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 4 * 4, 6))
    return _export(net, (3, 8, 8), batch)


LAYERS = ["/0/Conv", "/2/Conv", "/5/Gemm"]


def _calib(n=48, seed=1):
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def test_candidate_formats_follow_the_accelerator():
    assert candidate_formats(AccelConfig()) == [LayerFormat(ONE, 8), LayerFormat(ONE, 4)]
    assert candidate_formats(TWO_TERM_ACCEL) == [LayerFormat(ONE, 8), LayerFormat(ONE, 4), LayerFormat(TWO, 8),
                                                 LayerFormat(TWO, 4)]
    assert candidate_formats(TWO_TERM_ACCEL, act_bits=4) == [LayerFormat(ONE, 4), LayerFormat(TWO, 4)]
    assert candidate_formats(AccelConfig(weight_code=TWO, act_bits=4)) == [LayerFormat(ONE, 4), LayerFormat(TWO, 4)]


def test_sensitivities_rank_the_formats():
    layers = sensitivity(_tiny(), _calib(), candidate_formats(TWO_TERM_ACCEL), PtqOptions.fast())
    assert [s.name for s in layers] == LAYERS
    assert [s.weights for s in layers] == [3 * 8 * 9, 8 * 16 * 9, 256 * 6]
    for s in layers:
        assert s.weight_curvature.trace > 0 and s.output_curvature.trace > 0
        assert s.sensitivity(LayerFormat(TWO, 8)) < s.sensitivity(LayerFormat(ONE, 8))
        assert s.sensitivity(LayerFormat(ONE, 8)) < s.sensitivity(LayerFormat(ONE, 4))
        assert s.cost(LayerFormat(ONE, 8)) == s.cost(LayerFormat(ONE, 4)) == (s.weights + 1) // 2
        assert s.cost(LayerFormat(TWO, 8)) == s.weights


def _measured_sqnr(model: onnx.ModelProto, q: onnx.ModelProto, x: np.ndarray) -> float:
    def run(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"input": x})[0].astype(np.float64)

    ref = run(model)
    return 10 * np.log10((ref**2).sum() / ((ref - run(q)) ** 2).sum())


def test_the_choice_meets_the_budget_and_the_quantized_model_has_it():
    model, x = _tiny(), _calib()
    one = sum(weight_bytes(n, ONE) for n in (216, 1152, 1536))
    two = sum(weight_bytes(n, TWO) for n in (216, 1152, 1536))
    opts, report = choose_formats(model, x, PtqOptions.fast(), TWO_TERM_ACCEL, (one + two) // 2, "test")
    cost, error = report.total(report.chosen)
    assert one < cost <= (one + two) // 2
    assert list(opts.layer_formats) == LAYERS and all(f.act_bits == 8 for f in opts.layer_formats.values())
    assert report.uniform(TWO)[1] < error < report.uniform(ONE)[1]
    q, _ = quantize_model(model, x, opts)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for name, fmt in opts.layer_formats.items():
        (w,) = [v for k, v in inits.items() if k.startswith(name.replace("/", "_")) and k.endswith("_w_q")]
        assert shift_representable(w, TWO).all()
        assert shift_representable(w, ONE).all() == (fmt.weight_code is ONE), name
    # the predicted ordering holds on the model: mixed between all one-term and all two-term (fast PTQ, measured)
    sqnr = {c: _measured_sqnr(model, quantize_model(model, x, PtqOptions.fast(c))[0], x) for c in (ONE, TWO)}
    assert sqnr[ONE] < _measured_sqnr(model, q, x) < sqnr[TWO]
    # whole budgets: the ends
    assert choose_formats(model, x, PtqOptions.fast(), TWO_TERM_ACCEL, one)[1].chosen == [LayerFormat(ONE, 8)] * 3
    assert choose_formats(model, x, PtqOptions.fast(), TWO_TERM_ACCEL, two)[1].chosen == [LayerFormat(TWO, 8)] * 3
    lines = "\n".join(report.lines())
    assert "<- chosen" in lines and "frontier" in lines and "every weight takes 8 bits: 2904 bytes" in lines
    data = json.loads(json.dumps(report.to_dict()))
    assert [row["name"] for row in data["layers"]] == LAYERS and data["chosen"]["weight_bytes"] == cost
    assert [p["weight_bytes"] for p in data["frontier"]][0] == one and data["frontier"][-1]["weight_bytes"] == two


def test_one_term_accelerator_and_small_budget_are_refused():
    with pytest.raises(MixedPrecisionError, match="one-term weight codes only"):
        choose_formats(_tiny(), _calib(8), PtqOptions.fast(), AccelConfig(), 10_000, "ultra96v2")
    with pytest.raises(MixedPrecisionError, match="below the cheapest choice: every layer one-term takes 1452"):
        choose_formats(_tiny(), _calib(8), PtqOptions.fast(), TWO_TERM_ACCEL, 1000)


def test_layer_formats_apply_per_layer():
    x = _calib(24)
    formats = {"/0/Conv": LayerFormat(TWO, 4), "/2/Conv": LayerFormat(ONE, 8)}
    q, report = quantize_model(_tiny(), x, PtqOptions(layer_formats=formats))
    assert [(r.name, r.out_fmt.bits) for r in report.layers] == [("/0/Conv", 4), ("/2/Conv", 8), ("/5/Gemm", 8)]
    (clip,) = [n for n in q.graph.node if n.op_type == "Clip"]  # the 4-bit range clip of the first layer's output
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    lo, hi = float(inits[clip.input[1]]), float(inits[clip.input[2]])
    assert lo == 0.0 and np.log2(hi / 15) == np.round(np.log2(hi / 15))  # uint4 after the ReLU: 0 .. 15 * 2^e
    with pytest.raises(ModelError, match="'/9/Conv', not a layer of the model; its layers are '/0/Conv'"):
        quantize_model(_tiny(), x, PtqOptions(layer_formats={"/9/Conv": LayerFormat()}))


# -- the compiler and a mixed model ----------------------------------------------------------------


def _board_file(tmp_path, name, **accel) -> str:
    data = json.loads((ROOT / "boards" / "ultra96v2.json").read_text())
    data["name"] = name
    data["accel"].update(accel)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def _mixed_model() -> onnx.ModelProto:
    formats = {"/0/Conv": LayerFormat(TWO, 4), "/2/Conv": LayerFormat(ONE, 8), "/5/Gemm": LayerFormat(TWO, 8)}
    return quantize_model(_tiny(batch=1), _calib(16), replace(PtqOptions.fast(), layer_formats=formats))[0]


def test_mixed_model_runs_bit_exact_on_a_two_term_accelerator(tmp_path):
    """One-term weights are two-term codes with a zero second term, and the output width is per instruction."""
    got, ref = golden_vs_onnxruntime(_mixed_model(), tmp_path / "out", _board_file(tmp_path, "twoterm",
                                                                                     weight_code="SHIFT8_TWO_TERM"))
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)


def test_compile_names_the_layer_a_one_term_accelerator_cannot_run(tmp_path):
    from shiftpu.compiler.driver import compile_model

    with pytest.raises(CompileError, match=r"^node '_0_Conv_Conv': weight -?\d+ is not representable as SHIFT4 shift "
                       r"code: the layer has two-term weights .* weight_code is SHIFT8_TWO_TERM"):
        compile_model(_mixed_model(), "ultra96v2")
    with pytest.raises(CompileError, match=r"^node '_2_Conv_Conv': .*out_bits 8 exceeds the accelerator's act_bits 4"):
        compile_model(_mixed_model(), _board_file(tmp_path, "narrow", weight_code="SHIFT8_TWO_TERM", act_bits=4))


# -- the command ----------------------------------------------------------------------------------

runner = CliRunner()


def _cli_files(tmp_path):
    onnx.save(_tiny(), str(tmp_path / "f.onnx"))
    np.save(tmp_path / "calib.npy", _calib(32))
    return ["quantize", str(tmp_path / "f.onnx"), "--calib", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "q.onnx"),
            "--fast-ptq"]


def test_cli_mixed_precision(tmp_path):
    base = _cli_files(tmp_path)
    board = _board_file(tmp_path, "twoterm", weight_code="SHIFT8_TWO_TERM")
    r = runner.invoke(app, [*base, "--mixed-precision", "--board", board, "--max-weight-bytes", "2200",
                            "--mixed-report", str(tmp_path / "mixed.json")])
    assert r.exit_code == 0, r.output
    assert "mixed precision for" in r.output and "budget 2200 weight bytes" in r.output and "<- chosen" in r.output
    data = json.loads((tmp_path / "mixed.json").read_text())
    assert data["budget_weight_bytes"] == 2200 and 1452 < data["chosen"]["weight_bytes"] <= 2200
    assert data["measured_sqnr_db"] is not None
    q = onnx.load(str(tmp_path / "q.onnx"))
    two = [row["name"] for row in data["layers"] if row["chosen"]["weight_code"] == "SHIFT8_TWO_TERM"]
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer if t.name.endswith("_w_q")}
    for row in data["layers"]:
        (w,) = [v for k, v in inits.items() if k.startswith(row["name"].replace("/", "_"))]
        assert shift_representable(w, ONE).all() == (row["name"] not in two)


@pytest.mark.parametrize("args, message", [
    (["--mixed-precision", "--board", "ultra96v2", "--max-cycles", "100000"],
     "needs per-layer formats on the accelerator, which it does not have yet"),
    (["--mixed-precision", "--board", "ultra96v2", "--max-weight-bytes", "2000"], "one-term weight codes only"),
    (["--mixed-precision", "--max-weight-bytes", "2000"], "needs --board B"),
    (["--board", "ultra96v2"], "--board: only with --mixed-precision"),
    (["--mixed-precision", "--board", "ultra96v2", "--max-weight-bytes", "2000", "--weight-code", "two-term"],
     "leave out --weight-code"),
])
def test_cli_mixed_precision_refusals(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["shiftpu", *_cli_files(tmp_path), *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert "AccelConfig.weight_code" in err or "--max-cycles" not in args
    assert not (tmp_path / "q.onnx").exists()
