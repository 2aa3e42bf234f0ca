"""A compiled detector through the driver backends and `shiftpu bench`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qdq_graphs import detector, random_input
from typer.testing import CliRunner

from shiftpu.cli.main import app
from shiftpu.compiler.driver import compile_model
from shiftpu.sw.device_backends import RuntimeBackend, open_accelerator
from shiftpu.sw.driver import GUARD_BYTES
from shiftpu.sw.executor import Executor


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "det32"
    model = detector(size=32, width=8)
    compile_model(model, "pynq-z2", out)
    return out, model


@pytest.mark.parametrize("backend", [RuntimeBackend.GOLDEN, RuntimeBackend.PYNQ_SIM])
def test_driver_backends_match_the_golden_executor(compiled, backend, tmp_path):
    if backend is RuntimeBackend.PYNQ_SIM:
        pytest.importorskip("pynq")
    folder, model = compiled
    x = random_input(model, seed=3)
    print("seed 3")
    reference = Executor(folder, backend="golden").run(x)
    probe = Executor(folder)
    accel = open_accelerator(backend, probe.compiled.config, "pynq-z2", workdir=tmp_path)
    got = Executor(probe.compiled, backend=accel).run(x)
    assert len(got) == len(reference) == 2
    for a, b in zip(got, reference, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_bench_json_has_the_promised_fields(compiled, tmp_path):
    folder, _ = compiled
    trace = tmp_path / "trace.json"
    res = CliRunner().invoke(app, ["bench", str(folder), "--frames", "6", "--json", "--trace", str(trace)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["frames"] == 6 and doc["backend"] == "golden"
    assert set(doc["latency_ms"]) == {"p50", "p90", "p99"}
    assert list(doc["stages"]) == ["preprocess", "cpu0", "fabric", "cpu1", "postprocess"]  # a stage per CPU region
    assert doc["power_source"] == "estimated" and doc["power_w"] > 0
    assert 0 < doc["pipeline_efficiency"] <= 1.0  # the bottleneck cannot be busy longer than the run
    assert len([e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]) == 6 * 5


def test_bench_wrong_input_shape_is_a_clear_error(compiled, tmp_path):
    folder, _ = compiled
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3, 8, 8), np.float32))
    res = CliRunner().invoke(app, ["bench", str(folder), "--frames", "2", "--input", str(bad)])
    assert res.exit_code != 0
    assert "must be float32 of shape (1, 3, 32, 32)" in str(res.exception)


def test_image_folder_gives_detections_json_and_drawn_images(compiled, tmp_path):
    from PIL import Image

    from shiftpu.sw.images import run_image_folder

    folder, _ = compiled
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    print("seed 5")
    for name, (h, w) in {"a.png": (40, 80), "b.jpg": (90, 30)}.items():
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(images / name)
    sidecar = tmp_path / "det.json"
    sidecar.write_text(json.dumps({"classes": [f"c{i}" for i in range(19)], "input": {"shape": [1, 3, 32, 32]},
                                   "decode": {"grid": 1, "score_threshold": 0.0, "nms_iou": 0.5,
                                              "max_detections": 5}}))
    out = run_image_folder(folder, images, tmp_path / "out", sidecar=sidecar)
    doc = json.loads(out.read_text())
    assert sorted(doc) == ["a.png", "b.jpg"]
    for name, (h, w) in {"a.png": (40, 80), "b.jpg": (90, 30)}.items():
        assert len(doc[name]) == 1  # one grid cell, score threshold 0
        x0, y0, x1, y1 = doc[name][0]["box"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        assert doc[name][0]["class"].startswith("c")
        assert Image.open(tmp_path / "out" / f"{name.split('.')[0]}.png").size == (w, h)


def test_image_folder_without_images_is_a_clear_error(compiled, tmp_path):
    from shiftpu.sw.images import ImageFolderError, run_image_folder

    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="holds no images"):
        run_image_folder(compiled[0], tmp_path / "empty", tmp_path / "out", sidecar=tmp_path / "x.json")


def test_pipeline_alternates_two_device_arenas_zero_copy_and_keeps_order(compiled):
    from shiftpu.arch.regmap import OFFSET
    from shiftpu.sim.golden import GoldenAccelerator
    from shiftpu.sw.device import SimDevice
    from shiftpu.sw.driver import Driver, DriverAccelerator
    from shiftpu.sw.pipeline import Pipeline
    from shiftpu.sw.pipeline_model import ArenaPool, ModelStages

    class Recording(SimDevice):
        def __init__(self, backend):
            super().__init__(backend)
            self.act_bases: list[int] = []

        def write_register(self, offset, value):
            if offset == OFFSET["ACT_BASE"]:
                self.act_bases.append(value)
            super().write_register(offset, value)

    folder, model = compiled
    reference = Executor(folder)
    cfg = reference.compiled.config
    device = Recording(GoldenAccelerator(cfg))
    accel = DriverAccelerator(Driver(device), cfg)
    executor = Executor(reference.compiled, backend=accel)
    arenas = [accel.arena(reference.manifest["arena_bytes"]) for _ in range(2)]
    pool = ArenaPool(arenas)
    inputs = [random_input(model, seed=s) for s in range(6)]
    print("seeds 0..5")
    results = list(Pipeline(ModelStages(executor, pool).stages(), on_stop=pool.close).run(inputs))
    assert [seq for seq, _ in results] == list(range(6))
    for (_, res), x in zip(results, inputs, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(res.outputs, reference.run(x), strict=True))
    segments = len(reference.manifest["segments"])
    per_frame = device.act_bases[::segments]
    assert len(set(per_frame)) == 2 and per_frame == per_frame[:2] * 3  # ACT_BASE alternates A, B, A, B, ...
    # device memory: the two arenas and the programs, each between its two guards, no staging buffer (zero copy)
    images = reference.compiled.images
    programs = sum(img.size for img in images)
    guards = 2 * GUARD_BYTES * (2 + len(images))
    assert device.memory.allocated_bytes == 2 * reference.manifest["arena_bytes"] + programs + guards


def test_run_command_with_an_image_folder(compiled, tmp_path):
    import shutil

    from PIL import Image

    folder, _ = compiled
    model_dir = tmp_path / "model"
    shutil.copytree(folder, model_dir)
    (model_dir / "detector.json").write_text(json.dumps({
        "classes": [f"c{i}" for i in range(19)], "input": {"shape": [1, 3, 32, 32]},
        "decode": {"grid": 1, "score_threshold": 0.0, "nms_iou": 0.5, "max_detections": 5}}))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((24, 48, 3), 200, np.uint8)).save(images / "grey.png")
    res = CliRunner().invoke(app, ["run", str(model_dir), "--input", str(images), "--output", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert list(json.loads((tmp_path / "o" / "detections.json").read_text())) == ["grey.png"]
    assert (tmp_path / "o" / "grey.png").is_file()
