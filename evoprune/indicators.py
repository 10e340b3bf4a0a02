"""Quality indicators for comparing strategies: hypervolume, non-dominated filtering, convergence, gaps, ranks.

Conventions (the same everywhere in evoprune)
---------------------------------------------
* Objective values are **raw**: exactly what ``problem.evaluate`` returns (an error rate, a MACs fraction, ...).
  ``weights`` are the problem's DEAP weights (negative: minimise, positive: maximise). Internally every function
  works on the *minimisation form* ``z = -sign(w) * f``, so a maximised objective is negated; reference points are
  given in raw units too and converted the same way. ``weights=None`` means "all objectives minimised".
* **Hypervolume reference point** -- chosen once per comparison, never per run, so values are comparable across
  strategies and seeds (see :func:`reference_point`):

  1. the problem's own ``hv_ref`` attribute when it has one (problem authors know the scale: a network problem with
     error and MACs both normalised to [0, 1] should set ``hv_ref = (1.0, 1.0)``, the worst possible model -- 100 %
     error at 100 % of the MACs -- so every useful pruned model contributes and the number needs no other context);
  2. otherwise, when the problem knows its ``true_front``: the true front's nadir plus 10 % of its range per
     objective (the usual "nadir + margin" convention, so the front's extreme points contribute);
  3. otherwise: the nadir of the union of all fronts being compared, plus 10 % of their range.

  Points that do not strictly dominate the reference point contribute nothing. A hypervolume is only meaningful
  next to its reference point, so summaries always store it.
* Aggregation over seeds: mean and sample standard deviation (``ddof=1``; 0 for a single seed).
* Ranks: 1 is best; ties get the average rank (as in Friedman tests).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from evoprune.errors import EvopruneError

HV_MARGIN = 0.1  # fraction of the range added beyond the nadir when the reference point is derived from data


# ------------------------------------------------------------------------------------------------ basic helpers
def _as_2d(F: Any, what: str = "objective values") -> np.ndarray:
    arr = np.asarray(F, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :] if arr.size else arr.reshape(0, 0)
    if arr.ndim != 2:
        raise EvopruneError(f"{what} must be a 2-D array [points, objectives], got shape {arr.shape}")
    return arr


def to_min(F: Any, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Minimisation form of raw objective values: maximised objectives (positive weight) are negated."""
    arr = np.asarray(F, dtype=float)
    if weights is None:
        return arr.copy()
    w = np.asarray(weights, dtype=float)
    if arr.shape[-1] != w.size:
        raise EvopruneError(f"got {arr.shape[-1]} objective values but {w.size} weights")
    return arr * np.where(w > 0, -1.0, 1.0)


def dominates(a: Sequence[float], b: Sequence[float], weights: Optional[Sequence[float]] = None) -> bool:
    """True when ``a`` Pareto-dominates ``b`` (no worse everywhere, strictly better somewhere)."""
    za, zb = to_min(np.asarray(a, float), weights), to_min(np.asarray(b, float), weights)
    return bool(np.all(za <= zb) and np.any(za < zb))


def non_dominated_mask(F: Any, weights: Optional[Sequence[float]] = None, keep_duplicates: bool = False) -> np.ndarray:
    """Boolean mask of the Pareto-optimal rows of ``F`` (raw values).

    Rows with identical objective vectors do not dominate each other; unless ``keep_duplicates`` only the first of
    them is kept, so a front has one point per distinct objective vector. O(N log N) for 1-2 objectives.
    """
    Z = _as_2d(F)
    n = len(Z)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    Z = to_min(Z, weights)
    if np.isnan(Z).any():
        raise EvopruneError("objective values contain NaN; a problem must return finite numbers")
    m = Z.shape[1]
    # Lexicographic order: a point can only be dominated by points before it, so one pass suffices.
    order = np.lexsort(tuple(Z[:, j] for j in reversed(range(m))))
    if m == 1:
        best = Z[order[0], 0]
        hits = np.flatnonzero(Z[:, 0] == best)
        mask[hits if keep_duplicates else hits[:1]] = True
        return mask
    if m == 2:
        best1 = math.inf
        last = None
        for i in order:  # lexsort keeps equal rows in index order, so the first copy comes first
            z = Z[i]
            if z[1] < best1:
                mask[i] = True
                best1 = z[1]
                last = z
            elif keep_duplicates and last is not None and z[0] == last[0] and z[1] == last[1]:
                mask[i] = True
        return mask
    kept: List[int] = []
    for i in order:
        z = Z[i]
        if kept:
            K = Z[kept]
            le = np.all(K <= z, axis=1)
            if np.any(le & np.any(K < z, axis=1)):
                continue
            if np.any(np.all(K == z, axis=1)) and not keep_duplicates:
                continue
        kept.append(int(i))
    mask[kept] = True
    return mask


