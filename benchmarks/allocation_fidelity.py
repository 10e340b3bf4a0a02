"""Does the allocation search optimise what survives fine-tuning? Rank correlation of its fitness with accuracy
after the full fine-tune (the search issue's fidelity table).

Over ``--random`` random allocations and ``--searched`` searched ones (prune's CMA-ES, one per seed), plus the
sensitivity and uniform allocations, all projected onto the same MACs/params budget (the boundary the search
works on), with top-k L1 channels per unit (the search's own decoding):

* cheap fidelities, what a search could optimise: the adaptive-BN error on the search's held-out calibration
  images (``bn@512``, what ``--allocation search`` optimises), the same on the whole calibration split
  (``bn@all``) and the error after ``N`` KD fine-tune steps (``ft<N>``, what ``--allocation-finetune-steps N``
  re-scores; every allocation sees the same batches);
* ground truth: test accuracy (10,000 images) after a KD fine-tune of the one-shot pruned network for
  ``--full-steps`` optimiser steps (default: the pipeline's 30 steps x 13 units + 2 epochs of the reproduction;
  cosine at the fine-tune LR).

Per fidelity: Spearman's rho between the cheap error and the final test error (higher = the fitness ranks
allocations as fine-tuning does), a 95 % bootstrap interval (allocations resampled, 2,000 times), and how far
the allocation that the fidelity ranks first falls from the best final accuracy (the regret of trusting it).

Each allocation's numbers go to ``benchmarks/results/allocation_fidelity<tag>/<name>.json``, committed and
reused: a later session continues. Results: ``benchmarks/results/allocation_fidelity<tag>.{json,md}``.

    python benchmarks/allocation_fidelity.py --random 12 --searched 3     # ~4 min per allocation, one CPU thread
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

from _common import RESULTS, machine, save, shared_cifar10, step_finetune

from evoprune.textable import markdown_table


def spearman_ci(x: list, y: list, n_boot: int = 2000, seed: int = 0) -> dict:
    import numpy as np
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if len(set(x[i])) > 1 and len(set(y[i])) > 1:
            boots.append(stats.spearmanr(x[i], y[i]).statistic)
    lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return {"rho": rho, "ci95": [float(lo), float(hi)], "p_value": float(stats.spearmanr(x, y).pvalue)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(RESULTS / "vgg16_w0.25_e60_cifar10.pt"))
    ap.add_argument("--sensitivity", default=str(RESULTS / "ablation_vgg16_w0.25_e60" / "sensitivity.json"),
                    help="sensitivity curves (computed when the file is missing)")
    ap.add_argument("--target-macs", type=float, default=0.33)
    ap.add_argument("--target-params", type=float, default=0.125)
    ap.add_argument("--random", type=int, default=12)
    ap.add_argument("--searched", type=int, default=3)
    ap.add_argument("--sigma", type=float, default=0.35, help="log-normal spread of the random allocations")
    ap.add_argument("--macs-band", type=float, default=0.03, help="random allocations keep MACs >= target - band")
    ap.add_argument("--short-steps", default="25,100", help="fine-tune steps of the ft<N> fidelities")
    ap.add_argument("--full-steps", type=int, default=1154)
    ap.add_argument("--tag", default="_vgg16_w0.25_e60")
    ap.add_argument("--table-only", action="store_true")
    a = ap.parse_args()
    import numpy as np
    import torch

    from evoprune.allocation_search import finetuned_error, search_allocation
    from evoprune.config import PruneConfig
    from evoprune.distill import kd_loss
    from evoprune.pipeline import compute_sensitivity, example_input, plan_allocation
    from evoprune.problems.network_pruning import NetworkPruningProblem
    from evoprune.pruning.apply import apply
    from evoprune.pruning.cost import CostModel
    from evoprune.pruning.masked import reestimate_bn
    from evoprune.pruning.space import PruningSpace
    from evoprune.sensitivity import Sensitivity
    from evoprune.session import build_setup
    from evoprune.train import evaluate

    keep = RESULTS / f"allocation_fidelity{a.tag}"
    keep.mkdir(parents=True, exist_ok=True)
    s = build_setup(f"imagefolder:{shared_cifar10()}", None, None, 1.0, a.checkpoint, torch.device("cpu"))
    s.model.eval()
    cfg = PruneConfig(target_macs=a.target_macs, target_params=a.target_params, allocation="search")
    cfg.validate()
    space = PruningSpace(s.model, example_input(s.loaders), exclude=cfg.exclude, min_keep=cfg.min_keep)
    sens_path = Path(a.sensitivity)
    if sens_path.exists():
        sens = Sensitivity.from_json(json.loads(sens_path.read_text()))
    else:
        sens = compute_sensitivity(s.model, space, s.loaders, cfg, log=lambda m: print(m, flush=True))
    cost = CostModel(space)
    sens_plan = plan_allocation(space, cost, cfg, sens)
    uni_plan = plan_allocation(space, cost, dataclasses.replace(cfg, uniform=True), sens)
    # the search's own problem (seed 0: its BN batches and held-out images)
    prob = NetworkPruningProblem(s.model, space, s.loaders, representation="ratios", objectives=("error",),
                                 max_macs=cfg.target_macs, max_params=cfg.target_params, bn_batches=cfg.bn_batches,
                                 eval_batches=cfg.eval_batches, batch_size=cfg.batch_size, seed=0, min_ratio=0.05,
                                 constraint="project")
    names = prob.unit_names
    cands = {"sensitivity": [sens_plan["ratios"].get(u, 1.0) for u in names],
             "uniform": [uni_plan["ratios"].get(u, 1.0) for u in names]}
    # random allocations at (about) equal MACs: log-normal perturbations of the sensitivity allocation, projected
    # onto the budget, kept when their MACs fraction is within --macs-band of the target. prob.sample's
    # near-uniform draws sit on the params limit at a third of the MACs (as the uniform allocation does), which
    # would make the correlation mostly one of MACs.
    rng = np.random.default_rng(2026)
    base_r = np.log(np.asarray(cands["sensitivity"], float))
    drawn = 0
    while sum(k.startswith("random") for k in cands) < a.random and drawn < 20_000:
        r = np.exp(base_r + a.sigma * rng.standard_normal((256, len(names))))
        g = prob.project(prob.repair(r))
        fr = prob.cost_fractions(g)["macs"]
        drawn += len(r)
        for gi in g[fr >= a.target_macs - a.macs_band]:
            if sum(k.startswith("random") for k in cands) < a.random:
                cands[f"random{sum(k.startswith('random') for k in cands)}"] = gi.tolist()
    if sum(k.startswith("random") for k in cands) < a.random:
        raise SystemExit(f"only {sum(k.startswith('random') for k in cands)} of {drawn} perturbed allocations have "
                         f"MACs >= {a.target_macs - a.macs_band:.3f}: raise --macs-band or lower --sigma")
    short = [int(n) for n in a.short_steps.split(",") if n.strip()]
    full_loss = kd_loss(s.model, cfg.temperature, cfg.alpha)  # kd_loss freezes the teacher: prune copies below
    rows = []
    order = ["sensitivity", "uniform"] + [f"search{k}" for k in range(a.searched)] + \
        [f"random{i}" for i in range(a.random)]
    for name in order:
        path = keep / f"{name}.json"
        if path.exists():
            rows.append(json.loads(path.read_text()))
            continue
        if a.table_only:
            continue
        t0 = time.perf_counter()
        if name.startswith("search"):
            k = int(name[6:])
            found = search_allocation(s.model, space, s.loaders, cfg, [sens_plan["ratios"], uni_plan["ratios"]], k,
                                      log=lambda m: print(m, flush=True))
            ratios = [found["ratios"].get(u, 1.0) for u in names]
        else:
            ratios = cands[name]
        g = prob.project(prob.repair(np.asarray([ratios], float)))[0]
        counts = prob.counts(g[None])[0]
        fr = prob.cost_fractions(g[None])
        row = {"name": name, "counts": counts.tolist(), "macs_fraction": float(fr["macs"][0]),
               "params_fraction": float(fr["params"][0]),
               "fidelity_error": {"bn@512": float(prob.evaluate(g[None])[0, 0]),
                                  "bn@all": finetuned_error(s.model, prob, g, s.loaders, cfg, 0, 0)}}
        for n in short:
            row["fidelity_error"][f"ft{n}"] = finetuned_error(s.model, prob, g, s.loaders, cfg, n, 0)
        # ground truth: the one-shot pruned network, adaptive BN, the full KD fine-tune, test accuracy
        torch.manual_seed(0)
        net = apply(s.model, prob.decode(g), space)
        reestimate_bn(net, s.loaders.train_batches(cfg.bn_batches, seed=0))
        row["test_top1_after_prune"] = evaluate(net, s.loaders.test)["top1"]
        s.loaders.train.seed = 0
        step_finetune(net, s.loaders, a.full_steps, cfg.finetune_lr, full_loss)
        row["test_top1"] = evaluate(net, s.loaders.test)["top1"]
        row["wall_time_s"] = time.perf_counter() - t0
        path.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(row)
        print(f"{name:>12}: MACs {row['macs_fraction']:.3f} params {row['params_fraction']:.3f} "
              + " ".join(f"{k} {100 * v:.2f}" for k, v in row["fidelity_error"].items())
              + f" | test after prune {100 * row['test_top1_after_prune']:.2f} %, after {a.full_steps} KD steps "
              f"{100 * row['test_top1']:.2f} %  ({row['wall_time_s'] / 60:.1f} min)", flush=True)
    if len(rows) < 4:
        print(f"{len(rows)} allocations so far: too few for a table")
        return
    def correlations(rs: list) -> dict:
        final_err = [1 - r["test_top1"] for r in rs]
        out = {}
        for f in list(rs[0]["fidelity_error"]) + ["test after prune"]:
            x = [1 - r["test_top1_after_prune"] if f == "test after prune" else r["fidelity_error"][f] for r in rs]
            top = int(np.argmin(x))
            out[f] = {**spearman_ci(x, final_err), "picks": rs[top]["name"],
                      "regret_pt": 100 * (final_err[top] - min(final_err))}
        return out

    equal = [r for r in rows if r["macs_fraction"] >= a.target_macs - a.macs_band]
    table = correlations(equal)
    table_all = correlations(rows)
    final_err = [1 - r["test_top1"] for r in rows]
    res = {"checkpoint": a.checkpoint, "n_allocations": len(rows), "full_steps": a.full_steps,
           "target_macs": a.target_macs, "target_params": a.target_params, "macs_band": a.macs_band,
           "n_equal_macs": len(equal), "table": table, "table_all_allocations": table_all,
           "final_test_top1": {"mean": statistics.mean(r["test_top1"] for r in rows),
                               "min": min(r["test_top1"] for r in rows), "max": max(r["test_top1"] for r in rows)},
           "rows": rows, "machine": machine()}
    save(f"allocation_fidelity{a.tag}.json", res)
    md = markdown_table(["allocations", "fidelity (error)", "Spearman rho with final test error", "95 % bootstrap CI",
                         "p", "ranks first", "its regret"],
                        [[label, f, f"{t['rho']:+.2f}", f"[{t['ci95'][0]:+.2f}, {t['ci95'][1]:+.2f}]",
                          f"{t['p_value']:.2g}", t["picks"], f"{t['regret_pt']:.2f} pt"]
                         for label, tab in ((f"{len(equal)} at MACs >= {a.target_macs - a.macs_band:.2f}", table),
                                            (f"all {len(rows)}", table_all)) for f, t in tab.items()])
    md.append(f"\n{len(rows)} allocations ({', '.join(r['name'] for r in rows)}), MACs fraction "
              f"{min(r['macs_fraction'] for r in rows):.3f}-{max(r['macs_fraction'] for r in rows):.3f}, params "
              f"{min(r['params_fraction'] for r in rows):.3f}-{max(r['params_fraction'] for r in rows):.3f}; test "
              f"accuracy after {a.full_steps} KD steps {100 * res['final_test_top1']['min']:.2f}-"
              f"{100 * res['final_test_top1']['max']:.2f} %. Best: "
              f"{rows[int(np.argmin(final_err))]['name']}.")
    (RESULTS / f"allocation_fidelity{a.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
