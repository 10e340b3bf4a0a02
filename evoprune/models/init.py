"""Weight initialisation shared by the CIFAR zoo models."""
from __future__ import annotations

from torch import nn


def kaiming_init(model: nn.Module) -> None:
    """He-normal convolutions (fan-out, ReLU), BatchNorm scale 1 and shift 0: the usual CIFAR recipe."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
