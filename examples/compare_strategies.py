"""Compare your own search strategy with the built-ins on a benchmark problem: same budget, same seeds.

    python examples/compare_strategies.py
    evoprune compare --problem planted-qp --param n=100 --param k=30 --budget 3000 --seeds 5 \
        --strategies examples/compare_strategies.py:hillclimb,ga,random --out runs/hillclimb
"""
import time

import evoprune.problems  # noqa: F401  (registers the benchmark problems)
from evoprune.indicators import format_table, summarize
from evoprune.operators import get_operator
from evoprune.registry import PROBLEMS, STRATEGIES
from evoprune.strategies import BudgetedEvaluator, BudgetExhausted, Result, compare, seeded_rngs


@STRATEGIES.register("hillclimb")
def hillclimb(problem, budget, seed, callback=None, **params):
    """(1+1) hill climber: swap one kept and one pruned channel, keep the child when it is no worse."""
    rng, t0 = seeded_rngs(seed), time.perf_counter()
    ev = BudgetedEvaluator(problem, budget)  # counts evaluations and stops exactly at the budget
    swap, w = get_operator("mutation", "swap").batch, problem.weights[0]
    x = problem.sample(rng, 1)
    fx = ev.evaluate(x)
    try:
        while True:
            y = swap(x, rng=rng)
            fy = ev.evaluate(y)
            if fy[0, 0] * w >= fx[0, 0] * w:
                x, fx = y, fy
    except BudgetExhausted:  # raised once the budget is spent
        pass
    G, F = ev.history()
    return Result("hillclimb", problem.name, seed, x[0], fx[0], x, fx, ev.used, time.perf_counter() - t0,
                  history_genomes=G, history_fitness=F)


if __name__ == "__main__":
    problem = PROBLEMS.get("planted-qp")(n=100, k=30, seed=0)
    results = compare(problem, ["hillclimb", "ga", "cmaes", "random"], budget=3000, seeds=range(5))
    print(format_table(summarize(results, problem)))
