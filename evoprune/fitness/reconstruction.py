"""Stage 1: the reconstruction error of the consumers' BN-scaled pre-activation outputs, as a quadratic form.

Unit u's channels feed consumer layer(s) whose pre-activation output, scaled by the following BatchNorm's
``gamma / sqrt(var + eps)`` (what the next nonlinearity sees; BN's shift cancels in the difference), is
``Y = sum_c Z_c`` with ``Z_c`` channel c's contribution on the calibration samples. Keeping mask ``m`` gives
``Y_m = sum_c m_c Z_c``, hence

    e(m) = || sum_c (1 - m_c) Z_c ||^2 = (1 - m)^T Q (1 - m),    Q_cd = <Z_c, Z_d>

summed over every consumer (a residual unit's channels feed several convs). Q is computed once per unit
(:func:`~evoprune.fitness.calibration.gram_matrix`); a population ``M [P, n]`` is then scored by one matrix
product ``((1 - M) @ Q * (1 - M)).sum(1)``. Scores are normalised by ``||Y||^2 = 1^T Q 1``: 0 keeps everything,
1 removes everything, comparable across layers.

``center=True`` (not the paper's; an option measured in ``benchmarks/fitness_fidelity.py``) scores the error after
removing its mean per output channel of consumers followed by a BatchNorm -- the part of the error a re-estimated
BN (adaptive BN, or fine-tuning) absorbs: ``Q_c = Q - sum_o N mu_o mu_o^T``.
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.registry import EVALUATORS

from .base import ConsumerLike, Evaluator, as_consumers, check_masks, consumers_of, small_work
from .calibration import GramInfo, gram_matrix, inputs_of

__all__ = ["ReconstructionFitness"]


@EVALUATORS.register("reconstruction")
class ReconstructionFitness(Evaluator):
    """Stage 1: normalised reconstruction error ``(1-m)^T Q (1-m) / 1^T Q 1`` of the unit's consumers (minimise).

    Args:
        model: the network (not modified).
        consumers: :class:`ConsumerSpec` list or tuples ``(module, input_indices, bn_or_None)``; see
            :func:`consumers_of` to get them from a pruning space.
        batches: calibration batches from the training split (tensors or ``(x, y)`` pairs).
        n: the unit's channel count (checked against the consumers).
        max_positions: output positions sampled per consumer (``None``: all, exact on the given batches).
        method: ``auto`` | ``direct`` | ``covariance`` (how Q is reduced; both are exact).
        dtype: precision of Q and of scoring (float64 by default: errors of near-identical masks differ little).
        normalize: divide by ``1^T Q 1``.
        center: score the error with its per-output-channel mean removed (consumers followed by a BN only).
    """

    name = "reconstruction"
    objectives = ("reconstruction_error",)
    weights = (-1.0,)

    def __init__(self, model: nn.Module, consumers: Sequence[ConsumerLike], batches: Any, *,
                 n: Optional[int] = None, max_positions: Optional[int] = 8192, method: str = "auto",
                 dtype: torch.dtype = torch.float64, normalize: bool = True, center: bool = False, seed: int = 0,
                 chunk_bytes: int = 64 << 20, unit: str = "") -> None:
        self.consumers = as_consumers(consumers, n, model)
        self.n = self.consumers[0].n
        self.unit = unit
        xs = inputs_of(batches)
        q, info = gram_matrix(model, self.consumers, xs, max_positions=max_positions, method=method, dtype=dtype,
                              chunk_bytes=chunk_bytes, seed=seed)
        self.info: GramInfo = info
        self.gram = q
        self.normalize, self.center = normalize, bool(center)
        self._set_q()
        self.evaluations = 0

    def _set_q(self) -> None:
        q = self.gram - self.info.mean_outer if self.center else self.gram
        self.total = float(q.sum())  # ||Y||^2 (centred: summed per-channel variance)
        if not (self.total == self.total) or self.total == float("inf"):
            raise EvopruneError(f"stage-1 statistics of unit '{self.unit or '?'}' are not finite; the model "
                                "produces NaN/inf activations on the calibration batches")
        self.Q = q / self.total if self.normalize and self.total > 0 else q

    def with_center(self, center: bool) -> "ReconstructionFitness":
        """A copy scoring the centred (or plain) error from the same calibration (no second pass)."""
        other = copy.copy(self)
        other.center = bool(center)
        other._set_q()
        other.evaluations = 0
        return other

    @classmethod
    def from_space(cls, space: Any, unit: Any, calib: Any, model: Optional[nn.Module] = None,
                   **options: Any) -> "ReconstructionFitness":
        """Stage 1 for ``unit`` of a pruning space, from ``calib.train`` (a :class:`CalibrationData`) or batches."""
        u = space.unit(unit) if isinstance(unit, str) else unit
        model = space.model if model is None else model
        batches = getattr(calib, "train", calib)
        return cls(model, consumers_of(space, u, model), batches, n=u.channels, unit=u.name, **options)

    def error(self, masks: Any) -> torch.Tensor:
        """Errors ``[P]`` (float64) of bool masks ``[P, n]``."""
        m = check_masks(masks, self.n, f"unit '{self.unit}'" if self.unit else "unit")
        self.evaluations += m.shape[0]
        with small_work(m.shape[0] * self.n * self.n):
            r = (~m).to(self.Q.dtype)
            return ((r @ self.Q) * r).sum(1).to(torch.float64)

    def evaluate(self, masks: Any) -> torch.Tensor:
        """``[P, 1]`` normalised reconstruction errors (minimise)."""
        return self.error(masks)[:, None]
