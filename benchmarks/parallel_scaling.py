"""Scale-out of population evaluation: serial vs processes:2 vs dask:2 on this machine (issue 10).

Workload (stage 2, the expensive step worth distributing): :class:`evoprune.fitness.NetworkFitness` on unit
``features.14`` (64 channels) of a CIFAR VGG-16 at width 0.25 -- adaptive-BN re-estimation on 2 x 64 training images
and loss/accuracy on 2 x 128 held-out images of the bundled mini CIFAR-10, per candidate mask; the network before
the unit is cached (the evaluator's default). Random weights: throughput does not depend on training.

Measured per backend:

* start-up (pool / LocalCluster) and the first call, which ships the evaluator (~9 MB pickled) to each worker once;
* per-task overhead: 200 no-op tasks (throughput view), and per-call latency: one no-op task per worker, i.e.
  what a generation pays for the round trip when its population is split into one chunk per worker;
* stage-2 evaluations per second for populations of 2..16 fresh masks (one chunk per worker, as the strategies do);
* stage 1 (the reconstruction error, ~microseconds per individual) through the same backends at large populations,
  to show why it stays in-process.

From these, the crossover: a backend with W workers and per-call latency L beats serial when one generation's work
P * c exceeds L * W / (W - 1) (= 2 L for W = 2), c = seconds per individual. The scaling note in the results
extrapolates to N machines with the measured L and per-task overhead.

    python benchmarks/parallel_scaling.py          # ~2-4 min on 2 busy cores; writes results/parallel_scaling.json
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from _common import machine, save


def noop(x: Any) -> Any:
    return x


def spin(n: int = 3_000_000) -> float:
    """A fixed amount of pure-Python CPU work; returns its wall time."""
    t0 = time.perf_counter()
    acc = 0
    for i in range(n):
        acc += i & 7
    return time.perf_counter() - t0


def available_parallelism(workers: int = 2) -> float:
    """How many cores this job really gets now: ``workers * T(one spinner) / T(workers spinners at once)``.

    2.0 on an idle 2-core machine; ~1 when other jobs keep the cores busy (then no backend can speed anything up).
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(spin, [10_000] * workers)  # warm up the processes
        one = pool.apply(spin)
        both = max(pool.map(spin, [3_000_000] * workers))
    return workers * one / both


