"""``evoprune search``: one strategy on one problem with a fixed evaluation budget (see :mod:`evoprune.runs`).

Problem options: ``--param KEY=VALUE`` goes to the problem factory (values become int/float/bool when they parse),
together with ``seed=--problem-seed`` and, only when given, ``--model/--checkpoint/--data/--data-dir``.
Strategy options: ``--strategy-param KEY=VALUE`` and the shortcuts ``--pop-size/--crossover/--mutation/--selection/
--init``.
"""
from __future__ import annotations

from typing import Any

import click

from evoprune.commands.common import default_out, emit_json
from evoprune.commands.options import parse_run_options, problem_and_strategy_options, run_command


@click.command("search")
@problem_and_strategy_options
@click.option("--strategy", default=None,
              help="Strategy: ga, nsga2, cmaes, cmaes-1+l, mo-cmaes, random, or module:name "
                   "(default: ga for one objective, nsga2 for several).")
@run_command
def search(ctx: click.Context, **params: Any) -> None:
    """Run one strategy on one problem with a fixed evaluation budget; write a run directory."""
    from evoprune.runs import run_search

    p, problem_params, kwargs = parse_run_options(ctx, params)
    emit_json(run_search(p["problem"], problem_params, p["out"] or default_out("search"), strategy=p["strategy"],
                         **kwargs))
