"""Run strategies on a benchmark suite and report what EC researchers expect.

For every instance x strategy x seed, one run with the largest budget; its evaluation history gives the best-so-far
gap to the instance's best-known value at every smaller budget too (a run is never restarted per budget). Reports:

* ``runs.csv``: instance, strategy, seed, budget, best error, gap;
* ``summary.json`` / ``gaps.csv``: mean and median gap per strategy and budget (over instances and seeds);
* per instance and budget, Wilcoxon rank-sum of every strategy against the best (Holm-corrected): ``tests.csv``;
* Friedman average ranks over instances with Nemenyi's critical difference, per budget (``cd_<budget>.png``);
* the runtime ECDF over (instance, target, seed) triples, targets = relative gaps ``1e-1 .. 1e-4, 0``
  (``ecdf.png``).

Finished (instance, strategy, seed) runs are kept in ``traces/`` and skipped when the command is repeated.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .errors import EvopruneError
from .suite import Suite

TARGETS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 0.0)


def _trace_path(out: Path, inst: str, strategy: str, seed: int) -> Path:
    safe = lambda s: "".join(c if c.isalnum() or c in "._+-@" else "_" for c in s)  # noqa: E731
    return out / "traces" / f"{safe(inst)}__{safe(strategy)}__seed{seed}.npz"


def labelled_strategies(text: str, given: Mapping[str, Any]):
    """``"ga,memetic=ga"`` + ``{"memetic.local_search": "swap", "pop_size": 50}`` -> labels, strategy specs and
    per-label parameters (an unscoped key goes to every strategy that takes it)."""
    from .runs import split_scoped, strategy_params
    from .strategies import get_strategy, strategy_accepts

    pairs = [s.strip() for s in str(text).split(",") if s.strip()]
    if not pairs:
        raise EvopruneError("--strategies is empty; name at least one, e.g. ga,random")
    labels = [p.split("=", 1)[0] for p in pairs]
    specs = [p.split("=", 1)[-1] for p in pairs]
    shared, scoped = split_scoped(given, labels)
    params = {}
    for label, spec in zip(labels, specs):
        fn = get_strategy(spec)
        mine = {k: v for k, v in shared.items() if strategy_accepts(fn, k)}
        params[label] = strategy_params(fn, label, {**mine, **scoped[label]}, {}, strict=True)
    unused = [k for k in shared if not any(k in params[l] for l in labels)]
    if unused:
        raise EvopruneError(f"--strategy-param {', '.join(unused)}: no strategy among {', '.join(labels)} takes it")
    return labels, specs, params


def run_one(inst: Any, strategy: str, budget: int, seed: int, params: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """One run; returns its compact trace: change points of the best-so-far error and the wall time."""
    from .stats import best_so_far, change_points
    from .strategies import run_strategy

    t0 = time.perf_counter()
    res = run_strategy(strategy, inst.problem(), int(budget), int(seed), **dict(params))
    hist = np.asarray(res.history_fitness, dtype=float)[:, 0]
    evals, vals = change_points(best_so_far(hist))
    return {"evals": evals, "values": vals, "used": np.array(len(hist)), "wall": np.array(time.perf_counter() - t0)}


def value_at(trace: Mapping[str, np.ndarray], budget: int) -> float:
    """Best error reached within ``budget`` evaluations (NaN if the run had not evaluated anything by then)."""
    ok = np.flatnonzero(trace["evals"] <= budget)
    return float(trace["values"][ok[-1]]) if len(ok) else float("nan")


def check_run(suite: Suite, strategies: Sequence[str], budgets: Sequence[int], labels: Sequence[str],
              params: Mapping[str, Mapping[str, Any]]) -> List[int]:
    """Every check of :func:`run_suite` that needs no run: call it before a run directory is touched."""
    from .strategies import check_compatible, get_strategy

    if not len(suite):
        raise EvopruneError(f"suite '{suite.name}' has no instances; export it again or choose --instances")
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        raise EvopruneError(f"--budgets must be positive integers, got {budgets}")
    if len(set(labels)) != len(labels) or len(labels) != len(strategies):
        raise EvopruneError(f"strategy labels must be distinct, one per strategy, got {list(labels)}")
    missing = [i.name for i in suite if not np.isfinite(i.best_value)]
    if missing:
        raise EvopruneError(f"suite instances {missing[:3]} have no best-known value; export the suite again")
    for spec, label in zip(strategies, labels):
        fn = get_strategy(spec)
        check_compatible(label, fn, suite.instances[0].problem())
        v = getattr(fn, "validate", None)
        if callable(v):
            v(suite.instances[0].problem(), budgets[-1], **dict(params.get(label, {})))
    return budgets


def run_suite(suite: Suite, strategies: Sequence[str], budgets: Sequence[int], seeds: Sequence[int],
              out: Any, params: Optional[Mapping[str, Mapping[str, Any]]] = None,
              log: Callable[[str], None] = print, labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Every strategy x seed on every instance (budget ``max(budgets)``), then the reports in ``out``.

    ``labels`` name the strategies in the reports (default: the specs); ``params`` maps a label to its
    parameters (e.g. ``{"ga+ls": {"local_search": "swap"}}`` with the same strategy ``ga`` twice). Stored traces
    are reused only when ``out/config.json`` records the same suite, strategies, parameters and largest budget."""
    from .io import read_json, to_jsonable, write_json

    labels = list(labels or strategies)
    params = dict(params or {})
    budgets = check_run(suite, strategies, budgets, labels, params)
    out = Path(out)
    cfg = to_jsonable({"suite": suite.name, "suite_meta": suite.meta, "instances": [i.name for i in suite],
                       "best_known": [i.best_value for i in suite], "strategies": dict(zip(labels, strategies)),
                       "params": {l: dict(params.get(l, {})) for l in labels}, "max_budget": budgets[-1]})
    if (out / "config.json").exists():
        old = read_json(out / "config.json", "suite run config")
        if old != cfg:
            diff = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
            raise EvopruneError(f"cannot reuse the runs in '{out}': they were made with other settings "
                                f"({', '.join(diff)}); use --overwrite or another --out")
    write_json(out / "config.json", cfg)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    traces: Dict[str, Dict[str, List[Dict[str, np.ndarray]]]] = {i.name: {l: [] for l in labels} for i in suite}
    t0 = time.perf_counter()
    for inst in suite:
        for spec, label in zip(strategies, labels):
            for seed in seeds:
                path = _trace_path(out, inst.name, label, seed)
                if path.exists():
                    with np.load(path) as z:
                        tr = {k: z[k] for k in z.files}
                else:
                    tr = run_one(inst, spec, budgets[-1], seed, params.get(label, {}))
                    from .io import atomic_write_bytes

                    buf = io.BytesIO()
                    np.savez(buf, **tr)
                    atomic_write_bytes(path, buf.getvalue())
                traces[inst.name][label].append(tr)
        best = {l: np.nanmean([inst.gap(value_at(t, budgets[-1])) for t in traces[inst.name][l]]) for l in labels}
        log(f"{inst.name:>28}  " + "  ".join(f"{l} {100 * g:6.2f}%" for l, g in best.items()))
    report = make_report(suite, traces, labels, budgets, seeds, out)
    report["wall_time_s"] = time.perf_counter() - t0
    from .io import write_json

    write_json(out / "summary.json", report)
    return report


