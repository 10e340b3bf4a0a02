"""CIFAR-style VGG with BatchNorm and a width multiplier (one linear classifier after global pooling)."""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import nn

from evoprune.registry import MODELS

from .init import kaiming_init

CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG-BN for small images. ``width`` scales every conv's channels (at least 1 each).

    Global average pooling before the classifier makes the network accept any input size >= 32;
    for 32x32 inputs the pool is over a 1x1 map, so it equals the classic CIFAR VGG. Given ``image_size``, the
    max-poolings that would shrink the map below 1 pixel are left out (28x28 MNIST-like images keep four of five;
    8x8 keep three), so the model trains on inputs from 8 px up; ``image_size`` is recorded in the checkpoint.
    """

    def __init__(self, cfg: List[Union[int, str]], num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 image_size: Optional[int] = None):
        super().__init__()
        layers: List[nn.Module] = []
        c = in_channels
        side = image_size
        for v in cfg:
            if v == "M":
                if side is not None:
                    if side // 2 < 1:
                        continue
                    side //= 2
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = max(1, int(round(int(v) * width)))
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _make(name: str):
    def factory(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                image_size: Optional[int] = None) -> VGG:
        return VGG(CFGS[name], num_classes=num_classes, in_channels=in_channels, width=width, image_size=image_size)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR {name.upper()}-BN ({sum(1 for v in CFGS[name] if v != 'M')} convs), width multiplier"
    return factory


for _name in CFGS:
    MODELS.register(_name)(_make(_name))
