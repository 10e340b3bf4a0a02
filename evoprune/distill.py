"""Losses for the one training loop: cross-entropy, and knowledge distillation from the unpruned network.

KD is a loss, not a second loop: ``train.fit(..., loss_fn=kd_loss(teacher))``. Hinton et al. (2015): soft targets
at temperature T (scaled by T^2 so gradients keep their size) mixed with the hard-label loss by ``alpha``.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import EvopruneError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def ce_loss(label_smoothing: float = 0.0) -> LossFn:
    """Plain cross-entropy (optionally label-smoothed). Returns ``(loss, logits)``."""

    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    fn.kind = "ce"  # type: ignore[attr-defined]
    return fn


def kd_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> LossFn:
    """Hinton KD: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    The teacher runs in eval mode without gradients; it must map the same inputs to the same classes.
    """
    if temperature <= 0:
        raise EvopruneError(f"KD temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise EvopruneError(f"KD alpha must be in [0, 1], got {alpha}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        with torch.no_grad():
            t_logits = teacher(x)
        if t_logits.shape != logits.shape:
            raise EvopruneError(
                f"teacher and student disagree: teacher gives {tuple(t_logits.shape[1:])} outputs, student "
                f"{tuple(logits.shape[1:])}; distil from the network the student was pruned from"
            )
        T = temperature
        soft = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1), reduction="batchmean",
                        log_target=True) * (T * T)
        hard = F.cross_entropy(logits, y)
        return alpha * soft + (1.0 - alpha) * hard, logits

    fn.kind = "kd"  # type: ignore[attr-defined]
    return fn