def make_report(suite: Suite, traces, labels: Sequence[str], budgets: Sequence[int], seeds: Sequence[int],
                out: Path) -> Dict[str, Any]:
    from .io import atomic_write_text
    from .stats import ecdf_figure, friedman, plot_cd, ranksum_vs_best

    rows = []
    gaps: Dict[int, Dict[str, Dict[str, List[float]]]] = {b: {l: {} for l in labels} for b in budgets}
    for inst in suite:
        for l in labels:
            for seed, tr in zip(seeds, traces[inst.name][l]):
                for b in budgets:
                    v = value_at(tr, b)
                    g = float(inst.gap(v))
                    gaps[b][l].setdefault(inst.name, []).append(g)
                    rows.append([inst.name, l, seed, b, repr(v), repr(g)])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["instance", "strategy", "seed", "budget", "best_error", "gap"])
    w.writerows(rows)
    atomic_write_text(out / "runs.csv", buf.getvalue())

    summary: Dict[str, Any] = {"suite": suite.name, "instances": len(suite), "strategies": list(labels),
                               "budgets": list(budgets), "seeds": list(seeds), "by_budget": {}}
    tests = io.StringIO()
    tw = csv.writer(tests, lineterminator="\n")
    tw.writerow(["budget", "instance", "strategy", "median_gap", "best", "p", "p_holm", "significantly_worse"])
    for b in budgets:
        per = {}
        for l in labels:
            allg = np.concatenate([np.asarray(v) for v in gaps[b][l].values()])
            per[l] = {"mean_gap": float(np.nanmean(allg)), "median_gap": float(np.nanmedian(allg)),
                      "solved_fraction": float(np.mean(allg <= 1e-12)), "wins": 0, "significantly_worse": 0}
        for inst in suite:
            best, res = ranksum_vs_best({l: gaps[b][l][inst.name] for l in labels})
            per[best]["wins"] += 1
            for l, r in res.items():
                per[l]["significantly_worse"] += int(r["worse"])
                tw.writerow([b, inst.name, l, repr(r["median"]), best == l, repr(r["p"]), repr(r["p_holm"]),
                             r["worse"]])
        table = np.array([[np.median(gaps[b][l][i.name]) for l in labels] for i in suite])
        fr = friedman(table, labels)
        if len(labels) >= 2:
            plot_cd(fr["avg_ranks"], fr["critical_difference"], f"{suite.name}: Friedman ranks at {b} evaluations",
                    out / f"cd_{b}")
        summary["by_budget"][str(b)] = {"strategies": per, "friedman": fr}
    atomic_write_text(out / "tests.csv", tests.getvalue())
    grid, curves = ecdf_figure({l: [(t["evals"], inst.gap(t["values"])) for inst in suite
                                    for t in traces[inst.name][l]] for l in labels}, TARGETS, budgets[-1],
                               f"{suite.name}: runtime ECDF, targets {', '.join(f'{t:g}' for t in TARGETS)}",
                               out / "ecdf")
    summary["ecdf"] = {"grid": grid.tolist(), "curves": {l: c.tolist() for l, c in curves.items()},
                       "targets": list(TARGETS)}
    g = io.StringIO()
    gw = csv.writer(g, lineterminator="\n")
    gw.writerow(["strategy"] + [f"mean_gap@{b}" for b in budgets] + [f"median_gap@{b}" for b in budgets])
    for l in labels:
        gw.writerow([l] + [repr(summary["by_budget"][str(b)]["strategies"][l]["mean_gap"]) for b in budgets]
                    + [repr(summary["by_budget"][str(b)]["strategies"][l]["median_gap"]) for b in budgets])
    atomic_write_text(out / "gaps.csv", g.getvalue())
    from .report import suite_report

    atomic_write_text(out / "report.md", suite_report(out, summary))
    return summary


