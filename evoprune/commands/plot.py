"""``evoprune plot``: Pareto fronts and convergence curves from ``search`` / ``compare`` run directories."""
from __future__ import annotations

import click

from evoprune.commands.common import echo, emit_json, handle_errors


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, type=click.Path(), help="Folder for the figures (default: <first RUN>/plots).")
@click.option("--kind", default="all", show_default=True, type=click.Choice(["all", "fronts", "convergence"]),
              help="Which figures: Pareto fronts (2+ objectives), convergence curves, or all that apply.")
@click.option("--reference", default=None, type=click.Path(dir_okay=False),
              help='JSON of named reference points, e.g. {"unpruned": {"error": 0.06, "macs": 1.0}, '
                   '"L1 sweep": [[0.07, 0.7], [0.09, 0.5]]} (raw objective units).')
@click.option("--accuracy/--no-accuracy", default=None,
              help="Plot accuracy (%) = 100 x (1 - error) for objectives named like an error "
                   "(default: on when such an objective exists).")
@click.option("--format", "formats", default="png,svg", show_default=True, help="Comma-separated: png, svg, pdf.")
@click.option("--title", default=None, help="Title prefix for the figures.")
@click.option("--overwrite", is_flag=True, help="Replace existing figure files.")
@handle_errors
def plot(runs, out, kind, reference, accuracy, formats, title, overwrite) -> None:
    """Plot Pareto fronts and convergence (mean ± std over seeds) of search/compare runs; PNG and SVG."""
    from evoprune.plot import plot_runs

    summary = plot_runs(runs, out, kind, reference, accuracy, formats, title, overwrite)
    for w in summary["files"]:
        echo(f"wrote {w}")
    emit_json(summary)
