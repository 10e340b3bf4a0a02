"""``evoprune prune`` and ``evoprune sensitivity``: the paper's pipeline from the command line."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from evoprune.commands.common import (Ctx, apply_config, data_kwargs, data_options, default_out, echo, emit_json, handle_errors,
                                      non_negative, positive, run_options, worker_options)
from evoprune.errors import EvopruneError


def _fraction(ctx, param, value):
    if value is not None and not (0.0 < value <= 1.0):
        raise click.BadParameter(f"must be a fraction in (0, 1], got {value}")
    return value


def _common_model_options(f):
    f = click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
                     help="Trained model to prune (from 'evoprune train').")(f)
    f = click.option("--model", "model_name", default=None, help="Architecture, only for plain state-dict files.")(f)
    f = click.option("--exclude", multiple=True, metavar="PATTERN",
                     help="Module-name pattern (fnmatch) of convs never to prune; repeatable.")(f)
    f = click.option("--calib-size", default=None, type=int, callback=non_negative,
                     help="Training images held out for calibration (default: as at training time).")(f)
    f = click.option("--batch-size", default=128, show_default=True, type=int, callback=positive)(f)
    f = click.option("--bn-batches", default=4, show_default=True, type=int, callback=positive,
                     help="Training batches for adaptive-BN re-estimation.")(f)
    f = click.option("--eval-batches", default=4, show_default=True, type=int, callback=positive,
                     help="Held-out calibration batches for network-level accuracy.")(f)
    return f


def _load(p, device=None):
    from evoprune.device import resolve_device, seed_everything
    from evoprune.session import build_setup

    device = resolve_device(p["device"]) if device is None else device
    seed_everything(p["seed"])
    s = build_setup(p["data"], p["data_dir"], p["model_name"], 1.0, p["checkpoint"], device,
                    batch_size=p["batch_size"], seed=p["seed"], calib_size=p["calib_size"], **data_kwargs(p))
    s.meta["source"] = str(p["checkpoint"])
    return s


def _config_from(p):
    from evoprune.pipeline import PruneConfig

    ratios = None
    if p.get("ratios"):
        from evoprune.io import read_json

        data = read_json(p["ratios"], "ratios file")
        ratios = data.get("ratios", data) if isinstance(data, dict) else None
        if not isinstance(ratios, dict):
            raise EvopruneError(f"ratios file '{p['ratios']}' must hold an object unit -> keep ratio")
    target_macs = p.get("target_macs")
    if target_macs is None and p.get("target_params") is None and p.get("max_drop") is None and ratios is None:
        target_macs = 0.33
    return PruneConfig(
        target_macs=target_macs, target_params=p.get("target_params"), max_drop=p.get("max_drop"), ratios=ratios,
        uniform=p.get("uniform", False), selector=p.get("selector", "ga"), order=p.get("order", "sensitivity"),
        sensitivity_method=p.get("sensitivity_method", "l1"), exclude=tuple(p.get("exclude") or ()),
        min_keep=p.get("min_keep", 1), pop_size=p.get("pop_size", 50), generations=p.get("generations", 60),
        crossover=p.get("crossover"), mutation=p.get("mutation"), selection=p.get("selection"),
        fitness=p.get("fitness", "twostage"), stage2_top_k=p.get("stage2_top_k", 3),
        stage2_every=p.get("stage2_every", 10), finalists=p.get("finalists", 5),
        calib_batches=p.get("calib_batches", 4),
        bn_batches=p["bn_batches"], eval_batches=p["eval_batches"], finetune_steps=p.get("finetune_steps", 50),
        finetune_epochs=p.get("finetune_epochs", 5), finetune_lr=p.get("finetune_lr", 0.01),
        loss=p.get("loss", "kd"), temperature=p.get("temperature", 4.0), alpha=p.get("alpha", 0.9),
        batch_size=p["batch_size"], seed=p["seed"])


@click.command()
@_common_model_options
@data_options
@click.option("--target-macs", default=None, type=float, callback=_fraction,
              help="Keep this fraction of the MACs (default 0.33 when no other target is given); with "
                   "--target-params both budgets are met.")
@click.option("--target-params", default=None, type=float, callback=_fraction, help="Keep this fraction of the parameters (alone, or with --target-macs).")
@click.option("--max-drop", default=None, type=float, callback=non_negative,
              help="Per-unit tolerated calibration-accuracy drop (fraction) instead of a global target.")
@click.option("--ratios", default=None, type=click.Path(dir_okay=False), help="JSON file: unit -> keep ratio.")
@click.option("--uniform", is_flag=True, help="Same keep ratio for every unit (baseline allocation).")
@click.option("--sensitivity", "sensitivity_file", default=None, type=click.Path(dir_okay=False),
              help="Reuse sensitivity curves (sensitivity.json from 'evoprune sensitivity' or an earlier prune run).")
@click.option("--selector", default="ga", show_default=True,
              help="Channel choice: ga, l1, bn, taylor, random, thinet or module:function.")
@click.option("--order", default="sensitivity", show_default=True, type=click.Choice(["sensitivity", "forward"]),
              help="Prune least sensitive units first, or front to back.")
@click.option("--sensitivity-method", default="l1", show_default=True, help="Selector used for sensitivity curves.")
@click.option("--min-keep", default=1, show_default=True, type=int, callback=positive)
@click.option("--pop-size", default=50, show_default=True, type=int, callback=positive, help="GA population.")
@click.option("--generations", default=60, show_default=True, type=int, callback=positive, help="GA generations.")
@click.option("--crossover", default=None, help="GA crossover operator (name or module:fn).")
@click.option("--mutation", default=None, help="GA mutation operator (name or module:fn).")
@click.option("--selection", default=None, help="GA selection (roulette, tournament or module:fn).")
@click.option("--fitness", default="twostage", show_default=True, help="twostage, reconstruction or module:Evaluator.")
@click.option("--stage2-top-k", default=3, show_default=True, type=int, callback=non_negative,
              help="Candidates per check verified by the network-level stage 2.")
@click.option("--finalists", default=5, show_default=True, type=int, callback=positive,
              help="Best genomes of each unit's GA verified by stage 2 at the end; the lowest loss wins.")
@click.option("--stage2-every", default=10, show_default=True, type=int, callback=positive,
              help="Run stage 2 every N generations (and on the final population).")
@click.option("--calib-batches", default=4, show_default=True, type=int, callback=positive,
              help="Batches for stage-1 reconstruction statistics.")
@click.option("--finetune-steps", default=50, show_default=True, type=int, callback=non_negative,
              help="KD fine-tune steps after each unit.")
@click.option("--finetune-epochs", default=5, show_default=True, type=int, callback=non_negative,
              help="Final KD fine-tune epochs.")
@click.option("--finetune-lr", default=0.01, show_default=True, type=float, callback=positive)
@click.option("--loss", default="kd", show_default=True, type=click.Choice(["kd", "ce"]),
              help="Fine-tune loss: knowledge distillation from the original, or plain cross-entropy.")
@click.option("--temperature", default=4.0, show_default=True, type=float, callback=positive)
@click.option("--alpha", default=0.9, show_default=True, type=float, callback=non_negative)
@click.option("--dry-run", is_flag=True, help="Compute sensitivity and show the allocation, prune nothing.")
@worker_options
@run_options
@click.pass_context
@handle_errors
def prune(ctx, **params) -> None:
    """Prune a trained network layer by layer (GA + two-step fitness + KD fine-tune).

    --workers sends the network-level evaluations (sensitivity curves, the GA's stage-2 checks) to worker
    processes or a Dask cluster; the result is the same as serial. Under 'torchrun --nproc_per_node N -m evoprune
    prune ...' the fine-tune steps run with DistributedDataParallel (Gloo on CPU, NCCL on GPUs), rank 0 chooses
    the channels and writes the run directory.
    """
    p = apply_config(ctx, params, params.pop("config", None))
    from evoprune.device import resolve_device
    from evoprune.parallel import parse_workers
    from evoprune.train import distributed

    cfg = _config_from(p)
    cfg.validate()
    workers = parse_workers(p["workers"], p["scheduler"])  # bad specs fail before anything is built
    with distributed(resolve_device(p["device"])) as (device, rank, world):
        if rank != 0:  # one voice: the other ranks print nothing but errors
            Ctx.quiet, Ctx.json = True, False
        _prune(p, cfg, workers, device)


def _prune(p, cfg, workers, device) -> None:
    from evoprune import pipeline
    from evoprune.io import read_json
    from evoprune.parallel import make_map
    from evoprune.train import is_main_process, on_rank0

    sens = None
    if p["sensitivity_file"]:
        from evoprune.sensitivity import Sensitivity

        sens = Sensitivity.from_json(read_json(p["sensitivity_file"], "sensitivity file"))
    s = _load(p, device)
    out = on_rank0(lambda: _prune_run_dir(p, cfg, s))
    main = is_main_process()
    log_file = open(out / "log.txt", "a") if main else None

    def log(msg: str) -> None:
        if log_file is not None:
            log_file.write(msg + "\n")
            log_file.flush()
        echo(msg)

    try:
        if p["dry_run"]:
            cfg.finetune_epochs = 0
            summary = on_rank0(lambda: dry_run(s, cfg, out, log))
            emit_json(summary)
            return
        with make_map(workers if main else "serial") as backend:
            if p["workers"] != "serial" and main:
                echo(f"network-level evaluations on {backend.describe()}")
            model, report = pipeline.run(s.model, s.loaders, cfg, out=out, resume=p["resume"], meta=s.meta,
                                         log=log, progress=not (Ctx.quiet or Ctx.json), sensitivity=sens,
                                         backend=None if p["workers"] == "serial" else backend)
    finally:
        if log_file is not None:
            log_file.close()
    emit_json({"out": str(out), "checkpoint": str(out / "model.pt"), **{f"base_{k}": v for k, v in report.base.items()},
               **{f"final_{k}": v for k, v in report.final.items()}, "wall_time_s": report.wall_time_s})


def _prune_run_dir(p, cfg, s) -> Path:
    """Create (or check, with --resume) the run directory and write its config; rank 0 only."""
    from evoprune.io import environment_info, prepare_run_dir, read_json, write_json

    out = prepare_run_dir(p["out"] or default_out("prune"), p["overwrite"], p["resume"])
    if p["resume"]:
        old = out / "prune_config.json"
        if old.exists() and read_json(old, "run config").get("fingerprint") != cfg.fingerprint():
            raise EvopruneError(f"cannot --resume '{out}': it was made with a different configuration; use the same "
                                "options, or --overwrite to start over")
        if (out / "config.json").exists():  # the inputs too: another checkpoint or dataset is another run
            before = read_json(out / "config.json", "run config")
            diff = [k for k in ("checkpoint", "model_name", "data", "data_dir", "calib_size", "exclude")
                    if k in before and before[k] != (list(p[k]) if isinstance(p[k], tuple) else p[k])]
            if diff:
                raise EvopruneError(f"cannot --resume '{out}': it was made with a different {', '.join(diff)}; use "
                                    "the same inputs, or --overwrite to start over")
    write_json(out / "config.json", p)
    write_json(out / "env.json", environment_info(str(s.device), p["seed"]))
    return out


def dry_run(s, cfg, out, log):
    """Sensitivity + allocation only: what ``prune`` would do (the allocation table through ``log``)."""
    from evoprune import pipeline

    cfg.finetune_steps = 0
    plan, units = pipeline.dry_run(s.model, s.loaders, cfg, out, device=s.device, log=log)
    log(f"{'unit':<28}{'channels':>9}{'keep':>7}{'ratio':>8}")
    for u, n in units:
        log(f"{u:<28}{n:>9}{plan['counts'][u]:>7}{plan['ratios'][u]:>8.3f}")
    log(f"order: {', '.join(plan['order'])}")
    log(f"MACs {plan['base_macs']:,} -> {plan['planned_macs']:,} ({plan['planned_macs'] / plan['base_macs']:.3f}); "
        f"params {plan['base_params']:,} -> {plan['planned_params']:,} "
        f"({plan['planned_params'] / plan['base_params']:.3f})")
    return {"out": str(out), **plan}


@click.command()
@_common_model_options
@data_options
@click.option("--method", "sensitivity_method", default="l1", show_default=True,
              help="How channels are chosen at each ratio: l1, bn, taylor, random, thinet or module:fn.")
@click.option("--ratios", "grid", default="0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1", show_default=True,
              help="Comma-separated keep ratios.")
@worker_options
@run_options
@click.pass_context
@handle_errors
def sensitivity(ctx, **params) -> None:
    """Accuracy of the network with each unit pruned alone at several keep ratios (CSV, JSON and a plot)."""
    p = apply_config(ctx, params, params.pop("config", None))
    from evoprune import pipeline
    from evoprune.io import environment_info, prepare_run_dir, write_json
    from evoprune.pipeline import example_input
    from evoprune.pruning.space import PruningSpace

    try:
        grid = tuple(float(x) for x in p["grid"].split(",") if x.strip())
    except ValueError:
        raise EvopruneError(f"--ratios must be comma-separated numbers, got '{p['grid']}'") from None
    cfg = _config_from(dict(p, ratios=None))
    cfg.sensitivity_ratios = grid
    cfg.validate()
    from evoprune.parallel import make_map, parse_workers

    workers = parse_workers(p["workers"], p["scheduler"])
    s = _load(p)
    out = prepare_run_dir(p["out"] or default_out("sensitivity"), p["overwrite"], p["resume"])
    write_json(out / "config.json", p)
    write_json(out / "env.json", environment_info(str(s.device), p["seed"]))
    space = PruningSpace(s.model, example_input(s.loaders).to(s.device), exclude=cfg.exclude, min_keep=cfg.min_keep)
    t0 = time.perf_counter()
    with make_map(workers) as backend:
        sens = pipeline.compute_sensitivity(s.model, space, s.loaders, cfg, log=echo,
                                            backend=None if p["workers"] == "serial" else backend)
    pipeline.save_sensitivity(sens, out)
    score = sens.score()
    echo(f"{'unit':<28}{'channels':>9}  {'mean drop':>9}  accuracy at " + " ".join(f"{r:.1f}" for r in grid))
    for i, u in enumerate(sens.units):
        echo(f"{u:<28}{sens.sizes[i]:>9}  {score[i]:>9.4f}  " + " ".join(f"{a:.3f}" for a in sens.acc[i]))
    echo(f"base calibration accuracy {sens.base_acc:.4f}; {time.perf_counter() - t0:.0f}s; -> {out}")
    emit_json({"out": str(out), **sens.to_json()})
