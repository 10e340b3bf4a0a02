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


def size_kwargs(name: str, image_size: int) -> dict:
    """``{"image_size": ...}`` for factories that adapt to the input size (the zoo VGGs), else ``{}``."""
    try:
        factory = MODELS.get(name)
        params = inspect.signature(factory).parameters
    except (EvopruneError, TypeError, ValueError):
        return {}
    return {"image_size": int(image_size)} if "image_size" in params else {}


def classifier_outputs(state_dict: dict) -> "int | None":
    """The number of classes of a plain state dict: the first dimension of its last 2-D weight (the classifier)."""
    last = None
    for k, v in state_dict.items():
        if k.endswith("weight") and getattr(v, "ndim", 0) == 2:
            last = v
    return int(last.shape[0]) if last is not None else None


def replace_classifier(model: nn.Module, num_classes: int) -> str:
    """Swap the last ``nn.Linear`` for a freshly initialised one with ``num_classes`` outputs; returns its name."""
    name, last = None, None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            name, last = n, m
    if last is None:
        raise EvopruneError("--num-classes needs a model whose classifier is a Linear layer; this one has none")
    new = nn.Linear(last.in_features, int(num_classes), bias=last.bias is not None)
    parent = model
    parts = name.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p)
    setattr(parent, parts[-1], new)
    return name
