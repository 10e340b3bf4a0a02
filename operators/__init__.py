"""DEAP operators on binary chromosomes (installed as ``evoprune.operators``).

Registered in :data:`evoprune.registry.OPERATORS` as ``"<kind>.<name>"``:

========================  =============  ==========================================================
name                      keeps k?       effect
========================  =============  ==========================================================
init.random-k             yes            uniformly random k-subsets
init.bernoulli            no             i.i.d. Bernoulli(k/n) bits (the paper's); repair follows
init.importance           yes            Gumbel top-k biased towards important channels
crossover.uniform         no             each bit exchanged with probability 1/2
crossover.one-point       no             tails after one cut exchanged
crossover.two-point       no             segment between two cuts exchanged
crossover.cardinality     yes            common channels kept, symmetric difference dealt out at random
mutation.flip             no             each bit flipped with probability 1/n
mutation.swap             yes            one kept and one pruned channel exchanged
repair.exact-k-random     yes (makes k)  random surplus channels dropped / missing ones added
repair.exact-k-importance yes (makes k)  least important dropped / most important added
repair.min-keep           no             at least min_keep channels kept
selection.tournament      -              best of 3 random individuals
selection.roulette        -              fitness-proportional on windowed fitness (paper)
========================  =============  ==========================================================

Use :func:`get_operator` to resolve a name or a user's ``module:name`` / ``file.py:name``.

The contract (DEAP's), by kind, with the random generator always the ``rng`` keyword (never numpy's global state)
and any other keywords accepted:

* ``init(size, n, k, *, rng, importance=None) -> bool [size, n]``;
* ``crossover(a, b, *, rng) -> (a, b)`` and ``mutation(x, *, rng) -> (x,)``, in place on 1-D bool genomes (or DEAP
  individuals); a vectorised ``.batch(A, B, rng=...)`` / ``.batch(X, rng=...)`` twin on 2-D populations is used when
  present (the GA then varies a whole population in one call);
* ``repair(genomes, *, rng, k=None, ...) -> genomes``; ``selection(fitness [P], n_select, *, rng) -> indices``
  (``fitness`` already multiplied by the DEAP weight: larger is better);
* ``preserves_k = True`` tells the GA the number of kept channels never changes (no repair needed).

``register_operator(kind, name, preserves_k=..., batch=...)`` registers one; ``examples/custom_operator.py`` is a
user mutation used by object, by registered name and from the CLI.
"""
from . import crossover, init, mutation, repair, selection  # noqa: F401  (registers the built-ins)
from .core import KINDS, get_operator, names, register_operator
from .selection import deap_select

__all__ = ["KINDS", "get_operator", "names", "register_operator", "deap_select",
           "crossover", "init", "mutation", "repair", "selection"]
