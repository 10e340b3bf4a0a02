"""The paper's per-layer problem: choose exactly k of the n channels of one prunable unit.

The problem knows nothing about networks: it scores masks through an *evaluator* (stage-1 reconstruction error,
two-stage fitness, or any function), and supplies the sampling, repair and DEAP wiring every strategy needs.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from evoprune.config import OPERATOR_DEFAULTS, operator_defaults
from evoprune.errors import EvopruneError

from .base import check_population, make_toolbox, validate_kn

# The default operators with and without a fixed k (names kept for callers; the table is evoprune.config's).
FIXED_K_OPERATORS, FREE_K_OPERATORS = OPERATOR_DEFAULTS["fixed_k"], OPERATOR_DEFAULTS["free_k"]


class ChannelSelectionProblem:
    """Choose ``k`` of ``n`` channels (``k=None``: any number >= ``min_keep``), scored by ``evaluator``.

    ``evaluator`` is either

    * an object with ``evaluate(masks) -> [P, n_obj]``, ``objectives`` (names), ``weights`` (DEAP weights, e.g.
      ``(-1.0,)`` for an error) and ``name``; it receives a torch bool tensor ``[P, n]`` unless it sets
      ``wants_torch = False`` (then a numpy bool array), and may return a tensor or an array; or
    * a plain callable ``f(masks: ndarray[P, n] bool) -> ndarray[P] or [P, n_obj]`` (``objectives`` / ``weights``
      default to one objective to minimise).

    ``importance`` (optional, ``[n]``) feeds the ``importance`` init and the ``exact-k-importance`` repair;
    ``repair`` names the repair operator (default ``exact-k-random`` for fixed k, ``min-keep`` otherwise).
    """

    encoding = "binary"

    def __init__(self, n: int, k: Optional[int], evaluator: Any, min_keep: int = 1, *,
                 importance: Optional[Sequence[float]] = None, name: Optional[str] = None,
                 objectives: Optional[Sequence[str]] = None, weights: Optional[Sequence[float]] = None,
                 repair: Optional[str] = None, init: Optional[str] = None,
                 default_operators: Optional[Dict[str, str]] = None, groups: int = 1) -> None:
        n = _as_int("n", n)
        if k is None:
            if n < 1:
                raise EvopruneError(f"n must be a positive integer, got {n!r}")
        else:
            k = _as_int("k", k)
            validate_kn(n, k)
        min_keep = _as_int("min_keep", min_keep)
        if not 0 <= min_keep <= (n if k is None else k):
            bound = "n" if k is None else "k"
            raise EvopruneError(f"min_keep must satisfy 0 <= min_keep <= {bound}, got min_keep={min_keep}")
        self.n_var, self.k, self.min_keep = n, k, min_keep
        self.evaluator = evaluator
        self._mode, objs, wts, ev_name = _adapt_evaluator(evaluator)
        self.objectives: Tuple[str, ...] = tuple(objectives) if objectives is not None else objs
        self.weights: Tuple[float, ...] = tuple(float(w) for w in weights) if weights is not None else wts
        if len(self.weights) != len(self.objectives) or not self.objectives:
            raise EvopruneError(
                f"evaluator gives {len(self.objectives)} objective name(s) {self.objectives} but "
                f"{len(self.weights)} weight(s) {self.weights}; give one DEAP weight (+1 maximise, -1 minimise) each"
            )
        if any(w == 0 or not np.isfinite(w) for w in self.weights):
            raise EvopruneError(f"objective weights must be non-zero finite numbers, got {self.weights}")
        self.name = name or (f"channel-selection[{ev_name}]" if ev_name else "channel-selection")
        self.importance = None if importance is None else np.asarray(importance, dtype=float).copy()
        if self.importance is not None and (self.importance.shape != (n,) or not np.all(np.isfinite(self.importance))):
            raise EvopruneError(f"importance must be {n} finite scores (one per channel), got shape "
                                f"{np.shape(importance)}")
        self.default_operators = operator_defaults(fixed_k=k is not None)
        if init is not None:
            self.default_operators["init"] = init
        self.default_operators.update(default_operators or {})
        self._repair_name = repair or ("exact-k-random" if k is not None else "min-keep")
        self.groups = _as_int("groups", groups)
        if self.groups > 1:
            from evoprune.operators.blockwise import check_blocks

            check_blocks(n, k, self.groups)
        ops = self._ops()  # resolve now: a bad name fails at construction, not mid-run
        if k is not None and getattr(ops["repair"], "_evoprune_builtin", False) and not ops["repair"].preserves_k:
            raise EvopruneError(f"repair '{self._repair_name}' does not enforce k; use exact-k-random or "
                                "exact-k-importance for a fixed-k problem")

    def _ops(self) -> Dict[str, Any]:
        # Resolved operators are cached but not pickled (user operators come wrapped in closures).
        ops = self.__dict__.get("_op_cache")
        if ops is None:
            from evoprune.operators import get_operator  # late: operators import nothing from problems

            ops = {"repair": self.adapt_operator("repair", get_operator("repair", self._repair_name)),
                   "init": self.adapt_operator("init", get_operator("init", self.default_operators["init"]))}
            self.__dict__["_op_cache"] = ops
        return ops

    def adapt_operator(self, kind: str, op: Any) -> Any:
        """``op`` as this problem needs it: per block when the unit feeds a grouped convolution (exactly
        ``k / groups`` kept channels in each of ``groups`` blocks; :mod:`evoprune.operators.blockwise`)."""
        if getattr(self, "groups", 1) == 1:
            return op
        from evoprune.operators.blockwise import blockwise

        return blockwise(op, kind, self.groups)

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_op_cache"}

    # protocol ----------------------------------------------------------------------------------------------------
    @property
    def n_obj(self) -> int:
        return len(self.objectives)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` valid genomes from the default init operator (then repaired)."""
        g = self._ops()["init"](int(size), self.n_var, self.k, rng=rng, importance=self.importance)
        return self.repair(g, rng)

    def repair(self, genomes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Valid genomes (exactly k ones, or at least ``min_keep``); a new array, the input is left alone."""
        return self._ops()["repair"](genomes, rng=rng, k=self.k, min_keep=self.min_keep, importance=self.importance)

    def is_valid(self, genomes: np.ndarray) -> np.ndarray:
        """Per genome: has the right length and cardinality."""
        g = check_population(self, genomes).astype(bool)
        c = g.sum(1)
        return (c == self.k) if self.k is not None else (c >= self.min_keep)

    def evaluate(self, population: np.ndarray) -> np.ndarray:
        """Score a population ``[P, n]`` (or one genome) in one batched call; returns ``[P, n_obj]`` floats."""
        pop = check_population(self, population)
        if pop.dtype != bool:
            pop = pop.astype(bool)
        if len(pop) == 0:
            return np.zeros((0, self.n_obj))
        fit = _to_numpy(self._score(pop))
        if fit.ndim == 1 and self.n_obj == 1:
            fit = fit[:, None]
        if fit.shape != (len(pop), self.n_obj):
            raise EvopruneError(
                f"evaluator of problem '{self.name}' returned shape {fit.shape} for {len(pop)} masks; "
                f"it must return [P, {self.n_obj}] (one row per mask, one column per objective {self.objectives})"
            )
        return fit

    def _score(self, pop: np.ndarray) -> Any:
        if self._mode == "callable":
            return self.evaluator(pop)
        if self._mode == "torch":
            import torch

            return self.evaluator.evaluate(torch.from_numpy(np.ascontiguousarray(pop)))
        return self.evaluator.evaluate(pop)

    def toolbox(self, **kw: Any) -> Any:
        """A DEAP ``Toolbox`` (see :func:`evoprune.problems.base.make_toolbox` for the keywords)."""
        return make_toolbox(self, **kw)

    def quadratic(self, exact: bool = True) -> Optional[np.ndarray]:
        """The stage-1 Gram matrix ``Q`` (float64 numpy) of an objective ``(1-m)^T Q (1-m)``, else ``None``.

        ``exact=True``: only when that quadratic *is* the objective (stage-1 or suite evaluators), as a memetic
        local search on it needs; ``exact=False`` also returns the first stage of a two-stage fitness (enough to
        propose seeds).
        """
        holders = [self.evaluator] + ([] if exact else [getattr(self.evaluator, "first", None)])
        for ev in holders:
            q = getattr(ev, "Q", None)
            if q is not None and getattr(ev, "name", None) == "reconstruction":  # exactly (1-m)^T Q (1-m)
                q = q.detach().cpu().numpy() if hasattr(q, "detach") else q
                return np.asarray(q, dtype=np.float64)
        return None

    # helpers -----------------------------------------------------------------------------------------------------
    def brute_force(self, max_n: int = 22, chunk: int = 1 << 16) -> Tuple[np.ndarray, np.ndarray]:
        """Exhaustive search over every feasible genome (``n <= max_n``).

        Single objective: ``(best_genome [n], best_value [1])`` (raw objective; first best in enumeration order).
        Several objectives: ``(front_genomes [F, n], front_values [F, n_obj])``, the exact Pareto front.
        """
        n = self.n_var
        if n > max_n:
            raise EvopruneError(f"brute force enumerates 2^n genomes; n={n} is over the limit {max_n}")
        w = np.asarray(self.weights)
        best_g: list = []
        best_f: list = []
        bits = (1 << np.arange(n, dtype=np.int64))
        for start in range(0, 1 << n, chunk):
            ints = np.arange(start, min(start + chunk, 1 << n), dtype=np.int64)
            g = (ints[:, None] & bits) != 0
            g = g[self.is_valid(g)]
            if not len(g):
                continue
            f = self.evaluate(g)
            if self.n_obj == 1:
                i = int(np.argmax(f[:, 0] * w[0]))
                if not best_f or f[i, 0] * w[0] > best_f[0][0] * w[0]:
                    best_g, best_f = [g[i]], [f[i]]
            else:
                best_g.extend(g)
                best_f.extend(f)
                best_g, best_f = _nondominated(np.array(best_g), np.array(best_f), w)
                best_g, best_f = list(best_g), list(best_f)
        if self.n_obj == 1:
            return best_g[0].copy(), np.asarray(best_f[0], dtype=float)
        order = np.lexsort(np.array(best_f).T[::-1])
        return np.array(best_g)[order], np.array(best_f, dtype=float)[order]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={self.n_var}, k={self.k}, objectives={self.objectives})"


def _nondominated(genomes: np.ndarray, values: np.ndarray, weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of ``values`` not dominated by another (weights: +1 maximise, -1 minimise); duplicates of values kept once."""
    wv = values * weights
    _, first = np.unique(wv, axis=0, return_index=True)
    first = np.sort(first)
    g, v, wv = genomes[first], values[first], wv[first]
    keep = np.ones(len(wv), dtype=bool)
    for i in range(len(wv)):
        if keep[i]:
            dom = np.all(wv[i] >= wv, axis=1) & np.any(wv[i] > wv, axis=1)
            keep &= ~dom
    return g[keep], v[keep]


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise EvopruneError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise EvopruneError(f"{name} must be an integer, got {value!r}")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and callable(x.detach):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _adapt_evaluator(ev: Any) -> Tuple[str, Tuple[str, ...], Tuple[float, ...], str]:
    """``(mode, objectives, weights, name)`` of an evaluator object (mode torch/numpy) or a plain callable."""
    if hasattr(ev, "evaluate") and callable(ev.evaluate):
        objs = tuple(getattr(ev, "objectives", ("objective",)))
        wts = tuple(float(w) for w in getattr(ev, "weights", (-1.0,) * len(objs)))
        name = str(getattr(ev, "name", type(ev).__name__))
        return ("torch" if getattr(ev, "wants_torch", True) else "numpy"), objs, wts, name
    if callable(ev):
        objs = tuple(getattr(ev, "objectives", ("objective",)))
        wts = tuple(float(w) for w in getattr(ev, "weights", (-1.0,) * len(objs)))
        return "callable", objs, wts, str(getattr(ev, "name", getattr(ev, "__name__", "")))
    raise EvopruneError(
        f"evaluator must have an evaluate(masks) method or be a callable f(masks) -> scores, got {type(ev).__name__}"
    )
