"""``evoprune prune`` and ``evoprune sensitivity``: the paper's pipeline from the command line."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from evoprune.commands.common import (Ctx, apply_config, data_kwargs, data_options, default_out, echo, emit_json, handle_errors,
                                      non_negative, positive, run_options, worker_options)
from evoprune.config import DEFAULT_TARGET_MACS, PRUNE_DEFAULTS, PruneConfig
from evoprune.errors import EvopruneError


def _option(*decls, field=None, **kw):
    """``click.option`` defaulting to the :class:`PruneConfig` field of the same name (``field``, else the long
    flag without dashes), shown in --help; the dataclass is the one source of the number."""
    name = field or decls[0].lstrip("-").replace("-", "_")
    return click.option(*decls, default=PRUNE_DEFAULTS[name], show_default=True, **kw)


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
    f = _option("--batch-size", type=int, callback=positive)(f)
    f = _option("--bn-batches", type=int, callback=positive, help="Training batches for adaptive-BN re-estimation.")(f)
    f = _option("--eval-batches", type=int, callback=positive,
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
    """The :class:`PruneConfig` of the parsed options: the values of its fields that ``p`` holds (the rest, and
    the default target, come from the dataclass)."""
    given = {k: p[k] for k in PRUNE_DEFAULTS if k in p}
    if given.get("ratios"):
        from evoprune.io import read_json

        data = read_json(p["ratios"], "ratios file")
        ratios = data.get("ratios", data) if isinstance(data, dict) else None
        if not isinstance(ratios, dict):
            raise EvopruneError(f"ratios file '{p['ratios']}' must hold an object unit -> keep ratio")
        given["ratios"] = ratios
    else:
        given["ratios"] = None
    if "exclude" in given:
        given["exclude"] = tuple(given["exclude"] or ())
    return PruneConfig(**given)


@click.command()
@_common_model_options
@data_options
@_option("--target-macs", type=float, callback=_fraction,
         help=f"Keep this fraction of the MACs (default {DEFAULT_TARGET_MACS} when no other target is given); with "
              "--target-params both budgets are met.")
@_option("--target-params", type=float, callback=_fraction,
         help="Keep this fraction of the parameters (alone, or with --target-macs).")
@_option("--max-drop", type=float, callback=non_negative,
         help="Per-unit tolerated calibration-accuracy drop (fraction) instead of a global target.")
@_option("--ratios", type=click.Path(dir_okay=False), help="JSON file: unit -> keep ratio.")
@click.option("--uniform", is_flag=True, help="Same keep ratio for every unit (baseline allocation).")
@click.option("--sensitivity", "sensitivity_file", default=None, type=click.Path(dir_okay=False),
              help="Reuse sensitivity curves (sensitivity.json from 'evoprune sensitivity' or an earlier prune run).")
@_option("--selector", help="Channel choice: a criterion (l1, bn, taylor, random, thinet, module:function) or a "
                           "single-objective strategy on the two-step fitness (ga, cmaes, cmaes-1+l, random-search, "
                           "module:run).")
@_option("--order", type=click.Choice(["sensitivity", "forward"]),
         help="Prune least sensitive units first, or front to back.")
@_option("--sensitivity-method", help="Selector used for sensitivity curves.")
@_option("--min-keep", type=int, callback=positive)
@_option("--pop-size", type=int, callback=positive, help="GA population.")
@_option("--generations", type=int, callback=positive, help="GA generations.")
@_option("--crossover", help="GA crossover operator (name or module:fn).")
@_option("--mutation", help="GA mutation operator (name or module:fn).")
@_option("--selection", help="GA selection (roulette, tournament or module:fn).")
@_option("--fitness", help="twostage, reconstruction, reconstruction-refit (stage 1 after the optimal re-weighting "
                          "of the kept channels) or module:Evaluator.")
@_option("--stage2-top-k", type=int, callback=non_negative,
         help="Candidates per check verified by the network-level stage 2.")
@_option("--finalists", type=int, callback=positive,
         help="Best genomes of each unit's GA verified by stage 2 at the end; the lowest loss wins.")
@_option("--stage2-every", type=int, callback=positive,
         help="Run stage 2 every N generations (and on the final population).")
@_option("--calib-batches", type=int, callback=positive, help="Batches for stage-1 reconstruction statistics.")
@_option("--finetune-steps", type=int, callback=non_negative, help="KD fine-tune steps after each unit.")
@_option("--finetune-epochs", type=int, callback=non_negative, help="Final KD fine-tune epochs.")
@_option("--finetune-lr", type=float, callback=positive)
@_option("--loss", type=click.Choice(["kd", "ce"]),
         help="Fine-tune loss: knowledge distillation from the original, or plain cross-entropy.")
@_option("--temperature", type=float, callback=positive)
@_option("--alpha", type=float, callback=non_negative)
@_option("--at-weight", type=float, callback=non_negative,
         help="Attention-transfer term of the KD loss (Zagoruyko & Komodakis 2017); 0: plain KD.")
@click.option("--refit/--no-refit", default=PRUNE_DEFAULTS["refit"], show_default=True,
              help="Least-squares refit of each unit's consumers on the kept channels (ThiNet) before pruning.")
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
@_option("--method", "sensitivity_method", field="sensitivity_method",
         help="How channels are chosen at each ratio: l1, bn, taylor, random, thinet or module:fn.")
@click.option("--ratios", "grid", default=",".join(str(r) for r in PRUNE_DEFAULTS["sensitivity_ratios"]),
              show_default=True, help="Comma-separated keep ratios.")
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
