"""Throughput of the two-step fitness on a CIFAR VGG-16 (width 1) unit with 512 channels.

Measures, on the unit ``features.34`` (512 channels) whose consumer ``features.37`` is a 512-channel 3x3 conv:

* calibration: time to build Q and the peak extra resident memory while doing it;
* stage 1 vs the naive reference (one masked float32 forward pass per individual), individuals per second and
  their ratio (target >= 1000x), plus a consumer-only naive pass (cached inputs) for context, and their agreement;
* a full GA (population 100, 100 generations, stage 1 only) on that unit: wall time (target < 2 s on 2 cores);
* stage 2: seconds per candidate, with the cached prefix (default) and with a full forward per candidate.

Random weights (throughput does not depend on training); calibration images from the bundled mini CIFAR-10.

    python benchmarks/fitness_throughput.py            # writes benchmarks/results/fitness_throughput.json
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from _common import machine, save


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def _rate(fn, n_items: int, min_time: float = 1.0) -> float:
    """Items per second of ``fn`` (repeated until ``min_time`` has passed)."""
    fn()
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return reps * n_items / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", default="features.34")
    ap.add_argument("--train-batches", type=int, default=4, help="calibration batches (stage 1, BN re-estimation)")
    ap.add_argument("--held-out-batches", type=int, default=2, help="held-out batches for stage 2")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--naive-masks", type=int, default=3)
    ap.add_argument("--stage2-masks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    from evoprune.data import load_dataset, make_loaders
    from evoprune.fitness import (CalibrationData, NaiveReconstruction, NetworkFitness, ReconstructionFitness,
                                  consumers_of)
    from evoprune.models import create_model
    from evoprune.pruning.space import PruningSpace

    model = create_model("vgg16", width=1.0).eval()
    space = PruningSpace(model)
    unit = space.unit(a.unit)
    cons = consumers_of(space, unit)
    print(f"unit {unit.name}: {unit.channels} channels, consumers "
          f"{[(c.name, c.module.out_channels) for c in cons]}")
    loaders = make_loaders(load_dataset("mini-cifar10"), batch_size=a.batch_size, seed=a.seed)
    calib = CalibrationData.from_loaders(loaders, a.train_batches, a.held_out_batches, a.batch_size, a.seed)
    images = sum(len(x) for x, _ in calib.train)
    n = unit.channels
    rng = np.random.default_rng(a.seed)
    pop = torch.from_numpy(np.stack([rng.permutation(n) < n // 2 for _ in range(a.population)]))

    # calibration (first heavy step: the RSS high-water mark before it is the baseline)
    rss0 = _rss_peak_mb()
    t0 = time.perf_counter()
    s1 = ReconstructionFitness(model, cons, calib.train, n=n, max_positions=None, unit=unit.name)
    t_calib = time.perf_counter() - t0
    extra_mb = _rss_peak_mb() - rss0
    print(f"calibration on {images} images: {t_calib:.2f} s, peak extra RSS {extra_mb:.0f} MB "
          f"(includes the forward pass), Q via {s1.info.consumers[0]['method']}, "
          f"{s1.info.consumers[0]['positions']} positions")
    t0 = time.perf_counter()
    s1_f32 = ReconstructionFitness(model, cons, calib.train, n=n, max_positions=None, dtype=torch.float32)
    t_calib32 = time.perf_counter() - t0

    # stage 1 vs naive
    s1_rate = _rate(lambda: s1.evaluate(pop), len(pop))
    s1_rate32 = _rate(lambda: s1_f32.evaluate(pop), len(pop))
    # the naive baselines compute in the network's float32 (float64 convs take CPU slow paths: unfair to them)
    naive = NaiveReconstruction(model, cons, calib.train, n=n, dtype=torch.float32)
    few = pop[:a.naive_masks]
    t0 = time.perf_counter()
    e_naive = naive.evaluate(few)[:, 0]
    naive_rate = len(few) / (time.perf_counter() - t0)
    local = NaiveReconstruction(model, cons, calib.train, n=n, full_forward=False, dtype=torch.float32)
    t0 = time.perf_counter()
    e_local = local.evaluate(few)[:, 0]
    local_rate = len(few) / (time.perf_counter() - t0)
    e_s1 = s1.evaluate(few)[:, 0]
    rel = float(((e_s1 - e_naive).abs() / e_naive).max())
    rel_local = float(((e_s1 - e_local).abs() / e_local).max())
    rel32 = float(((s1_f32.evaluate(few)[:, 0] - e_naive).abs() / e_naive).max())
    print(f"stage 1: {s1_rate:,.0f} individuals/s (float64), {s1_rate32:,.0f}/s (float32)")
    print(f"naive (masked forward per individual): {naive_rate:.3f} individuals/s -> "
          f"ratio {s1_rate / naive_rate:,.0f}x")
    print(f"naive consumer-only (cached inputs): {local_rate:.2f} individuals/s -> ratio {s1_rate / local_rate:,.0f}x")
    print(f"max relative difference stage 1 vs naive (float32 forward): {rel:.2e} (float32 Q: {rel32:.2e})")

    # full GA, stage 1 only
    ga_result = None
    try:
        from evoprune.problems.channel_selection import ChannelSelectionProblem
        from evoprune.strategies.ga import ga

        problem = ChannelSelectionProblem(n, n // 2, s1)
        budget = a.population * (a.generations + 1)
        t0 = time.perf_counter()
        res = ga(problem, budget=budget, seed=a.seed, pop_size=a.population, generations=a.generations,
                 stagnation=None)
        t_ga = time.perf_counter() - t0
        ga_result = {"wall_time_s": t_ga, "evaluations": int(res.evaluations), "best_error": float(res.best_fitness[0]),
                     "random_mean_error": float(s1.evaluate(pop)[:, 0].mean()),
                     "generations": a.generations, "population": a.population}
        print(f"GA ({a.population} x {a.generations} generations, stage 1): {t_ga:.2f} s wall, "
              f"{res.evaluations} evaluations, best error {float(res.best_fitness[0]):.4f} "
              f"(random k-subsets: {ga_result['random_mean_error']:.4f})")
    except ImportError as exc:
        print(f"GA skipped: {exc}")

    # stage 2
    s2 = NetworkFitness(model, cons, calib.train, calib.held_out, n=n, unit=unit.name)
    s2.evaluate(pop[:a.stage2_masks])
    s2_full = NetworkFitness(model, cons, calib.train, calib.held_out, n=n, unit=unit.name, split="full")
    s2_full.evaluate(pop[:a.stage2_masks])
    b, bf = s2.budget(), s2_full.budget()
    held = sum(len(x) for x, _ in calib.held_out)
    print(f"stage 2 ({images} BN images + {held} held-out images): {b['seconds_per_evaluation']:.3f} s/candidate "
          f"with the cached prefix ({b['split']}), {bf['seconds_per_evaluation']:.3f} s/candidate with a full "
          f"forward")

    save("fitness_throughput.json", {
        "model": "vgg16", "width": 1.0, "unit": unit.name, "channels": n,
        "consumers": [c.name for c in cons], "calibration_images": images, "held_out_images": held,
        "calibration": {"seconds": t_calib, "seconds_float32": t_calib32, "peak_extra_rss_mb": extra_mb,
                        "gram": s1.info.consumers},
        "stage1_individuals_per_s": s1_rate, "stage1_float32_individuals_per_s": s1_rate32,
        "naive_individuals_per_s": naive_rate, "ratio": s1_rate / naive_rate,
        "naive_consumer_only_individuals_per_s": local_rate, "ratio_consumer_only": s1_rate / local_rate,
        "max_rel_diff_vs_naive": rel, "max_rel_diff_vs_consumer_only": rel_local, "max_rel_diff_float32": rel32,
        "ga_stage1": ga_result,
        "stage2": {"seconds_per_candidate": b["seconds_per_evaluation"], "setup_seconds": b["setup_seconds"],
                   "split": b["split"], "bn_reestimated": b["bn_reestimated"],
                   "seconds_per_candidate_full_forward": bf["seconds_per_evaluation"]},
        "population": a.population, "threads": a.threads, "load_average": os.getloadavg(), "machine": machine(),
    })


if __name__ == "__main__":
    main()
