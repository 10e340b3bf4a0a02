"""The demo: prune a trained network on the bundled data and show what the evolutionary search is for.

By default it starts from the network shipped with the package (VGG-16-BN width 0.25 trained on CIFAR-10; its
sha256 is checked at load) and, on the bundled 2,000 / 1,000-image CIFAR-10 subset:

1. NSGA-II on the whole-network problem (per-unit keep ratios; held-out error after adaptive BN vs MACs, seeded
   with nothing but its own samples) gives a Pareto front, re-scored on the test images;
2. the uniform L1 sweep (every unit keeps the same fraction of its largest-norm channels, adaptive BN) is the
   reference a practitioner would draw;
3. the paper's pipeline (sensitivity allocation, per-unit GA with the two-step fitness, a brief KD fine-tune) and the
   same pipeline with L1 channels at the same allocation give the fine-tuned points at 1/3 of the MACs.

``train=True`` keeps the older path: train the VGG on the bundled subset first (a network nobody would deploy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from .device import resolve_device, seed_everything
from .errors import EvopruneError
from .io import environment_info, prepare_run_dir, sha256_file, write_json

BUNDLED = Path(__file__).with_name("assets") / "vgg16_w0.25_cifar10.pt"
BUNDLED_SHA256 = "58eeab610e40aa5443e9bffbb8a3e9b803d4a51d636597319c005e78dbe2cf05"
SWEEP = (0.9, 0.75, 0.6, 0.5, 0.4, 0.3)  # uniform keep ratios of the L1 reference


def bundled_network(path: Path = BUNDLED, sha256: str = BUNDLED_SHA256) -> Path:
    """The shipped network's path, after checking it is the file we shipped."""
    if not path.is_file():
        raise EvopruneError(f"bundled network '{path}' is missing; reinstall evoprune (or use 'evoprune demo --train')")
    digest = sha256_file(path)
    if digest != sha256:
        raise EvopruneError(f"bundled network '{path}' is damaged (sha256 {digest[:12]}... != {sha256[:12]}...); "
                            "reinstall evoprune, or use 'evoprune demo --train'")
    return path


def run_demo(out: str = "runs/demo", overwrite: bool = False, train: bool = False, epochs: int = 30,
             target_macs: float = 0.33, budget: int = 72, seed: int = 0, device: str = "auto",
             progress: bool = True, log: Callable[[str], None] = print) -> Dict:
    """Run the demo into ``out``; returns the summary (rows of the table, the front, the reading)."""
    from .models import count_params
    from .session import build_setup, count_macs
    from .train import evaluate

    if not 0.0 < target_macs < 1.0:
        raise EvopruneError(f"--target-macs must be a fraction in (0, 1), got {target_macs}")
    dev = resolve_device(device)
    seed_everything(seed)
    checkpoint = None if train else str(bundled_network())
    s = build_setup("mini-cifar10", None, "vgg16" if train else None, 0.25, checkpoint, dev, batch_size=64,
                    seed=seed, calib_size=200)
    run = prepare_run_dir(out, overwrite=overwrite)
    write_json(run / "env.json", environment_info(str(dev), seed))
    if train:
        _train(s, run, epochs, dev, progress, log)
    base = evaluate(s.model, s.loaders.test, dev)
    base_macs = count_macs(s.model, s.data.in_channels, s.data.image_size)
    rows = [{"model": "unpruned", "params": count_params(s.model), "macs": base_macs, "macs_fraction": 1.0,
             "test_top1": base["top1"]}]
    log(f"[1/3] {'trained' if train else 'bundled'} VGG-16 (width 0.25): test top-1 {base['top1']:.4f} on the "
        f"{s.loaders.test.n_images} bundled test images, {base_macs:,} MACs")
    front, sweep = _front_and_sweep(s, budget, seed, log)
    from .demo_prune import demo_prune

    rows += demo_prune(s, run, target_macs, seed, base["top1"], progress, log)
    points = {"unpruned": [(1.0, base["top1"])],
              "uniform L1 sweep (adaptive BN, no fine-tune)": sweep,
              f"NSGA-II front, {budget} evaluations (adaptive BN, no fine-tune)": front}
    for r in rows[1:]:
        points[f"{r['model']} (KD fine-tune)"] = [(r["macs_fraction"], r["test_top1"])]
    from .plot import plot_points

    plot_points(points, run / "pareto", title="Demo: test accuracy vs MACs (bundled CIFAR-10 subset)")
    reading = _reading(front, sweep, rows, s.loaders.test.n_images)
    summary = {"out": str(run), "rows": rows, "front": front, "uniform_l1": sweep, "reading": reading}
    log("")
    log(format_table(rows))
    log("")
    log(reading)
    write_json(run / "summary.json", summary)
    return summary


