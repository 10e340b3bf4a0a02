"""``evoprune finetune``: fine-tune a (pruned) checkpoint, by KD from a teacher or plain cross-entropy."""
from __future__ import annotations

import time

import click

from evoprune.commands.common import (Ctx, apply_config, data_kwargs, data_options, default_out, echo, emit_json, handle_errors,
                                      non_negative, positive, run_options)
from evoprune.errors import EvopruneError


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Student: the pruned model.")
@click.option("--teacher", default=None, type=click.Path(dir_okay=False),
              help="Teacher checkpoint for KD (the unpruned original); without it, cross-entropy.")
@click.option("--model", "model_name", default=None, help="Architecture, only for plain state-dict files.")
@data_options
@click.option("--epochs", default=5, show_default=True, type=int, callback=positive)
@click.option("--lr", default=0.01, show_default=True, type=float, callback=positive)
@click.option("--batch-size", default=128, show_default=True, type=int, callback=positive)
@click.option("--loss", default=None, type=click.Choice(["kd", "ce"]), help="Default: kd with --teacher, else ce.")
@click.option("--temperature", default=4.0, show_default=True, type=float, callback=positive)
@click.option("--alpha", default=0.9, show_default=True, type=float, callback=non_negative)
@click.option("--calib-size", default=None, type=int, callback=non_negative)
@run_options
@click.pass_context
@handle_errors
def finetune(ctx, **params) -> None:
    """Fine-tune a checkpoint (e.g. a pruned one) and save it with the same architecture record."""
    p = apply_config(ctx, params, params.pop("config", None))
    from evoprune.device import resolve_device
    from evoprune.train import TrainConfig, distributed

    loss = p["loss"] or ("kd" if p["teacher"] else "ce")
    if loss == "kd" and not p["teacher"]:
        raise EvopruneError("--loss kd needs --teacher FILE (the unpruned model the student was pruned from)")
    cfg = TrainConfig(epochs=p["epochs"], lr=p["lr"], schedule="cosine")
    cfg.validate()
    # under torchrun: data-parallel, rank 0 alone prints and writes (as in 'evoprune train')
    with distributed(resolve_device(p["device"])) as (device, rank, world):
        if rank != 0:
            Ctx.quiet, Ctx.json = True, False
        _finetune(p, cfg, loss, device, rank)


def _finetune(p, cfg, loss: str, device, rank: int) -> None:
    from evoprune.device import seed_everything
    from evoprune.distill import ce_loss, kd_loss
    from evoprune.io import environment_info, prepare_run_dir, write_json
    from evoprune.models import count_params
    from evoprune.models.checkpoint import load_model, save_checkpoint
    from evoprune.session import build_setup, check_model_fits_data, count_macs
    from evoprune.train import evaluate, fit, on_rank0

    seed_everything(p["seed"])
    s = build_setup(p["data"], p["data_dir"], p.get("model_name"), 1.0, p["checkpoint"], device,
                    batch_size=p["batch_size"], seed=p["seed"], calib_size=p["calib_size"], **data_kwargs(p))
    loss_fn = ce_loss()
    if loss == "kd":
        teacher, _ = load_model(p["teacher"])
        teacher.to(device)
        check_model_fits_data(teacher, s.data, f"teacher '{p['teacher']}'")
        loss_fn = kd_loss(teacher, p["temperature"], p["alpha"])

    def setup_run_dir():
        out = prepare_run_dir(p["out"] or default_out("finetune"), p["overwrite"], p["resume"])
        write_json(out / "config.json", p)
        write_json(out / "env.json", environment_info(str(device), p["seed"]))
        return out

    out = on_rank0(setup_run_dir)
    before = evaluate(s.model, s.loaders.test, device) if rank == 0 else None
    t0 = time.perf_counter()
    fit(s.model, s.loaders, cfg, device, loss_fn=loss_fn, state_path=str(out / "train_state.pt"),
        log_path=str(out / "metrics.jsonl"), progress=not (Ctx.quiet or Ctx.json), evaluate_each_epoch=False,
        on_epoch=lambda e, r: echo(f"epoch {e:3d}  loss {r['train_loss']:.3f}  train {r['train_acc']:.3f}"))
    if rank != 0:
        return
    after = evaluate(s.model, s.loaders.test, device)
    save_checkpoint(str(out / "model.pt"), s.model.to("cpu"), dict(s.meta, accuracy=after["top1"], finetune_loss=loss))
    summary = {"out": str(out), "checkpoint": str(out / "model.pt"), "loss": loss, "test_top1_before": before["top1"],
               "test_top1_after": after["top1"], "params": count_params(s.model),
               "macs": count_macs(s.model, s.data.in_channels, s.data.image_size),
               "wall_time_s": time.perf_counter() - t0}
    write_json(out / "summary.json", summary)
    echo(f"test top-1 {before['top1']:.4f} -> {after['top1']:.4f} ({loss}) -> {out / 'model.pt'}")
    emit_json(summary)
