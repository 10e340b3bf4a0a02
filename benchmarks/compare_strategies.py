"""Strategies on whole-network pruning: NSGA-II vs MO-CMA-ES vs random search (+ scalarised CMA-ES and GA).

Problem: ``network`` (problems/network_pruning.py) on a trained CIFAR-10 VGG-16 width 0.25: one keep ratio per
unit, channels by L1 rank; objectives held-out error after adaptive BN (calibration split of the training set,
2 BN + 2 held-out batches of 128) and MACs fraction (analytic). Every strategy gets the same number of fitness
evaluations and the same seeds. Single-objective strategies optimise the scalarised form "error subject to
MACs <= 1/3" (``objectives=error, max_macs=1/3``: genomes over the limit are not run through the network); ``cmaes``
searches the same ratio genome, ``ga`` (binary) the concatenated channel masks, started from L1-ranked decisions.

Outputs (``--out``, default benchmarks/results): ``compare_strategies.{png,svg}`` (accuracy vs MACs fraction: each
multi-objective strategy's front from its median-hypervolume seed, the single-objective strategies' best models,
the unpruned model and the uniform-ratio L1 sweep), ``compare_strategies.{md,json}`` (hypervolume w.r.t. (1, 1) in
(error, MACs fraction), best accuracy at <= 1/3 MACs, evaluations, forward passes, wall time; mean ± std over
seeds), and whether NSGA-II's front dominates the uniform L1 sweep at every MACs level it covers. A front is the
best of many noisy evaluations on the same few images, so its accuracies are optimistic: the best models and
NSGA-II's fronts are also re-scored, with the sweep, on the calibration images the search never scores on (the
other 744 of the 1,000), and the check is reported on both.

    python benchmarks/compare_strategies.py \\
        --checkpoint benchmarks/results/vgg16_w0.25_cifar10.pt \\
        --data imagefolder:../shared/datasets/cifar10-jpeg.tar.gz --budget 200 --seeds 3

Sized for <= 25 minutes on a 2-core CPU: the script measures the cost of one evaluation first (on the reference
points) and prints the estimate before the runs start.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: small matrices, shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Tuple  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402

from evoprune.textable import markdown_table  # noqa: E402

METRICS = ("error", "macs", "params")
MO = ("nsga2", "mo-cmaes", "random")
SO = ("cmaes", "ga")
THIRD = 1.0 / 3.0
# population sizes for a budget of ~200 evaluations: several generations each (library defaults assume thousands)
PARAMS: Dict[str, Dict[str, Any]] = {
    "nsga2": {"pop_size": 16},
    "mo-cmaes": {"pop_size": 10},
    "random": {"pop_size": 50},
    "cmaes": {},  # lambda = 4 + 3 ln(13) = 11
    "ga": {"pop_size": 16},
}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(RESULTS / "vgg16_w0.25_cifar10.pt"))
    ap.add_argument("--data", default=None, help="dataset (default: imagefolder:<shared>/cifar10-jpeg.tar.gz)")
    ap.add_argument("--budget", type=int, default=200, help="fitness evaluations per run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default="nsga2,mo-cmaes,random,cmaes,ga")
    ap.add_argument("--out", default=str(RESULTS), help="folder for compare_strategies.{png,svg,md,json}")
    ap.add_argument("--bn-batches", type=int, default=2)
    ap.add_argument("--eval-batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads while evaluating (1: fastest on a shared 2-core machine)")
    ap.add_argument("--max-macs", type=float, default=THIRD, help="MACs limit of the scalarised strategies")
    return ap.parse_args()


def finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively: the JSON stays strict."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def mean_std(values: List[float]) -> Dict[str, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def evaluated(problem: Any, result: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Genomes and (error, MACs fraction) of every feasible genome a run evaluated (error <= 1)."""
    G, F = result.history_genomes, result.history_fitness
    err = F[:, list(problem.objectives).index("error")]
    macs = problem.cost_fractions(G)["macs"]
    ok = err <= 1.0
    return G[ok], np.stack([err[ok], macs[ok]], axis=1)


