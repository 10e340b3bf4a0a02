"""``evoprune plot``: Pareto fronts and convergence curves of ``search`` / ``compare`` run directories, or the
figures of a ``prune``, ``train``, ``finetune`` or ``sensitivity`` run directory."""
from __future__ import annotations

import click

from evoprune.commands.common import echo, emit_json, handle_errors
from evoprune.errors import EvopruneError


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
    """Plot Pareto fronts and convergence (mean ± std over seeds) of search/compare runs, or redraw a prune run's
    keep ratios, accuracy-vs-MACs trajectory and sensitivity curves, a train/finetune run's loss and accuracy
    curves, or a sensitivity run's curves; PNG and SVG."""
    from evoprune.plot import plot_runs
    from evoprune.report import plot_run_dir, run_kind

    kinds = [run_kind(r) for r in runs]
    if any(k != "search" for k in kinds):
        if len(runs) > 1:
            k = next(k for k in kinds if k != "search")
            raise EvopruneError(f"plot one {k} run directory at a time (or search/compare runs together)")
        summary = plot_run_dir(runs[0], out, formats, overwrite)
    else:
        summary = plot_runs(runs, out, kind, reference, accuracy, formats, title, overwrite)
    for w in summary["files"]:
        echo(f"wrote {w}")
    emit_json(summary)
