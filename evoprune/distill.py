"""Losses for the one training loop: cross-entropy, and knowledge distillation from the unpruned network.

KD is a loss, not a second loop: ``train.fit(..., loss_fn=kd_loss(teacher))``. Hinton et al. (2015): soft targets
at temperature T (scaled by T^2 so gradients keep their size) mixed with the hard-label loss by ``alpha``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import PRUNE_DEFAULTS
from .errors import EvopruneError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def ce_loss(label_smoothing: float = 0.0) -> LossFn:
    """Plain cross-entropy (optionally label-smoothed). Returns ``(loss, logits)``."""

    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    fn.kind = "ce"  # type: ignore[attr-defined]
    return fn


def kd_loss(teacher: nn.Module, temperature: float = PRUNE_DEFAULTS["temperature"],
            alpha: float = PRUNE_DEFAULTS["alpha"], at_weight: float = PRUNE_DEFAULTS["at_weight"]) -> LossFn:
    """Hinton KD: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``, plus
    ``at_weight`` times the attention-transfer term (:func:`attention_transfer`; one reading of the paper's
    distillation) when ``at_weight > 0``.

    The teacher runs in eval mode without gradients; it must map the same inputs to the same classes.
    """
    if temperature <= 0:
        raise EvopruneError(f"KD temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise EvopruneError(f"KD alpha must be in [0, 1], got {alpha}")
    if at_weight < 0:
        raise EvopruneError(f"--at-weight must be >= 0, got {at_weight}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    at = AttentionMaps(teacher) if at_weight > 0 else None

    def fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if at is not None:
            at.attach(model)  # the pipeline hands a new (smaller) network after every unit
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
        loss = alpha * soft + (1.0 - alpha) * hard
        if at is not None:
            loss = loss + at_weight * at.loss()
        return loss, logits

    fn.kind = "kd"  # type: ignore[attr-defined]
    return fn


def attention(f: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): the L2-normalised map of mean squared activations over channels ``[B, H*W]``."""
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


class AttentionMaps:
    """Attention transfer between a teacher and its pruned student: pruning keeps the spatial sizes, so the maps of
    the same module (by name) in both are comparable although their channel counts differ.

    The maps are taken at the last module of every spatial resolution (the end of each VGG block or ResNet
    stage), read off the teacher's forward pass itself (any input size); hooks on both networks record the
    outputs at every step and :meth:`loss` returns ``sum_j mean_b ||a_s^j - a_t^j||^2``.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.t: Dict[str, torch.Tensor] = {}
        self.s: Dict[str, torch.Tensor] = {}
        self.leaves = [n for n, m in teacher.named_modules() if n and not list(m.children())]
        mods = dict(teacher.named_modules())
        self._t_handles = {n: mods[n].register_forward_hook(self._keep(self.t, n, detach=True)) for n in self.leaves}
        self._stages: List[str] = []
        self._student: Any = None
        self._handles: List[Any] = []

    def attach(self, student: nn.Module) -> None:
        """Record ``student``'s maps (hooks move from the previous student, if any)."""
        if student is self._student:
            return
        for h in self._handles:
            h.remove()
        smods = dict(student.named_modules())
        for m in smods.values():  # hooks that came along when the pipeline deep-copied the previous student
            for key, fn in list(m._forward_hooks.items()):
                if getattr(fn, "_evoprune_at", None) == id(self):
                    del m._forward_hooks[key]
        shared = [n for n in (self._stages or self.leaves) if n in smods]
        if not shared:
            raise EvopruneError("attention transfer: teacher and student share no module names; distil from the "
                                "network the student was pruned from")
        self._handles = [smods[n].register_forward_hook(self._keep(self.s, n, detach=False)) for n in shared]
        self.s.clear()
        self._student = student

    def _keep(self, store: Dict[str, torch.Tensor], name: str, detach: bool):
        def hook(mod, inputs, out):
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                store[name] = out.detach() if detach else out
        hook._evoprune_at = id(self)  # type: ignore[attr-defined]
        return hook

    def close(self) -> None:
        """Remove every hook (teacher and student) and drop the recorded maps."""
        for h in list(self._t_handles.values()) + self._handles:
            h.remove()
        self._t_handles, self._handles, self._student = {}, [], None
        self.s.clear()
        self.t.clear()

    def stage_names(self) -> List[str]:
        """The last module of each spatial size (1x1 maps excluded), in forward order."""
        last: Dict[Tuple[int, int], str] = {}
        for n, f in self.t.items():  # insertion order = forward order of the first step
            last[tuple(f.shape[-2:])] = n
        return [n for n in self.t if last.get(tuple(self.t[n].shape[-2:])) == n and self.t[n].shape[-1] > 1]

    def loss(self) -> torch.Tensor:
        first = not self._stages
        if first:
            self._stages = self.stage_names()
        terms = [(attention(self.s[n]) - attention(self.t[n])).pow(2).sum(1).mean() for n in self._stages
                 if n in self.s and n in self.t]
        if not terms:
            raise EvopruneError("attention transfer found no 4-D feature maps shared by teacher and student; "
                                "use --at-weight 0")
        self.s.clear()  # no activation (or graph) is held between steps
        self.t.clear()
        if first:  # from now on only the stage outputs are hooked
            for n, h in list(self._t_handles.items()):
                if n not in self._stages:
                    h.remove()
                    del self._t_handles[n]
            student, self._student = self._student, None
            if student is not None:
                self.attach(student)
        return torch.stack(terms).sum()
