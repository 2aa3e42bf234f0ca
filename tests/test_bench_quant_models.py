"""The float structures of bench/quant_models.py (torchvision's resnet18 and mobilenet_v2, darknet's Tiny-YOLOv2)
are the published ones, and the natural-image crops are what the quantization bench says they are."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks live next to the package, not in it
from bench import quant_models  # noqa: E402
from bench.quantization import _halfway_budget  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize(("name", "parameters"), [
    ("resnet18", 11_689_512),  # torchvision.models.resnet18().parameters(), summed
    ("mobilenet_v2", 3_504_872),  # torchvision.models.mobilenet_v2()
    # yolov2-tiny-voc.cfg: eight 3x3 convolutions (15,727,536 weights) with BatchNorm scale and shift (6,112), the
    # 1x1 one to 125 channels with bias (128,125)
    ("tiny_yolov2", 15_861_773),
])
def test_structure_has_the_published_parameter_count(name, parameters):
    model = quant_models.build(name, seed=0)
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_tiny_yolov2_512_gives_a_16x16_grid_of_125_outputs():
    out = quant_models.build("tiny_yolov2", seed=0).eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 125, 2, 2)  # stride 32: 512x512 gives 16x16


def test_natural_crops_are_normalised_and_reproducible():
    a = quant_models.natural_crops(6, 32, seed=3)
    assert a.shape == (6, 3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, quant_models.natural_crops(6, 32, seed=3))
    assert not np.array_equal(a, quant_models.natural_crops(6, 32, seed=4))
    # photographs in [0, 1] normalised with the ImageNet mean and std per channel
    lo = (0 - quant_models.IMAGENET_MEAN) / quant_models.IMAGENET_STD
    hi = (1 - quant_models.IMAGENET_MEAN) / quant_models.IMAGENET_STD
    per_channel = a.transpose(1, 0, 2, 3).reshape(3, -1)
    assert (per_channel.min(axis=1) >= lo - 1e-5).all() and (per_channel.max(axis=1) <= hi + 1e-5).all()
    assert 0.3 < float(a.std()) < 2.0


def test_bn_statistics_normalise_each_channel_on_the_images():
    model = quant_models.build("resnet18", seed=0)
    images = quant_models.natural_crops(8, 32, seed=1)
    quant_models.set_bn_statistics(model, images, batch=4)
    assert not model.training
    with torch.no_grad():
        y = model.bn1(model.conv1(torch.from_numpy(images)))
    # the running statistics are the cumulative ones over the batches: per-channel mean 0 and variance 1 again
    assert float(y.mean(dim=(0, 2, 3)).abs().max()) < 1e-3
    assert np.allclose(y.var(dim=(0, 2, 3), unbiased=True).numpy(), 1.0, atol=0.02)


def test_float_onnx_keeps_batchnorm_and_counts_the_weight_bytes():
    model = quant_models.build("tiny_yolov2", seed=0).eval()
    fm = quant_models.float_onnx(model, 64)
    assert sum(n.op_type == "BatchNormalization" for n in fm.graph.node) == 8
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert _halfway_budget(fm) == (weights // 2, weights, (weights // 2 + weights) // 2)
