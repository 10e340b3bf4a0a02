"""Stage 1 after the best rescaling refit: the error the kept channels leave once they are re-weighted.

With the unit's Gram matrix ``Q`` (``Q_cd = <Z_c, Z_d>``, :mod:`evoprune.fitness.reconstruction`) and a mask with
kept set ``S`` and removed set ``R``, re-weighting each kept channel's contribution by the least-squares optimal
factor ``a_s`` (``min_a ||sum_c Z_c - sum_s a_s Z_s||^2``, a scaling of the kept channels' consumer weights) leaves

    e_refit(m) = 1_R^T (Q_RR - Q_RS Q_SS^-1 Q_SR) 1_R

from the same statistics. (The trace ``tr(Q_RR - Q_RS Q_SS^-1 Q_SR)`` is the error of reconstructing every removed
contribution *separately*, which no re-weighting of the kept channels realises; the form above is the one a refit
achieves.) A population is one batched solve: for masks ``M [P, n]``, ``A = diag(m) Q diag(m) + diag(1 - m)``,
``b = m * (Q r)``, ``e = r^T Q r - b^T A^-1 b``; a small ridge keeps ``Q_SS`` invertible. It is a better proxy
than plain stage 1 when ``--refit`` follows the selection: channels whose loss the others can absorb cost little.
"""
from __future__ import annotations

from typing import Any

import torch

from evoprune.registry import EVALUATORS

from .base import check_masks, small_work
from .reconstruction import ReconstructionFitness

RIDGE = 1e-9  # relative to the mean diagonal of Q


@EVALUATORS.register("reconstruction-refit")
class RefitReconstructionFitness(ReconstructionFitness):
    """Stage 1 after the optimal per-channel re-weighting of the kept channels (minimise); same calibration."""

    name = "reconstruction-refit"

    def error(self, masks: Any) -> torch.Tensor:
        m = check_masks(masks, self.n, f"unit '{self.unit}'" if self.unit else "unit")
        self.evaluations += m.shape[0]
        q = self.Q.to(torch.float64)
        keep = m.to(torch.float64)
        r = 1.0 - keep
        with small_work(m.shape[0] * self.n ** 3):
            qr = r @ q  # [P, n]
            e0 = (qr * r).sum(1)
            b = keep * qr
            lam = RIDGE * float(q.diagonal().mean().clamp_min(1e-300))
            a = keep[:, :, None] * q[None] * keep[:, None, :] + torch.diag_embed(r + lam * keep)
            x = torch.linalg.solve(a, b[:, :, None])[:, :, 0]
            return (e0 - (b * x).sum(1)).clamp_min(0.0)
