"""The demo's pruning half: GA vs a uniform L1 baseline at the same MACs target, plus a Pareto plot."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Dict, List

from .models import count_params


def demo_prune(s, run: Path, target_macs: float, seed: int, device, progress: bool,
               log: Callable[[str], None]) -> List[Dict]:
    from . import pipeline
    from .io import prepare_run_dir
    from .session import count_macs
    from .train import evaluate

    rows = []
    common = dict(target_macs=target_macs, seed=seed, batch_size=64, pop_size=40, generations=40,
                  finetune_steps=15, finetune_epochs=3, finetune_lr=0.01, bn_batches=3, eval_batches=2,
                  calib_batches=3, stage2_top_k=2, stage2_every=20)
    log(f"[2/3] pruning with the GA (two-step fitness) to {target_macs:.2f} of the MACs, KD fine-tune")
    ga_dir = prepare_run_dir(run / "prune-ga", overwrite=True)
    sens = None
    ga_model, ga_rep = pipeline.run(s.model, s.loaders, pipeline.PruneConfig(selector="ga", **common), out=ga_dir,
                                    meta=dict(s.meta, source="baseline.pt"), log=lambda m: log("  " + m),
                                    progress=progress)
    from .sensitivity import Sensitivity

    sens = Sensitivity.from_json(ga_rep.extra["sensitivity"])
    rows.append(_row("GA (paper), KD", ga_model, ga_rep, s))
    log("[3/3] baseline at the same allocation: L1-norm channel choice, same fine-tune")
    l1_dir = prepare_run_dir(run / "prune-l1", overwrite=True)
    l1_model, l1_rep = pipeline.run(s.model, s.loaders, pipeline.PruneConfig(selector="l1", **common), out=l1_dir,
                                    meta=dict(s.meta, source="baseline.pt"), log=lambda m: log("  " + m),
                                    progress=progress, sensitivity=sens)
    rows.append(_row("L1-norm (Li et al.), KD", l1_model, l1_rep, s))
    try:
        from .plot import plot_points

        plot_points({"baseline": [(1.0, rows and s_base(s, device))],
                     "GA": [(ga_rep.final["macs_ratio"], ga_rep.final["test_top1"])],
                     "L1": [(l1_rep.final["macs_ratio"], l1_rep.final["test_top1"])]}, run / "pareto")
    except Exception:  # the plot is a convenience; the table is the demo's result
        pass
    return rows


def s_base(s, device) -> float:
    from .train import evaluate

    return evaluate(s.model, s.loaders.test, device)["top1"]


def _row(name, model, rep, s) -> Dict:
    return {"model": name, "params": rep.final["params"], "macs": rep.final["macs"], "test_top1": rep.final["test_top1"]}
