"""The detector benchmark's figures and targets (bench/detectors.py) on a made-up estimate, and the Tiny-YOLOv2
benchmark model (examples/tiny_yolov2.py) on the fabric at 64x64."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks and examples live next to the package, not in it

from bench import detectors  # noqa: E402
from bench.run import BOARDS  # noqa: E402

STALE = "assumed board clock, the stored estimate is for other RTL or an older analysis"
ASSUMED = f"{STALE}: run `shiftpu build-hw --board zcu104 --timing --no-ecp5 --record`"


def _layer(op: str, dataflow: str | None, macs: int, cycles: int) -> dict:
    return {"op": op, "dataflow": dataflow, "macs": macs, "cycles": cycles}


def _estimate(board: str = "ultra96v2", fps: float = 20.0, utilization: float = 0.8) -> dict:
    """A frame of 1,200 cycles: PIXEL 800 (38,400 MACs), INPUT_CHANNEL 200 (6,400 MACs), POOL 100, MOVE 50, and
    50 outside the layers; 64 MACs per cycle at most."""
    layers = [_layer("CONV", "PIXEL", 30_000, 500), _layer("POOL", None, 0, 100),
              _layer("CONV", "PIXEL", 8_400, 300), _layer("CONV", "INPUT_CHANNEL", 6_400, 200),
              _layer("MOVE", None, 0, 50)]
    return {"board": board, "schedule": "rtl", "clock_mhz": 200.0, "clock_source": "assumed", "clock_label": ASSUMED,
            "fps": fps, "cycles": 1_200, "macs": 44_800, "peak_macs_per_cycle": 64,
            "overall_pe_utilization": 0.5833, "utilization": utilization, "layers": layers}


def test_cycle_shares_split_the_frame_by_layer_kind():
    shares = detectors.cycle_shares(_estimate())
    assert shares == pytest.approx({"CONV PIXEL": 800 / 1200, "CONV INPUT_CHANNEL": 200 / 1200, "CONV DEPTHWISE": 0.0,
                                    "POOL": 100 / 1200, "ADD": 0.0, "MOVE": 50 / 1200,
                                    detectors.OVERHEAD: 50 / 1200}, abs=1e-12)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_conv_utilization_is_per_dataflow():
    assert detectors.kind_utilization(_estimate()) == {"CONV PIXEL": 0.75, "CONV INPUT_CHANNEL": 0.5}


def test_summary_keeps_the_clock_and_its_source():
    row = detectors.summary("tiny_yolov2", _estimate())
    assert row["kind"] == "estimated (performance model, rtl schedule)"
    assert (row["board"], row["clock_mhz"], row["clock_source"], row["clock_label"]) == (
        "ultra96v2", 200.0, "assumed", ASSUMED)
    assert (row["fps"], row["cycles"], row["gmac"], row["peak_macs_per_cycle"]) == (20.0, 1_200, 0.0, 64)
    assert (row["overall_pe_utilization"], row["utilization"]) == (0.5833, 0.8)
    assert row["cycle_shares"]["CONV PIXEL"] == 0.6667


def test_targets_met_missed_and_not_estimated():
    rows = [detectors.summary("tiny_yolov2", _estimate("ultra96v2", fps=18.0, utilization=0.75)),
            detectors.summary("tiny_yolov2", _estimate("zcu104", fps=79.99, utilization=0.7499))]
    got = {(t["model"], t["board"], t["figure"]): (t["value"], t["met"]) for t in detectors.targets(rows)}
    assert got == {("tiny_yolov2", "ultra96v2", "fps"): (18.0, True),
                   ("tiny_yolov2", "zcu104", "fps"): (79.99, False),
                   ("detector512", "ultra96v2", "fps"): (None, None),
                   ("tiny_yolov2", "ultra96v2", "utilization"): (0.75, True),
                   ("tiny_yolov2", "zcu104", "utilization"): (0.7499, False)}


def test_clock_words_keep_the_label_without_its_command():
    assert detectors.clock_words({"clock_mhz": 200.0, "clock_label": ASSUMED}) == f"200 MHz, {STALE}"
    met = "board clock, cleared by the estimated Fmax 231 MHz >= 1.1 x 200 MHz"
    assert detectors.clock_words({"clock_mhz": 200.0, "clock_label": met}) == f"200 MHz, {met}"


def test_page_says_estimated_and_at_which_clock():
    rows = [detectors.summary("tiny_yolov2", _estimate("zcu104", fps=79.99, utilization=0.7499))]
    page = detectors.markdown({"rows": rows, "targets": detectors.targets(rows)})
    assert f"- tiny_yolov2 >= 80 fps on zcu104: **not met**, 79.99 fps (estimated, at 200 MHz, {STALE})" in page
    assert "- detector512 >= 100 fps on ultra96v2: not estimated (board not run)" in page
    assert f"| zcu104 | tiny_yolov2 | 200 MHz, {STALE} | 79.99 | 1,200 | 0.000 | 64 | 58.3% | 75.0% |" in page
    assert ("| board | model | CONV PIXEL | CONV INPUT_CHANNEL | CONV DEPTHWISE | POOL | ADD | MOVE | "
            "segment start/end |") in page
    assert "| zcu104 | tiny_yolov2 | 66.7% (75%) | 16.7% (50%) | 0.0% | 8.3% | 0.0% | 4.2% | 4.2% |" in page
    assert f"- zcu104: 200 MHz, {ASSUMED}" in page


def test_macs_count_every_convolution():
    from examples.tiny_yolov2 import macs

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    assert macs(model, 8) == 8 * 8 * 4 * 27 + 8 * 8 * 4 * 9


@pytest.fixture(scope="module")
def tiny_yolov2_64(tmp_path_factory):
    from examples.tiny_yolov2 import write_tiny_yolov2

    return write_tiny_yolov2(tmp_path_factory.mktemp("tiny_yolov2") / "tiny_yolov2_64.onnx", calibration_images=1,
                             size=64)


@pytest.mark.slow  # writing the model quantizes its 15.9 M weights: 20 to 35 s on two cores
@pytest.mark.parametrize("board", BOARDS)
def test_tiny_yolov2_runs_on_the_fabric(tiny_yolov2_64, board):
    from shiftpu.compiler.driver import compile_model
    from shiftpu.compiler.ir import ConvOp, CpuReason, PoolOp

    out = tiny_yolov2_64.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in out.dim] == [1, 125, 2, 2]
    r = compile_model(tiny_yolov2_64, board)
    # only the float boundary stays on the CPU: the input's quantisation and the output's dequantisation
    assert [(n.node.op_type, n.reason) for n in r.graph.cpu_nodes()] == [
        ("QuantizeLinear", CpuReason.QUANT_BOUNDARY), ("DequantizeLinear", CpuReason.QUANT_BOUNDARY)]
    ops = r.graph.fabric_ops()
    assert [type(op).__name__ for op in ops] == ["ConvOp", "PoolOp"] * 6 + ["ConvOp"] * 3
    pools = [op for op in ops if isinstance(op, PoolOp)]
    # darknet's stride-1 pool: its edge Pad folded into the POOL's padding, right and below
    assert [(p.stride, p.pads) for p in pools] == [(2, (0, 0, 0, 0))] * 5 + [(1, (0, 0, 1, 1))]
    assert sum(isinstance(op, ConvOp) for op in ops) == 9
    # the 512x512 model's 5,279,842,304 MACs, on 1/64 of the pixels
    assert r.estimate["macs"] == 5_279_842_304 // 64
