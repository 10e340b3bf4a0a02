"""Fidelity of stage 1: does a lower reconstruction error mean a more accurate pruned network?

For each unit of a trained CIFAR-10 VGG-16 (width 0.25) it draws random masks at a fixed keep ratio, scores them
with stage 1 (normalised reconstruction error of the consumers' BN-scaled outputs) and with stage 2 (held-out
accuracy and loss after adaptive BN), and reports Spearman's rank correlation per unit. A good stage 1 gives a
strongly negative correlation with accuracy (positive with loss). It also reports the centred variant of stage 1
(``center=True``: the error's per-channel mean, which the re-estimated BN absorbs, removed) from the same Q, the
split-half agreement of stage 2 with itself (the ceiling for any proxy on these masks), and where the mask a GA
finds by minimising stage 1 lands among the random masks' accuracies.

    python benchmarks/fitness_fidelity.py \\
        --checkpoint benchmarks/results/vgg16_w0.25_cifar10.pt \\
        --data imagefolder:../shared/datasets/cifar10-jpeg.tar.gz       # the defaults

All 13 units by default (``--units every:2`` halves the time); 1 training batch of 256 images for Q and BN
re-estimation, 2 held-out batches of 256 for accuracy, 1 torch thread: ~11 min measured on 2 busy shared cores.
Writes benchmarks/results/fitness_fidelity.json and .md. Development run (seconds per unit):

    evoprune train --model vgg16 --width 0.25 --data mini-cifar10 --epochs 3 --out /tmp/x
    python benchmarks/fitness_fidelity.py --checkpoint /tmp/x/model.pt --data mini-cifar10 --out-name /tmp/fid
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _common import RESULTS, machine, save, shared_cifar10

from evoprune.textable import markdown_table


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(np.asarray(a, float)), rankdata(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rows_table(rows: list) -> list:
    """The per-unit markdown table of the benchmark's rows (its JSON's ``rows``)."""
    def f3(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    return markdown_table(
        ["unit", "ch", "kept", "rho(e1, acc)", "rho(e1, loss)", "centred rho(acc)", "centred rho(loss)",
         "stage 2 half/half rho(acc) / rho(loss)", "GA-best e1", "GA-best acc (pct)", "random e1 min-max",
         "random acc min / mean / max"],
        [[r["unit"], r["channels"], r["keep"], f3(r["spearman_error_accuracy"]), f3(r["spearman_error_loss"]),
          f3(r["spearman_centred_accuracy"]), f3(r["spearman_centred_loss"]),
          f"{f3(r['stage2_split_half_accuracy'])} / {f3(r['stage2_split_half_loss'])}", f"{r['ga_best_error']:.3f}",
          f"{r['ga_best_accuracy']:.3f} ({r['ga_best_accuracy_percentile']:.0f})",
          f"{r['error_min']:.3f}-{r['error_max']:.3f}",
          f"{r['accuracy_min']:.3f} / {r['accuracy_mean']:.3f} / {r['accuracy_max']:.3f}"] for r in rows],
        align="lrrrrrrlrlll")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(RESULTS / "vgg16_w0.25_cifar10.pt"))
    ap.add_argument("--data", default=None, help="dataset (default: imagefolder: the shared CIFAR-10 JPEG archive)")
    ap.add_argument("--masks", type=int, default=200, help="random masks per unit")
    ap.add_argument("--keep", type=float, default=0.5, help="keep ratio of every mask")
    ap.add_argument("--units", default="all",
                    help="'all' (~11 min measured on 2 busy cores), 'every:N' (every N-th unit) or a list")
    ap.add_argument("--train-batches", type=int, default=1, help="training batches: stage-1 Q and BN re-estimation")
    ap.add_argument("--held-out-batches", type=int, default=2, help="held-out calibration batches for accuracy")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-positions", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on shared busy cores 2 threads measured 4x slower per forward)")
    ap.add_argument("--ga-population", type=int, default=100)
    ap.add_argument("--ga-generations", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-name", default="fitness_fidelity",
                    help="result file stem (in benchmarks/results, or a path)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if not Path(a.checkpoint).exists():
        raise SystemExit(f"error: checkpoint {a.checkpoint} not found; train one (benchmarks/train_baseline.py "
                         "--width 0.25 --epochs 15 --save-checkpoint ...) or pass --checkpoint")
    data_name = a.data or f"imagefolder:{shared_cifar10()}"

    from evoprune.data import load_dataset, make_loaders
    from evoprune.fitness import CalibrationData, NetworkFitness, ReconstructionFitness
    from evoprune.models.checkpoint import load_model
    from evoprune.problems.channel_selection import ChannelSelectionProblem
    from evoprune.pruning.space import PruningSpace
    from evoprune.strategies.ga import ga
    from evoprune.train import evaluate

    t_start = time.perf_counter()
    model, meta = load_model(a.checkpoint)
    model.eval()
    data = load_dataset(data_name)
    loaders = make_loaders(data, batch_size=a.batch_size, seed=a.seed, eval_batch_size=a.batch_size)
    calib = CalibrationData.from_loaders(loaders, a.train_batches, a.held_out_batches, a.batch_size, a.seed)
    base = evaluate(model, calib.held_out)
    space = PruningSpace(model)
    names = space.names
    if a.units == "all":
        chosen = names
    elif a.units.startswith("every:"):
        chosen = names[::int(a.units.split(":", 1)[1])]
    else:
        chosen = [s.strip() for s in a.units.split(",") if s.strip()]
    print(f"model {meta.get('arch')} (held-out top-1 {base['top1']:.3f} on {base['n']} images), "
          f"{len(chosen)}/{len(names)} units, {a.masks} masks each at keep {a.keep}")
    rng = np.random.default_rng(a.seed)
    rows = []
    print(f"{'unit':<13}{'n':>4}{'k':>4} | {'rho(e1,acc)':>11}{'(e1,loss)':>10} | {'centred':>8}{'':>7} | "
          f"{'stage2 half/half':>16} | {'GA-best acc':>11}{'pct':>5} | {'random acc':>17} | {'s':>5}")
    for name in chosen:
        t0 = time.perf_counter()
        u = space.unit(name)
        n = u.channels
        k = max(1, int(round(a.keep * n)))
        masks = torch.from_numpy(np.stack([rng.permutation(n) < k for _ in range(a.masks)]))
        s1 = ReconstructionFitness.from_space(space, u, calib, max_positions=a.max_positions, seed=a.seed)
        e1 = s1.error(masks).numpy()
        e1c = s1.with_center(True).error(masks).numpy()
        s2 = NetworkFitness.from_space(space, u, calib)
        r = s2.evaluate(masks).numpy()
        loss, acc = r[:, 0], r[:, 1]
        # stage 2 against itself on two disjoint halves of the held-out batches: the ceiling for any proxy
        per = s2.per_batch(masks).numpy()
        h = max(1, per.shape[1] // 2)
        half = [per[:, :h].sum(1), per[:, h:].sum(1)] if per.shape[1] >= 2 else None
        # does minimising stage 1 pay off? the GA's best stage-1 mask, placed among the random masks
        problem = ChannelSelectionProblem(n, k, s1)
        res = ga(problem, budget=a.ga_population * (a.ga_generations + 1), seed=a.seed, pop_size=a.ga_population,
                 generations=a.ga_generations)
        best = torch.from_numpy(np.asarray(res.best_genome, dtype=bool))[None]
        ga_loss, ga_acc = (float(v) for v in s2.evaluate(best)[0])
        row = {"unit": name, "channels": n, "keep": k, "consumers": [c.name for c in u.consumers],
               "spearman_error_accuracy": spearman(e1, acc), "spearman_error_loss": spearman(e1, loss),
               "spearman_centred_accuracy": spearman(e1c, acc), "spearman_centred_loss": spearman(e1c, loss),
               "stage2_split_half_accuracy": spearman(half[0][:, 1], half[1][:, 1]) if half else None,
               "stage2_split_half_loss": spearman(half[0][:, 0], half[1][:, 0]) if half else None,
               "accuracy_min": float(acc.min()), "accuracy_mean": float(acc.mean()), "accuracy_max": float(acc.max()),
               "loss_mean": float(loss.mean()), "error_min": float(e1.min()), "error_mean": float(e1.mean()),
               "error_max": float(e1.max()),
               "ga_best_error": float(res.best_fitness[0]), "ga_best_accuracy": ga_acc, "ga_best_loss": ga_loss,
               "ga_best_accuracy_percentile": float(100.0 * np.mean(acc < ga_acc) + 50.0 * np.mean(acc == ga_acc)),
               "ga_best_loss_percentile": float(100.0 * np.mean(loss > ga_loss)),
               "stage2_seconds_per_mask": s2.budget()["seconds_per_evaluation"],
               "stage2_split": s2.split_info, "seconds": time.perf_counter() - t0}
        rows.append(row)
        sh = (f"{row['stage2_split_half_accuracy']:>8.3f}{row['stage2_split_half_loss']:>8.3f}" if half
              else f"{'-':>16}")
        print(f"{name:<13}{n:>4}{k:>4} | {row['spearman_error_accuracy']:>11.3f}{row['spearman_error_loss']:>10.3f} | "
              f"{row['spearman_centred_accuracy']:>8.3f}{row['spearman_centred_loss']:>7.3f} | {sh} | "
              f"{ga_acc:>11.3f}{row['ga_best_accuracy_percentile']:>5.0f} | "
              f"{acc.min():.3f}/{acc.mean():.3f}/{acc.max():.3f} | {row['seconds']:>5.0f}", flush=True)

    def med(key: str) -> float:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.nanmedian(vals)) if vals else float("nan")

    keys = ["spearman_error_accuracy", "spearman_error_loss", "spearman_centred_accuracy", "spearman_centred_loss",
            "stage2_split_half_accuracy", "stage2_split_half_loss", "ga_best_accuracy_percentile"]
    medians = {k_: med(k_) for k_ in keys}
    print("medians: " + ", ".join(f"{k_} {v:.3f}" for k_, v in medians.items()))
    result = {
        "checkpoint": a.checkpoint, "arch": meta.get("arch"), "model_kwargs": meta.get("model_kwargs"),
        "data": data_name, "baseline_held_out_top1": base["top1"], "masks_per_unit": a.masks, "keep_ratio": a.keep,
        "train_batches": a.train_batches, "held_out_batches": a.held_out_batches, "batch_size": a.batch_size,
        "held_out_images": base["n"], "max_positions": a.max_positions, "seed": a.seed,
        "ga": {"population": a.ga_population, "generations": a.ga_generations},
        "units_evaluated": len(rows), "units_total": len(names), "medians": medians,
        "rows": rows, "wall_time_s": time.perf_counter() - t_start, "threads": a.threads,
        "load_average": os.getloadavg(), "machine": machine(),
    }
    stem = a.out_name
    if os.sep in stem or "/" in stem:
        out = Path(stem)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        md_path = out.with_suffix(".md")
    else:
        save(f"{stem}.json", result)
        md_path = RESULTS / f"{stem}.md"
    md = [f"# Stage-1 fidelity: {meta.get('arch')} {meta.get('model_kwargs')} on {Path(data_name).name}", "",
          f"Spearman rank correlation between the stage-1 reconstruction error (e1) and stage 2 (held-out accuracy "
          f"and loss after adaptive BN) over {a.masks} random masks per unit at keep ratio {a.keep}; "
          f"{base['n']} held-out images (unpruned top-1 {base['top1']:.3f}), {a.train_batches}x{a.batch_size} "
          "training images for Q and BN re-estimation. *centred*: e1 with its per-channel mean removed (what a "
          "re-estimated BN absorbs). *stage 2 half/half*: stage 2 ranked on one half of the held-out images vs the "
          "other -- the ceiling for any proxy. *GA-best*: the mask a GA "
          f"({a.ga_population} x {a.ga_generations}) finds by minimising e1, its accuracy and its percentile among "
          "the random masks' accuracies.", ""] + rows_table(rows)
    md += ["", "Medians: " + "; ".join(f"{k_} {v:.3f}" for k_, v in medians.items()) +
           f". Wall time {result['wall_time_s']:.0f} s ({a.threads} thread(s), load average "
           f"{os.getloadavg()[0]:.1f})."]
    md_path.write_text("\n".join(md) + "\n")
    print(f"wrote {md_path}")


if __name__ == "__main__":
    main()
