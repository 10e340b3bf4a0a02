"""``evoprune train``: train a zoo model from scratch (resumable), write a checkpoint with metadata."""
from __future__ import annotations

import time

import click

from evoprune.commands.common import (apply_config, data_kwargs, data_options, default_out, echo, emit_json, handle_errors,
                                      non_negative, positive, run_options, Ctx)


@click.command()
@click.option("--model", "model_name", default="vgg16", show_default=True,
              help="Zoo model (see 'evoprune list models'), torchvision:NAME or module:factory.")
@click.option("--width", default=1.0, show_default=True, type=float, callback=positive, help="Channel width multiplier.")
@data_options
@click.option("--epochs", default=30, show_default=True, type=int, callback=positive)
@click.option("--batch-size", default=128, show_default=True, type=int, callback=positive)
@click.option("--lr", default=0.05, show_default=True, type=float, callback=positive)
@click.option("--weight-decay", default=5e-4, show_default=True, type=float, callback=non_negative)
@click.option("--momentum", default=0.9, show_default=True, type=float, callback=non_negative)
@click.option("--schedule", default="cosine", show_default=True, type=click.Choice(["cosine", "step", "constant"]))
@click.option("--label-smoothing", default=0.0, show_default=True, type=float, callback=non_negative)
@click.option("--calib-size", default=None, type=int, callback=non_negative,
              help="Training images held out for calibration/validation (default min(1000, 10%)).")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="channels_last memory format (15-40 % faster on CPUs).")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False), help="Start from these weights.")
@run_options
@click.pass_context
@handle_errors
def train(ctx, **params) -> None:
    """Train a model; writes model.pt, metrics.jsonl and summary.json into the run directory.

    Under ``torchrun --nproc_per_node N -m evoprune train ...`` it trains with DistributedDataParallel (Gloo on
    CPU, NCCL on GPUs): --batch-size is the global batch, split across the N processes; rank 0 logs and writes.
    """
    p = apply_config(ctx, params, params.pop("config", None))
    from evoprune.device import resolve_device
    from evoprune.train import TrainConfig, distributed

    cfg = TrainConfig(epochs=p["epochs"], lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                      schedule=p["schedule"], label_smoothing=p["label_smoothing"])
    cfg.validate()
    with distributed(resolve_device(p["device"])) as (device, rank, world):
        if rank != 0:  # one voice: the other ranks print nothing but errors
            Ctx.quiet, Ctx.json = True, False
        _train(p, cfg, device, rank, world)


def _train(p, cfg, device, rank: int, world: int) -> None:
    from evoprune.device import seed_everything
    from evoprune.io import environment_info, prepare_run_dir, write_json
    from evoprune.models import count_params
    from evoprune.models.checkpoint import save_checkpoint
    from evoprune.session import build_setup, count_macs
    from evoprune.train import evaluate, fit, on_rank0

    seed_everything(p["seed"])  # same seed on every rank: same initial weights (DDP also broadcasts rank 0's)
    s = build_setup(p["data"], p["data_dir"], p["model_name"], p["width"], p["checkpoint"], device,
                    batch_size=p["batch_size"], seed=p["seed"], calib_size=p["calib_size"],
                    channels_last=p["channels_last"], **data_kwargs(p))

    def setup_run_dir():
        out = prepare_run_dir(p["out"] or default_out("train"), p["overwrite"], p["resume"])
        if p["resume"] and (out / "config.json").exists():
            from evoprune.io import read_json

            old = read_json(out / "config.json", "run config")
            diff = [k for k in old if k not in ("resume", "overwrite", "out") and old.get(k) != p.get(k)]
            if diff:
                from evoprune.errors import EvopruneError

                raise EvopruneError(f"cannot --resume '{out}': it was made with different settings ({', '.join(diff)})")
        write_json(out / "config.json", p)
        write_json(out / "env.json", dict(environment_info(str(device), p["seed"]), world_size=world))
        return out

    out = on_rank0(setup_run_dir)  # rank 0 creates it; every rank learns its path (or rank 0's error)
    procs = f" on {world} processes (DDP, {'nccl' if device.type == 'cuda' else 'gloo'})" if world > 1 else ""
    echo(f"training {p['model_name']} (width {p['width']}) on {s.data.name}: {s.loaders.train.n_images} train / "
         f"{s.loaders.calib.n_images} calib / {s.loaders.test.n_images} test images, {cfg.epochs} epochs{procs} -> {out}")
    t0 = time.perf_counter()

    def on_epoch(e, rec):
        echo(f"epoch {e:3d}  loss {rec['train_loss']:.3f}  train {rec['train_acc']:.3f}  "
             f"test {rec.get('test_top1', float('nan')):.3f}  ({rec['time_s']:.0f}s)")

    hist = fit(s.model, s.loaders, cfg, device, state_path=str(out / "train_state.pt"),
               log_path=str(out / "metrics.jsonl"), progress=not (Ctx.quiet or Ctx.json), on_epoch=on_epoch)
    if rank != 0:
        return
    test = evaluate(s.model, s.loaders.test, device)
    s.model.to("cpu").to(memory_format=__import__("torch").contiguous_format)
    meta = dict(s.meta, accuracy=test["top1"], top5=test["top5"], epochs=cfg.epochs, seed=p["seed"])
    save_checkpoint(str(out / "model.pt"), s.model, meta)
    summary = {"out": str(out), "checkpoint": str(out / "model.pt"), "test_top1": test["top1"],
               "test_top5": test["top5"], "test_loss": test["loss"], "params": count_params(s.model),
               "macs": count_macs(s.model, s.data.in_channels, s.data.image_size),
               "epochs": cfg.epochs, "world_size": world, "wall_time_s": time.perf_counter() - t0, "history": hist}
    write_json(out / "summary.json", summary)
    echo(f"test top-1 {test['top1']:.4f}  top-5 {test['top5']:.4f}  params {summary['params']:,}  "
         f"MACs {summary['macs']:,}  -> {out / 'model.pt'}")
    emit_json({k: v for k, v in summary.items() if k != "history"})
