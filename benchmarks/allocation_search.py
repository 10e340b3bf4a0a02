"""Does ``prune --allocation search`` beat random search at the same budget? (issue: search what survives fine-tuning)

On a committed checkpoint, with prune's own code path (:func:`evoprune.allocation_search.search_allocation`, the
whole-network problem in its single-objective form: adaptive-BN error on held-out calibration images, the
MACs/params budget as a constraint, the first genomes the sensitivity and the uniform allocations), for every seed
(the seed picks the BN batches and the strategy's randomness; both strategies of a seed see the same problem):

* each ``--strategies`` entry (default: prune's ``cmaes-1+l`` and ``random``) for ``--budget`` evaluations;
* the best feasible allocation of each run re-scored on test images it was not selected on (adaptive BN with the
  same BN batches, ``--rescore-batches`` x 128 test images): a best-of-N is optimistic on the images it was
  chosen on;
* per strategy pair: the paired Wilcoxon signed-rank test over seeds on both errors, and how often the search beat
  its own seeds.

Per-run results go to ``--out/<strategy>-seed<S>.json`` and are reused (resumable). Results:
``benchmarks/results/allocation_search.{json,md}``.

    python benchmarks/allocation_search.py --seeds 10            # ~30 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from _common import RESULTS, machine, save, shared_cifar10

from evoprune.textable import markdown_table


def markdown(res: dict) -> list:
    """The benchmark's table (every allocation's search and test error) and its paired tests, from its JSON."""
    body = [[name, r.get("runs", res["seeds"]),
             f"{100 * r['search_error']['mean']:.2f} ± {100 * r['search_error']['std']:.2f} %",
             f"{100 * r['test_error']['mean']:.2f} ± {100 * r['test_error']['std']:.2f} %",
             f"{r['beat_its_seeds']} / {r['runs']}" if "runs" in r else "-",
             f"{r['wall_time_s'] / 60:.1f} min" if "wall_time_s" in r else "-"] for name, r in res["table"].items()]
    md = markdown_table(["allocation", "runs", "search error (held-out calibration)",
                         f"error on {res['rescore_images']} test images", "beat its seeds", "time"], body) + [""]
    for k, t in res["tests"].items():
        md.append(f"- {k}: mean difference {100 * t['mean_difference']:+.2f} pt, {t['wins']} wins / {t['losses']} "
                  f"losses over seeds, Wilcoxon signed-rank p = {t['wilcoxon_p']:.3g}")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(RESULTS / "vgg16_w0.25_e60_cifar10.pt"))
    ap.add_argument("--strategies", default="cmaes-1+l,random")
    ap.add_argument("--constraints", default="penalty,project",
                    help="how genomes meet the budget: penalty (over budget scores 1 + violation) and/or project "
                         "(every genome scaled to the budget boundary)")
    ap.add_argument("--budget", type=int, default=None, help="evaluations per run (default: prune's)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--target-macs", type=float, default=0.33, help="the reproduction's budget")
    ap.add_argument("--target-params", type=float, default=0.125)
    ap.add_argument("--rescore-batches", type=int, default=20)
    ap.add_argument("--out", default="runs/allocation-search")
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    import torch

    from evoprune.allocation_search import search_allocation
    from evoprune.config import PruneConfig
    from evoprune.pipeline import compute_sensitivity, example_input, plan_allocation, save_sensitivity
    from evoprune.pruning.cost import CostModel
    from evoprune.pruning.space import PruningSpace
    from evoprune.sensitivity import Sensitivity
    from evoprune.session import build_setup
    from evoprune.problems.network_pruning import NetworkPruningProblem

    torch.set_num_threads(max(1, torch.get_num_threads()))
    s = build_setup(f"imagefolder:{shared_cifar10()}", None, None, 1.0, a.checkpoint, torch.device("cpu"))
    s.model.eval()
    cfg = PruneConfig(target_macs=a.target_macs, target_params=a.target_params, allocation="search")
    if a.budget is not None:
        cfg.allocation_budget = a.budget
    cfg.validate()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    space = PruningSpace(s.model, example_input(s.loaders), exclude=cfg.exclude, min_keep=cfg.min_keep)
    if (out / "sensitivity.json").exists():
        sens = Sensitivity.from_json(json.loads((out / "sensitivity.json").read_text()))
    else:
        t0 = time.perf_counter()
        sens = compute_sensitivity(s.model, space, s.loaders, cfg, log=lambda m: print(m, flush=True))
        save_sensitivity(sens, out)
        print(f"sensitivity in {time.perf_counter() - t0:.0f} s", flush=True)
    cost = CostModel(space)
    plan = plan_allocation(space, cost, cfg, sens)
    uniform = plan_allocation(space, cost, dataclasses.replace(cfg, uniform=True), sens)
    seeds_ratios = [plan["ratios"], uniform["ratios"]]
    # a fixed random sample of the test split (the loader is in class order: its first batches hold one class)
    xs, ys = zip(*[(x, y) for x, y in s.loaders.test])
    xs, ys = torch.cat(xs), torch.cat(ys)
    pick = torch.randperm(len(ys), generator=torch.Generator().manual_seed(0))[:a.rescore_batches * 128]
    test_batches = [(xs[i], ys[i]) for i in pick.split(128)]
    del xs, ys

    def rescore(ratios: dict, seed: int) -> float:
        """The error of one allocation on test images, with the same BN batches the search used."""
        # the error column of the two-objective form: no budget penalty, the allocation met it when it was found
        p = NetworkPruningProblem(s.model, space, s.loaders, representation="ratios", objectives=("error", "macs"),
                                  bn_batches=cfg.bn_batches, eval_batches=cfg.eval_batches,
                                  batch_size=cfg.batch_size, seed=seed, min_ratio=0.05, threads=None)
        v = p.variant(held_out=test_batches)
        import numpy as np

        g = np.asarray([[ratios.get(u, 1.0) for u in v.unit_names]])
        return float(v.evaluate(v.repair(g))[0, 0])

    strategies = [f"{st} ({c})" for c in a.constraints.split(",") if c for st in a.strategies.split(",") if st]
    runs: dict = {st: [] for st in strategies}
    seed_rows = []
    for seed in range(a.seeds):
        path = out / f"seeds-seed{seed}.json"
        if path.exists():
            seed_rows.append(json.loads(path.read_text()))
        else:
            row = {"seed": seed, "rescored_sensitivity": rescore(plan["ratios"], seed),
                   "rescored_uniform": rescore(uniform["ratios"], seed)}
            path.write_text(json.dumps(row, indent=1) + "\n")
            seed_rows.append(row)
        for label in strategies:
            st, constraint = label[:-1].split(" (")
            path = out / f"{st}-{constraint}-seed{seed}.json"
            if path.exists():
                runs[label].append(json.loads(path.read_text()))
                continue
            t0 = time.perf_counter()
            found = search_allocation(s.model, space, s.loaders, dataclasses.replace(cfg, allocation_strategy=st),
                                      seeds_ratios, seed, log=lambda m: print(m, flush=True), constraint=constraint)
            rec = {"strategy": st, "constraint": constraint, "seed": seed, "error": found["error"], "origin": found["origin"],
                   "seed_errors": found["seed_errors"], "evaluations": found["evaluations"],
                   "rescored_error": rescore(found["ratios"], seed), "ratios": found["ratios"],
                   "wall_time_s": time.perf_counter() - t0}
            path.write_text(json.dumps(rec, indent=1) + "\n")
            runs[label].append(rec)
            print(f"{label:>20} seed {seed}: search error {rec['error']:.4f} ({rec['origin']}), on test images "
                  f"{rec['rescored_error']:.4f}, {rec['wall_time_s']:.0f} s", flush=True)
    report(a, cfg, runs, seed_rows, strategies)


def report(a, cfg, runs: dict, seed_rows: list, strategies: list) -> None:
    from scipy import stats

    def ms(v):
        return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}

    table = {}
    for st in strategies:
        rs = runs[st]
        table[st] = {"search_error": ms([r["error"] for r in rs]), "test_error": ms([r["rescored_error"] for r in rs]),
                     "beat_its_seeds": sum(r["origin"] not in ("sensitivity seed", "uniform seed") for r in rs),
                     "runs": len(rs), "wall_time_s": sum(r["wall_time_s"] for r in rs)}
    seeds_best = [min(r["seed_errors"]) for r in runs[strategies[0]]]
    table["seeds only (best of sensitivity, uniform)"] = {
        "search_error": ms(seeds_best),
        "test_error": ms([min(r["rescored_sensitivity"], r["rescored_uniform"]) for r in seed_rows]),
        "sensitivity_test_error": ms([r["rescored_sensitivity"] for r in seed_rows]),
        "uniform_test_error": ms([r["rescored_uniform"] for r in seed_rows])}
    tests = {}
    for i, x in enumerate(strategies):
        for y in strategies[i + 1:]:
            if x.split(" (")[0] != y.split(" (")[0] and x.split(" (")[1] != y.split(" (")[1]:
                continue  # one factor at a time: same strategy or same constraint handling
            for what, key in (("search_error", "error"), ("test_error", "rescored_error")):
                u = [r[key] for r in runs[x]]
                v = [r[key] for r in runs[y]]
                d = [p - q for p, q in zip(u, v)]
                w = stats.wilcoxon(u, v) if any(d) else None
                tests[f"{x} vs {y}: {what}"] = {"mean_difference": statistics.mean(d),
                                               "wins": sum(p < q for p, q in zip(u, v)),
                                               "losses": sum(p > q for p, q in zip(u, v)),
                                               "wilcoxon_p": float(w.pvalue) if w is not None else 1.0}
    res = {"checkpoint": a.checkpoint, "budget": cfg.allocation_budget, "seeds": a.seeds,
           "target_macs": a.target_macs, "target_params": a.target_params, "bn_batches": cfg.bn_batches,
           "eval_batches": cfg.eval_batches, "rescore_images": a.rescore_batches * 128, "table": table,
           "tests": tests, "machine": machine()}
    save(f"allocation_search{a.tag}.json", res)
    md = markdown(res)
    (RESULTS / f"allocation_search{a.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
