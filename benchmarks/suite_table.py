"""The README's suite table: strategies on the bundled channel-selection suites, mean gap to the best-known.

1. Builds each bundled suite once (``evoprune/assets/suites/<name>.npz``) from a committed checkpoint, with
   calibration batches of the CIFAR-10 training split (4 x 128 images, seed 0), the greedy + swap-descent
   best-known (exhaustive for n <= 20), then raises the best-known values with long runs (``--improve-budget``
   evaluations of ga and cmaes-1+l, 2 seeds, each polished by a swap descent).
2. Runs every strategy x ``--seeds`` seeds on every instance at the largest budget and reads the smaller budgets
   off the same runs (``evoprune suite run``), then adds ThiNet's greedy and greedy + swap descent as deterministic
   reference rows (their cost in evaluations: 0 and the descent's neighbours).
3. Writes ``benchmarks/results/suite_table.{json,md}`` and the aggregated ECDF / critical-difference plots.

    python benchmarks/suite_table.py                     # both suites, 15 seeds, budgets 1000 and 10000
    python benchmarks/suite_table.py --suites resnet20 --seeds 5
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, ROOT, machine, save, shared_cifar10

from evoprune.textable import markdown_table

SUITES = {  # bundled name -> committed checkpoint it is made from
    "vgg16_w0.25": RESULTS / "vgg16_w0.25_e60_cifar10.pt",
    "resnet20": RESULTS / "resnet20_e12_cifar10.pt",
}
STRATEGIES = "ga,memetic=ga,cmaes,cmaes-1+l,random"
# the memetic GA: greedy seeds in 10 % of the population and a swap descent of the best child each generation
STRATEGY_PARAMS = {"ga": {"pop_size": 50}, "memetic": {"pop_size": 50, "seeding": "greedy", "local_search": "swap"}}


def build(name: str, improve_budget: int) -> Path:
    from evoprune.suite import export_suite
    from evoprune.suite_bench import improve_suite

    path = ROOT / "evoprune" / "assets" / "suites" / f"{name}.npz"
    if path.exists():
        return path
    ck = SUITES[name]
    if not ck.exists():
        raise SystemExit(f"{ck} is missing: train it with benchmarks/train_baseline.py (see the README)")
    t0 = time.perf_counter()
    s = export_suite(str(ck), f"imagefolder:{shared_cifar10()}", (0.25, 0.5, 0.75), calib_batches=4,
                     batch_size=128, seed=0, name=name, log=lambda m: print(m, flush=True))
    s.meta["checkpoint"] = ck.name
    print(f"exported {len(s)} instances in {time.perf_counter() - t0:.0f} s; improving best-known", flush=True)
    t0 = time.perf_counter()
    n = improve_suite(s, ["ga", "cmaes-1+l"], improve_budget, [0, 1], log=lambda m: print(m, flush=True))
    s.meta["best_known"] = (f"greedy + swap descent (exhaustive for n <= 20), then ga and cmaes-1+l, "
                            f"{improve_budget} evaluations x 2 seeds, each + swap descent; {n} improved")
    print(f"{n} best-known values improved in {time.perf_counter() - t0:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    s.save(path)
    return path


def reference_rows(suite) -> dict:
    """ThiNet's greedy and greedy + swap descent: deterministic, no budget to spend."""
    from evoprune.pruning.greedy import greedy_removal
    from evoprune.strategies.local_search import swap_descent

    g_gaps, ls_gaps, ls_evals = [], [], []
    for inst in suite:
        g = greedy_removal(inst.Q, inst.k, groups=inst.groups)
        g_gaps.append(float(inst.gap(inst.error(g)[0])))
        m, v, used = swap_descent(inst.Q, g, groups=inst.groups)
        ls_gaps.append(float(inst.gap(v)))
        ls_evals.append(used)
    return {"greedy": {"mean_gap": float(np.mean(g_gaps)), "evaluations": 0},
            "greedy+swap-descent": {"mean_gap": float(np.mean(ls_gaps)),
                                    "evaluations_mean": float(np.mean(ls_evals))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--budgets", default="1000,10000")
    ap.add_argument("--seeds", type=int, default=15)
    ap.add_argument("--improve-budget", type=int, default=30000)
    ap.add_argument("--out", default=str(ROOT / "runs" / "suite-table"))
    a = ap.parse_args()
    from evoprune.suite import load_suite
    from evoprune.suite_bench import labelled_strategies, run_suite

    labels, specs, _ = labelled_strategies(a.strategies, {})
    params = {l: STRATEGY_PARAMS.get(l, {}) for l in labels}
    budgets = [int(b) for b in a.budgets.split(",")]
    result = {"strategies": dict(zip(labels, specs)), "strategy_params": params, "budgets": budgets,
              "seeds": a.seeds, "suites": {}, "machine": machine()}
    t_all = time.perf_counter()
    for name in a.suites.split(","):
        path = build(name, a.improve_budget)
        suite = load_suite(path)
        t0 = time.perf_counter()
        out = Path(a.out) / name
        rep = run_suite(suite, specs, budgets, list(range(a.seeds)), out, params=params, labels=labels,
                        log=lambda m: print(m, flush=True))
        for f in ("ecdf.png", "ecdf.svg", f"cd_{budgets[-1]}.png"):
            if (out / f).exists():
                shutil.copyfile(out / f, RESULTS / f"suite_{name}_{f}")
        result["suites"][name] = {
            "instances": len(suite), "meta": suite.meta,
            "by_budget": {b: {"strategies": v["strategies"], "friedman": v["friedman"]}
                          for b, v in rep["by_budget"].items()},
            "references": reference_rows(suite), "wall_time_s": time.perf_counter() - t0,
            "machine": result["machine"], "load_average_1min": os.getloadavg()[0],
            "best_known_methods": sorted({i.best_method.split(" ")[0] for i in suite})}
    result["wall_time_s"] = time.perf_counter() - t_all
    result["load_average_1min"] = os.getloadavg()[0]
    merge_earlier(result)
    save("suite_table.json", result)
    (RESULTS / "suite_table.md").write_text(markdown(result) + "\n")
    print(markdown(result))


def merge_earlier(result: dict) -> None:
    """Keep the suites of an earlier run that this one did not rerun, when it ran the same settings.

    A suite is an hour of CPU: ``--suites vgg16_w0.25`` must not drop the committed ResNet-20 rows."""
    path = RESULTS / "suite_table.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    same = ("strategies", "strategy_params", "seeds")
    if any(old.get(k) != result[k] for k in same) or [int(b) for b in old.get("budgets", [])] != result["budgets"]:
        print("earlier suite_table.json ran other settings: not merged", flush=True)
        return
    for name, s in old.get("suites", {}).items():
        if name not in result["suites"]:
            s.setdefault("machine", old.get("machine"))
            result["suites"][name] = s
    result["suites"] = {n: result["suites"][n] for n in SUITES if n in result["suites"]}


def markdown(r: dict) -> str:
    b = [str(x) for x in r["budgets"]]
    body = []
    for name, s in r["suites"].items():
        last = s["by_budget"][b[-1]]
        for label in r["strategies"]:
            body.append([name, s["instances"], label]
                        + [f"{100 * s['by_budget'][x]['strategies'][label]['mean_gap']:.2f} %" for x in b]
                        + [last["strategies"][label]["wins"], f"{last['friedman']['avg_ranks'][label]:.2f}"])
        ref = s["references"]
        for label, key in (("ThiNet greedy (0 evaluations)", "greedy"),
                           (f"greedy + swap descent ({ref['greedy+swap-descent']['evaluations_mean']:.0f} "
                            "evaluations)", "greedy+swap-descent")):
            body.append([name, s["instances"], label] + [f"{100 * ref[key]['mean_gap']:.2f} %"] * len(b) + ["-", "-"])
    lines = markdown_table(["suite", "instances", "strategy"] + [f"mean gap @ {x}" for x in b]
                           + [f"instances won @ {b[-1]}", f"Friedman rank @ {b[-1]}"], body)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
