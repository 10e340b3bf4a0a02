"""Operator benchmark for the GA: every crossover x mutation pair on the planted k-subset QP (n=512, k=256).

For each pair (and, second, each selection scheme with the best pair) the GA runs ``--seeds`` times on the same
planted instance; the best objective found so far is recorded against the number of evaluations (from the exact
evaluation history) and averaged over seeds. Writes

* ``benchmarks/results/ga_operators.csv``: one row per (section, operators, evaluation checkpoint), with the mean
  best objective, the mean and std of its relative gap to the proven optimum, and the fraction of seeds at the optimum;
* ``benchmarks/results/ga_operators.png``: convergence curves (mean gap vs evaluations);

and prints a summary naming the best pair. Usage::

    python benchmarks/ga_operators.py --seeds 10 --budget 30000
"""
from __future__ import annotations

import os

# One BLAS thread: the problem scores a population with one small matmul, and on a shared machine a
# multi-threaded BLAS spends more time waiting for its threads than computing.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import evoprune.problems  # noqa: E402,F401  (registers the benchmark problems)
from evoprune.registry import PROBLEMS  # noqa: E402
from evoprune.strategies.ga import GA_DEFAULTS, ga  # noqa: E402

CROSSOVERS = ("uniform", "one-point", "two-point", "cardinality")
MUTATIONS = ("flip", "swap")
SELECTIONS = ("tournament", "roulette")
RESULTS = Path(__file__).resolve().parent / "results"


def best_so_far(history: np.ndarray, grid: np.ndarray, weight: float) -> np.ndarray:
    """Best raw objective among the first ``e`` evaluations, for every ``e`` in ``grid``."""
    run = np.maximum.accumulate(history[:, 0] * weight) * weight
    idx = np.minimum(grid, len(run)) - 1
    return run[idx]


