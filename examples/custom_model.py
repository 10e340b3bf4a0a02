"""A model of your own (the seam: evoprune/models/__init__.py): any factory returning an ``nn.Module``.

    evoprune train --model examples/custom_model.py:tiny_cnn --data mini-cifar10 --epochs 1 --out runs/tiny
    evoprune prune --checkpoint runs/tiny/model.pt --target-macs 0.5 --data mini-cifar10 --out runs/tiny-pruned

The factory is called as ``factory(num_classes=..., in_channels=..., [width=...])``; the checkpoint records the
spec, so ``prune`` rebuilds it (the file must still be there). Torch-Pruning traces it: no code of ours names its
layers.
"""
from torch import nn


def tiny_cnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head; ``width`` scales the channels."""
    c = [max(4, int(round(w * width))) for w in (16, 32, 64)]
    layers, prev = [], in_channels
    for i, ch in enumerate(c):
        layers += [nn.Conv2d(prev, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
        if i < len(c) - 1:
            layers.append(nn.MaxPool2d(2))
        prev = ch
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))
