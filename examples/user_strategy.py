"""A search strategy of your own, written against evoprune's strategy protocol and run from the CLI.

The protocol (evoprune/strategies/protocol.py): ``run(problem, budget, seed, callback=None, **params) -> Result``;
the budget is counted by ``BudgetedEvaluator``; ``make_result`` builds the Result from its history. This one is a
(1+lambda) evolutionary algorithm with swap mutation (it keeps the number of kept channels fixed), on any
single-objective binary problem:

    evoprune search --problem onemax-k --param n=60 --param k=20 \
        --strategy examples/user_strategy.py:one_plus_lambda --strategy-param offspring=8 --budget 400 --out runs/opl
    evoprune compare --problem channels --checkpoint model.pt --data mini-cifar10 --param keep=0.5 \
        --strategies examples/user_strategy.py:one_plus_lambda,ga,random --budget 2000 --seeds 5 --out runs/cmp

It takes no ``checkpoint=`` option, so the CLI does not offer it one: its runs simply restart when interrupted.
"""
import time

import numpy as np

from evoprune.operators import get_operator
from evoprune.strategies import BudgetedEvaluator, BudgetExhausted, make_result, register_strategy, seeded_rngs


@register_strategy("one-plus-lambda", objectives="single", encodings=("binary",))
def one_plus_lambda(problem, budget, seed, callback=None, offspring: int = 4):
    """(1+lambda) EA: ``offspring`` swap mutants of the parent per generation; the best replaces it if no worse."""
    rng, t0 = seeded_rngs(seed), time.perf_counter()
    ev = BudgetedEvaluator(problem, budget)
    swap = get_operator("mutation", "swap").batch
    w = problem.weights[0]
    x = problem.repair(problem.sample(rng, 1), rng)
    fx = ev.evaluate(x)
    gen = 0
    try:
        while True:
            gen += 1
            kids = problem.repair(swap(np.repeat(x, int(offspring), axis=0), rng=rng), rng)
            fk = ev.evaluate(kids)
            best = int(np.argmax(fk[:, 0] * w))
            if fk[best, 0] * w >= fx[0, 0] * w:
                x, fx = kids[best:best + 1], fk[best:best + 1]
            if callback is not None and callback(gen, kids.copy(), fk.copy()):
                break
    except BudgetExhausted:  # the budget is spent: what was scored is in ev's history
        pass
    return make_result("one-plus-lambda", problem, seed, ev, time.perf_counter() - t0, {"offspring": offspring})


if __name__ == "__main__":
    import evoprune.problems  # noqa: F401  (registers the benchmark problems)
    from evoprune.registry import PROBLEMS
    from evoprune.strategies import compare

    problem = PROBLEMS.get("onemax-k")(n=60, k=20, seed=0)
    for name, runs in compare(problem, ["one-plus-lambda", "ga", "random"], budget=400, seeds=range(3)).items():
        print(f"{name:>16}: best {[float(r.best_fitness[0]) for r in runs]}")
