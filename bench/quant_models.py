"""Float CNN structures and natural-image inputs for the quantization benches (bench/quantization.py).

* ``resnet18`` and ``mobilenet_v2``: torchvision's layouts, module for module (torchvision is not a dependency,
  so they are written out here), with torchvision's initialisation: Conv weights Kaiming-normal (fan out), BatchNorm
  weight 1 and bias 0, mobilenet_v2's classifier N(0, 0.01); 1,000 outputs.
* ``tiny_yolov2``: darknet's yolov2-tiny-voc layout: six Conv3x3-BN-LeakyReLU(0.1) each followed by a 2x2 max pool
  (stride 2, the last stride 1 with darknet's one-pixel padding on the right and bottom, exported as an edge Pad
  and a MaxPool, which the quantizer folds), two Conv3x3-BN-LeakyReLU(0.1) of 1,024 channels and a 1x1 Conv with
  bias to 5 x (5 + 20) = 125 outputs per cell; Conv weights Kaiming-normal (fan out).

The weights are random (untrained). So that each layer's activations have the spread of a trained model's, the
BatchNorm statistics are set from natural images (``set_bn_statistics``) that are not the calibration or the test
images. ``natural_crops`` cuts the inputs from scikit-learn's two sample photographs (no download): random
square crops, resized and normalised with the ImageNet mean and standard deviation, as torchvision's models take
them.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

#: ImageNet mean and standard deviation per RGB channel (torchvision's normalisation).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: Structures this module builds.
STRUCTURES = ("resnet18", "mobilenet_v2", "tiny_yolov2")


def natural_crops(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` NCHW float32 crops of scikit-learn's sample photographs (china.jpg, flower.jpg, 427x640):
    a random square of 30-100 % of the shorter side, randomly mirrored, resized to ``size`` x ``size``
    (bilinear, antialiased) and normalised with the ImageNet mean and standard deviation."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.asarray(p, np.float32) / 255.0).permute(2, 0, 1) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[1:]
        side = int(rng.uniform(0.3, 1.0) * min(h, w))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = photo[:, top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop.flip(2)
        crop = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        out[i] = ((crop.numpy().transpose(1, 2, 0) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    return out


def _kaiming_init(model, nonlinearity: str = "relu") -> None:
    """torchvision's initialisation: Conv Kaiming-normal (fan out), Conv bias 0, BatchNorm weight 1 and bias 0."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet18():
    """torchvision's resnet18 (BasicBlock x [2, 2, 2, 2], 1,000 classes), random weights."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages, inplanes = [], 64
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1)))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    model = ResNet18()
    _kaiming_init(model)
    return model


def mobilenet_v2():
    """torchvision's mobilenet_v2 (width 1.0, inverted residuals with ReLU6, 1,000 classes), random weights."""
    import torch
    from torch import nn

    def conv_bn_relu6(inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
            super().__init__()
            hidden = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == oup
            layers = [] if expand_ratio == 1 else [conv_bn_relu6(inp, hidden, 1)]
            layers += [conv_bn_relu6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                       nn.BatchNorm2d(oup)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            features, inp = [conv_bn_relu6(3, 32, stride=2)], 32
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            features.append(conv_bn_relu6(inp, 1280, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    model = MobileNetV2()
    _kaiming_init(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def tiny_yolov2(anchors: int = 5, classes: int = 20):
    """darknet's yolov2-tiny-voc (module docstring), random weights; any input size divisible by 32."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class MaxPoolStride1(nn.Module):
        """darknet's size-2 stride-1 max pool: the output keeps the input's size (edge padding right and below)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)

    def conv_bn_leaky(inp: int, oup: int) -> list[nn.Module]:
        return [nn.Conv2d(inp, oup, 3, 1, 1, bias=False), nn.BatchNorm2d(oup), nn.LeakyReLU(0.1, inplace=True)]

    layers, inp = [], 3
    for i, oup in enumerate((16, 32, 64, 128, 256, 512)):
        layers += [*conv_bn_leaky(inp, oup), nn.MaxPool2d(2, 2) if i < 5 else MaxPoolStride1()]
        inp = oup
    layers += [*conv_bn_leaky(512, 1024), *conv_bn_leaky(1024, 1024), nn.Conv2d(1024, anchors * (5 + classes), 1)]
    model = nn.Sequential(*layers)
    _kaiming_init(model, "leaky_relu")
    return model


def build(name: str, seed: int):
    """The float structure ``name`` (``STRUCTURES``), its random weights drawn with ``seed``, in eval mode."""
    import torch

    torch.manual_seed(seed)
    return {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "tiny_yolov2": tiny_yolov2}[name]()


def set_bn_statistics(model, images: np.ndarray, batch: int = 16) -> None:
    """Every BatchNorm's running mean and variance set to the cumulative statistics of its input over
    ``images`` (one pass, in batches), as training would leave them; the model is left in eval mode."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for s in range(0, len(images), batch):
            model(torch.from_numpy(images[s : s + batch]))
    model.eval()


def float_onnx(model, size: int, batch: int | None = None):
    """The float model as ONNX (opset 17), its BatchNormalization nodes kept, input ``input`` [N, 3, size, size]:
    N symbolic, or fixed to ``batch`` (what ``shiftpu compile`` takes)."""
    import onnx
    import torch

    buf = io.BytesIO()
    dynamic = None if batch else {"input": {0: "N"}, "output": {0: "N"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(batch or 1, 3, size, size), buf, dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"], output_names=["output"],
                          dynamic_axes=dynamic)
    return onnx.load_from_string(buf.getvalue())
