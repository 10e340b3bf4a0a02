"""CPU latency of CIFAR VGG-16-BN (width 1) unpruned vs pruned to ~1/3 of its MACs, at batch 1 and batch 64.

The pruned model keeps the same fraction of every unit, chosen by L1 norm, with the fraction found by bisection on
the exact cost model so that MACs land at 1/3 of the original (weights are random: latency does not depend on
them). Latency: median of repeated forwards after a warm-up, eval mode, inference_mode, fixed thread count; the
two models are measured in alternating rounds (the figure is the median of the round medians), so that background
load on a shared machine hits both alike.

    python benchmarks/latency.py [--threads 1] [--repeats 30]

Writes benchmarks/results/latency.json (with machine, date and load average: on a shared machine the load shows
how much to trust the absolute numbers; the ratio is more stable).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from _common import machine, save


def uniform_l1_masks(model, space, cost, target: float):
    """L1 masks keeping one ratio r of every unit, with r bisected so that MACs ~= target * base."""
    from evoprune.pruning import IMPORTANCE, keep_mask

    scores = {u.name: IMPORTANCE["l1"](model, space, u) for u in space.units}

    def masks_for(r: float):
        return {u.name: keep_mask(scores[u.name], r, min_keep=u.min_keep, groups=u.channel_groups)
                for u in space.units}

    lo, hi = 1e-3, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost.macs(masks_for(mid)) > target * cost.base_macs:
            hi = mid
        else:
            lo = mid
    best = min((lo, hi), key=lambda r: abs(cost.macs(masks_for(r)) / cost.base_macs - target))
    return best, masks_for(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30, help="timed runs at batch 1 (batch 64: a third of it)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds per batch size")
    ap.add_argument("--target", type=float, default=1 / 3, help="MACs of the pruned model / MACs of the original")
    a = ap.parse_args()

    from evoprune.models import create_model
    from evoprune.pruning import CostModel, PruningSpace, apply, measure_latency

    torch.manual_seed(0)
    model = create_model("vgg16").eval()
    space = PruningSpace(model)
    cost = CostModel(space)
    ratio, masks = uniform_l1_masks(model, space, cost, a.target)
    pruned = apply(model, masks, space).eval()
    models = {"unpruned": (model, space.full_masks()), "pruned": (pruned, masks)}
    rows = [{"model": k, "macs": cost.macs(mk), "params": cost.params(mk)} for k, (_, mk) in models.items()]
    # interleaved rounds: on a shared machine both models then see the same background load
    for bs, reps, warm in ((1, a.repeats, 10), (64, max(3, a.repeats // 3), 2)):
        per_round = max(1, reps // a.rounds)
        runs = {k: [] for k in models}
        for i in range(a.rounds):
            for k in (list(models) if i % 2 == 0 else list(models)[::-1]):
                runs[k].append(measure_latency(models[k][0], (3, 32, 32), bs, repeats=per_round,
                                               warmup=warm if i == 0 else 1, threads=a.threads))
        for row in rows:
            rs = runs[row["model"]]
            med = float(np.median([r["median_ms"] for r in rs]))
            row[f"batch{bs}"] = {"median_ms": med, "per_image_ms": med / bs, "batch_size": bs,
                                 "round_medians_ms": [r["median_ms"] for r in rs], "rounds": a.rounds,
                                 "repeats_per_round": per_round, "threads": rs[0]["threads"]}
    base, small = rows
    print(f"VGG-16-BN CIFAR (width 1), uniform L1 keep ratio {ratio:.3f}; {a.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'model':10s} {'MACs (M)':>9s} {'params (M)':>11s} {'b=1 ms':>9s} {'b=64 ms':>9s} {'b=64 ms/img':>12s}")
    for r in rows:
        print(f"{r['model']:10s} {r['macs'] / 1e6:9.1f} {r['params'] / 1e6:11.2f} {r['batch1']['median_ms']:9.2f} "
              f"{r['batch64']['median_ms']:9.1f} {r['batch64']['per_image_ms']:12.3f}")
    speed1 = base["batch1"]["median_ms"] / small["batch1"]["median_ms"]
    speed64 = base["batch64"]["median_ms"] / small["batch64"]["median_ms"]
    print(f"MACs x{base['macs'] / small['macs']:.2f} fewer; latency speed-up x{speed1:.2f} (batch 1), "
          f"x{speed64:.2f} (batch 64)")
    save("latency.json", {
        "model": "vgg16 (CIFAR VGG-16-BN, width 1, 32x32 input)", "selection": "uniform L1 keep ratio, bisection",
        "keep_ratio": ratio, "target_macs_ratio": a.target, "macs_ratio": small["macs"] / base["macs"],
        "kept_channels": {k: int(np.count_nonzero(v)) for k, v in masks.items()},
        "threads": a.threads, "load_average_1min": os.getloadavg()[0], "rows": rows,
        "speedup_batch1": speed1, "speedup_batch64": speed64, "machine": machine(),
    })


if __name__ == "__main__":
    main()
