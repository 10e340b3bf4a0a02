"""The statistics EC researchers report (COCO / pymoo practice), on top of ``scipy.stats``.

* :func:`holm` -- Holm's step-down correction of a family of p-values;
* :func:`ranksum_vs_best` -- per instance, two-sided Wilcoxon rank-sum (Mann-Whitney U) of every strategy against
  the one with the best median, Holm-corrected over the family;
* :func:`friedman` -- Friedman test over instances and average ranks (1 = best), with Nemenyi's critical difference
  (Demsar 2006) for a critical-difference plot;
* :func:`runtime_ecdf` -- the runtime ECDF: the fraction of (instance, target, seed) triples whose target gap is
  reached within ``e`` evaluations, aggregated over a suite.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# Nemenyi's q_alpha at alpha = 0.05 for k = 2..10 strategies (Demsar 2006, Table 5a)
_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (same order as given), monotone and capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def ranksum_vs_best(samples: Mapping[str, Sequence[float]], lower_is_better: bool = True
                    ) -> Tuple[str, Dict[str, Dict[str, float]]]:
    """Rank-sum tests of each strategy against the best (by median) on one instance; Holm over the family.

    Returns ``(best, {strategy: {"median", "p", "p_holm", "worse"}})``; ``worse`` says the strategy is
    significantly worse than the best at 0.05 after correction.
    """
    from scipy import stats

    names = list(samples)
    med = {n: float(np.median(samples[n])) for n in names}
    best = (min if lower_is_better else max)(names, key=lambda n: med[n])
    others = [n for n in names if n != best]
    raw = []
    for n in others:
        a, b = np.asarray(samples[n], float), np.asarray(samples[best], float)
        if np.all(a == a[0]) and np.all(b == b[0]) and a[0] == b[0]:
            raw.append(1.0)  # identical constant samples: no evidence of a difference
        else:
            raw.append(float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue))
    adj = holm(raw) if raw else np.zeros(0)
    out = {best: {"median": med[best], "p": float("nan"), "p_holm": float("nan"), "worse": False}}
    for n, p, ph in zip(others, raw, adj):
        worse = (med[n] > med[best]) if lower_is_better else (med[n] < med[best])
        out[n] = {"median": med[n], "p": p, "p_holm": float(ph), "worse": bool(ph < 0.05 and worse)}
    return best, out


def friedman(table: np.ndarray, names: Sequence[str], lower_is_better: bool = True) -> Dict[str, object]:
    """Friedman test on ``table [instances, strategies]`` (one aggregated value per cell, e.g. median gap).

    Returns average ranks (1 = best, ties averaged), the statistic and p-value, and Nemenyi's critical difference
    at 0.05 (``None`` for more than 10 strategies)."""
    from scipy import stats

    t = np.asarray(table, dtype=float)
    n_inst, k = t.shape
    ranks = np.vstack([stats.rankdata(row if lower_is_better else -row) for row in t])
    avg = ranks.mean(0)
    if n_inst >= 2 and k >= 3 and not np.all(ranks == ranks[:, :1]):
        import warnings

        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")  # all-tied instances: the statistic is undefined, reported as NaN
            res = stats.friedmanchisquare(*[t[:, j] for j in range(k)])
        stat, p = float(res.statistic), float(res.pvalue)
    else:
        stat, p = float("nan"), float("nan")
    q = _Q05.get(k)
    cd = None if q is None else float(q * np.sqrt(k * (k + 1) / (6.0 * n_inst)))
    return {"avg_ranks": {n: float(r) for n, r in zip(names, avg)}, "statistic": stat, "p_value": p,
            "critical_difference": cd, "instances": n_inst}


def ecdf_figure(traces: Mapping[str, Sequence[Tuple[np.ndarray, np.ndarray]]], targets: Sequence[float],
                budget: int, title: str, stem: Any) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Runtime ECDFs of every label's ``(evaluations, gaps)`` traces on a log grid up to ``budget``, plotted to
    ``stem``; returns the grid and the curves (what ``compare`` and ``suite run`` both report)."""
    grid = np.unique(np.round(np.logspace(0, np.log10(max(int(budget), 1)), 200)))
    curves = {label: runtime_ecdf(tr, targets, grid) for label, tr in traces.items()}
    plot_ecdf(curves, grid, title, stem)
    return grid, curves


def runtime_ecdf(traces: Sequence[Tuple[np.ndarray, np.ndarray]], targets: Sequence[float],
                 grid: np.ndarray) -> np.ndarray:
    """Fraction of (trace, target) pairs solved by each evaluation count of ``grid``.

    ``traces``: per run, ``(evals, gaps)`` -- the evaluation counts at which the best-so-far gap changed and the
    gap from then on (non-increasing). A target ``t`` is solved at the first evaluation where ``gap <= t``.
    """
    grid = np.asarray(grid, dtype=float)
    hits = np.zeros(len(grid))
    total = 0
    for evals, gaps in traces:
        evals, gaps = np.asarray(evals, float), np.asarray(gaps, float)
        for t in targets:
            total += 1
            ok = np.flatnonzero(gaps <= t + 1e-15)
            if len(ok):
                hits += grid >= evals[ok[0]]
    return hits / max(total, 1)