def _train(s, run: Path, epochs: int, dev, progress: bool, log) -> None:
    from .models.checkpoint import save_checkpoint
    from .train import TrainConfig, evaluate, fit

    log(f"[0/3] training VGG-16 (width 0.25) on the bundled mini CIFAR-10 for {epochs} epochs")
    fit(s.model, s.loaders, TrainConfig(epochs=epochs, lr=0.05), dev, log_path=str(run / "train_metrics.jsonl"),
        progress=progress, evaluate_each_epoch=False,
        on_epoch=lambda e, r: log(f"  epoch {e:2d}  loss {r['train_loss']:.3f}  train acc {r['train_acc']:.3f}"))
    save_checkpoint(str(run / "baseline.pt"), s.model, dict(s.meta, accuracy=evaluate(s.model, s.loaders.test, dev)["top1"]))


def _front_and_sweep(s, budget: int, seed: int, log) -> tuple:
    """NSGA-II's front and the uniform L1 sweep, both scored on the test images after adaptive BN."""
    from .problems.network_pruning import NetworkPruningProblem
    from .strategies import run_strategy

    problem = NetworkPruningProblem(s.model, None, s.loaders, objectives=("error", "macs"), bn_batches=2,
                                    eval_batches=2, batch_size=64, seed=seed, name="demo")
    log(f"[2/3] NSGA-II on the whole-network problem: {budget} evaluations of (held-out error after adaptive BN, "
        "MACs)")
    res = run_strategy("nsga2", problem, budget, seed, pop_size=24)
    test = problem.variant(held_out=[b for b in s.loaders.test])
    m = test.measure(np.asarray(res.front_genomes))
    front = sorted((float(c), 1.0 - float(e)) for c, e in zip(m["macs"], m["error"]))
    ref = test.measure(test.uniform_genomes(SWEEP))
    sweep = sorted((float(c), 1.0 - float(e)) for c, e in zip(ref["macs"], ref["error"]))
    return front, sweep


def _interp(points: List[tuple], x: float) -> float:
    xs, ys = zip(*sorted(points))
    return float(np.interp(x, xs, ys))


def _reading(front, sweep, rows, n_test: int) -> str:
    """One honest paragraph computed from the numbers above."""
    lo, hi = max(min(p[0] for p in front), min(p[0] for p in sweep)), min(max(p[0] for p in front),
                                                                          max(p[0] for p in sweep))
    grid = [x for x in np.linspace(lo, hi, 9)] if hi > lo else []
    better = sum(_interp(front, x) > _interp(sweep, x) for x in grid)
    se = 100 * np.sqrt(0.25 / n_test)
    ga = next((r for r in rows if r["model"].startswith("GA")), None)
    l1 = next((r for r in rows if r["model"].startswith("L1")), None)
    text = (f"Reading: before any fine-tuning, the NSGA-II front is above the uniform L1 sweep at {better} of "
            f"{len(grid)} MACs levels where both exist (accuracy after adaptive BN only, so both are far below the "
            "unpruned network at small budgets).")
    if ga and l1:
        d = 100 * (ga["test_top1"] - l1["test_top1"])
        verdict = "within the noise" if abs(d) < 2 * se else ("ahead" if d > 0 else "behind")
        text += (f" After the same brief KD fine-tune at {ga['macs_fraction']:.2f} of the MACs, the GA's channels "
                 f"reach {100 * ga['test_top1']:.1f} % and L1's {100 * l1['test_top1']:.1f} % ({d:+.1f} pt, "
                 f"{verdict}: one standard error on {n_test} test images is about {se:.1f} pt). A few minutes of "
                 "KD on 1,800 images is not the full fine-tune; benchmarks/reproduce_cifar10.py runs that.")
    return text


def format_table(rows: List[Dict]) -> str:
    """Aligned text table of the demo's rows."""
    head = ["model", "params", "MACs", "of MACs", "test top-1"]
    body = [[r["model"], f"{r['params']:,}", f"{r['macs']:,}", f"{r['macs_fraction']:.3f}", f"{100 * r['test_top1']:.2f} %"]
            for r in rows]
    from .textable import format_table as text_table

    return text_table(head, body)
