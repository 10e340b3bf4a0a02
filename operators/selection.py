"""Selection operators: ``select(fitness, n_select, *, rng, **kw) -> ndarray[n_select]`` of population indices.

``fitness`` is the *weighted* single-objective fitness (DEAP's ``wvalues[0]``: larger is better, i.e. ``-error``
for an error to minimise), one value per individual. Working on indices over a fitness array keeps the GA's hot
loop free of DEAP individuals; :func:`deap_select` adapts any of them to DEAP's ``select(individuals, k)``.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

import numpy as np

from evoprune.errors import EvopruneError

from .core import register_operator


def _fitness(fitness: Any) -> np.ndarray:
    f = np.asarray(fitness, dtype=float)
    if f.ndim == 2 and f.shape[1] == 1:
        f = f[:, 0]
    if f.ndim != 1 or len(f) == 0:
        raise EvopruneError(f"selection needs one weighted fitness value per individual, got shape {f.shape}")
    # Non-finite fitness (a failed evaluation scored inf error) ranks below every finite one.
    bad = ~np.isfinite(f)
    if bad.any():
        f = f.copy()
        finite = f[~bad]
        f[bad] = (finite.min() - 1.0 - abs(finite.min())) if finite.size else 0.0
    return f


@register_operator("selection", "tournament", preserves_k=True,
                   doc="best of tournsize (default 3) individuals drawn uniformly with replacement")
def tournament(fitness: Any, n_select: int, *, rng: np.random.Generator, tournsize: int = 3, **_: Any) -> np.ndarray:
    """Tournament selection (``tools.selTournament``): each pick is the fittest of ``tournsize`` random individuals.

    Depends only on fitness ranks, so it behaves the same whatever the objective's scale or sign.
    """
    f = _fitness(fitness)
    t = int(tournsize)
    if t < 1:
        raise EvopruneError(f"selection 'tournament' needs tournsize >= 1, got {tournsize}")
    cand = rng.integers(0, len(f), size=(int(n_select), t))
    return cand[np.arange(int(n_select)), np.argmax(f[cand], axis=1)]


@register_operator("selection", "roulette", preserves_k=True,
                   doc="fitness-proportional on windowed fitness (worst of the generation gets 0), as in the paper")
def roulette(fitness: Any, n_select: int, *, rng: np.random.Generator, **_: Any) -> np.ndarray:
    """Roulette-wheel (fitness-proportional) selection with *windowing*, the paper's scheme.

    Fitness-proportional selection needs non-negative scores to maximise, so the weighted fitness ``w`` (``-error``
    when minimising an error) is shifted by the generation's worst: ``p_i ∝ w_i - min(w)``. For an error ``e`` to
    minimise that is ``p_i ∝ max(e) - e_i``: the worst individual gets probability 0 and the selection is invariant
    to adding a constant to the objective (unlike ``1/e``). If all individuals are equal, selection is uniform.
    """
    f = _fitness(fitness)
    s = f - f.min()
    total = s.sum()
    if not np.isfinite(total) or total <= 0:
        return rng.integers(0, len(f), size=int(n_select))
    # Inverse-CDF sampling: the same draws as rng.choice(p=...), without its per-call validation overhead.
    cdf = np.cumsum(s / total)
    return np.minimum(np.searchsorted(cdf, rng.random(int(n_select)), side="right"), len(f) - 1)


def deap_select(select: Callable, rng: np.random.Generator, **kw: Any) -> Callable[[Sequence[Any], int], List[Any]]:
    """Adapt an index-returning selection to DEAP's ``select(individuals, k) -> list`` (on ``fitness.wvalues[0]``)."""

    def selector(individuals: Sequence[Any], k: int) -> List[Any]:
        w = np.array([ind.fitness.wvalues[0] if ind.fitness.valid else -np.inf for ind in individuals])
        return [individuals[i] for i in select(w, k, rng=rng, **kw)]

    selector.__name__ = getattr(select, "__name__", "select")
    return selector
