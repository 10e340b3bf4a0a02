"""``evoprune train``: train a zoo model from scratch (resumable), write a checkpoint with metadata."""
from __future__ import annotations

import click

from evoprune.commands.common import (Ctx, one_voice, apply_config, data_options, default_out, echo, emit_json, handle_errors,
                                      non_negative, positive, run_options)


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
    from evoprune.train_runs import train_from_options

    summary = train_from_options(p, log=echo, progress=lambda: not (Ctx.quiet or Ctx.json), on_rank=one_voice,
                                 default_out=default_out("train"))
    if summary is not None:
        emit_json(summary)
