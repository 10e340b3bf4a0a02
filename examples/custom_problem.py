"""A problem of your own (the seam: problems/base.py), searched by every strategy from the CLI.

Max-coverage: choose exactly k of n sensors so that the union of what they cover is largest -- a binary k-subset
problem, like channel selection. ``ChannelSelectionProblem`` (the k-subset problem class) supplies sampling,
repair to exactly k and the DEAP toolbox; the objective only says how a whole population is scored (one matrix
product, no loop over genomes).

    evoprune compare --problem examples/custom_problem.py:coverage --param n=80 --param k=10 \
        --strategies ga,cmaes,random --budget 2000 --seeds 3 --out runs/coverage
"""
import numpy as np

from evoprune.problems import ChannelSelectionProblem
from evoprune.registry import PROBLEMS


class Coverage:
    """Objective: covered points of ``sets`` [n, m] (bool) for every genome [P, n] at once."""

    objectives, weights, wants_torch, name = ("covered",), (1.0,), False, "coverage"

    def __init__(self, sets: np.ndarray) -> None:
        self.sets = sets.astype(np.float32)

    def evaluate(self, genomes: np.ndarray) -> np.ndarray:
        hits = np.asarray(genomes, dtype=np.float32) @ self.sets  # [P, m]: how often each point is covered
        return (hits > 0).sum(axis=1, dtype=np.float64)[:, None]


@PROBLEMS.register("coverage", doc="max coverage: k of n random sets covering the most of m points")
def coverage(n: int = 80, k: int = 10, m: int = 400, density: float = 0.05, seed: int = 0) -> ChannelSelectionProblem:
    sets = np.random.default_rng(seed).random((n, m)) < density
    return ChannelSelectionProblem(n, k, Coverage(sets), name=f"coverage(n={n},k={k},m={m},seed={seed})")


if __name__ == "__main__":
    from evoprune.strategies import compare

    p = coverage()
    for name, runs in compare(p, ["ga", "random"], budget=1000, seeds=range(3)).items():
        print(f"{name:>7}: covered {[int(r.best_fitness[0]) for r in runs]} of 400")
