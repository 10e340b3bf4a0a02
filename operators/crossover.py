"""Crossover operators on binary chromosomes.

DEAP signature: ``mate(a, b, *, rng, **kw) -> (a, b)``, modifying both parents in place (as DEAP's ``cx*`` do) and
returning them. Each has a vectorised twin ``mate.batch(A, B, *, rng) -> (C, D)`` on 2-D arrays of parent pairs that
returns new arrays and leaves its inputs alone; the GA uses it.

Only ``cardinality`` preserves the number of kept channels; the positional ones (uniform, one-point, two-point) mix
cardinalities and rely on the problem's repair for fixed-k problems.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from .core import random_pick, register_operator

Pair = Tuple[np.ndarray, np.ndarray]


def _pair(a: Any, b: Any) -> Pair:
    a2, b2 = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a2.shape != b2.shape or a2.ndim != 2:
        raise ValueError(f"crossover needs two populations of equal 2-D shape, got {a2.shape} and {b2.shape}")
    return a2, b2


def _by_mask(a: np.ndarray, b: np.ndarray, take_a: np.ndarray) -> Pair:
    return np.where(take_a, a, b), np.where(take_a, b, a)


def _deap(batch: Any, a: Any, b: Any, rng: np.random.Generator, **kw: Any) -> Pair:
    c, d = batch(np.asarray(a, dtype=bool)[None, :], np.asarray(b, dtype=bool)[None, :], rng=rng, **kw)
    a[:] = c[0]
    b[:] = d[0]
    return a, b


# ------------------------------------------------------------------------------------------------------ uniform
def uniform_batch(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator, indpb: float = 0.5, **_: Any) -> Pair:
    """Each bit swapped between the two parents with probability ``indpb``."""
    a, b = _pair(a, b)
    return _by_mask(a, b, rng.random(a.shape) >= float(indpb))


@register_operator("crossover", "uniform", preserves_k=False, batch=uniform_batch,
                   doc="each bit exchanged with probability 1/2; cardinality varies (repair follows)")
def uniform(a: Any, b: Any, *, rng: np.random.Generator, indpb: float = 0.5, **kw: Any) -> Pair:
    """Uniform crossover (``tools.cxUniform``): bit i exchanged with probability ``indpb``. Does not keep k."""
    return _deap(uniform_batch, a, b, rng, indpb=indpb)


# ---------------------------------------------------------------------------------------------------- one-point
def one_point_batch(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator, **_: Any) -> Pair:
    """Tails after one random cut point (1..n-1) exchanged."""
    a, b = _pair(a, b)
    m, n = a.shape
    if n < 2:
        return a.copy(), b.copy()
    cut = rng.integers(1, n, size=m)
    return _by_mask(a, b, np.arange(n)[None, :] < cut[:, None])


@register_operator("crossover", "one-point", preserves_k=False, batch=one_point_batch,
                   doc="tails after one random cut exchanged; cardinality varies (repair follows)")
def one_point(a: Any, b: Any, *, rng: np.random.Generator, **kw: Any) -> Pair:
    """One-point crossover (``tools.cxOnePoint``). Does not keep k."""
    return _deap(one_point_batch, a, b, rng)


# ---------------------------------------------------------------------------------------------------- two-point
def two_point_batch(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator, **_: Any) -> Pair:
    """The segment between two random cut points exchanged."""
    a, b = _pair(a, b)
    m, n = a.shape
    if n < 2:
        return a.copy(), b.copy()
    cuts = np.sort(rng.integers(0, n + 1, size=(m, 2)), axis=1)
    pos = np.arange(n)[None, :]
    return _by_mask(a, b, ~((pos >= cuts[:, :1]) & (pos < cuts[:, 1:])))


@register_operator("crossover", "two-point", preserves_k=False, batch=two_point_batch,
                   doc="segment between two random cuts exchanged; cardinality varies (repair follows)")
def two_point(a: Any, b: Any, *, rng: np.random.Generator, **kw: Any) -> Pair:
    """Two-point crossover (``tools.cxTwoPoint``). Does not keep k."""
    return _deap(two_point_batch, a, b, rng)


# -------------------------------------------------------------------------------------------------- cardinality
def cardinality_batch(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator, **_: Any) -> Pair:
    """Children keep the channels both parents keep; the rest of the symmetric difference is split at random.

    Child 1 gets ``|a| - |a & b|`` channels drawn from ``a ^ b`` and child 2 the remaining ones, so each child has
    exactly as many ones as the parent in its position (both k when both parents have k).
    """
    a, b = _pair(a, b)
    common = a & b
    diff = a ^ b
    need = a.sum(1) - common.sum(1)
    pick = random_pick(diff, need, rng)
    return common | pick, common | (diff & ~pick)


@register_operator("crossover", "cardinality", preserves_k=True, batch=cardinality_batch,
                   doc="keeps channels common to both parents, fills the rest from their symmetric difference; keeps k")
def cardinality(a: Any, b: Any, *, rng: np.random.Generator, **kw: Any) -> Pair:
    """Cardinality-preserving crossover: common channels kept, the symmetric difference dealt out at random.

    Each child has as many ones as the parent in its position (exactly k for k-subset parents).
    """
    return _deap(cardinality_batch, a, b, rng)