def format_gap_table(summary: Mapping[str, Any]) -> str:
    """An aligned text table: strategy x budget mean gaps (%), wins, average Friedman rank."""
    budgets = summary["budgets"]
    labels = summary["strategies"]
    head = ["strategy"] + [f"gap@{b}" for b in budgets] + [f"rank@{budgets[-1]}", f"wins@{budgets[-1]}"]
    rows = []
    last = summary["by_budget"][str(budgets[-1])]
    for l in labels:
        rows.append([l] + [f"{100 * summary['by_budget'][str(b)]['strategies'][l]['mean_gap']:.3f}%" for b in budgets]
                    + [f"{last['friedman']['avg_ranks'][l]:.2f}", str(last["strategies"][l]["wins"])])
    from .textable import format_table

    return format_table(head, rows)



def improve_suite(suite: Suite, strategies: Sequence[str], budget: int, seeds: Sequence[int],
                  params: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  log: Callable[[str], None] = print) -> int:
    """Long runs of every strategy (then a swap descent from each run's best) to improve the best-known values.

    Exhaustively solved instances are left alone. Returns how many best-known values improved; each records the
    method that found it (e.g. ``"ga 50000 evals seed 2 + swap-descent"``)."""
    from .strategies import run_strategy
    from .strategies.local_search import swap_descent
    from .suite import improve_best_known

    improved = 0
    for inst in suite:
        if inst.best_method == "exhaustive":
            continue
        before = inst.best_value
        for spec in strategies:
            for seed in seeds:
                res = run_strategy(spec, inst.problem(), int(budget), int(seed), **dict((params or {}).get(spec, {})))
                best = np.asarray(res.best_genome, dtype=bool)
                cands = {f"{spec} {budget} evals seed {seed}": best,
                         f"{spec} {budget} evals seed {seed} + swap-descent":
                             swap_descent(inst.Q, best, groups=inst.groups)[0]}
                improve_best_known(inst, cands)
        if inst.best_value < before:
            improved += 1
            log(f"{inst.name:>28}  {before:.8g} -> {inst.best_value:.8g}  ({inst.best_method})")
    return improved
