"""Any torchvision classification model by ``torchvision:NAME``, with num_classes and input channels adapted.

Weights are never downloaded: start from random weights or load a local file with ``--checkpoint``.
"""
from __future__ import annotations

from torch import nn

from evoprune.errors import EvopruneError
from evoprune.registry import MODELS


def _first_conv(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None, None


def _set_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent = root
    parts = dotted.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p)
    setattr(parent, parts[-1], new)


@MODELS.register("torchvision:")
def torchvision_model(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """torchvision:NAME -- any torchvision classification model (random init, no download)"""
    import torchvision

    arch = name.split(":", 1)[1] if name.startswith("torchvision:") else name
    available = set(torchvision.models.list_models(module=torchvision.models))
    if arch not in available:
        raise EvopruneError(f"unknown torchvision model '{arch}'; see torchvision.models.list_models()")
    if width != 1.0:
        raise EvopruneError("--width applies to the CIFAR zoo models only, not to torchvision models")
    kwargs = {"weights": None, "num_classes": num_classes}
    if arch.startswith("inception") or arch.startswith("googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    model = torchvision.models.get_model(arch, **kwargs)
    if in_channels != 3:
        cname, conv = _first_conv(model)
        if conv is None:
            raise EvopruneError(f"torchvision model '{arch}' has no Conv2d to adapt to {in_channels} input channels")
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, 1 if conv.groups == 1 else in_channels, conv.bias is not None)
        _set_module(model, cname, new)
    return model
