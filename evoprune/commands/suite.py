"""``evoprune suite export|improve|run|list``: benchmark suites of the paper's per-layer problem."""
from __future__ import annotations

import click

from evoprune.commands.common import echo, emit_json, handle_errors, positive


def _ints(text: str, option: str) -> list:
    from evoprune.errors import EvopruneError

    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise EvopruneError(f"{option} '{text}' must be comma-separated positive integers, e.g. 1000,10000") from None
    if not vals or any(v < 1 for v in vals):
        raise EvopruneError(f"{option} '{text}' must be comma-separated positive integers, e.g. 1000,10000")
    return vals


def _floats(text: str, option: str) -> list:
    from evoprune.errors import EvopruneError

    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise EvopruneError(f"{option} '{text}' must be comma-separated fractions, e.g. 0.25,0.5,0.75") from None


@click.group("suite")
def suite() -> None:
    """Benchmark suites: the per-layer channel-selection problems of a trained network, frozen in a numpy file."""


@suite.command("export")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Trained model.")
@click.option("--data", default="mini-cifar10", show_default=True,
              help="Dataset whose training split gives the calibration batches (see 'evoprune list datasets').")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False), help="Folder holding the dataset files.")
@click.option("--ratios", default="0.25,0.5,0.75", show_default=True, help="Keep ratios, comma-separated.")
@click.option("--units", default=None, help="Comma-separated unit names (default: every unit).")
@click.option("--calib-batches", default=4, show_default=True, type=int, callback=positive,
              help="Training batches for the Gram matrices.")
@click.option("--batch-size", default=128, show_default=True, type=int, callback=positive)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--name", default=None, help="Suite name (default: the checkpoint's file name).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Suite file to write (.npz).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@handle_errors
def export_cmd(checkpoint, data, data_dir, ratios, units, calib_batches, batch_size, seed, name, out,
               overwrite) -> None:
    """Write the stage-1 instances of every unit x ratio (with greedy best-known solutions) to a .npz suite."""
    from evoprune.io import check_output_file
    from evoprune.suite import export_suite

    check_output_file(out, overwrite)
    s = export_suite(checkpoint, data, _floats(ratios, "--ratios"), data_dir=data_dir, calib_batches=calib_batches,
                     batch_size=batch_size, seed=seed, units=units.split(",") if units else None, name=name,
                     log=echo)
    s.save(out)
    echo(f"wrote {len(s)} instances to {out}")
    emit_json({"out": out, "instances": len(s), "name": s.name})


@suite.command("improve")
@click.option("--suite", "spec", required=True, help="Bundled suite name or .npz path.")
@click.option("--strategies", default="ga,cmaes-1+l", show_default=True)
@click.option("--budget", default=30000, show_default=True, type=int, callback=positive)
@click.option("--seeds", default="2", show_default=True, help="Count, list (0,3,7) or range (2-5).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Improved suite file to write.")
@click.option("--overwrite", is_flag=True)
@handle_errors
def improve_cmd(spec, strategies, budget, seeds, out, overwrite) -> None:
    """Raise the best-known solutions by long runs of every strategy, each polished by a swap descent."""
    from evoprune.io import check_output_file
    from evoprune.runs import parse_seeds
    from evoprune.suite import resolve_suite
    from evoprune.suite_bench import improve_suite

    check_output_file(out, overwrite)
    s = resolve_suite(spec)
    n = improve_suite(s, [x for x in strategies.split(",") if x], budget, parse_seeds(seeds, 0), log=echo)
    s.save(out)
    echo(f"{n} of {len(s)} best-known values improved -> {out}")
    emit_json({"out": out, "improved": n, "instances": len(s)})


@suite.command("run")
@click.option("--suite", "spec", required=True, help="Bundled suite name (see 'evoprune suite list') or .npz path.")
@click.option("--strategies", default="ga,cmaes,cmaes-1+l,random", show_default=True,
              help="Comma-separated strategies or LABEL=STRATEGY (e.g. ga,memetic=ga with "
                   "--strategy-param memetic.local_search=swap).")
@click.option("--strategy-param", "strategy_param", multiple=True, metavar="LABEL.KEY=VALUE",
              help="Parameter of one strategy (KEY=VALUE for all that take it); repeatable.")
@click.option("--budgets", default="1000,10000", show_default=True, help="Evaluation budgets, comma-separated.")
@click.option("--seeds", default="15", show_default=True, help="Count, list (0,3,7) or range (2-5).")
@click.option("--instances", default=None, help="Comma-separated instance names (default: all).")
@click.option("--out", required=True, type=click.Path(), help="Run directory for traces and reports.")
@click.option("--overwrite", is_flag=True)
@click.option("--resume", is_flag=True, help="Continue: finished runs in --out/traces are kept.")
@handle_errors
def run_cmd(spec, strategies, strategy_param, budgets, seeds, instances, out, overwrite, resume) -> None:
    """Every strategy x seed on every instance; gaps, rank-sum tests (Holm), Friedman ranks, ECDF (CSV + PNG/SVG)."""
    from evoprune.io import prepare_run_dir
    from evoprune.runs import parse_pairs, parse_seeds
    from evoprune.suite import resolve_suite
    from evoprune.suite_bench import check_run, format_gap_table, labelled_strategies, run_suite

    labels, specs, params = labelled_strategies(strategies, parse_pairs(strategy_param, "--strategy-param"))
    b = _ints(budgets, "--budgets")
    seed_list = parse_seeds(seeds, 0)
    s = resolve_suite(spec).select(instances.split(",") if instances else None)
    check_run(s, specs, b, labels, params)  # before the run directory is touched (--overwrite deletes it)
    run_dir = prepare_run_dir(out, overwrite, resume)
    report = run_suite(s, specs, b, seed_list, run_dir, params=params, labels=labels, log=echo)
    echo("")
    echo(format_gap_table(report))
    echo(f"reports in {run_dir}: gaps.csv, tests.csv, runs.csv, ecdf.png, cd_<budget>.png")
    emit_json({"out": str(run_dir), "by_budget": {k: v["strategies"] for k, v in report["by_budget"].items()}})


@suite.command("list")
@handle_errors
def list_cmd() -> None:
    """The bundled suites and their instances."""
    from evoprune.suite import bundled_suites, load_suite
    from evoprune.textable import format_table

    rows = {}
    for name, path in bundled_suites().items():
        s = load_suite(path)
        rows[name] = {"instances": len(s), "arch": s.meta.get("arch"), "dataset": s.meta.get("dataset")}
    echo(format_table(["suite", "instances", "network", "data"],
                      [[n, r["instances"], r["arch"], r["dataset"]] for n, r in rows.items()], align="lrll"))
    emit_json(rows)
