"""The problem protocol every strategy runs on.

A problem is a plain object with:

* ``name``, ``n_var`` (genome length), ``objectives`` (names), ``weights`` (DEAP weights: -1 minimise, +1 maximise),
* ``encoding``: ``"binary"`` (numpy bool genomes) or ``"real"`` (float genomes in ``[lower, upper]``),
* ``sample(rng, size) -> ndarray[size, n_var]``,
* ``repair(genomes, rng) -> ndarray`` (returns valid genomes; never mutates its input),
* ``evaluate(population: ndarray[P, n_var]) -> ndarray[P, n_obj]``, batched,
* ``toolbox(**operator_names) -> deap.base.Toolbox`` (see :func:`make_toolbox`, binary problems),
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

    def __deepcopy__(self, memo: Any) -> "FitnessND":
        # base.Fitness.__deepcopy__ keeps only wvalues, so the per-instance weights would fall back to the class
        # default (-1,): a clone (toolbox.clone, HallOfFame) of a maximisation individual would then minimise.
        copy_ = self.__class__()
        copy_.weights = self.weights
        copy_.wvalues = self.wvalues
        return copy_


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


def make_toolbox(problem: Any, *, init: Any = None, crossover: Any = None, mutation: Any = None,
                 selection: Any = None, rng: Optional[np.random.Generator] = None, seed: Optional[int] = None,
                 init_kw: Optional[dict] = None, crossover_kw: Optional[dict] = None,
                 mutation_kw: Optional[dict] = None, selection_kw: Optional[dict] = None) -> base.Toolbox:
    """A DEAP ``Toolbox`` for a binary problem, wired from operator names (or callables).

    Registers ``individual``, ``population``, ``mate``, ``mutate``, ``select``, ``evaluate``, ``map`` and ``repair``.
    ``mate``/``mutate`` follow DEAP's in-place contract and repair their outputs when the operator does not keep the
    problem's cardinality, so classic loops (``algorithms.eaSimple``) stay feasible. Operators draw from ``rng``
    (default ``np.random.default_rng(seed)``); DEAP's own loops also use Python's ``random``, so seed both.
    Names default to ``problem.default_operators``, then to the fixed-k row of
    :data:`evoprune.config.OPERATOR_DEFAULTS`; multi-objective problems default to ``tools.selNSGA2``.
    """
    from deap import tools

    from evoprune.config import operator_defaults
    from evoprune.operators import deap_select, get_operator

    if getattr(problem, "encoding", "binary") != "binary":
        raise EvopruneError(f"make_toolbox supports binary problems; problem '{problem.name}' is "
                            f"{problem.encoding}: register your own operators on a deap.base.Toolbox")
    rng = rng if rng is not None else np.random.default_rng(seed)
    defaults = operator_defaults(fixed_k=True)  # without the problem's own: the fixed-k ones, whatever its k
    defaults.update(getattr(problem, "default_operators", {}) or {})
    n, k = int(problem.n_var), getattr(problem, "k", None)
    weights = tuple(problem.weights)
    imp = getattr(problem, "importance", None)
    adapt = getattr(problem, "adapt_operator", lambda kind, op: op)  # per-block operators for grouped units
    init_op = adapt("init", get_operator("init", init or defaults["init"]))
    mate_op = adapt("crossover", get_operator("crossover", crossover or defaults["crossover"]))
    mut_op = adapt("mutation", get_operator("mutation", mutation or defaults["mutation"]))
    ikw, ckw, mkw = dict(init_kw or {}), dict(crossover_kw or {}), dict(mutation_kw or {})

    def sample(size: int) -> np.ndarray:
        return problem.repair(init_op(int(size), n, k, rng=rng, importance=imp, **ikw), rng)

    def individual() -> Any:
        return wrap(sample(1)[0], weights)

    def population(n: int) -> list:  # DEAP's keyword: toolbox.population(n=60)
        return wrap_population(sample(n), weights)

    def fix(ind: Any) -> None:
        ind[:] = problem.repair(np.asarray(ind, dtype=bool), rng)

    def mate(a: Any, b: Any) -> tuple:
        a, b = mate_op(a, b, rng=rng, **ckw)
        if not getattr(mate_op, "preserves_k", False):
            fix(a)
            fix(b)
        return a, b

    def mutate(ind: Any) -> tuple:
        (ind,) = mut_op(ind, rng=rng, **mkw)
        if not getattr(mut_op, "preserves_k", False):
            fix(ind)
        return (ind,)

    def evaluate(ind: Any) -> tuple:
        return tuple(float(v) for v in np.asarray(problem.evaluate(np.asarray(ind, dtype=bool)[None, :]))[0])

    tb = base.Toolbox()
    tb.register("individual", individual)
    tb.register("population", population)
    tb.register("mate", mate)
    tb.register("mutate", mutate)
    if len(weights) > 1 and selection is None:
        tb.register("select", tools.selNSGA2)
    else:
        sel = get_operator("selection", selection or defaults["selection"])
        tb.register("select", deap_select(sel, rng, **dict(selection_kw or {})))
    tb.register("evaluate", evaluate)
    tb.register("map", map)
    tb.register("repair", lambda genomes: problem.repair(genomes, rng))
    tb.rng = rng
    return tb
