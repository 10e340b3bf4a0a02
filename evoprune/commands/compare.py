"""``evoprune compare``: strategies x seeds on one problem, each run in ``DIR/<strategy>/seed<k>/``, and
``DIR/summary.json`` / ``DIR/summary.csv`` (see :mod:`evoprune.runs`).

Options as in ``evoprune search``; ``--strategy-param NAME.KEY=VALUE`` targets one strategy.
"""
from __future__ import annotations

from typing import Any

import click

from evoprune.commands.common import default_out, emit_json
from evoprune.commands.options import parse_run_options, problem_and_strategy_options, run_command


@click.command("compare")
@problem_and_strategy_options
@click.option("--strategies", default=None,
              help="Comma-separated strategies (default: ga,cmaes,cmaes-1+l,random for one objective; "
                   "nsga2,mo-cmaes,random for several).")
@click.option("--seeds", default="5", show_default=True,
              help="Number of seeds (runs --seed .. --seed+N-1), or a list 0,3,7, or a range 2-5.")
@run_command
def compare(ctx: click.Context, **params: Any) -> None:
    """Run several strategies x seeds with the same budget on one problem; write runs, summary.json/.csv."""
    from evoprune.runs import parse_seeds, run_compare

    p, problem_params, kwargs = parse_run_options(ctx, params)
    seeds = parse_seeds(p["seeds"], p["seed"])
    emit_json(run_compare(p["problem"], problem_params, p["out"] or default_out("compare"),
                          strategies=p["strategies"], seeds=seeds, **kwargs))