def best_at(points: np.ndarray, limit: float) -> int:
    """Index of the most accurate point with MACs <= limit (-1: none)."""
    idx = np.flatnonzero(points[:, 1] <= limit + 1e-12)
    return int(idx[np.argmin(points[idx, 0])]) if len(idx) else -1


def dominance_check(front: np.ndarray, sweep: np.ndarray) -> Dict[str, Any]:
    """For every sweep point whose MACs lie in the front's MACs range: is it weakly dominated by a front point?"""
    lo, hi = float(front[:, 1].min()), float(front[:, 1].max())
    rows = []
    for err, macs in sweep:
        if not lo <= macs <= hi:
            continue
        better = front[(front[:, 1] <= macs) & (front[:, 0] <= err)]
        best_below = front[front[:, 1] <= macs]
        rows.append({"sweep_macs": float(macs), "sweep_acc": float(1 - err), "dominated": bool(len(better)),
                     "best_front_acc_at_or_below": float(1 - best_below[:, 0].min()) if len(best_below) else None})
    return {"covered_macs": [lo, hi], "points": rows, "all_dominated": bool(rows) and all(r["dominated"] for r in rows)}


def run_all(a: argparse.Namespace) -> Dict[str, Any]:
    import torch

    from evoprune.indicators import hypervolume, non_dominated
    from evoprune.checkpoint_problems import network_problem
    from evoprune.problems.network_pruning import UNIFORM_RATIOS
    from evoprune.strategies import run_strategy

    torch.set_num_threads(max(1, a.threads))
    data = a.data
    if data is None:
        from _common import shared_cifar10

        data = f"imagefolder:{shared_cifar10()}"
    if not Path(a.checkpoint).is_file():
        sys.exit(f"error: checkpoint {a.checkpoint} not found; train it with benchmarks/train_baseline.py "
                 "--width 0.25 --epochs 15 --save-checkpoint benchmarks/results/vgg16_w0.25_cifar10.pt")
    names = [s.strip() for s in a.strategies.split(",") if s.strip()]
    bad = [s for s in names if s not in MO + SO]
    if bad:
        sys.exit(f"error: unknown strategies {bad}; choose from {', '.join(MO + SO)}")
    t_setup = time.perf_counter()
    mo = network_problem(checkpoint=a.checkpoint, data=data, bn_batches=a.bn_batches, eval_batches=a.eval_batches,
                         batch_size=a.batch_size, threads=a.threads, device="cpu")
    so = {name: mo.variant(objectives="error", max_macs=a.max_macs, representation="masks" if name == "ga" else "ratios")
          for name in names if name in SO}
    # the calibration images the search never sees: fronts are re-scored there (a front is the best of many noisy
    # evaluations on the search images, so its search errors are optimistic)
    val_held = mo.loaders.calib_batches(None, a.batch_size)[a.eval_batches:]
    val = {"ratios": mo.variant(held_out=val_held, objectives=METRICS)} if val_held else {}
    if val:
        val["masks"] = val["ratios"].variant(representation="masks")
    setup_s = time.perf_counter() - t_setup
    print(f"{mo.name}: {mo.n_units} units, {int(mo.sizes.sum())} channels, forward: {mo.forward_info}; "
          f"{mo.cost()['eval_images']} search images, {sum(len(y) for _, y in val_held)} validation images; "
          f"setup {setup_s:.1f}s", flush=True)

    # reference points, timed: they also measure the cost of one evaluation on this machine, now
    t0 = time.perf_counter()
    refs = mo.reference_points()
    ref_cost = mo.cost()
    per_eval = ref_cost["seconds"] / max(ref_cost["evaluations"], 1)
    n_mo = sum(s in MO for s in names) * a.seeds
    n_so = sum(s in SO for s in names) * a.seeds
    est = per_eval * a.budget * (n_mo + 0.7 * n_so)  # scalarised runs skip the genomes over the MACs limit
    print(f"reference points in {time.perf_counter() - t0:.1f}s: {per_eval:.3f} s per evaluation; "
          f"estimate for {n_mo + n_so} runs x {a.budget} evaluations: ~{est / 60:.1f} min", flush=True)
    unpruned = refs["unpruned"][0]
    sweep = refs["uniform L1"]
    print(f"unpruned: accuracy {100 * (1 - unpruned[0]):.2f}%; uniform L1 sweep: " + ", ".join(
        f"{m:.2f}->{100 * (1 - e):.1f}%" for e, m in sweep), flush=True)

    ref_point = (1.0, 1.0)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    nsga2_fronts: List[Tuple[int, np.ndarray]] = []
    for name in names:
        problem = mo if name in MO else so[name]
        runs[name] = []
        for seed in range(a.seeds):
            problem.clear_cache()  # every run pays for its own forwards: wall times stay comparable
            res = run_strategy(name, problem, a.budget, seed, **PARAMS[name])
            cost = problem.cost()
            G, pts = evaluated(problem, res)
            nd = non_dominated(pts) if len(pts) else np.zeros(0, dtype=int)
            front = pts[nd]
            hv = hypervolume(front, ref_point) if len(front) else 0.0
            b = best_at(pts, THIRD)
            row = {"seed": seed, "evaluations": int(res.evaluations), "wall_time_s": float(res.wall_time),
                   "forwards": int(cost["evaluations"]), "cache_hits": int(cost["cache_hits"]),
                   "infeasible_skipped": int(cost["infeasible_skipped"]),
                   "s_per_forward": cost["seconds_per_evaluation"], "hv": float(hv),
                   "best_acc_third": float(1 - pts[b, 0]) if b >= 0 else float("nan"),
                   "best_third_macs": float(pts[b, 1]) if b >= 0 else None,
                   "best_third_genome": G[b].astype(float).tolist() if b >= 0 and name != "ga" else
                   (np.flatnonzero(G[b]).tolist() if b >= 0 else None),
                   "front": front.tolist()}
            if val and b >= 0:
                v = val["masks" if name == "ga" else "ratios"]
                row["best_acc_third_validation"] = float(1 - v.evaluate(G[b][None])[0, 0])
            if name == "nsga2":
                nsga2_fronts.append((seed, G[nd]))
            runs[name].append(row)
            extra = f" (validation {100 * row['best_acc_third_validation']:.2f}%)" \
                if "best_acc_third_validation" in row else ""
            print(f"{name:>9s} seed {seed}: hv {hv:.4f}, best acc at <= 1/3 MACs {100 * row['best_acc_third']:.2f}%"
                  f"{extra}, {row['evaluations']} evaluations ({row['forwards']} forwards), {row['wall_time_s']:.0f}s",
                  flush=True)

    summary = {}
    keys = ("hv", "best_acc_third", "best_acc_third_validation", "evaluations", "forwards", "wall_time_s")
    for name, rows in runs.items():
        summary[name] = {k: mean_std([r.get(k) for r in rows]) for k in keys}
        summary[name]["kind"] = "multi-objective" if name in MO else \
            f"single-objective: error s.t. MACs <= {a.max_macs:.3g}" + (" (masks)" if name == "ga" else " (ratios)")
    checks: Dict[str, Any] = {}
    if nsga2_fronts:
        search = {f"seed{seed}": dominance_check(np.asarray(runs["nsga2"][i]["front"]), sweep)
                  for i, (seed, _) in enumerate(nsga2_fronts)}
        union = np.concatenate([np.asarray(r["front"]) for r in runs["nsga2"]])
        search["union of seeds"] = dominance_check(union[non_dominated(union)], sweep)
        checks["search images"] = search
        if val:
            v = val["ratios"]
            vs = v.evaluate(mo.uniform_genomes(UNIFORM_RATIOS))[:, :2]
            validated = {}
            all_pts = []
            for seed, Gf in nsga2_fronts:
                P = v.evaluate(Gf)[:, :2]
                all_pts.append(P)
                validated[f"seed{seed}"] = dominance_check(P[non_dominated(P)], vs)
            U = np.concatenate(all_pts)
            validated["union of seeds"] = dominance_check(U[non_dominated(U)], vs)
            checks["validation images"] = validated
            checks["validation_sweep"] = vs.tolist()
    return {"problem": mo.name, "checkpoint": a.checkpoint, "data": data, "budget": a.budget,
            "seeds": list(range(a.seeds)), "strategies": names, "strategy_params": {n: PARAMS[n] for n in names},
            "max_macs_scalarised": a.max_macs, "hv_reference_point": list(ref_point),
            "hv_space": "(error, MACs fraction), both minimised",
            "evaluation": {"bn_batches": a.bn_batches, "eval_batches": a.eval_batches, "batch_size": a.batch_size,
                           "eval_images": ref_cost["eval_images"],
                           "validation_images": int(sum(len(y) for _, y in val_held)),
                           "forward": mo.forward_info, "sample_spread": mo.spread,
                           "threads": a.threads, "seconds_per_evaluation_reference_points": per_eval,
                           "setup_s": setup_s},
            "reference_points": {"unpruned": unpruned.tolist(), "uniform L1": sweep.tolist(),
                                 "uniform_ratios": list(UNIFORM_RATIOS)},
            "summary": summary, "runs": runs, "nsga2_vs_uniform_l1": checks, "machine": machine()}


