"""A user-defined mutation, plugged into evoprune's GA three ways.

``my_mutation`` is a "neighbour swap": it prunes one kept channel and keeps a pruned channel *close to it* (within
``radius`` positions), a local move for problems where neighbouring channels are similar. It keeps the number of
kept channels, so it says so with ``preserves_k = True`` (then the GA's repair has nothing to do).

The contract for a mutation (the DEAP one): take one genome (a 1-D bool array or a DEAP individual), modify it in
place, return ``(individual,)``; take the random generator as the ``rng`` keyword (never numpy's global state, so
runs are reproducible) and accept any other keywords (``**kwargs``). Use it

* from Python, by object: ``ga(problem, budget, seed, mutation=my_mutation)``;
* from Python, by a registered name: ``OPERATORS.register("mutation.neighbour-swap")(my_mutation)``, then
  ``mutation="neighbour-swap"``;
* from the command line, by file: ``evoprune search --problem planted-qp --strategy ga
  --mutation examples/custom_operator.py:my_mutation``.

Run it: ``python examples/custom_operator.py``.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np


def my_mutation(individual: Any, *, rng: np.random.Generator, radius: int = 8, **kwargs: Any) -> Tuple[Any]:
    """Neighbour swap: prune a random kept channel, keep a random pruned channel within ``radius`` of it."""
    genome = np.asarray(individual, dtype=bool)
    kept, pruned = np.flatnonzero(genome), np.flatnonzero(~genome)
    if len(kept) == 0 or len(pruned) == 0:
        return (individual,)
    out = kept[rng.integers(len(kept))]
    near = pruned[np.abs(pruned - out) <= radius]
    into = near[rng.integers(len(near))] if len(near) else pruned[rng.integers(len(pruned))]
    individual[out] = False
    individual[into] = True
    return (individual,)


my_mutation.preserves_k = True  # type: ignore[attr-defined]


def main() -> None:
    import evoprune.problems  # noqa: F401  (registers the benchmark problems)
    from evoprune.registry import OPERATORS, PROBLEMS
    from evoprune.strategies.ga import ga

    OPERATORS.register("mutation.neighbour-swap")(my_mutation)
    problem = PROBLEMS.get("planted-qp")(n=128, k=64, seed=0)
    print(f"{problem.name}: proven optimum {problem.optimum:.0f}")
    for mutation in ("swap", "neighbour-swap", __file__ + ":my_mutation"):
        res = ga(problem, budget=6000, seed=0, mutation=mutation)
        label = mutation if ":" not in mutation else "examples/custom_operator.py:my_mutation"
        print(f"  mutation {label:<42} best {res.best_fitness[0]:9.0f}  gap {100 * problem.gap(res.best_fitness[0]):6.3f} %"
              f"  ({res.evaluations} evaluations, {res.wall_time:.2f} s)")


if __name__ == "__main__":
    main()