class CpuTimed:
    """Wraps a problem: ``evaluate`` appends a column with the CPU seconds it used (split evenly over its rows),
    so the driver learns how much compute the workers spent, apart from waiting and transfer."""

    def __init__(self, problem: Any) -> None:
        self.problem = problem

    def evaluate(self, pop: np.ndarray) -> np.ndarray:
        t0 = time.process_time()
        out = np.asarray(self.problem.evaluate(pop), dtype=float)
        cpu = time.process_time() - t0
        return np.concatenate([out, np.full((len(out), 1), cpu / max(1, len(out)))], axis=1)


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Masks:
    """Fresh distinct k-of-n masks (stage 2 caches by genome: a repeated mask would be free)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.rng, self.seen = n, np.random.default_rng(seed), set()

    def __call__(self, size: int) -> np.ndarray:
        out = []
        while len(out) < size:
            m = self.rng.permutation(self.n) < self.n // 2
            key = m.tobytes()
            if key not in self.seen:
                self.seen.add(key)
                out.append(m)
        return np.stack(out)


def measure_backend(spec: str, problem: Any, stage1: Any, masks: Masks, pops: List[int], s1_pops: List[int],
                    repeats: int) -> Dict[str, Any]:
    from evoprune.parallel import chunked_evaluate, make_map

    res: Dict[str, Any] = {"spec": spec, "available_parallelism_before": available_parallelism()}
    t0 = time.perf_counter()
    backend = make_map(spec)
    try:
        backend.map(noop, list(range(backend.n_workers)))  # spawn the worker processes (lazy for processes)
        res["startup_s"] = time.perf_counter() - t0
        w = backend.n_workers
        res["workers"] = w
        timed = CpuTimed(problem)
        t0 = time.perf_counter()
        chunked_evaluate(backend, timed.evaluate, masks(w))  # ships the evaluator once per worker
        res["first_call_s"] = time.perf_counter() - t0
        n_tasks = 200
        res["per_task_overhead_ms"] = 1e3 * _best_time(lambda: backend.map(noop, list(range(n_tasks))), 3) / n_tasks
        res["per_call_latency_ms"] = 1e3 * _best_time(lambda: backend.map(noop, list(range(w))), 20)
        rates, cpu = {}, {}
        for p in pops:
            best, cpu_s = float("inf"), 0.0
            for _ in range(repeats):
                t0 = time.perf_counter()
                F = chunked_evaluate(backend, timed.evaluate, masks(p))
                dt = time.perf_counter() - t0
                if dt < best:
                    best, cpu_s = dt, float(F[:, -1].mean())
            rates[str(p)], cpu[str(p)] = p / best, cpu_s
            print(f"  {spec:12s} stage 2, population {p:3d}: {p / best:6.2f} evaluations/s "
                  f"({cpu_s:.3f} CPU s each)", flush=True)
        res["stage2_evals_per_s"] = rates
        res["stage2_cpu_s_per_eval"] = cpu
        s1 = {}
        for p in s1_pops:
            pop = np.repeat(masks(1), p, axis=0)  # stage 1 has no cache: repeated rows cost the same
            t = _best_time(lambda: chunked_evaluate(backend, stage1.evaluate, pop), repeats)
            s1[str(p)] = p / t
            print(f"  {spec:12s} stage 1, population {p:6d}: {p / t:12,.0f} individuals/s", flush=True)
        res["stage1_individuals_per_s"] = s1
    finally:
        backend.close()
    res["available_parallelism_after"] = available_parallelism()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--unit", default="features.14")
    ap.add_argument("--bn-batches", type=int, default=2)
    ap.add_argument("--held-out-batches", type=int, default=2)
    ap.add_argument("--backends", default="serial,processes:2,dask:2")
    ap.add_argument("--populations", default="2,4,8,16")
    ap.add_argument("--stage1-populations", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="parallel_scaling.json")
    a = ap.parse_args()
    torch.set_num_threads(1)  # like each worker (the nanny / pool sets 1 thread per worker on 2 cores)
    torch.manual_seed(a.seed)

    from evoprune.data import load_dataset, make_loaders
    from evoprune.fitness import CalibrationData, NetworkFitness, ReconstructionFitness
    from evoprune.models import create_model
    from evoprune.problems.channel_selection import ChannelSelectionProblem
    from evoprune.pruning.space import PruningSpace

    model = create_model(a.model, width=a.width).eval()
    space = PruningSpace(model)
    unit = space.unit(a.unit)
    loaders = make_loaders(load_dataset("mini-cifar10"), batch_size=64, seed=a.seed)
    calib = CalibrationData(loaders.train_batches(a.bn_batches, batch_size=64, seed=a.seed),
                            loaders.calib_batches(a.held_out_batches, batch_size=128))
    stage2 = NetworkFitness.from_space(space, unit, calib)
    stage1 = ReconstructionFitness.from_space(space, unit, calib)
    n = unit.channels
    problem = ChannelSelectionProblem(n, n // 2, stage2, name=f"stage2[{a.model}-w{a.width}:{unit.name}]")
    problem1 = ChannelSelectionProblem(n, n // 2, stage1, name=f"stage1[{a.model}-w{a.width}:{unit.name}]")
    import cloudpickle

    evaluator_mb = len(cloudpickle.dumps(problem)) / 1e6
    masks = Masks(n, a.seed)
    t = _best_time(lambda: problem.evaluate(masks(4)), 2)
    c2 = t / 4
    big = masks(1)
    c1 = _best_time(lambda: problem1.evaluate(np.repeat(big, 20000, axis=0)), 3) / 20000
    print(f"unit {unit.name} ({n} channels), evaluator pickled {evaluator_mb:.1f} MB; in-process, 1 thread: "
          f"stage 2 {c2:.3f} s/candidate, stage 1 {c1 * 1e6:.2f} us/individual; load average {os.getloadavg()}")

    pops = [int(p) for p in a.populations.split(",")]
    s1_pops = [int(p) for p in a.stage1_populations.split(",")]
    results = []
    for spec in a.backends.split(","):
        print(f"backend {spec}", flush=True)
        results.append(measure_backend(spec, problem, problem1, masks, pops, s1_pops, a.repeats))

    serial = next((r for r in results if r["spec"] == "serial"), None)
    # on busy cores wall time overstates the work; CPU seconds per candidate is what an idle core would take
    c_idle = float(np.mean(list(serial["stage2_cpu_s_per_eval"].values()))) if serial else c2
    summary = {}
    for r in results:
        if r["spec"] == "serial" or serial is None:
            continue
        w, lat = r["workers"], r["per_call_latency_ms"] / 1e3
        work = lat * w / (w - 1) if w > 1 else float("inf")  # seconds of work per generation to break even
        speed2 = {p: r["stage2_evals_per_s"][p] / serial["stage2_evals_per_s"][p] for p in r["stage2_evals_per_s"]}
        speed1 = {p: r["stage1_individuals_per_s"][p] / serial["stage1_individuals_per_s"][p]
                  for p in r["stage1_individuals_per_s"]}
        # what idle cores would give: ceil(P / W) candidates per worker at the in-process cost, plus the latency
        ideal = {p: int(p) * c_idle / (-(-int(p) // w) * c_idle + lat) for p in r["stage2_evals_per_s"]}
        summary[r["spec"]] = {
            "stage2_speedup_vs_serial": speed2,
            "stage2_speedup_projected_idle_cores": ideal,
            "stage1_speedup_vs_serial": speed1,
            "break_even_work_per_generation_s": work,
            "break_even_population_stage2": work / c_idle,
            "break_even_population_stage1_latency_only": work / c1,
        }
        print(f"{r['spec']}: per-task {r['per_task_overhead_ms']:.2f} ms, per-call {r['per_call_latency_ms']:.1f} ms; "
              f"stage 2 speed-up {', '.join(f'P={p}: {s:.2f}x' for p, s in speed2.items())}; "
              f"stage 1 speed-up {', '.join(f'P={p}: {s:.2f}x' for p, s in speed1.items())}; break-even "
              f"{work * 1e3:.0f} ms of work per generation = {work / c_idle:.2f} stage-2 candidates or "
              f"{work / c1:,.0f} stage-1 individuals (before the cost of shipping the masks)")

    # Extrapolation to N machines x 1 worker each (tcp instead of loopback adds ~0.1-1 ms per message):
    # a generation of P stage-2 candidates takes  ceil(P / W) * c + L(W),  L(W) ~ L(2) + (W - 2) * per_task.
    dask = next((r for r in results if r["spec"].startswith("dask")), None)
    scaling = None
    if dask is not None:
        per_task, lat2 = dask["per_task_overhead_ms"] / 1e3, dask["per_call_latency_ms"] / 1e3
        scaling = {}
        for workers in (1, 2, 8, 32, 128):
            for p in (8, 32, 128):
                t_gen = -(-p // workers) * c_idle + lat2 + max(0, workers - 2) * per_task
                scaling[f"W={workers},P={p}"] = {"generation_s": t_gen, "evals_per_s": p / t_gen,
                                                 "efficiency": (p * c_idle / workers) / t_gen}
    save(a.out, {
        "workload": {"model": a.model, "width": a.width, "unit": unit.name, "channels": n,
                     "bn_images": sum(len(x) for x, _ in calib.train),
                     "held_out_images": sum(len(x) for x, _ in calib.held_out),
                     "evaluator_pickled_mb": evaluator_mb, "split": stage2.split_info},
        "in_process_1_thread": {"stage2_s_per_candidate": c2, "stage2_cpu_s_per_candidate": c_idle,
                                "stage1_us_per_individual": c1 * 1e6},
        "backends": results, "summary": summary, "model_extrapolation_dask": scaling,
        "load_average": os.getloadavg(), "machine": machine(),
        "note": "2 CPU cores shared with other jobs (load_average; available_parallelism ~1 means one core's "
                "worth was free): measured speed-ups are lower bounds of what idle cores give. Projections use "
                "the CPU seconds per candidate (what an idle core takes): generation = ceil(P/W) * c + L; "
                "break-even = L * W / (W - 1) of work per generation. Extrapolation (model_extrapolation_dask): "
                "L(W) = L(2) + (W - 2) * per-task overhead, one worker per core/machine.",
    })


if __name__ == "__main__":
    main()
