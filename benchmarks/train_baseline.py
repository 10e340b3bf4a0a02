"""Train a CIFAR VGG-16-BN baseline on CIFAR-10 (JPEG, ../shared/datasets) with `evoprune train`.

Issue 3's check: width 0.5 for 1 epoch reaches > 35 % test accuracy. The same script trains the baselines
that the fitness-fidelity, strategy-comparison and reproduction benchmarks start from:

    python benchmarks/train_baseline.py --width 0.5 --epochs 1                  # the issue-3 check
    python benchmarks/train_baseline.py --width 0.25 --epochs 15 --out runs/baseline-w0.25

Resumable: rerun the same command with --resume after an interruption.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import evoprune_cmd, machine, run, save, shared_cifar10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--save-checkpoint", default=None, help="copy the final model.pt here (e.g. benchmarks/results/...)")
    ap.add_argument("--export-partial", action="store_true",
                    help="do not train: save the model of the run's last completed epoch (an interrupted run) as a "
                         "checkpoint, evaluated on the test split, to --save-checkpoint")
    a = ap.parse_args()
    out = a.out or f"runs/baseline-{a.model}-w{a.width}-e{a.epochs}"
    if a.export_partial:
        export_partial(a, Path(out))
        return
    t0 = time.time()
    cmd = evoprune_cmd("--json", "train", "--model", a.model, "--width", str(a.width), "--data",
                       f"imagefolder:{shared_cifar10()}", "--epochs", str(a.epochs), "--lr", str(a.lr),
                       "--batch-size", str(a.batch_size), "--seed", str(a.seed), "--out", out,
                       "--resume" if a.resume else "--overwrite")
    stdout = run(cmd, Path(out + ".log"))
    summary = json.loads(stdout.strip().splitlines()[-1])
    hist = [json.loads(l) for l in Path(out, "metrics.jsonl").read_text().splitlines() if l.strip()]
    result = {"model": a.model, "width": a.width, "epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size,
              "seed": a.seed, "dataset": "CIFAR-10 (JPEG)", "test_top1": summary["test_top1"],
              "params": summary["params"], "macs": summary["macs"], "wall_time_s": time.time() - t0,
              "per_epoch": hist, "machine": machine(), "command": " ".join(cmd)}
    name = f"train_baseline_{a.model}_w{a.width}_e{a.epochs}.json"
    save(name, result)
    if a.save_checkpoint:
        import shutil

        shutil.copyfile(Path(out, "model.pt"), a.save_checkpoint)
        print(f"copied checkpoint to {a.save_checkpoint}")
    print(f"{a.model} width {a.width}: {a.epochs} epoch(s) -> test top-1 {summary['test_top1']:.4f} "
          f"in {result['wall_time_s'] / 60:.1f} min")


def export_partial(a, out: Path) -> None:
    """Checkpoint of an unfinished run's last completed epoch (honestly labelled with the epochs it had)."""
    from evoprune.data import load_dataset, make_loaders
    from evoprune.io import load_torch
    from evoprune.models import count_params, create_model
    from evoprune.models.checkpoint import save_checkpoint
    from evoprune.session import count_macs
    from evoprune.train import evaluate

    st = load_torch(out / "train_state.pt", "training state")
    data = load_dataset(f"imagefolder:{shared_cifar10()}")
    kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "width": a.width}
    model = create_model(a.model, **kwargs)
    model.load_state_dict(st["model"])
    test = evaluate(model, make_loaders(data, batch_size=256).test)
    meta = dict(data.meta(), arch=a.model, model_kwargs=kwargs, accuracy=test["top1"], epochs=st["epoch"],
                planned_epochs=a.epochs, partial=True)
    save_checkpoint(a.save_checkpoint, model, meta)
    hist = [json.loads(l) for l in Path(out, "metrics.jsonl").read_text().splitlines() if l.strip()]
    save(f"train_baseline_{a.model}_w{a.width}_e{a.epochs}_partial.json",
         {"model": a.model, "width": a.width, "planned_epochs": a.epochs, "epochs_completed": st["epoch"],
          "steps": st["step"], "batches_into_next_epoch": st["batch"],
          "dataset": "CIFAR-10 (JPEG)", "test_top1": test["top1"], "params": count_params(model),
          "macs": count_macs(model, data.in_channels, data.image_size), "per_epoch": hist, "machine": machine(),
          "note": "run stopped early (CPU time); the learning rate had not annealed"})
    print(f"epoch {st['epoch']}/{a.epochs} (+{st['batch']} batches): test top-1 {test['top1']:.4f} -> {a.save_checkpoint}")


if __name__ == "__main__":
    main()
