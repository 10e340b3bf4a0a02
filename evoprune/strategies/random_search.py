"""Random search: the baseline every strategy must beat with the same evaluation budget.

Draws genomes with ``problem.sample`` (the problem's own initialisation, so it is exactly as informed as the
other strategies' initial populations) in batches of ``pop_size``; one logbook record per batch.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from evoprune.signals import graceful
from evoprune.strategies import _support as S
from evoprune.strategies.base import BudgetedEvaluator, Result, seeded_rngs, timer
from evoprune.strategies.protocol import register_strategy

NAME = "random"
DEFAULTS = {"pop_size": 100}


def _config(problem: Any, budget: int, params: Dict[str, Any]) -> Tuple[Dict[str, Any], int]:
    """Validate and resolve the parameters (also used to check CLI input before a run starts)."""
    p = S.resolve_params(NAME, params, DEFAULTS)
    pop_size = S.positive_int(NAME, "pop_size", p["pop_size"])
    S.require_budget(NAME, budget, 1, "one sample")
    S.check_encoding(NAME, problem)
    return p, pop_size


def _validate(problem: Any, budget: int, **params: Any) -> None:
    """Check parameters, problem and budget without running."""
    _config(problem, budget, params)


@register_strategy(NAME, objectives="any", defaults=DEFAULTS, validate=_validate, aliases=("random-search",),
                   doc="random search: the best of budget samples of problem.sample")
@graceful
def random_search(problem: Any, budget: int, seed: int, callback: Optional[Callable] = None, **params: Any) -> Result:
    """Random search: sample the problem uniformly (problem.sample) until the budget is spent."""
    p, pop_size = _config(problem, budget, params)
    rng = seeded_rngs(seed)
    evaluator = BudgetedEvaluator(problem, budget, map_fn=p["map_fn"])
    logbook = S.new_logbook(problem)
    ckpt = S.Checkpointer(p["checkpoint"], p["checkpoint_every"], S.signature(NAME, problem, seed, budget, p))
    gen, elapsed, done = 0, 0.0, False
    state = ckpt.load()
    if state is not None:
        gen, logbook, elapsed, done = S.restore_common(state, problem, evaluator, rng)
        gen += 1
    clock = timer()
    while not done and evaluator.remaining > 0:
        size = min(pop_size, evaluator.remaining)
        G = np.asarray(problem.sample(rng, size))
        F = S.split_evaluate(evaluator, G)
        S.record(logbook, problem, gen, len(F), evaluator.used, F)
        done = evaluator.remaining == 0
        if ckpt.due(gen) or done:
            ckpt.save(S.common_state(gen, evaluator, logbook, rng, elapsed + clock(), done))
        if S.call_back(callback, gen, G[: len(F)], F):
            break
        gen += 1
    return S.finish(NAME, problem, seed, evaluator, logbook, elapsed + clock(), p)


