"""``evoprune prune`` and ``evoprune sensitivity``: the paper's pipeline from the command line."""
from __future__ import annotations

import click

from evoprune.commands.common import (Ctx, one_voice, apply_config, data_options, default_out, echo, emit_json, handle_errors,
                                      ALPHA_HELP, CALIB_SIZE_HELP, TEMPERATURE_HELP, non_negative, positive,
                                      run_options, unit_interval, worker_options, zero_one)
from evoprune.config import ALLOCATIONS, DEFAULT_TARGET_MACS, PRUNE_DEFAULTS, SEEDINGS


def _option(*decls, field=None, **kw):
    """``click.option`` defaulting to the :class:`PruneConfig` field of the same name (``field``, else the long
    flag without dashes), shown in --help; the dataclass is the one source of the number."""
    name = field or decls[0].lstrip("-").replace("-", "_")
    return click.option(*decls, default=PRUNE_DEFAULTS[name], show_default=True, **kw)


def _common_model_options(f):
    f = click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
                     help="Trained model to prune (from 'evoprune train').")(f)
    f = click.option("--model", "model_name", default=None, help="Architecture, only for plain state-dict files.")(f)
    f = click.option("--exclude", multiple=True, metavar="PATTERN",
                     help="Module-name pattern (fnmatch) of convs never to prune; repeatable.")(f)
    f = click.option("--calib-size", default=None, type=int, callback=non_negative, help=CALIB_SIZE_HELP)(f)
    f = _option("--batch-size", type=int, callback=positive)(f)
    f = _option("--bn-batches", type=int, callback=positive, help="Training batches for adaptive-BN re-estimation.")(f)
    f = _option("--eval-batches", type=int, callback=positive,
                help="Held-out calibration batches for network-level accuracy.")(f)
    return f


@click.command()
@_common_model_options
@data_options
@_option("--target-macs", type=float, callback=unit_interval,
         help=f"Keep this fraction of the MACs (default {DEFAULT_TARGET_MACS} when no other target is given); with "
              "--target-params both budgets are met.")
@_option("--target-params", type=float, callback=unit_interval,
         help="Keep this fraction of the parameters (alone, or with --target-macs).")
@_option("--max-drop", type=float, callback=non_negative,
         help="Per-unit tolerated calibration-accuracy drop (fraction) instead of a global target.")
@_option("--ratios", type=click.Path(dir_okay=False), help="JSON file: unit -> keep ratio.")
@click.option("--uniform", is_flag=True, help="Same keep ratio for every unit (baseline allocation).")
@_option("--allocation", type=click.Choice(ALLOCATIONS),
         help="Per-unit keep ratios: from the sensitivity curves (the paper), uniform, or searched by "
              "--allocation-strategy on the whole network (adaptive-BN accuracy under the budget, seeded with the "
              "other two).")
@_option("--allocation-strategy", help="Single-objective strategy of --allocation search (cmaes-1+l, cmaes, random, "
                                       "module:run).")
@_option("--allocation-budget", type=int, help="Whole-network evaluations of --allocation search.")
@_option("--allocation-finetune-steps", type=int,
         help="Re-score the best allocations of --allocation search after this many KD fine-tune steps each, on "
              "the whole calibration split (0: adaptive-BN accuracy alone).")
@_option("--allocation-finalists", type=int,
         help="How many of the best distinct allocations --allocation-finetune-steps re-scores.")
@click.option("--sensitivity", "sensitivity_file", default=None, type=click.Path(dir_okay=False),
              help="Reuse sensitivity curves (sensitivity.json from 'evoprune sensitivity' or an earlier prune run).")
@_option("--selector", help="Channel choice: a criterion (l1, bn, taylor, random, thinet, module:function) or a "
                           "single-objective strategy on the two-step fitness (ga, cmaes, cmaes-1+l, random-search, "
                           "module:run).")
@_option("--order", type=click.Choice(["sensitivity", "forward"]),
         help="Prune least sensitive units first, or front to back.")
@_option("--sensitivity-method", help="Selector used for sensitivity curves.")
@_option("--min-keep", type=int, callback=positive, help="Fewest channels any unit keeps.")
@_option("--min-keep-ratio", type=float, callback=non_negative,
         help="No unit of the sensitivity, uniform or search allocation keeps fewer than this fraction of its channels "
              "(Torch-Pruning's max_pruning_ratio is 1 minus it); 0: the sensitivity grid's lowest ratio.")
@_option("--pop-size", type=int, callback=positive, help="GA population.")
@_option("--generations", type=int, callback=positive, help="GA generations.")
@_option("--crossover", help="GA crossover operator (name or module:fn).")
@_option("--mutation", help="GA mutation operator (name or module:fn).")
@_option("--selection", help="GA selection (roulette, tournament or module:fn).")
@_option("--seeding", type=click.Choice(SEEDINGS),
         help="GA start: greedy puts ThiNet's greedy solution and swap mutants of it in 10 percent of the first "
              "population (the GA's best stage-1 error is then never worse than the greedy's); none is the paper's "
              "random start.")
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
@_option("--finetune-lr", type=float, callback=positive,
         help="SGD learning rate of the KD fine-tunes (constant over the per-unit steps, cosine over the final epochs).")
@_option("--loss", type=click.Choice(["kd", "ce"]),
         help="Fine-tune loss: knowledge distillation from the original, or plain cross-entropy.")
@_option("--temperature", type=float, callback=positive, help=TEMPERATURE_HELP)
@_option("--alpha", type=float, callback=zero_one, help=ALPHA_HELP)
@_option("--at-weight", type=float, callback=non_negative,
         help="Attention-transfer term of the KD loss (Zagoruyko & Komodakis 2017); 0: plain KD.")
@click.option("--refit/--no-refit", default=PRUNE_DEFAULTS["refit"],
              help="Least-squares refit of each unit's consumers on the kept channels (ThiNet) before pruning. "
                   "Default: every unit whose consumers it can refit (ungrouped zero-padded convolutions or linear "
                   "layers, plain weights, a Gram under 512 MiB; the others are logged); --refit refuses a model "
                   "where one is not, --no-refit is the paper's method.")
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
    from evoprune.prune_runs import prune_from_options

    emit_json(prune_from_options(p, log=echo, progress=lambda: not (Ctx.quiet or Ctx.json), on_rank=one_voice,
                                 default_out=default_out("prune")))


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
    from evoprune.prune_runs import sensitivity_from_options

    p = apply_config(ctx, params, params.pop("config", None))
    emit_json(sensitivity_from_options(p, log=echo, default_out=default_out("sensitivity")))
