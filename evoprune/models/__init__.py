"""The model zoo: ``create_model(name, num_classes, in_channels, width)`` behind the MODELS registry.

Names: ``vgg11/13/16/19`` and ``resnet20/32/56/110`` (CIFAR families), ``torchvision:NAME``, and user factories
``package.module:factory`` or ``path/file.py:factory`` called as ``factory(num_classes=..., in_channels=...,
[width=...])``.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from evoprune.errors import EvopruneError
from evoprune.registry import MODELS

from . import resnet_cifar, torchvision_adapter, vgg  # noqa: F401  (register)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build a model by registry name or ``module:factory`` spec."""
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise EvopruneError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (width > 0):
        raise EvopruneError(f"--width must be > 0, got {width}")
    factory = MODELS.get(name)
    if factory is torchvision_adapter.torchvision_model:
        return factory(name, num_classes=num_classes, in_channels=in_channels, width=width)
    if not callable(factory):
        raise EvopruneError(f"model '{name}' is not a callable factory")
    params = dict(num_classes=num_classes, in_channels=in_channels, width=width, **kwargs)
    try:
        sig = inspect.signature(factory)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            if width != 1.0 and "width" not in sig.parameters:
                raise EvopruneError(f"model factory '{name}' takes no 'width' argument; drop --width")
            params = {k: v for k, v in params.items() if k in sig.parameters}
    except (TypeError, ValueError):
        pass
    try:
        model = factory(**params)
    except EvopruneError:
        raise
    except Exception as exc:
        raise EvopruneError(f"model factory '{name}' raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise EvopruneError(f"model factory '{name}' returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
