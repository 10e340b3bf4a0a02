"""First-improvement swap local search on the stage-1 quadratic objective, with incremental updates.

For a keep-mask ``m`` with removed set ``r = 1 - m`` the error is ``e = r^T Q r``. Swapping a kept channel ``a``
(it becomes removed) for a removed channel ``b`` (it becomes kept) changes it by

    delta(a, b) = 2 (Q r)_a + Q_aa - 2 (Q r)_b + Q_bb - 2 Q_ab,

so all ``n - k`` swaps of one ``a`` cost one vector operation, and an accepted swap updates ``Q r`` with one more
(``Q r += Q[:, a] - Q[:, b]``), as ThiNet's greedy does. The descent visits the kept channels in turn (random
order with ``rng``) and takes the best swap of the first channel that has an improving one; it stops after a full
pass without improvement (a swap-local optimum) or when ``max_evals`` neighbours have been looked at. Each
neighbour looked at counts as one evaluation, so a memetic GA and a plain one are compared on the same budget.
Units feeding a grouped convolution swap within a block only (the per-block cardinality stays exact).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from evoprune.errors import EvopruneError

TOL = 1e-13  # improvements smaller than this (relative to a normalised error) are rounding noise


def swap_descent(q: np.ndarray, mask: np.ndarray, groups: int = 1, max_evals: Optional[int] = None,
                 rng: Optional[np.random.Generator] = None,
                 on_row: Optional[Callable[[np.ndarray, np.ndarray], bool]] = None) -> Tuple[np.ndarray, float, int]:
    """Improve ``mask`` (bool ``[n]``, kept channels) by swaps; returns ``(mask, error, neighbours evaluated)``.

    ``on_row(genomes, errors)`` receives every row of neighbours looked at (``[m, n]`` bool, ``[m]``); returning
    True stops the descent (e.g. when an evaluation budget is spent).
    """
    q = np.asarray(q, dtype=np.float64)
    keep = np.asarray(mask, dtype=bool).copy()
    n = q.shape[0]
    if keep.shape != (n,):
        raise EvopruneError(f"local search: mask has shape {keep.shape}, the problem has {n} channels")
    if groups < 1 or n % groups:
        raise EvopruneError(f"local search: {n} channels do not split into {groups} equal blocks")
    block = np.arange(n) // (n // groups)
    diag = np.diag(q)
    r = (~keep).astype(np.float64)
    qr = q @ r
    err = float(r @ qr)
    used = 0
    improved = True
    while improved:
        improved = False
        kept = np.flatnonzero(keep)
        if rng is not None:
            kept = kept[rng.permutation(len(kept))]
        for a in kept:
            removed = np.flatnonzero(~keep & (block == block[a]))
            if not len(removed):
                continue
            if max_evals is not None and used + len(removed) > max_evals:
                removed = removed[: max(0, max_evals - used)]
                if not len(removed):
                    return keep, float(r @ q @ r), used
            delta = (2.0 * qr[a] + diag[a]) + (diag[removed] - 2.0 * qr[removed]) - 2.0 * q[a, removed]
            used += len(removed)
            stop = False
            if on_row is not None:
                nb = np.repeat(keep[None], len(removed), axis=0)
                nb[:, a] = False
                nb[np.arange(len(removed)), removed] = True
                stop = bool(on_row(nb, err + delta))
            j = int(np.argmin(delta))
            if delta[j] < -TOL * max(err, 1e-300):
                b = removed[j]
                keep[a], keep[b] = False, True
                r[a], r[b] = 1.0, 0.0
                qr += q[:, a] - q[:, b]
                err += float(delta[j])
                improved = True
            if stop or (max_evals is not None and used >= max_evals):
                return keep, float(r @ q @ r), used
    return keep, float(r @ q @ r), used
