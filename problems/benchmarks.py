"""Synthetic k-subset problems with known optima, for testing operators and strategies in milliseconds.

Registered in :data:`evoprune.registry.PROBLEMS` (``PROBLEMS.get(name)(**params)``):

* ``onemax-k``: weighted k-subset, maximise the sum of the kept weights; optimum = the top-k weights.
* ``planted-qp``: minimise ``x^T Q x`` over k-subsets, with ``Q`` built so a planted subset is provably optimal.
* ``random-qp``: minimise ``x^T Q x`` over k-subsets for a random symmetric ``Q`` (n <= 22: brute force).
* ``biobjective-subset``: minimise (cost of the kept channels, value of the pruned ones), any cardinality; the exact
  Pareto front comes from a knapsack dynamic programme (``true_front``).

Evaluators are small module-level classes (picklable for process pools) scoring a whole population per call.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.registry import PROBLEMS

from .channel_selection import ChannelSelectionProblem, _as_int

__all__ = ["BenchmarkProblem", "LinearSubset", "QuadraticSubset", "CostLossSubset", "onemax_k", "planted_qp",
           "random_qp", "biobjective_subset", "knapsack_front"]


# ---------------------------------------------------------------------------------------------------- evaluators
class LinearSubset:
    """Sum of the weights of the kept channels (maximised)."""

    wants_torch = False
    objectives = ("value",)
    weights = (1.0,)
    name = "linear"

    def __init__(self, w: np.ndarray) -> None:
        self.w = np.asarray(w, dtype=float)

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: a row's value must not depend on how the population is chunked across workers
        return np.einsum("ij,j->i", np.asarray(masks, dtype=float), self.w)[:, None]


class QuadraticSubset:
    """``x^T Q x`` of each mask ``x`` (minimised). Integer ``Q`` small enough is scored in exact float32."""

    wants_torch = False
    objectives = ("energy",)
    weights = (-1.0,)
    name = "quadratic"

    def __init__(self, Q: np.ndarray, exact_float32: bool = False) -> None:
        # float32 BLAS is ~2x faster; it is exact when every partial sum is an integer below 2**24.
        self.Q = np.ascontiguousarray(Q, dtype=np.float32 if exact_float32 else np.float64)

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        x = np.asarray(masks).astype(self.Q.dtype)
        if self.Q.dtype == np.float32:  # exact integer arithmetic: BLAS is safe and fast
            return np.einsum("ij,ij->i", x @ self.Q, x).astype(np.float64)[:, None]
        # real Q (small random instances): a BLAS product's last bit depends on the batch shape
        return np.einsum("ij,jk,ik->i", x, self.Q, x, optimize=False)[:, None]


class CostLossSubset:
    """Two objectives, both minimised: total cost of the kept channels, total value of the pruned ones."""

    wants_torch = False
    objectives = ("cost", "loss")
    weights = (-1.0, -1.0)
    name = "cost-loss"

    def __init__(self, costs: np.ndarray, values: np.ndarray) -> None:
        self.costs = np.asarray(costs, dtype=float)
        self.values = np.asarray(values, dtype=float)

    def evaluate(self, masks: np.ndarray) -> np.ndarray:
        x = np.asarray(masks, dtype=float)
        return np.stack([np.einsum("ij,j->i", x, self.costs), np.einsum("ij,j->i", 1.0 - x, self.values)], axis=1)


# ------------------------------------------------------------------------------------------------------- problems
class BenchmarkProblem(ChannelSelectionProblem):
    """A :class:`ChannelSelectionProblem` that also knows its answer.

    ``optimum``: best raw objective value (single objective), ``optimal_genome``: a genome attaining it,
    ``true_front``: ``[F, n_obj]`` exact Pareto front of raw objective values (multi-objective), sorted by the first.
    """

    def __init__(self, *args: Any, optimum: Optional[float] = None, optimal_genome: Optional[np.ndarray] = None,
                 true_front: Optional[np.ndarray] = None, lazy_optimum: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._optimum = optimum
        self._optimal_genome = optimal_genome
        self.true_front = true_front
        self._lazy = lazy_optimum

    @property
    def optimum(self) -> Optional[float]:
        if self._optimum is None and self._lazy:
            self._optimal_genome, value = self.brute_force()
            self._optimum = float(value[0])
        return self._optimum

    @property
    def optimal_genome(self) -> Optional[np.ndarray]:
        _ = self.optimum
        return None if self._optimal_genome is None else self._optimal_genome.copy()

    def gap(self, value: float) -> float:
        """Relative distance ``|value - optimum| / |optimum|`` of a raw objective value to the optimum."""
        opt = self.optimum
        if opt is None:
            raise EvopruneError(f"problem '{self.name}' has no known optimum")
        return abs(float(value) - opt) / max(abs(opt), 1e-12)


def _k(n: int, k: Any) -> int:
    return n // 2 if k is None else _as_int("k", k)


@PROBLEMS.register("onemax-k", doc="weighted k-subset: maximise the kept weights; optimum = top-k (n=100, k=n/2)")
def onemax_k(n: int = 100, k: Optional[int] = None, seed: int = 0, **kw: Any) -> BenchmarkProblem:
    """Cardinality-constrained weighted OneMax: weights ``U(0, 1)``, maximise the sum over exactly ``k`` kept channels.

    The optimum keeps the ``k`` largest weights.
    """
    n = _as_int("n", n)
    k = _k(n, k)
    _validate(n, k)
    w = np.random.default_rng(_as_int("seed", seed)).random(n)
    best = np.zeros(n, dtype=bool)
    best[np.argsort(-w, kind="stable")[:k]] = True
    return BenchmarkProblem(n, k, LinearSubset(w), name=f"onemax-k(n={n},k={k},seed={seed})",
                            optimum=float(w[best].sum()), optimal_genome=best, **kw)


@PROBLEMS.register("planted-qp", doc="minimise x^T Q x over k-subsets, planted provably optimal subset (n=512, k=n/2)")
def planted_qp(n: int = 512, k: Optional[int] = None, seed: int = 0, gap: int = 1, **kw: Any) -> BenchmarkProblem:
    """k-subset quadratic minimisation ``min x^T Q x, |x| = k`` with a planted optimum ``S``.

    Construction (integers, so float32 scoring is exact): off-diagonal ``Q_ij in {0..w}`` when both ``i, j in S``
    and ``Q_ij in {w+gap .. w+gap+4}`` otherwise (``w = 4``); diagonal ``d_i in {0 .. (k-1)*gap - 1}`` for every
    channel, so the diagonal alone does not reveal ``S``. Proof that ``S`` is the unique optimum: for any other
    k-subset ``X`` with ``t = |X \\ S| >= 1``, the pairs of ``X`` touching ``X \\ S`` and the pairs of ``S`` touching
    ``S \\ X`` are equally many, ``t(k - (t+1)/2) >= t(k-1)/2``, and each of the former costs at least ``gap`` more,
    so ``f(X) - f(S) >= 2 * gap * t(k-1)/2 - t * max|d_i - d_j| >= t((k-1)gap - ((k-1)gap - 1)) > 0``.
    (For ``k = 1`` the diagonal alone separates: ``d`` is 0 on ``S`` and >= 1 elsewhere.)
    """
    n = _as_int("n", n)
    k = _k(n, k)
    gap = _as_int("gap", gap)
    _validate(n, k)
    if gap < 1:
        raise EvopruneError(f"planted-qp needs gap >= 1, got {gap}")
    rng = np.random.default_rng(_as_int("seed", seed))
    S = np.zeros(n, dtype=bool)
    S[rng.permutation(n)[:k]] = True
    w = 4
    inside = rng.integers(0, w + 1, size=(n, n))
    outside = rng.integers(w + gap, w + gap + 5, size=(n, n))
    Q = np.where(S[:, None] & S[None, :], inside, outside)
    Q = np.triu(Q, 1)
    Q = Q + Q.T
    if k >= 2:
        d = rng.integers(0, (k - 1) * gap, size=n)
    else:
        d = np.where(S, 0, rng.integers(1, 11, size=n))
    Q[np.diag_indices(n)] = d
    xs = S.astype(np.int64)
    optimum = float(xs @ Q.astype(np.int64) @ xs)
    bound = k * int(d.max()) + k * (k - 1) * (w + gap + 4)
    return BenchmarkProblem(n, k, QuadraticSubset(Q, exact_float32=bound < 2 ** 24),
                            name=f"planted-qp(n={n},k={k},seed={seed})", optimum=optimum, optimal_genome=S, **kw)


@PROBLEMS.register("random-qp", doc="minimise x^T Q x over k-subsets, random symmetric Q; optimum by brute force (n=20)")
def random_qp(n: int = 20, k: Optional[int] = None, seed: int = 0, **kw: Any) -> BenchmarkProblem:
    """k-subset quadratic minimisation with ``Q = (A + A^T) / 2``, ``A`` standard normal: a rugged landscape with
    no structure to exploit. ``optimum`` is found by brute force on first access (``n <= 22``; ``None`` above)."""
    n = _as_int("n", n)
    k = _k(n, k)
    _validate(n, k)
    A = np.random.default_rng(_as_int("seed", seed)).standard_normal((n, n))
    return BenchmarkProblem(n, k, QuadraticSubset((A + A.T) / 2), name=f"random-qp(n={n},k={k},seed={seed})",
                            lazy_optimum=n <= 22, **kw)


@PROBLEMS.register("biobjective-subset",
                   doc="minimise (cost kept, value pruned) over any subset; exact Pareto front by DP (n=20)")
def biobjective_subset(n: int = 20, seed: int = 0, cost_max: int = 5, min_keep: int = 1,
                       **kw: Any) -> BenchmarkProblem:
    """Bi-objective subset selection with variable cardinality, a stand-in for (MACs, error) trade-offs.

    Channel i has an integer cost ``c_i in {1..cost_max}`` and a value ``v_i ~ U(0, 1)``. Objectives, both minimised:
    ``cost = sum of c_i kept`` and ``loss = sum of v_i pruned``. ``true_front`` ([F, 2], sorted by cost) is exact:
    a 0/1-knapsack DP gives the largest kept value for every total cost. ``cost_max=1`` gives unit costs, where
    the front is "keep the j most valuable channels" for j = min_keep..n.
    """
    n = _as_int("n", n)
    cost_max = _as_int("cost_max", cost_max)
    if n < 1:
        raise EvopruneError(f"n must be a positive integer, got {n}")
    if cost_max < 1:
        raise EvopruneError(f"biobjective-subset needs cost_max >= 1, got {cost_max}")
    rng = np.random.default_rng(_as_int("seed", seed))
    costs = rng.integers(1, cost_max + 1, size=n)
    values = rng.random(n)
    front = knapsack_front(costs, values, min_keep=_as_int("min_keep", min_keep))
    return BenchmarkProblem(n, None, CostLossSubset(costs, values), min_keep=min_keep,
                            name=f"biobjective-subset(n={n},seed={seed})", true_front=front, **kw)


def knapsack_front(costs: np.ndarray, values: np.ndarray, min_keep: int = 1) -> np.ndarray:
    """Exact front of (kept cost, pruned value), both minimised, over subsets of at least ``min_keep`` items.

    DP over (items kept, total cost): ``best[j, c]`` is the largest kept value of ``j`` items costing ``c``; a cost
    level's best over ``j >= min_keep`` gives one candidate point; the non-dominated candidates form the front.
    """
    costs = np.asarray(costs, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    n, total_c = len(costs), int(costs.sum())
    best = np.full((n + 1, total_c + 1), -np.inf)
    best[0, 0] = 0.0
    for c, v in zip(costs, values):
        cand = np.full_like(best, -np.inf)
        cand[1:, c:] = best[:-1, : total_c + 1 - c] + v
        best = np.maximum(best, cand)
    kept = best[max(int(min_keep), 0):].max(axis=0)
    total_v = float(values.sum())
    pts = [(c, total_v - kept[c]) for c in range(total_c + 1) if np.isfinite(kept[c])]
    front = []
    for c, loss in pts:  # cost ascending: keep a point only if it lowers the loss
        if not front or loss < front[-1][1] - 1e-12:
            front.append((float(c), float(loss)))
    return np.array(front, dtype=float).reshape(-1, 2)


def _validate(n: int, k: int) -> None:
    from .base import validate_kn

    validate_kn(n, k)

