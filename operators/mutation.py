"""Mutation operators on binary chromosomes.

DEAP signature: ``mutate(ind, *, rng, **kw) -> (ind,)``, modifying ``ind`` in place (as DEAP's ``mut*`` do). Each has a
vectorised twin ``mutate.batch(pop, *, rng) -> new_pop`` that mutates every row of a 2-D array and leaves its input
alone; the GA applies it to the rows it chose to mutate.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from evoprune.errors import EvopruneError

from .core import random_pick, register_operator


def _pop(pop: Any) -> np.ndarray:
    a = np.asarray(pop, dtype=bool)
    if a.ndim != 2:
        raise ValueError(f"batched mutation needs a 2-D population, got shape {a.shape}")
    return a


def _deap(batch: Any, ind: Any, rng: np.random.Generator, **kw: Any) -> Tuple[Any]:
    ind[:] = batch(np.asarray(ind, dtype=bool)[None, :], rng=rng, **kw)[0]
    return (ind,)


# --------------------------------------------------------------------------------------------------------- flip
def flip_batch(pop: np.ndarray, *, rng: np.random.Generator, indpb: Optional[float] = None, **_: Any) -> np.ndarray:
    """Every bit flipped independently with probability ``indpb`` (default ``1/n``: one flip per genome on average)."""
    pop = _pop(pop)
    p = 1.0 / max(pop.shape[1], 1) if indpb is None else float(indpb)
    if not 0.0 <= p <= 1.0:
        raise EvopruneError(f"mutation 'flip' needs 0 <= indpb <= 1, got {indpb}")
    return pop ^ (rng.random(pop.shape) < p)


@register_operator("mutation", "flip", preserves_k=False, batch=flip_batch,
                   doc="each bit flipped with probability indpb (default 1/n); cardinality varies (repair follows)")
def flip(ind: Any, *, rng: np.random.Generator, indpb: Optional[float] = None, **kw: Any) -> Tuple[Any]:
    """Bit-flip mutation (``tools.mutFlipBit``) with ``indpb`` defaulting to ``1/n``. Does not keep k."""
    return _deap(flip_batch, ind, rng, indpb=indpb)


# --------------------------------------------------------------------------------------------------------- swap
def swap_batch(pop: np.ndarray, *, rng: np.random.Generator, n_swaps: int = 1, **_: Any) -> np.ndarray:
    """Per row, ``n_swaps`` random kept channels pruned and as many random pruned channels kept.

    Rows with fewer than ``n_swaps`` ones (or zeros) swap as many as they can; all-ones or all-zeros rows are unchanged.
    """
    pop = _pop(pop)
    s = int(n_swaps)
    if s < 1:
        raise EvopruneError(f"mutation 'swap' needs n_swaps >= 1, got {n_swaps}")
    n = pop.shape[1]
    ones = pop.sum(1)
    s_eff = np.minimum(s, np.minimum(ones, n - ones))
    if s == 1:  # the default: the r-th one / zero by a cumulative count, no sort needed
        u = rng.random((2, len(pop)))
        c1 = np.cumsum(pop, axis=1, dtype=np.int32)
        c0 = np.arange(1, n + 1, dtype=np.int32)[None, :] - c1
        i1 = np.argmax(c1 > (u[0] * ones).astype(np.int32)[:, None], axis=1)
        i0 = np.argmax(c0 > (u[1] * (n - ones)).astype(np.int32)[:, None], axis=1)
        act = np.flatnonzero(s_eff > 0)
        out = pop.copy()
        out[act, i1[act]] = False
        out[act, i0[act]] = True
        return out
    off = random_pick(pop, s_eff, rng)
    on = random_pick(~pop, s_eff, rng)
    return (pop & ~off) | on


@register_operator("mutation", "swap", preserves_k=True, batch=swap_batch,
                   doc="exchanges n_swaps kept and pruned channels (default 1); keeps k")
def swap(ind: Any, *, rng: np.random.Generator, n_swaps: int = 1, **kw: Any) -> Tuple[Any]:
    """Swap mutation: ``n_swaps`` kept channels pruned and as many pruned channels kept. Keeps k exactly."""
    return _deap(swap_batch, ind, rng, n_swaps=n_swaps)
