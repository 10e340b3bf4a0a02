"""Analytic cost model vs building the pruned model and counting with FlopCounterMode (VGG-16-BN, CIFAR, width 1).

10,000 random decisions (each unit keeps a uniform random number of random channels) are costed with
``CostModel.macs`` + ``CostModel.params`` (validated masks, one decision at a time) and with ``macs_batch`` /
``params_batch`` (one matrix product for all). The reference -- ``apply`` (deepcopy + surgery), then
``FlopCounterMode`` and ``sum(p.numel())`` -- is run on a sample of the same decisions and its per-model time
extrapolated. Every sampled decision must agree exactly (max deviation 0).

    python benchmarks/cost_model.py [--n 10000] [--sample 20] [--threads 1]

Writes benchmarks/results/cost_model.json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import machine, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="random decisions costed by the cost model")
    ap.add_argument("--sample", type=int, default=20, help="decisions built and counted with FlopCounterMode")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from evoprune.models import create_model
    from evoprune.pruning import CostModel, PruningSpace, apply, flop_counter_macs, model_params

    model = create_model("vgg16").eval()
    t = time.perf_counter()
    space = PruningSpace(model)
    t_space = time.perf_counter() - t
    t = time.perf_counter()
    cost = CostModel(space)
    t_cost = time.perf_counter() - t
    rng = np.random.default_rng(a.seed)
    decisions = []
    for _ in range(a.n):
        masks = {}
        for u in space.units:
            keep = np.zeros(u.channels, dtype=bool)
            keep[rng.choice(u.channels, int(rng.integers(1, u.channels + 1)), replace=False)] = True
            masks[u.name] = keep
        decisions.append(masks)

    t = time.perf_counter()
    scalar = [(cost.macs(m), cost.params(m)) for m in decisions]
    t_scalar = (time.perf_counter() - t) / a.n
    counts = np.stack([space.keep_counts(m, validate=False) for m in decisions])
    t = time.perf_counter()
    bm, bp = cost.macs_batch(counts), cost.params_batch(counts)
    t_batch = (time.perf_counter() - t) / a.n
    assert all(int(bm[i]) == scalar[i][0] and int(bp[i]) == scalar[i][1] for i in range(a.n))

    dev_macs, dev_params, t_build, t_count = 0, 0, 0.0, 0.0
    for i in range(a.sample):
        m = decisions[i]
        t0 = time.perf_counter()
        pruned = apply(model, m, space)
        t1 = time.perf_counter()
        macs, params = flop_counter_macs(pruned, space.input_shape), model_params(pruned)
        t2 = time.perf_counter()
        t_build += t1 - t0
        t_count += t2 - t1
        dev_macs = max(dev_macs, abs(macs - scalar[i][0]))
        dev_params = max(dev_params, abs(params - scalar[i][1]))
    t_build /= a.sample
    t_count /= a.sample
    t_ref = t_build + t_count

    ratios = np.array([s[0] for s in scalar]) / cost.base_macs
    result = {
        "model": "vgg16 (CIFAR VGG-16-BN, width 1, 32x32)",
        "units": len(space), "channels": int(sum(space.sizes)),
        "base_macs": cost.base_macs, "base_params": cost.base_params,
        "decisions": a.n, "sampled_for_reference": a.sample, "threads": a.threads,
        "macs_ratio_range": [float(ratios.min()), float(ratios.max())],
        "space_build_s": t_space, "cost_model_build_s": t_cost,
        "cost_model_per_decision_us": t_scalar * 1e6,
        "cost_model_batch_per_decision_us": t_batch * 1e6,
        "reference_build_per_model_ms": t_build * 1e3,
        "reference_flopcounter_per_model_ms": t_count * 1e3,
        "reference_per_model_ms": t_ref * 1e3,
        "reference_extrapolated_s": t_ref * a.n,
        "cost_model_total_s": t_scalar * a.n,
        "speedup_scalar": t_ref / t_scalar,
        "speedup_scalar_vs_counting_only": t_count / t_scalar,
        "speedup_batch": t_ref / t_batch,
        "max_deviation_macs": int(dev_macs), "max_deviation_params": int(dev_params),
        "machine": machine(),
    }
    print(f"VGG-16 ({len(space)} units): {a.n:,} random decisions, MACs ratio "
          f"{ratios.min():.3f}..{ratios.max():.3f}")
    print(f"{'method':44s} {'per decision':>14s} {'10k decisions':>14s}")
    print(f"{'build + FlopCounterMode + numel (sample ' + str(a.sample) + ')':44s} {t_ref * 1e3:11.1f} ms "
          f"{t_ref * a.n:12.1f} s")
    print(f"{'  of which FlopCounterMode + numel only':44s} {t_count * 1e3:11.1f} ms {t_count * a.n:12.1f} s")
    print(f"{'CostModel.macs + .params (validated masks)':44s} {t_scalar * 1e6:11.1f} us {t_scalar * a.n:12.3f} s")
    print(f"{'CostModel.macs_batch + .params_batch':44s} {t_batch * 1e6:11.3f} us {t_batch * a.n:12.4f} s")
    print(f"speed ratio: {t_ref / t_scalar:,.0f}x (scalar), {t_ref / t_batch:,.0f}x (batch); "
          f"vs counting only {t_count / t_scalar:,.0f}x")
    print(f"max deviation on the {a.sample} built models: MACs {dev_macs}, params {dev_params}")
    save("cost_model.json", result)
    if dev_macs or dev_params:
        raise SystemExit("cost model deviates from the built models")


if __name__ == "__main__":
    main()
