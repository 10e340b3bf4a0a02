"""The naive reference for stage 1: one masked forward pass per individual.

For every mask and calibration batch the network runs forward; a pre-hook on each consumer computes its
BN-scaled pre-activation output (no bias: it cancels) from the unit's channels of its input, once as is and once
with the removed channels zeroed, and accumulates the squared difference. The hook hands the consumer its
unmasked input, so every consumer sees the unpruned network's activations -- the same local definition as the
quadratic form of :class:`~evoprune.fitness.reconstruction.ReconstructionFitness`, which must match it to float
tolerance. All output positions are used (stage 1 matches it with ``max_positions=None``).

``full_forward=False`` caches the consumers' inputs once and reruns only the consumers: a cheaper, still
per-individual reference (it bounds what any forward-based scorer can do).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evoprune.registry import EVALUATORS

from .base import ConsumerLike, ConsumerSpec, Evaluator, as_consumers, check_masks, consumers_of
from .calibration import bn_scale, inputs_of, stream_consumer_inputs

__all__ = ["NaiveReconstruction", "consumer_output"]


def consumer_output(spec: ConsumerSpec, x: torch.Tensor, keep: Optional[torch.Tensor] = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The consumer's BN-scaled, bias-free output computed from the unit's channels of input ``x`` only,
    with the channels where ``keep`` is False zeroed."""
    mod = spec.module
    idx = spec.index.to(x.device)
    part = torch.zeros_like(x, dtype=dtype)
    cols = idx if keep is None else idx[keep.to(x.device)]
    cols = cols.reshape(-1)
    w = mod.weight.detach().to(dtype)
    if isinstance(mod, nn.Conv2d):
        part[:, cols] = x[:, cols].to(dtype)
        if mod.padding_mode != "zeros":
            y = F.conv2d(F.pad(part, mod._reversed_padding_repeated_twice, mode=mod.padding_mode), w, None,
                         mod.stride, 0, mod.dilation, mod.groups)
        else:
            y = F.conv2d(part, w, None, mod.stride, mod.padding, mod.dilation, mod.groups)
        return y * bn_scale(spec.norm, y.shape[1], dtype, y.device).view(1, -1, 1, 1)
    part[..., cols] = x[..., cols].to(dtype)
    y = F.linear(part, w)
    return y * bn_scale(spec.norm, y.shape[-1], dtype, y.device)


@EVALUATORS.register("naive")
class NaiveReconstruction(Evaluator):
    """Reference stage-1 scorer: a masked forward pass per individual (slow; for tests and benchmarks)."""

    name = "naive"
    objectives = ("reconstruction_error",)
    weights = (-1.0,)

    def __init__(self, model: nn.Module, consumers: Sequence[ConsumerLike], batches: Any, *,
                 n: Optional[int] = None, full_forward: bool = True, dtype: torch.dtype = torch.float64,
                 normalize: bool = True, center: bool = False, unit: str = "") -> None:
        self.model = model
        self.consumers = as_consumers(consumers, n, model)
        self.n = self.consumers[0].n
        self.unit = unit
        self.xs = inputs_of(batches)
        self.full_forward, self.dtype, self.normalize, self.center = full_forward, dtype, normalize, center
        self.cache: Optional[List[List[torch.Tensor]]] = None
        if not full_forward:
            self.cache = [[] for _ in self.consumers]
            stream_consumer_inputs(model, [c.module for c in self.consumers], self.xs,
                                   lambda i, x: self.cache[i].append(x.detach().clone()))
        self.total = float(self._run(None)[1]) if normalize else 1.0
        self.evaluations = 0

    @classmethod
    def from_space(cls, space: Any, unit: Any, calib: Any, model: Optional[nn.Module] = None,
                   **options: Any) -> "NaiveReconstruction":
        u = space.unit(unit) if isinstance(unit, str) else unit
        model = space.model if model is None else model
        return cls(model, consumers_of(space, u, model), getattr(calib, "train", calib), n=u.channels,
                   unit=u.name, **options)

    def _run(self, keep: Optional[torch.Tensor]):
        """(squared error of mask ``keep``, ||Y||^2) summed over consumers and batches (centred if asked)."""
        # per consumer: [sum of squares, per-output sums, count] of the error and of Y
        stats = [[0.0, 0.0, 0.0, 0.0, 0] for _ in self.consumers]

        def fold(i: int, x: torch.Tensor) -> None:
            spec, st = self.consumers[i], stats[i]
            o_dim = 1 if isinstance(spec.module, nn.Conv2d) else -1

            def rows(t: torch.Tensor) -> torch.Tensor:  # [positions, outputs]
                return t.movedim(o_dim, -1).reshape(-1, t.shape[o_dim])

            full = rows(consumer_output(spec, x, None, self.dtype))
            st[2] = st[2] + full.pow(2).sum().cpu()
            st[3] = st[3] + full.sum(0).cpu()
            st[4] += full.shape[0]
            if keep is not None:
                d = full - rows(consumer_output(spec, x, keep, self.dtype))
                st[0] = st[0] + d.pow(2).sum().cpu()
                st[1] = st[1] + d.sum(0).cpu()

        if self.cache is not None:
            for i, xs in enumerate(self.cache):
                for x in xs:
                    fold(i, x)
        else:
            stream_consumer_inputs(self.model, [c.module for c in self.consumers], self.xs, fold)
        err = torch.zeros((), dtype=self.dtype)
        norm = torch.zeros((), dtype=self.dtype)
        for spec, (e2, e1, y2, y1, count) in zip(self.consumers, stats):
            if self.center and spec.norm is not None:  # a re-estimated BN absorbs the per-channel mean
                e2 = e2 - (torch.as_tensor(e1) ** 2).sum() / count
                y2 = y2 - (torch.as_tensor(y1) ** 2).sum() / count
            err, norm = err + e2, norm + y2
        return err, norm

    def evaluate(self, masks: Any) -> torch.Tensor:
        """``[P, 1]`` normalised reconstruction errors, one forward pass (or consumer pass) per mask."""
        m = check_masks(masks, self.n, f"unit '{self.unit}'" if self.unit else "unit")
        out = torch.empty(m.shape[0], 1, dtype=torch.float64)
        for i, keep in enumerate(m):
            out[i, 0] = float(self._run(keep)[0]) / (self.total if self.total > 0 else 1.0)
        self.evaluations += m.shape[0]
        return out
