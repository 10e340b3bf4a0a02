"""ThiNet's greedy channel selection (Luo et al. 2017) on the GA's own stage-1 objective.

ThiNet removes channels one at a time, each time the one whose removal adds least to the reconstruction error of
the next layer's output, ``|| sum_{c in removed} Z_c ||^2``. That is exactly the GA's stage-1 quadratic form
``e(r) = r^T Q r`` (``r``: removed-channel indicator; :mod:`evoprune.fitness.reconstruction`), so ``thinet`` is
the deterministic heuristic on the *same* objective: the cleanest baseline for asking what the GA's search buys.

Adding channel ``c`` to the removed set raises the error by ``2 (Q r)_c + Q_cc``; keeping ``Q r`` up to date makes
each step one vector operation, O(n (n - k)) in all. ThiNet's least-squares refit of the remaining weights is not
done (every selector here changes only the channel choice). Units feeding a grouped convolution keep
``k / groups`` channels per block: a block with that many left is closed to further removal.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.registry import SELECTORS

from .importance import _unit, check_count
from .space import PruningSpace

__all__ = ["greedy_removal", "select_thinet"]


def greedy_removal(q: Any, k: int, groups: int = 1) -> np.ndarray:
    """Bool keep-mask of ``k`` channels: greedily remove the channel that adds least to ``r^T Q r``.

    ``q``: the ``[n, n]`` positive semi-definite Gram matrix. Ties go to the lower index. With ``groups`` > 1 each
    contiguous block keeps ``k / groups`` channels.
    """
    qm = np.asarray(q.detach().cpu().numpy() if isinstance(q, torch.Tensor) else q, dtype=np.float64)
    n = qm.shape[0]
    if qm.shape != (n, n):
        raise EvopruneError(f"greedy selection needs a square Gram matrix, got shape {qm.shape}")
    if groups < 1 or n % groups or k % groups or not 1 <= k <= n:
        raise EvopruneError(f"cannot keep {k} of {n} channels in {groups} equal group block(s)")
    per, keep_per = n // groups, k // groups
    removed = np.zeros(n, dtype=bool)
    left = np.full(groups, per)  # channels still kept in each block
    qr = np.zeros(n)  # Q @ removed, kept current
    diag = np.diag(qm)
    block = np.arange(n) // per
    for _ in range(n - k):
        gain = 2.0 * qr + diag
        gain[removed | (left[block] <= keep_per)] = np.inf
        c = int(np.argmin(gain))
        removed[c] = True
        left[block[c]] -= 1
        qr += qm[:, c]
    return ~removed


@SELECTORS.register("thinet", doc="ThiNet greedy removal (Luo et al. 2017) on the GA's stage-1 reconstruction error")
def select_thinet(model: nn.Module, space: PruningSpace, unit_name: Any, k: int,
                  batches: Optional[Iterable] = None, rng: Any = None) -> np.ndarray:
    """Keep ``k`` channels of ``unit_name`` chosen by ThiNet's greedy removal on the calibration ``batches``."""
    from evoprune.fitness.reconstruction import ReconstructionFitness

    u = _unit(space, unit_name)
    check_count(k, "thinet")
    if batches is None:
        raise EvopruneError("selector 'thinet' needs calibration batches (it measures the next layer's output)")
    ev = ReconstructionFitness.from_space(space, u, list(batches), model=model)
    return greedy_removal(ev.Q, int(k), groups=u.channel_groups)
