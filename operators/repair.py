"""Repair operators: ``repair(genomes, *, rng, k=None, min_keep=1, importance=None) -> new genomes``.

They take one genome (1-D) or a population (2-D), return a new array of the same shape and never modify their input.
Rows that are already valid come back unchanged, so repairing after a cardinality-preserving operator is a no-op.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from evoprune.errors import EvopruneError

from .core import as_2d_bool, pick_lowest, random_pick, register_operator


def _need_k(name: str, k: Optional[int], n: int) -> int:
    if k is None:
        raise EvopruneError(f"repair '{name}' needs the number of channels to keep, k; use 'min-keep' for variable k")
    if not 0 <= int(k) <= n:
        raise EvopruneError(f"repair '{name}' needs 0 <= k <= n (n={n}), got k={k}")
    return int(k)


def _fix_counts(pop: np.ndarray, k: int, drop: Any, add: Any) -> np.ndarray:
    """Rows with too many ones drop ``drop(kept_mask, excess)`` of them, rows with too few add ``add(pruned_mask,
    deficit)``; only the rows that need it pay for a sort."""
    count = pop.sum(1)
    over = np.flatnonzero(count > k)
    if len(over):
        sub = pop[over]
        pop[over] = sub & ~drop(sub, count[over] - k)
    under = np.flatnonzero(count < k)
    if len(under):
        sub = pop[under]
        pop[under] = sub | add(~sub, k - count[under])
    return pop


@register_operator("repair", "exact-k-random", preserves_k=True,
                   doc="drops or adds random channels until exactly k are kept")
def exact_k_random(genomes: Any, *, rng: np.random.Generator, k: Optional[int] = None, **_: Any) -> np.ndarray:
    """Exactly ``k`` ones per genome: surplus kept channels pruned at random, missing ones added at random."""
    pop, one = as_2d_bool(genomes)
    k = _need_k("exact-k-random", k, pop.shape[1])
    pick = lambda mask, count: random_pick(mask, count, rng)  # noqa: E731
    out = _fix_counts(pop, k, pick, pick)
    return out[0] if one else out


@register_operator("repair", "exact-k-importance", preserves_k=True,
                   doc="drops the least / adds the most important channels until exactly k are kept")
def exact_k_importance(genomes: Any, *, rng: Optional[np.random.Generator] = None, k: Optional[int] = None,
                       importance: Optional[np.ndarray] = None, **_: Any) -> np.ndarray:
    """Exactly ``k`` ones per genome: the least important surplus channels pruned, the most important missing ones
    added (deterministic; ties broken by channel index)."""
    pop, one = as_2d_bool(genomes)
    n = pop.shape[1]
    k = _need_k("exact-k-importance", k, n)
    if importance is None:
        raise EvopruneError(
            "repair 'exact-k-importance' needs per-channel importance scores; pass importance=... to the problem"
        )
    imp = np.asarray(importance, dtype=float)
    if imp.shape != (n,):
        raise EvopruneError(f"importance must have one score per channel ({n}), got shape {imp.shape}")

    def low_first(mask: np.ndarray, count: np.ndarray) -> np.ndarray:
        return pick_lowest(np.where(mask, imp[None, :], np.inf), count)

    def high_first(mask: np.ndarray, count: np.ndarray) -> np.ndarray:
        return pick_lowest(np.where(mask, -imp[None, :], np.inf), count)

    out = _fix_counts(pop, k, low_first, high_first)
    return out[0] if one else out


@register_operator("repair", "min-keep", preserves_k=False,
                   doc="adds random channels to genomes keeping fewer than min_keep; otherwise unchanged")
def min_keep(genomes: Any, *, rng: np.random.Generator, min_keep: int = 1, **_: Any) -> np.ndarray:
    """At least ``min_keep`` ones per genome (random channels added where missing); never removes channels."""
    pop, one = as_2d_bool(genomes)
    n = pop.shape[1]
    m = int(min_keep)
    if not 0 <= m <= n:
        raise EvopruneError(f"repair 'min-keep' needs 0 <= min_keep <= n (n={n}), got {min_keep}")
    count = pop.sum(1)
    under = np.flatnonzero(count < m)
    if len(under):
        sub = pop[under]
        pop[under] = sub | random_pick(~sub, m - count[under], rng)
    return pop[0] if one else pop
