"""The demo's pipeline half: the paper's GA vs the L1-norm criterion at the same allocation and fine-tune."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

# small settings so the whole demo stays within minutes on 2 cores; the paper-faithful ones are prune's defaults
SETTINGS = dict(batch_size=64, pop_size=20, generations=20, finetune_steps=15, finetune_epochs=3, finetune_lr=0.01,
                bn_batches=2, eval_batches=2, calib_batches=2, stage2_top_k=2, stage2_every=10, finalists=3,
                sensitivity_ratios=(0.75, 0.5, 0.25),
                refit=False)  # the paper's pipeline: the GA's channels vs L1's without prune's default refit


def demo_prune(s, run: Path, target_macs: float, seed: int, base_top1: float, progress: bool,
               log: Callable[[str], None]) -> List[Dict]:
    """Prune the demo's baseline twice (GA, L1) with identical ratios and fine-tuning; return table rows."""
    from . import pipeline
    from .io import prepare_run_dir

    common = dict(SETTINGS, target_macs=target_macs, seed=seed)
    rows = []
    sens = None
    for label, selector in (("GA + two-step fitness", "ga"), ("L1 norm (Li et al.)", "l1")):
        log(f"[3/3] the paper's pipeline to {target_macs:.2f} of the MACs, channels chosen by {label}")
        out = prepare_run_dir(run / f"prune-{selector}", overwrite=True)
        model, rep = pipeline.run(s.model, s.loaders, pipeline.PruneConfig(selector=selector, **common), out=out,
                                  meta=dict(s.meta, source=str(s.meta.get("source", "bundled network"))), log=lambda m: log("  " + m),
                                  progress=progress, sensitivity=sens)
        if sens is None:  # the second selector reuses the curves: same ratios, same order, fair comparison
            from .sensitivity import Sensitivity

            sens = Sensitivity.from_json(rep.extra["sensitivity"])
        rows.append({"model": label, "params": rep.final["params"], "macs": rep.final["macs"],
                     "macs_fraction": rep.final["macs_ratio"], "test_top1": rep.final["test_top1"]})
    return rows