def figure(res: Dict[str, Any], out: Path) -> List[Path]:
    from evoprune.plot import COLORS, MARKERS, new_figure, plot_fronts, save_figure

    fronts, so_points = {}, {}
    for name, rows in res["runs"].items():
        if name in MO:
            hvs = [r["hv"] for r in rows]
            med = rows[int(np.argsort(hvs, kind="stable")[(len(rows) - 1) // 2])]
            fronts[f"{name} (seed {med['seed']}, median hv {med['hv']:.3f})"] = np.asarray(med["front"])
        else:
            best = []
            for r in rows:
                F = np.asarray(r["front"])
                ok = F[F[:, 1] <= res["max_macs_scalarised"] + 1e-12]
                if len(ok):
                    best.append(ok[np.argmin(ok[:, 0])])
            so_points[name] = np.asarray(best).reshape(-1, 2)
    refs = {"unpruned": np.asarray([res["reference_points"]["unpruned"]]),
            "uniform L1 (ratio 0.2-0.9)": np.asarray(res["reference_points"]["uniform L1"])}
    fig = new_figure(7.2, 5.0)
    ax = fig.add_subplot()
    plot_fronts(fronts, ("error", "macs"), reference=refs, accuracy=True, axes=(1, 0), ax=ax,
                title=f"{res['problem']}: Pareto fronts, {res['budget']} evaluations per run")
    k0 = len(fronts)
    for k, (name, P) in enumerate(so_points.items()):
        if len(P):
            ax.plot(P[:, 1], 100 * (1 - P[:, 0]), ls="none", marker=MARKERS[(k0 + k) % len(MARKERS)], ms=9,
                    mfc="none", mew=1.8, color=COLORS[(k0 + k) % len(COLORS)],
                    label=f"{name}: best at MACs <= {res['max_macs_scalarised']:.2f} ({len(P)} seeds)")
    ax.axvline(res["max_macs_scalarised"], color="0.5", ls=":", lw=1.0)
    ax.set_xlabel("MACs (fraction of the unpruned model)")
    ax.set_ylabel("accuracy on the search's held-out images (%), adaptive BN")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    return save_figure(fig, out / "compare_strategies")


def table(res: Dict[str, Any]) -> str:
    n = len(res["seeds"])
    e = res["evaluation"]
    lines = [f"Problem: {res['problem']} -- {res['budget']} evaluations per run, {n} seeds (mean ± std); "
             f"hypervolume of (error, MACs fraction) w.r.t. (1, 1). Accuracy: held-out calibration split of the "
             f"training set after adaptive BN -- the {e['eval_images']} images the search scores on, and the "
             f"other {e['validation_images']} (validation: the selected model re-scored on images it was not "
             "selected on).", ""]

    def f(s: Dict[str, Any], k: str, scale: float = 1.0, d: int = 4) -> str:
        m, sd = s[k]["mean"] * scale, s[k]["std"] * scale
        return f"{m:.{d}f} ± {sd:.{d}f}" if np.isfinite(m) else "n/a"

    lines += markdown_table(
        ["strategy", "kind", "hypervolume", "best acc. at <= 1/3 MACs (%)", "same model, validation (%)",
         "evaluations", "forward passes", "wall time (s)"],
        [[name, s["kind"], f(s, "hv") if name in MO else f(s, "hv") + " (only MACs <= limit searched)",
          f(s, "best_acc_third", 100, 2), f(s, "best_acc_third_validation", 100, 2), f"{s['evaluations']['mean']:.0f}",
          f"{s['forwards']['mean']:.0f}", f(s, "wall_time_s", 1, 0)] for name, s in res["summary"].items()])
    u = res["reference_points"]["unpruned"]
    lines += ["", f"Unpruned model: accuracy {100 * (1 - u[0]):.2f}% at MACs 1.0. Uniform L1 sweep (keep ratio -> "
              "MACs, accuracy): " + ", ".join(f"{r:.1f} -> {m:.3f}, {100 * (1 - e_):.1f}%" for r, (e_, m) in
                                              zip(res["reference_points"]["uniform_ratios"],
                                                  res["reference_points"]["uniform L1"]))]
    checks = res.get("nsga2_vs_uniform_l1") or {}
    for where in ("search images", "validation images"):
        if where not in checks:
            continue
        lines += ["", f"Does NSGA-II's front dominate the uniform L1 sweep at every MACs level it covers? "
                      f"({where}{': fronts and sweep re-scored' if where.startswith('validation') else ''})", ""]
        for label, c in checks[where].items():
            miss = [p for p in c["points"] if not p["dominated"]]
            verdict = "yes" if c["all_dominated"] else f"no ({len(miss)} of {len(c['points'])} sweep points not " \
                "dominated: " + "; ".join(
                    f"MACs {p['sweep_macs']:.3f}: sweep {100 * p['sweep_acc']:.1f}% vs front "
                    + (f"{100 * p['best_front_acc_at_or_below']:.1f}%" if p["best_front_acc_at_or_below"] is not None
                       else "none") for p in miss) + ")"
            lines.append(f"- {label} (front covers MACs {c['covered_macs'][0]:.3f}-{c['covered_macs'][1]:.3f}, "
                         f"{len(c['points'])} sweep points inside): {verdict}")
    lines += ["", f"One evaluation = adaptive BN on {e['bn_batches']} x {e['batch_size']} training images + "
              f"accuracy on {e['eval_images']} held-out images, forward: {e['forward']}; measured "
              f"{e['seconds_per_evaluation_reference_points']:.3f} s per evaluation on the reference points "
              f"({e['threads']} torch thread; {res['machine']['cpu_count']} CPUs shared with other jobs). "
              f"Total wall time {res.get('total_wall_time_s', float('nan')) / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main() -> None:
    a = parse()
    t0 = time.perf_counter()
    res = run_all(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = figure(res, out)
    res["total_wall_time_s"] = time.perf_counter() - t0
    md = table(res)
    (out / "compare_strategies.md").write_text(md)
    (out / "compare_strategies.json").write_text(json.dumps(finite(res), indent=1, allow_nan=False) + "\n")
    print()
    print(md)
    for p in [out / "compare_strategies.md", out / "compare_strategies.json", *paths]:
        print(f"wrote {p}")
    print(f"total {res['total_wall_time_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
