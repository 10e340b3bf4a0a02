"""Search strategies on one interface: ``run(problem, budget, seed, callback=None, **params) -> Result``.

Importing this package registers the built-ins in :data:`evoprune.registry.STRATEGIES`: ``ga`` (the paper's GA),
``nsga2``, ``cmaes``, ``cmaes-1+l``, ``mo-cmaes`` and ``random``. A user strategy is any function with that
signature (the protocol: :mod:`evoprune.strategies.protocol`), registered with ``@register_strategy("name")`` or
given as ``module:name`` / ``file.py:name``.

:func:`run_strategy` and :func:`compare` are the library entry points the ``search`` / ``compare`` commands use.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from evoprune.errors import EvopruneError
from evoprune.strategies.base import BudgetedEvaluator, BudgetExhausted, Result, seeded_rngs
from evoprune.strategies.protocol import (accepted, check_compatible, get_strategy, make_result, register_strategy,
                                         strategy_accepts)

# Modules that register strategies (imported for that side effect; a failing import is an error, not a skip).
_MODULES = ("ga", "nsga2", "cmaes", "random_search")
for _m in _MODULES:
    importlib.import_module(f"{__name__}.{_m}")

__all__ = ["Result", "BudgetedEvaluator", "BudgetExhausted", "seeded_rngs", "get_strategy", "run_strategy",
           "compare", "strategy_accepts", "accepted", "check_compatible", "register_strategy", "make_result"]


def run_strategy(name: Any, problem: Any, budget: int, seed: int, callback: Optional[Callable] = None,
                 **params: Any) -> Result:
    """Resolve ``name`` and run it; the result's ``strategy`` field is set to ``name`` when it is a string."""
    fn = get_strategy(name)
    result = fn(problem, budget, seed, callback, **params)
    if not isinstance(result, Result):
        raise EvopruneError(f"strategy '{name}' returned a {type(result).__name__}, expected a Result "
                            "(see evoprune.strategies.base.Result)")
    if isinstance(name, str):
        result.strategy = name
    return result


def compare(problem: Any, strategies: Sequence[Any], budget: int, seeds: Iterable[int],
            params: Optional[Mapping[str, Mapping[str, Any]]] = None,
            on_result: Optional[Callable[[str, int, Result], None]] = None) -> Dict[str, List[Result]]:
    """Run every strategy on ``problem`` with the same ``budget`` for every seed.

    ``params``: ``{strategy name: {parameter: value}}`` (optional). ``on_result(name, seed, result)`` is called after
    each run (e.g. to save it). Returns ``{name: [Result per seed]}``, ready for :func:`evoprune.indicators.summarize`.
    """
    seeds = list(seeds)
    params = dict(params or {})
    labels = [s if isinstance(s, str) else getattr(s, "__name__", repr(s)) for s in strategies]
    fns = [get_strategy(s) for s in strategies]
    for label, fn in zip(labels, fns):
        check_compatible(label, fn, problem)
    out: Dict[str, List[Result]] = {}
    for label, s, fn in zip(labels, strategies, fns):
        out[label] = []
        for seed in seeds:
            res = run_strategy(s if isinstance(s, str) else fn, problem, budget, seed, **dict(params.get(label, {})))
            res.strategy = label
            out[label].append(res)
            if on_result is not None:
                on_result(label, seed, res)
    return out