def best_so_far(values: np.ndarray, lower_is_better: bool = True) -> np.ndarray:
    """Running best of a run's evaluation history ``[E]``."""
    v = np.asarray(values, dtype=float)
    return np.minimum.accumulate(v) if lower_is_better else np.maximum.accumulate(v)


def change_points(running: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(evals, values)`` where a running best changes (1-based evaluation counts): a compact trace."""
    r = np.asarray(running, dtype=float)
    if not len(r):
        return np.zeros(0), np.zeros(0)
    idx = np.concatenate([[0], np.flatnonzero(np.diff(r) != 0) + 1])
    return idx + 1.0, r[idx]


def plot_cd(avg_ranks: Mapping[str, float], cd: Optional[float], title: str, path_stem, formats=("png", "svg")):
    """A critical-difference diagram: strategies on the average-rank axis, the CD bar on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    names = sorted(avg_ranks, key=avg_ranks.get)
    k = len(names)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.32 * k))
    ax.set_xlim(0.8, k + 0.2)
    ax.set_ylim(-k - 0.5, 1.5)
    ax.invert_xaxis()  # best (rank 1) on the right, as in Demsar's diagrams
    ax.axhline(0, color="k", lw=1)
    for i, n in enumerate(names):
        r = avg_ranks[n]
        ax.plot([r, r], [0, -i - 1], color="0.4", lw=0.8)
        ax.text(r, -i - 1, f" {n} ({r:.2f})", va="center", ha="right", fontsize=9)
    if cd is not None:
        ax.plot([1, 1 + cd], [1, 1], color="k", lw=2)
        ax.text(1 + cd / 2, 1.15, f"CD = {cd:.2f}", ha="center", fontsize=8)
        # strategies whose ranks differ by less than CD are joined (not significantly different)
        for i, a in enumerate(names):
            group = [b for b in names[i:] if avg_ranks[b] - avg_ranks[a] < cd]
            if len(group) > 1:
                ax.plot([avg_ranks[group[0]], avg_ranks[group[-1]]], [-0.25 - 0.12 * i] * 2, color="tab:red", lw=3)
    ax.set_yticks([])
    for s in ("left", "right", "top"):
        ax.spines[s].set_visible(False)
    ax.set_xlabel("average rank (1 = best)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path_stem, list(formats))


def plot_ecdf(curves: Mapping[str, np.ndarray], grid: np.ndarray, title: str, path_stem,
              formats: List[str] = ("png", "svg")):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, y in curves.items():
        ax.step(grid, y, where="post", label=name)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("fraction of (instance, target, seed) solved")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path_stem, list(formats))


def compare_report(results: Mapping[str, Sequence[object]], problem: object, out) -> Dict[str, object]:
    """The statistics of ``evoprune compare`` (one problem, strategies x seeds): rank-sum tests of every strategy
    against the best with Holm's correction (``tests.csv``) and, for one objective, the runtime ECDF over (target,
    seed) pairs of relative gaps to the best value known (the problem's optimum, else the best of all runs;
    ``ecdf.png``). Multi-objective runs are tested on the hypervolume of their fronts (a shared reference point)."""
    import csv
    import io as _io
    from pathlib import Path

    from .indicators import hypervolume, reference_point
    from .io import atomic_write_text

    out = Path(out)
    weights = tuple(getattr(problem, "weights"))
    names = list(results)
    if len(weights) == 1:
        w = weights[0]
        values = {n: [float(np.ravel(r.best_fitness)[0]) for r in results[n]] for n in names}
        best, tests = ranksum_vs_best(values, lower_is_better=w < 0)
        opt = getattr(problem, "optimum", None)
        ref = float(opt) if opt is not None else (min if w < 0 else max)(v for vs in values.values() for v in vs)
        scale = max(abs(ref), 1e-300)
        budget = max(int(r.evaluations) for rs in results.values() for r in rs)
        traces = {}
        for n in names:
            traces[n] = []
            for r in results[n]:
                hist = np.asarray(r.history_fitness, dtype=float)[:, 0] * (-1 if w > 0 else 1)
                ev, vals = change_points(best_so_far(hist))
                traces[n].append((ev, (vals * (-1 if w > 0 else 1) - ref) * np.sign(-w) / scale))
        ecdf_figure(traces, (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 0.0), budget,
                    f"{getattr(problem, 'name', '')}: runtime ECDF (gaps to {ref:.6g})", out / "ecdf")
        metric = "best"
    else:
        fronts = [np.asarray(r.front_fitness, dtype=float) for rs in results.values() for r in rs]
        refp = reference_point(problem, fronts, weights)
        values = {n: [hypervolume(np.asarray(r.front_fitness, dtype=float), refp, weights) for r in results[n]]
                  for n in names}
        best, tests = ranksum_vs_best(values, lower_is_better=False)
        metric = "hv"
    buf = _io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["strategy", f"median_{metric}", "best", "p", "p_holm", "significantly_worse"])
    for n in names:
        t = tests[n]
        wr.writerow([n, repr(t["median"]), n == best, repr(t["p"]), repr(t["p_holm"]), t["worse"]])
    atomic_write_text(out / "tests.csv", buf.getvalue())
    return {"metric": metric, "best": best, "tests": tests}
