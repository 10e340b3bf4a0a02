"""The problem protocol every strategy runs on.

A problem is a plain object with:

* ``name``, ``n_var`` (genome length), ``objectives`` (names), ``weights`` (DEAP weights: -1 minimise, +1 maximise),
* ``encoding``: ``"binary"`` (numpy bool genomes) or ``"real"`` (float genomes in ``[lower, upper]``),
* ``sample(rng, size) -> ndarray[size, n_var]``,
* ``repair(genomes, rng) -> ndarray`` (returns valid genomes; never mutates its input),
* ``evaluate(population: ndarray[P, n_var]) -> ndarray[P, n_obj]``, batched,
* ``toolbox(**operator_names) -> deap.base.Toolbox`` (see :func:`make_toolbox`),
* optionally ``optimum`` (best objective value, single-objective) or ``true_front`` (ndarray, multi-objective).

Genomes are numpy arrays. DEAP individuals are numpy arrays wrapped in creator classes defined once here (so they
pickle for processes and Dask); hot loops work on the 2-D population array and wrap individuals only where DEAP's
selection, hall of fame or logbook need them.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
from deap import base, creator

from evoprune.errors import EvopruneError


def _creator_class(name: str, base_cls: type, **attrs: Any) -> type:
    if not hasattr(creator, name):  # defined once per process: no re-creation warnings
        creator.create(name, base_cls, **attrs)
    return getattr(creator, name)


class FitnessND(base.Fitness):
    """Fitness whose weights are set per individual (problems differ in objective count and direction)."""

    weights = (-1.0,)


# Individuals: numpy arrays with a ``fitness`` attribute. Weights are assigned on creation by ``wrap``.
Individual = _creator_class("EvopruneIndividual", np.ndarray, fitness=FitnessND)


def wrap(genome: np.ndarray, weights: Sequence[float], values: Optional[Sequence[float]] = None) -> Any:
    """Wrap a 1-D genome as a DEAP individual (a copy) with a fitness of the problem's weights."""
    ind = np.array(genome, copy=True).view(Individual)
    ind.fitness = FitnessND()
    ind.fitness.weights = tuple(weights)  # instance attribute overrides the class default
    if values is not None:
        ind.fitness.values = tuple(float(v) for v in values)
    return ind


def wrap_population(genomes: np.ndarray, weights: Sequence[float], values: Optional[np.ndarray] = None) -> list:
    return [wrap(g, weights, None if values is None else values[i]) for i, g in enumerate(genomes)]


def as_array(population: Sequence[np.ndarray]) -> np.ndarray:
    """Stack individuals into one 2-D plain ndarray (a copy)."""
    return np.stack([np.asarray(ind).view(np.ndarray) for ind in population]).copy()


def check_population(problem: Any, population: np.ndarray) -> np.ndarray:
    """Validate the shape of a population given to ``evaluate``; one-line error on mismatch."""
    pop = np.asarray(population)
    if pop.ndim == 1:
        pop = pop[None, :]
    if pop.ndim != 2 or pop.shape[1] != problem.n_var:
        raise EvopruneError(
            f"problem '{problem.name}' expects genomes of length {problem.n_var}, got an array of shape {pop.shape}"
        )
    return pop


def validate_kn(n: int, k: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise EvopruneError(f"n must be a positive integer, got {n!r}")
    if not isinstance(k, (int, np.integer)) or k < 1 or k > n:
        raise EvopruneError(f"k must satisfy 1 <= k <= n (n={n}), got k={k!r}")


ScoreFn = Callable[[np.ndarray], np.ndarray]
