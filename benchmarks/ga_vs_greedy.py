"""Does the GA of ``prune`` beat ThiNet's greedy on its own objective, at the pipeline's default budget?

On every instance of the bundled suites (each unit of the committed VGG-16 w0.25 and ResNet-20 at keep 0.25, 0.5,
0.75; objective: the stage-1 reconstruction error), the GA with the pipeline's settings (population 50, 60
generations = 3,050 evaluations, cardinality crossover, swap mutation, tournament, stagnation 50) is run for
``--seeds`` seeds, with the paper's random initialisation (``--seeding none``) and with greedy seeds in 10 % of
the population (``--seeding greedy``, the default). Counted per instance: the share of seeds whose best error is
<= the greedy's (the same value within 1e-12 counts as a tie); mean relative gap to the greedy; wall time per run
next to the greedy's.

    python benchmarks/ga_vs_greedy.py --seeds 15
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from _common import machine, save


def main() -> None:
    from evoprune.config import PRUNE_DEFAULTS
    from evoprune.pruning.greedy import greedy_removal
    from evoprune.strategies import run_strategy
    from evoprune.suite import bundled_suites, load_suite

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=15)
    ap.add_argument("--seedings", default="none,greedy")
    a = ap.parse_args()
    pop, gens = PRUNE_DEFAULTS["pop_size"], PRUNE_DEFAULTS["generations"]
    budget = pop * (gens + 1)
    ga_params = {"pop_size": pop, "generations": gens, "crossover": PRUNE_DEFAULTS["crossover"],
                 "mutation": PRUNE_DEFAULTS["mutation"], "selection": PRUNE_DEFAULTS["selection"],
                 "hof_size": max(1, PRUNE_DEFAULTS["finalists"])}
    rows = []
    for suite_name, path in sorted(bundled_suites().items()):
        for inst in load_suite(path).instances:
            p = inst.problem()
            t0 = time.perf_counter()
            g = greedy_removal(p.quadratic(exact=False), inst.k, groups=inst.groups)
            greedy_s = time.perf_counter() - t0
            g_val = float(inst.error(g)[0])
            row = {"suite": suite_name, "instance": inst.name, "n": inst.n, "k": inst.k, "greedy": g_val,
                   "greedy_s": greedy_s}
            for seeding in a.seedings.split(","):
                vals, secs = [], []
                for seed in range(a.seeds):
                    t0 = time.perf_counter()
                    res = run_strategy("ga", inst.problem(), budget, seed, **ga_params,
                                       seeding=None if seeding == "none" else seeding)
                    secs.append(time.perf_counter() - t0)
                    vals.append(float(res.best_fitness[0]))
                v = np.asarray(vals)
                row[seeding] = {"at_least_greedy": float(np.mean(v <= g_val + 1e-12 * max(1.0, abs(g_val)))),
                                "mean_gap_to_greedy": float(np.mean((v - g_val) / max(g_val, 1e-300))),
                                "mean_s": statistics.mean(secs)}
            rows.append(row)
            print(suite_name, inst.name, {k: v for k, v in row.items() if isinstance(v, dict)}, flush=True)
    summary = {}
    for seeding in a.seedings.split(","):
        shares = [r[seeding]["at_least_greedy"] for r in rows]
        summary[seeding] = {"instances": len(rows), "instances_all_seeds_at_least_greedy":
                            int(sum(s == 1.0 for s in shares)),
                            "instances_90pct_seeds_at_least_greedy": int(sum(s >= 0.9 for s in shares)),
                            "mean_gap_to_greedy": statistics.mean(r[seeding]["mean_gap_to_greedy"] for r in rows),
                            "mean_s_per_run": statistics.mean(r[seeding]["mean_s"] for r in rows)}
    summary["greedy_mean_s"] = statistics.mean(r["greedy_s"] for r in rows)
    save("ga_vs_greedy.json", {"budget": budget, "ga_params": ga_params, "seeds": a.seeds, "summary": summary,
                               "rows": rows, "machine": machine()})
    for k, v in summary.items():
        print(k, v)


if __name__ == "__main__":
    main()