def non_dominated(F: Any, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Indices of the distinct Pareto-optimal rows of ``F``, sorted by the first objective (minimisation form)."""
    idx = np.flatnonzero(non_dominated_mask(F, weights))
    if len(idx) == 0:
        return idx
    Z = to_min(_as_2d(F)[idx], weights)
    return idx[np.lexsort(tuple(Z[:, j] for j in reversed(range(Z.shape[1]))))]


# ----------------------------------------------------------------------------------------------------- hypervolume
def hypervolume(F: Any, ref: Sequence[float], weights: Optional[Sequence[float]] = None) -> float:
    """Exact hypervolume dominated by the points ``F`` (raw values) and bounded by ``ref`` (raw units).

    1-2 objectives: an exact O(N log N) sweep. 3+ objectives: ``moocore.hypervolume`` (exact; installed with DEAP),
    or an exact recursive slicing fallback for small fronts. Points not strictly better than ``ref`` in every
    objective contribute nothing.
    """
    Z = _as_2d(F)
    r = np.asarray(ref, dtype=float).ravel()
    if Z.size == 0:
        return 0.0
    if Z.shape[1] != r.size:
        raise EvopruneError(f"reference point has {r.size} values but the front has {Z.shape[1]} objectives")
    if not np.all(np.isfinite(r)):
        raise EvopruneError(f"reference point must be finite, got {r.tolist()}")
    Z, r = to_min(Z, weights), to_min(r, weights)
    Z = Z[np.all(Z < r, axis=1)]
    if len(Z) == 0:
        return 0.0
    Z = Z[non_dominated_mask(Z)]
    m = Z.shape[1]
    if m == 1:
        return float(r[0] - Z[:, 0].min())
    if m == 2:
        Z = Z[np.argsort(Z[:, 0], kind="stable")]  # after filtering, z1 strictly decreases along z0
        prev = np.concatenate([[r[1]], Z[:-1, 1]])
        return float(np.sum((r[0] - Z[:, 0]) * (prev - Z[:, 1])))
    try:
        import moocore

        return float(moocore.hypervolume(Z, ref=r))
    except ImportError:  # pragma: no cover - moocore ships with deap>=1.4
        return _hv_slicing(Z, r)


def _hv_slicing(Z: np.ndarray, r: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last objective (HSO); fine for small fronts in 3-4 objectives."""
    if Z.shape[1] == 2:
        Z = Z[non_dominated_mask(Z)]
        Z = Z[np.argsort(Z[:, 0], kind="stable")]
        prev = np.concatenate([[r[1]], Z[:-1, 1]])
        return float(np.sum((r[0] - Z[:, 0]) * (prev - Z[:, 1])))
    Z = Z[np.argsort(Z[:, -1], kind="stable")]
    total = 0.0
    for i in range(len(Z)):
        upper = Z[i + 1, -1] if i + 1 < len(Z) else r[-1]
        depth = upper - Z[i, -1]
        if depth > 0:
            total += depth * _hv_slicing(Z[: i + 1, :-1], r[:-1])
    return float(total)


def reference_point(problem: Any = None, fronts: Sequence[Any] = (), weights: Optional[Sequence[float]] = None,
                    margin: float = HV_MARGIN) -> np.ndarray:
    """The hypervolume reference point (raw units) by the module's convention: problem ``hv_ref``, else the true
    front's nadir + ``margin`` x range, else the nadir of the union of ``fronts`` + ``margin`` x range."""
    if weights is None and problem is not None:
        weights = getattr(problem, "weights", None)
    explicit = getattr(problem, "hv_ref", None) if problem is not None else None
    if explicit is not None:
        return np.asarray(explicit, dtype=float).ravel()
    true_front = getattr(problem, "true_front", None) if problem is not None else None
    if true_front is not None and len(true_front):
        pts = _as_2d(true_front)
    else:
        arrays = [_as_2d(f) for f in fronts if f is not None and np.asarray(f).size]
        if not arrays:
            raise EvopruneError("cannot choose a hypervolume reference point: no front given and the problem has "
                                "neither 'hv_ref' nor 'true_front'; pass ref= explicitly")
        pts = np.concatenate(arrays)
    Z = to_min(pts, weights)
    lo, hi = Z.min(axis=0), Z.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))  # a flat objective still gets a margin
    ref_min = hi + margin * span
    return to_min(ref_min, weights)  # negation is its own inverse: back to raw units