def run_config(problem, budget: int, seeds: int, grid: np.ndarray, **kw) -> dict:
    curves, times, evals = [], [], []
    for seed in range(seeds):
        t0 = time.perf_counter()
        res = ga(problem, budget, seed=seed, stagnation=None, **kw)
        times.append(time.perf_counter() - t0)
        evals.append(res.evaluations)
        curves.append(best_so_far(res.history_fitness, grid, problem.weights[0]))
    curves = np.array(curves)
    gaps = np.abs(curves - problem.optimum) / abs(problem.optimum)
    return {"best": curves.mean(0), "gap": gaps.mean(0), "gap_std": gaps.std(0),
            "hits": (gaps < 1e-12).mean(0), "time": float(np.mean(times)), "evaluations": int(np.mean(evals))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="GA seeds per configuration (default 10)")
    ap.add_argument("--budget", type=int, default=30000, help="evaluations per run (default 30000)")
    ap.add_argument("--n", type=int, default=512, help="channels (default 512)")
    ap.add_argument("--k", type=int, default=None, help="channels kept (default n/2)")
    ap.add_argument("--pop-size", type=int, default=GA_DEFAULTS["pop_size"])
    ap.add_argument("--step", type=int, default=500, help="evaluation grid step for the curves (default 500)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    ap.add_argument("--no-selection", action="store_true", help="skip the selection comparison")
    args = ap.parse_args(argv)

    problem = PROBLEMS.get("planted-qp")(n=args.n, k=args.k, seed=0)
    grid = np.unique(np.r_[np.arange(args.step, args.budget + 1, args.step), args.budget])
    default_sel = GA_DEFAULTS["selection"]
    print(f"{problem.name}: optimum {problem.optimum:.0f}; budget {args.budget}, {args.seeds} seeds, "
          f"pop {args.pop_size}, selection {default_sel}", flush=True)

    results = {}
    t_all = time.perf_counter()
    for cx in CROSSOVERS:
        for mut in MUTATIONS:
            r = run_config(problem, args.budget, args.seeds, grid, pop_size=args.pop_size, crossover=cx,
                           mutation=mut, selection=default_sel)
            results[("operators", cx, mut, default_sel)] = r
            print(f"  {cx:>11} + {mut:<4}  final gap {100 * r['gap'][-1]:7.3f} %  at optimum {r['hits'][-1]:4.0%}  "
                  f"{r['time']:.2f} s/run", flush=True)
    finals = {key: r["gap"][-1] for key, r in results.items()}
    # Ties on the final gap (several pairs at 0) go to the pair that got there with fewer evaluations.
    best_key = min(finals, key=lambda key: (finals[key], results[key]["gap"].sum()))
    _, bcx, bmut, _ = best_key
    if not args.no_selection:
        for sel in SELECTIONS:
            if sel == default_sel:
                results[("selection", bcx, bmut, sel)] = results[best_key]
                continue
            r = run_config(problem, args.budget, args.seeds, grid, pop_size=args.pop_size, crossover=bcx,
                           mutation=bmut, selection=sel)
            results[("selection", bcx, bmut, sel)] = r
            print(f"  selection {sel:<10} ({bcx} + {bmut})  final gap {100 * r['gap'][-1]:7.3f} %  "
                  f"at optimum {r['hits'][-1]:4.0%}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "ga_operators.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["section", "crossover", "mutation", "selection", "evaluations", "mean_best_objective",
                    "mean_gap", "std_gap", "frac_at_optimum", "optimum", "seeds", "mean_seconds_per_run"])
        for (section, cx, mut, sel), r in results.items():
            for i, e in enumerate(grid):
                w.writerow([section, cx, mut, sel, int(e), f"{r['best'][i]:.3f}", f"{r['gap'][i]:.6g}",
                            f"{r['gap_std'][i]:.6g}", f"{r['hits'][i]:.2f}", f"{problem.optimum:.0f}",
                            args.seeds, f"{r['time']:.3f}"])
    meta = {"problem": problem.name, "optimum": problem.optimum, "budget": args.budget, "seeds": args.seeds,
            "pop_size": args.pop_size, "ga_defaults": GA_DEFAULTS, "best_pair": [bcx, bmut],
            "final_gap": {f"{k[0]}:{k[1]}+{k[2]}/{k[3]}": float(v["gap"][-1]) for k, v in results.items()},
            "wall_seconds": round(time.perf_counter() - t_all, 1)}
    (args.out / "ga_operators.json").write_text(json.dumps(meta, indent=2) + "\n")
    plot(results, grid, args.out / "ga_operators.png", problem.name, args.seeds)
    print(f"best pair: crossover '{bcx}' + mutation '{bmut}' (final mean gap {100 * finals[best_key]:.3f} %, "
          f"{results[best_key]['hits'][-1]:.0%} of seeds at the optimum)")
    if (bcx, bmut) != (GA_DEFAULTS["crossover"], GA_DEFAULTS["mutation"]):
        print(f"note: GA defaults are {GA_DEFAULTS['crossover']} + {GA_DEFAULTS['mutation']}")
    print(f"wrote {csv_path} and {args.out / 'ga_operators.png'} ({meta['wall_seconds']} s)")
    return 0


def plot(results: dict, grid: np.ndarray, path: Path, title: str, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-5  # a gap of 0 (optimum found) is drawn at the floor of the log axis
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    styles = {"flip": "--", "swap": "-"}
    colors = dict(zip(CROSSOVERS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (section, cx, mut, sel), r in results.items():
        ax = axes[0] if section == "operators" else axes[1]
        label = f"{cx} + {mut}" if section == "operators" else f"{sel} ({cx} + {mut})"
        kw = {"color": colors[cx], "ls": styles[mut]} if section == "operators" else {}
        ax.plot(grid, np.maximum(r["gap"], floor), label=label, **kw)
    for ax, t in zip(axes, ("crossover x mutation", "selection")):
        ax.set_yscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("relative gap to optimum (mean over seeds)")
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"GA on {title}, {seeds} seeds (gap 0 drawn at {floor:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
