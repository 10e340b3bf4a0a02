"""Options shared by ``evoprune search`` and ``evoprune compare``, and what they pass on to :mod:`evoprune.runs`."""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

import click

from evoprune.commands.common import apply_config, echo, handle_errors, positive, run_options, worker_options
from evoprune.errors import EvopruneError

SHORTCUTS = ("pop_size", "crossover", "mutation", "selection", "init")


def require_problem(p: Mapping[str, Any]) -> None:
    if not p.get("problem"):
        raise EvopruneError("--problem is required (a name from 'evoprune list problems', or 'problem = ...' in "
                            "--config)")


def shortcut_values(p: Mapping[str, Any]) -> Dict[str, Any]:
    """--pop-size/--crossover/--mutation/--selection/--init (None where not given)."""
    return {k: p.get(k) for k in SHORTCUTS}


def network_extra(p: Mapping[str, Any]) -> Dict[str, Any]:
    """The network-problem options --model/--checkpoint/--data/--data-dir (None where not given)."""
    return {"model": p.get("model"), "checkpoint": p.get("checkpoint"), "data": p.get("data"),
            "data_dir": p.get("data_dir")}


def run_command(f: Callable) -> Callable:
    """The tail of the search/compare commands: --out/--seed/... (:func:`run_options`), the click context and
    one-line errors."""
    return run_options(click.pass_context(handle_errors(f)))


def parse_run_options(ctx: click.Context, params: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any],
                                                                            Dict[str, Any]]:
    """The options of search/compare (config file merged), the problem parameters and the keywords that
    :func:`~evoprune.runs.run_search` and :func:`~evoprune.runs.run_compare` share (checked in this order)."""
    from evoprune.parallel import parse_workers
    from evoprune.runs import parse_pairs

    p = apply_config(ctx, params, params.pop("config", None))
    require_problem(p)
    parse_workers(p["workers"], p["scheduler"])  # bad specs fail before anything is built
    problem_params = parse_pairs(p["param"], "--param")
    given = parse_pairs(p["strategy_param"], "--strategy-param")
    return p, problem_params, {
        "strategy_args": given, "shortcuts": shortcut_values(p), "budget": p["budget"], "seed": p["seed"],
        "problem_seed": p["problem_seed"], "checkpoint_every": p["checkpoint_every"], "extra": network_extra(p),
        "device": p["device"], "workers": p["workers"], "scheduler": p["scheduler"], "overwrite": p["overwrite"],
        "resume": p["resume"], "log": echo}


def problem_and_strategy_options(f: Callable) -> Callable:
    """The problem, budget, strategy-parameter, network and --workers options of search and compare."""
    opts = [
        click.option("--problem", default=None,
                     help="Problem name (see 'evoprune list problems') or module:factory (required; may come from "
                          "--config)."),
        click.option("--budget", default=2000, show_default=True, type=int, callback=positive,
                     help="Fitness evaluations per run (the same for every strategy)."),
        click.option("--param", "param", multiple=True, metavar="KEY=VALUE",
                     help="Problem factory parameter, repeatable (e.g. --param n=64 --param k=16)."),
        click.option("--strategy-param", "strategy_param", multiple=True, metavar="KEY=VALUE",
                     help="Strategy parameter, repeatable (e.g. sigma=0.3; in compare NAME.KEY=VALUE targets one)."),
        click.option("--pop-size", default=None, type=int, callback=positive,
                     help="Population size (lambda for CMA-ES, mu for MO-CMA-ES, batch for random)."),
        click.option("--crossover", default=None, help="Crossover operator name or module:name."),
        click.option("--mutation", default=None, help="Mutation operator name or module:name."),
        click.option("--selection", default=None, help="Selection operator name or module:name (GA)."),
        click.option("--init", default=None, help="Initialisation operator name or module:name."),
        click.option("--problem-seed", default=0, show_default=True, type=int,
                     help="Seed of the problem instance (kept fixed across strategy seeds)."),
        click.option("--checkpoint-every", default=10, show_default=True, type=int, callback=positive,
                     help="Save the strategy state every N generations (for --resume)."),
        click.option("--model", default=None, help="Network problems: model name."),
        click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
                     help="Network problems: trained weights."),
        click.option("--data", default=None, help="Network problems: dataset name."),
        click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                     help="Network problems: dataset folder."),
    ]
    f = worker_options(f)  # innermost: listed last in --help
    for opt in reversed(opts):
        f = opt(f)
    return f
