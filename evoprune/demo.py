"""The demo: train -> (prune with the GA -> KD fine-tune) -> table and Pareto plot, on the bundled data."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

from .device import resolve_device, seed_everything
from .io import environment_info, prepare_run_dir, write_json


def run_demo(out: str = "runs/demo", overwrite: bool = False, epochs: int = 30, target_macs: float = 0.33,
             seed: int = 0, device: str = "auto", progress: bool = True, log: Callable[[str], None] = print) -> Dict:
    from .models import count_params
    from .models.checkpoint import save_checkpoint
    from .session import build_setup, count_macs
    from .train import TrainConfig, evaluate, fit

    dev = resolve_device(device)
    seed_everything(seed)
    s = build_setup("mini-cifar10", None, "vgg16", 0.25, None, dev, batch_size=64, seed=seed, calib_size=200)
    run = prepare_run_dir(out, overwrite=overwrite)
    write_json(run / "env.json", environment_info(str(dev), seed))
    log(f"[1/3] training VGG-16 (width 0.25) on the bundled mini CIFAR-10 for {epochs} epochs")
    cfg = TrainConfig(epochs=epochs, lr=0.05)
    fit(s.model, s.loaders, cfg, dev, log_path=str(run / "train_metrics.jsonl"), progress=progress,
        evaluate_each_epoch=False,
        on_epoch=lambda e, r: log(f"  epoch {e:2d}  loss {r['train_loss']:.3f}  train acc {r['train_acc']:.3f}"))
    base = evaluate(s.model, s.loaders.test, dev)
    save_checkpoint(str(run / "baseline.pt"), s.model, dict(s.meta, accuracy=base["top1"]))
    rows = [{"model": "baseline", "params": count_params(s.model),
             "macs": count_macs(s.model, s.data.in_channels, s.data.image_size), "test_top1": base["top1"]}]
    summary = {"out": str(run), "rows": rows}
    from .demo_prune import demo_prune

    rows += demo_prune(s, run, target_macs, seed, base["top1"], progress, log)
    log("")
    log(f"{'model':<22}{'params':>12}{'MACs':>14}{'test top-1':>12}")
    for r in rows:
        log(f"{r['model']:<22}{r['params']:>12,}{r['macs']:>14,}{r['test_top1']:>12.4f}")
    write_json(run / "summary.json", summary)
    return summary
