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
"""
from . import crossover, init, mutation, repair, selection  # noqa: F401  (registers the built-ins)
from .core import KINDS, get_operator, names, register_operator
from .selection import deap_select

__all__ = ["KINDS", "get_operator", "names", "register_operator", "deap_select",
           "crossover", "init", "mutation", "repair", "selection"]