# ------------------------------------------------------------------------------------------------------ convergence
def best_so_far(history_fitness: Any, weights: Optional[Sequence[float]] = None, objective: int = 0) -> np.ndarray:
    """Best raw value of one objective after each evaluation (length = number of evaluations)."""
    F = _as_2d(history_fitness, "history_fitness")
    if len(F) == 0:
        return np.zeros(0)
    w = None if weights is None else [weights[objective]]
    z = to_min(F[:, objective:objective + 1], w)[:, 0]
    return to_min(np.minimum.accumulate(z)[:, None], w)[:, 0]


def hypervolume_curve(history_fitness: Any, ref: Sequence[float], weights: Optional[Sequence[float]] = None,
                      n_points: int = 50, at: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Hypervolume of everything evaluated so far, after ``at`` evaluations (default: ``n_points`` evenly spaced
    counts ending with the full history). Returns ``(evaluations, hv)``; counts beyond the history use all of it."""
    F = _as_2d(history_fitness, "history_fitness")
    if at is None:
        if len(F) == 0:
            return np.zeros(0, dtype=int), np.zeros(0)
        at = np.unique(np.linspace(1, len(F), num=min(n_points, len(F))).round().astype(int))
    at = np.asarray(at, dtype=int)
    hv = []
    front = np.zeros((0, F.shape[1] if F.ndim == 2 and F.shape[1] else len(ref)))
    start = 0
    for e in at:  # incremental: keep only the current front, add the new points
        e = min(int(e), len(F))
        if e > start:
            front = np.concatenate([front, F[start:e]])
            front = front[non_dominated_mask(front, weights)]
            start = e
        hv.append(hypervolume(front, ref, weights) if len(front) else 0.0)
    return at, np.asarray(hv, dtype=float)


def best_at(history_fitness: Any, at: Sequence[int], weights: Optional[Sequence[float]] = None,
            objective: int = 0) -> np.ndarray:
    """Best raw value of one objective after ``at`` evaluations (counts beyond the history use all of it;
    counts < 1 give NaN)."""
    curve = best_so_far(history_fitness, weights, objective)
    at = np.asarray(at, dtype=int)
    out = np.full(len(at), np.nan)
    ok = at >= 1
    if len(curve):
        out[ok] = curve[np.minimum(at[ok], len(curve)) - 1]
    return out


def optimum_gap(value: float, optimum: float, weight: float = -1.0) -> float:
    """Distance from a best value to the known optimum, >= 0 (0 means optimum reached)."""
    gap = (value - optimum) if weight < 0 else (optimum - value)
    return float(max(gap, 0.0))


# ------------------------------------------------------------------------------------------------------ per run
def primary_indicator(problem: Any) -> Tuple[str, bool]:
    """Name of the indicator that ranks strategies on ``problem`` and whether higher is better."""
    if len(problem.objectives) > 1:
        return "hv", True
    return "best", float(problem.weights[0]) > 0


def run_indicators(result: Any, problem: Any, ref: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Indicators of one :class:`~evoprune.strategies.base.Result` on ``problem``.

    Single objective: ``best`` (raw best value) and, when the problem has ``optimum``, ``gap``.
    Multi-objective: ``hv`` of the result's front (``ref`` defaults to :func:`reference_point` of the problem and
    this front alone -- pass a shared ``ref`` when comparing), ``front_size``, and with a ``true_front`` also
    ``hv_ratio`` = hv / hv(true front).
    """
    weights = tuple(problem.weights)
    out: Dict[str, Any] = {
        "strategy": result.strategy,
        "seed": int(result.seed),
        "evaluations": int(result.evaluations),
        "wall_time_s": float(result.wall_time),
    }
    if len(weights) == 1:
        best = float(np.asarray(result.best_fitness, dtype=float).ravel()[0])
        out["best"] = best
        optimum = getattr(problem, "optimum", None)
        if optimum is not None:
            out["gap"] = optimum_gap(best, float(optimum), weights[0])
        return out
    front = _as_2d(result.front_fitness, "front_fitness")
    if ref is None:
        ref = reference_point(problem, [front], weights)
    out["hv"] = hypervolume(front, ref, weights)
    out["front_size"] = int(len(front))
    true_front = getattr(problem, "true_front", None)
    if true_front is not None and len(true_front):
        hv_true = hypervolume(true_front, ref, weights)
        out["hv_ratio"] = out["hv"] / hv_true if hv_true > 0 else float("nan")
    return out


# ---------------------------------------------------------------------------------------------------- aggregation
def aggregate(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample std (ddof=1; 0 for one value), min, max and count of finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(len(v)),
    }


def _average_ranks(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks 1..n (1 best), ties sharing their average rank."""
    s = -scores if higher_is_better else scores
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for val in np.unique(s):
        tie = s == val
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def rank_table(scores: Mapping[str, Mapping[int, float]], higher_is_better: bool) -> Dict[str, Dict[str, float]]:
    """Rank strategies from per-seed scores ``{strategy: {seed: score}}``.

    ``rank``: position when ordering by the mean score over seeds (ties: by ``mean_rank``); ``mean_rank``: the
    strategy's rank among all strategies on the same seed, averaged over the seeds every strategy has (the
    Friedman-test statistic; seeds pair runs only by their number, so read it as a robustness hint next to the mean).
    """
    names = list(scores)
    if not names:
        return {}
    common = sorted(set.intersection(*(set(scores[n]) for n in names)))
    per_seed = []
    for s in common:
        vals = np.asarray([scores[n][s] for n in names], dtype=float)
        vals = np.where(np.isfinite(vals), vals, -np.inf if higher_is_better else np.inf)
        per_seed.append(_average_ranks(vals, higher_is_better))
    mean_rank = np.mean(per_seed, axis=0) if per_seed else np.full(len(names), np.nan)
    means = np.asarray([aggregate(list(scores[n].values()))["mean"] for n in names])
    key_mean = np.where(np.isfinite(means), -means if higher_is_better else means, np.inf)
    key_rank = np.where(np.isfinite(mean_rank), mean_rank, np.inf)
    order = np.lexsort((key_rank, key_mean))
    table: Dict[str, Dict[str, float]] = {}
    for pos, i in enumerate(order, start=1):
        table[names[i]] = {"rank": pos, "mean_rank": float(mean_rank[i]), "seeds_ranked": len(common)}
    return table


def summarize(results: Mapping[str, Sequence[Any]], problem: Any,
              ref: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Compare strategies on one problem: ``{strategy: [Result per seed]}`` -> a JSON-friendly summary.

    Keys: ``problem``, ``objectives``, ``primary`` (ranking indicator) and ``higher_is_better``, ``reference_point``
    (multi-objective), ``runs`` (indicators per run), ``strategies`` ({name: {indicator: aggregate}}), ``ranking``
    (names, best first) with ranks inside ``strategies[name]``.
    """
    weights = tuple(problem.weights)
    multi = len(weights) > 1
    if multi and ref is None:
        ref = reference_point(problem, [r.front_fitness for rs in results.values() for r in rs], weights)
    primary, higher = primary_indicator(problem)
    runs: List[Dict[str, Any]] = []
    by_name: Dict[str, List[Dict[str, Any]]] = {}
    for name, rs in results.items():
        mine = []
        for r in rs:
            run = run_indicators(r, problem, ref)
            run["strategy"] = name  # the caller's label (e.g. a 'module:name' spec), not the function's own name
            mine.append(run)
        by_name[name] = mine
        runs.extend(mine)
    keys = [k for k in ("best", "gap", "hv", "hv_ratio", "front_size", "evaluations", "wall_time_s")
            if any(k in run for run in runs)]
    strategies: Dict[str, Dict[str, Any]] = {}
    per_seed: Dict[str, Dict[int, float]] = {}
    for name, mine in by_name.items():
        strategies[name] = {k: aggregate([run[k] for run in mine if k in run]) for k in keys}
        per_seed[name] = {run["seed"]: run[primary] for run in mine}
    ranks = rank_table(per_seed, higher)
    for name, r in ranks.items():
        strategies[name].update(r)
    ranking = sorted(strategies, key=lambda n: strategies[n].get("rank", math.inf))
    out: Dict[str, Any] = {
        "problem": getattr(problem, "name", str(problem)),
        "objectives": list(problem.objectives),
        "weights": list(weights),
        "primary": primary,
        "higher_is_better": higher,
        "runs": runs,
        "strategies": strategies,
        "ranking": ranking,
    }
    if multi:
        out["reference_point"] = np.asarray(ref, dtype=float).tolist()
    optimum = getattr(problem, "optimum", None)
    if optimum is not None and not multi:
        out["optimum"] = float(optimum)
    return out


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a :func:`summarize` result: one row per strategy, best first."""
    keys = [k for k in ("best", "gap", "hv", "hv_ratio", "evaluations", "wall_time_s")
            if any(k in s for s in summary["strategies"].values())]
    header = ["rank", "strategy", "mean_rank"] + [f"{k} (mean±std)" for k in keys]
    rows = []
    for name in summary["ranking"]:
        s = summary["strategies"][name]
        row = [str(s.get("rank", "")), name, f"{s.get('mean_rank', float('nan')):.2f}"]
        for k in keys:
            a = s.get(k)
            row.append("" if a is None else f"{_fmt(a['mean'])} ± {_fmt(a['std'])}")
        rows.append(row)
    from .textable import format_table as text_table

    title = f"problem {summary['problem']}: ranked by {summary['primary']} " \
            f"({'higher' if summary['higher_is_better'] else 'lower'} is better)"
    return title + "\n" + text_table(header, rows, align="rl" + "r" * (len(header) - 2))


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4g}"
