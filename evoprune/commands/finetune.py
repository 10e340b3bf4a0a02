"""``evoprune finetune``: fine-tune a (pruned) checkpoint, by KD from a teacher or plain cross-entropy."""
from __future__ import annotations

import click

from evoprune.config import PRUNE_DEFAULTS
from evoprune.commands.common import (Ctx, one_voice, apply_config, data_options, default_out, echo, emit_json, handle_errors,
                                      ALPHA_HELP, CALIB_SIZE_HELP, TEMPERATURE_HELP, non_negative, positive,
                                      run_options, zero_one)


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Student: the pruned model.")
@click.option("--teacher", default=None, type=click.Path(dir_okay=False),
              help="Teacher checkpoint for KD (the unpruned original); without it, cross-entropy.")
@click.option("--model", "model_name", default=None, help="Architecture, only for plain state-dict files.")
@data_options
@click.option("--epochs", default=PRUNE_DEFAULTS["finetune_epochs"], show_default=True, type=int, callback=positive,
              help="Fine-tune epochs.")
@click.option("--lr", default=PRUNE_DEFAULTS["finetune_lr"], show_default=True, type=float, callback=positive,
              help="SGD learning rate (cosine schedule).")
@click.option("--batch-size", default=PRUNE_DEFAULTS["batch_size"], show_default=True, type=int, callback=positive)
@click.option("--loss", default=None, type=click.Choice(["kd", "ce"]), help="Default: kd with --teacher, else ce.")
@click.option("--temperature", default=PRUNE_DEFAULTS["temperature"], show_default=True, type=float,
              callback=positive, help=TEMPERATURE_HELP)
@click.option("--alpha", default=PRUNE_DEFAULTS["alpha"], show_default=True, type=float, callback=zero_one,
              help=ALPHA_HELP)
@click.option("--at-weight", default=PRUNE_DEFAULTS["at_weight"], show_default=True, type=float,
              callback=non_negative, help="Attention-transfer term of the KD loss, as in prune (0: plain KD).")
@click.option("--calib-size", default=None, type=int, callback=non_negative, help=CALIB_SIZE_HELP)
@run_options
@click.pass_context
@handle_errors
def finetune(ctx, **params) -> None:
    """Fine-tune a checkpoint (e.g. a pruned one) and save it with the same architecture record."""
    p = apply_config(ctx, params, params.pop("config", None))
    from evoprune.train_runs import finetune_from_options

    summary = finetune_from_options(p, log=echo, progress=lambda: not (Ctx.quiet or Ctx.json), on_rank=one_voice,
                                    default_out=default_out("finetune"))
    if summary is not None:
        emit_json(summary)
