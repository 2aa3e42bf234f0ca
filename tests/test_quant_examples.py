"""The example trainings (digits, shapes), the shipped demo detector and the 512x512 benchmark detector."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the examples live next to the package, not in it

from examples.digits import train as digits  # noqa: E402
from examples.shapes import train as shapes  # noqa: E402
from shiftpu.compiler.quant.check import check_model  # noqa: E402
from shiftpu.compiler.quant.export import export_qdq  # noqa: E402
from shiftpu.compiler.quant.prepare import QatOptions, prepare_qat  # noqa: E402
from shiftpu.shapes_dataset import CLASSES, make_image, make_split  # noqa: E402

MODELS = ROOT / "shiftpu" / "models"
torch.set_num_threads(1)


def test_shapes_data_set_is_deterministic_and_sane():
    a, b = make_split("test", 6), make_split("test", 6)
    np.testing.assert_array_equal(a.images, b.images)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    assert not np.array_equal(a.images, make_split("train", 6).images)
    assert a.images.shape == (6, 3, 64, 64) and a.images.dtype == np.float32
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0
    for boxes, labels in zip(a.boxes, a.labels, strict=True):
        assert 1 <= len(labels) <= 3 and set(labels.tolist()) <= set(range(len(CLASSES)))
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 64).all()


def test_shapes_box_is_the_tight_box_of_the_shape():
    img, boxes, _ = make_image(7, 3)
    x0, y0, x1, y1 = boxes[0].astype(int)
    background = img[:, 0, 0]
    assert not np.allclose(img[:, y0:y1, x0:x1].mean(axis=(1, 2)), background, atol=0.05)


def test_shapes_training_steps_export_exactly(tmp_path):
    split = make_split("train", 32)
    torch.manual_seed(0)
    model = shapes.ShapesDetector(len(CLASSES))
    shapes.train(model, split, epochs=1, lr=1e-3, batch=16, log=lambda s: None)
    qat = prepare_qat(model, QatOptions(input_signed=False))
    shapes.train(qat, split, epochs=1, lr=1e-4, batch=16, log=lambda s: None)
    heads = shapes.predict(qat, split.images[:8])
    path = tmp_path / "det.onnx"
    export_qdq(qat, [1, 3, 64, 64], path)
    assert shapes.onnx_equals_torch(path, split.images[:8], heads)
    assert check_model(onnx.load(str(path))).ok


def test_digits_quick_run_exports_exactly(tmp_path):
    result = digits.main(["--epochs", "1", "--qat-epochs", "1", "--calib", "64", "--out", str(tmp_path),
                          "--threads", "1"])
    assert result["qat_onnx_equal"] is True
    assert (tmp_path / "digits_ptq.onnx").is_file() and (tmp_path / "digits_qat.onnx").is_file()
    assert check_model(onnx.load(str(tmp_path / "digits_qat.onnx"))).ok


@pytest.mark.slow
def test_digits_accuracy_targets(tmp_path):
    r = digits.main(["--out", str(tmp_path)])
    print(r)
    assert r["qat_onnx_equal"] is True
    assert r["float"] - r["qat"] <= 0.5
    assert r["float"] - r["ptq"] <= 2.0


def test_shipped_detector_matches_its_sidecar():
    meta = json.loads((MODELS / "shapes_detector.json").read_text())
    model = onnx.load(str(MODELS / meta["model"]))
    assert check_model(model).ok
    assert (MODELS / meta["model"]).stat().st_size < 200_000
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == meta["input"]["name"] and inp.shape[1:] == meta["input"]["shape"][1:]
    split = make_split("test", meta["dataset"]["test"]["images"])
    assert inp.shape == meta["input"]["shape"]  # a fixed batch of 1, as the compiler needs
    heads = np.concatenate([sess.run(None, {inp.name: split.images[k : k + 1]})[0] for k in range(len(split.images))])
    assert list(heads.shape[1:]) == meta["head"]["shape"][1:]
    # the recorded measurement reproduces, and the detector detects
    measured = shapes.map50(heads, split)
    assert measured == pytest.approx(meta["measured"]["map50_qat_test"], abs=1e-4)
    assert measured > 0.5


def test_detector512_exports_to_the_shift_form(tmp_path):
    from examples.detector512 import write_detector512

    model = write_detector512(tmp_path / "d512.onnx", calibration_images=1)
    assert check_model(model).ok
    out = model.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in out.dim] == [1, 25, 16, 16]
    assert (tmp_path / "d512.onnx").stat().st_size < 2_000_000
