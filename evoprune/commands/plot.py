"""``evoprune plot``: Pareto fronts and convergence curves from ``search`` / ``compare`` run directories."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np

from evoprune.commands.common import echo, emit_json, handle_errors
from evoprune.errors import EvopruneError


class _Run:
    """One finished run directory: label, seed, front, history and its problem description."""

    def __init__(self, path: Path) -> None:
        from evoprune.io import read_json

        self.path = path
        self.result = read_json(path / "result.json", "run result")
        cfg = read_json(path / "config.json", "run config") if (path / "config.json").exists() else {}
        info = cfg.get("problem_info") or {}
        self.objectives: List[str] = list(self.result.get("objectives") or info.get("objectives") or [])
        if not self.objectives:
            raise EvopruneError(f"run '{path}' does not name its objectives; was it written by evoprune search?")
        self.weights = list(info.get("weights") or [-1.0] * len(self.objectives))
        self.info = info
        self.strategy = str(self.result.get("strategy"))
        self.seed = int(self.result.get("seed", 0))
        self.front = np.asarray(self.result.get("front_fitness") or [], dtype=float).reshape(-1, len(self.objectives))
        self._history: Optional[np.ndarray] = None
        self.label = self.strategy

    @property
    def history(self) -> np.ndarray:
        if self._history is None:
            from evoprune.commands.search import read_history

            self._history = read_history(self.path, self.objectives)
        return self._history


def collect_runs(paths: Sequence[str]) -> List[_Run]:
    """Run directories under each path: the path itself (a search run), or ``*/seed*/`` (a compare run)."""
    runs: List[_Run] = []
    for raw in paths:
        p = Path(raw)
        if (p / "result.json").is_file():
            found = [p]
        else:
            found = sorted({r.parent for r in p.glob("*/seed*/result.json")}
                           | {r.parent for r in p.glob("*/result.json")})
        if not found:
            raise EvopruneError(f"'{raw}' holds no runs (no result.json in it or in */seed*/); "
                                "give a search or compare output directory")
        for d in found:
            runs.append(_Run(d))
    objs = {tuple(r.objectives) for r in runs}
    if len(objs) > 1:
        raise EvopruneError(f"the runs have different objectives ({' vs '.join(map(str, sorted(objs)))}); "
                            "plot runs of one problem together")
    # the same strategy from different directories (two compare runs) is told apart by its directory
    roots = {}
    for r in runs:
        root = r.path.parent.parent if r.path.name.startswith("seed") else r.path
        roots.setdefault(r.strategy, set()).add(str(root))
    for r in runs:
        if len(roots[r.strategy]) > 1:
            root = r.path.parent.parent if r.path.name.startswith("seed") else r.path
            r.label = f"{r.strategy} ({root.name})"
    return runs


def _problem_view(runs: List[_Run]) -> Any:
    info = runs[0].info
    return types.SimpleNamespace(
        name=info.get("name", runs[0].result.get("problem")), objectives=runs[0].objectives,
        weights=runs[0].weights,
        true_front=None if info.get("true_front") is None else np.asarray(info["true_front"], dtype=float),
        hv_ref=info.get("hv_ref"), optimum=info.get("optimum"),
    )


def _by_label(runs: List[_Run]) -> Dict[str, List[_Run]]:
    out: Dict[str, List[_Run]] = {}
    for r in runs:
        out.setdefault(r.label, []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r.seed)
    return out


def fronts_figure(runs: List[_Run], reference: Optional[Dict[str, np.ndarray]], accuracy: bool,
                  title: Optional[str]) -> Tuple[Any, Dict[str, Any]]:
    """Per strategy, the front of its median-hypervolume seed (a representative run, not a union of seeds)."""
    from evoprune.indicators import hypervolume, reference_point
    from evoprune.plot import plot_fronts

    prob = _problem_view(runs)
    ref = reference_point(prob, [r.front for r in runs], prob.weights)
    fronts, chosen = {}, {}
    for label, rs in _by_label(runs).items():
        hvs = np.asarray([hypervolume(r.front, ref, prob.weights) for r in rs])
        med = rs[int(np.argsort(hvs, kind="stable")[(len(rs) - 1) // 2])]
        name = f"{label} ({len(med.front)} points)" if len(rs) == 1 else \
            f"{label}: seed {med.seed}, median hv of {len(rs)} ({len(med.front)} points)"
        fronts[name] = med.front
        chosen[label] = {"seed": med.seed, "hv": float(hypervolume(med.front, ref, prob.weights))}
    from evoprune.plot import is_error

    objs = prob.objectives
    # accuracy-vs-cost is how pruning results are read: an error-like objective goes on the y axis
    axes = (1, 0) if is_error(objs[0]) and not is_error(objs[1]) else (0, 1)
    fig = plot_fronts(fronts, objs, true_front=prob.true_front, reference=reference, accuracy=accuracy,
                      title=title or f"Pareto fronts on {prob.name}", axes=axes)
    return fig, {"reference_point": np.asarray(ref).tolist(), "fronts": chosen}


def convergence_figure(runs: List[_Run], title: Optional[str], points: int = 100) -> Tuple[Any, Dict[str, Any]]:
    """Best objective (one objective) or hypervolume (several) vs evaluations, mean +- std over seeds."""
    from evoprune.indicators import best_at, hypervolume_curve, reference_point
    from evoprune.plot import axis_label, plot_convergence

    prob = _problem_view(runs)
    longest = max(len(r.history) for r in runs)
    if longest == 0:
        raise EvopruneError("the runs have no evaluations to plot")
    grid = np.unique(np.linspace(1, longest, num=min(points, longest)).round().astype(int))
    multi = len(prob.objectives) > 1
    ref = reference_point(prob, [r.front for r in runs], prob.weights) if multi else None
    curves = {}
    for label, rs in _by_label(runs).items():
        if multi:
            Y = np.stack([hypervolume_curve(r.history, ref, prob.weights, at=grid)[1] for r in rs])
        else:
            Y = np.stack([best_at(r.history, grid, prob.weights) for r in rs])
        curves[label] = (grid, Y)
    if multi:
        ylabel = f"hypervolume (ref {', '.join(f'{v:.3g}' for v in ref)})"
    else:
        sense = "max" if prob.weights[0] > 0 else "min"
        ylabel = f"best {axis_label(prob.objectives[0])} so far ({sense})"
    optimum = None if multi or prob.optimum is None else float(np.ravel(prob.optimum)[0])
    fig = plot_convergence(curves, ylabel=ylabel, optimum=optimum,
                           title=title or f"Convergence on {prob.name}")
    return fig, {"grid_points": int(len(grid)), "indicator": "hv" if multi else "best",
                 **({"reference_point": np.asarray(ref).tolist()} if multi else {})}


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
    from evoprune.io import check_output_file
    from evoprune.plot import is_error, load_reference_points, save_figure

    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ("png", "svg", "pdf")]
    if not fmts or bad:
        raise EvopruneError(f"--format {formats!r}: use png, svg and/or pdf, comma-separated")
    found = collect_runs(runs)
    objectives = found[0].objectives
    multi = len(objectives) > 1
    if kind == "fronts" and not multi:
        raise EvopruneError(f"the runs have one objective ({objectives[0]}), so there is no Pareto front; "
                            "use --kind convergence")
    if reference and not multi:
        raise EvopruneError("--reference points are drawn on Pareto fronts; these runs have one objective")
    refs = load_reference_points(reference, objectives) if reference else None
    if accuracy is None:
        accuracy = any(is_error(o) for o in objectives)
    out_dir = Path(out) if out else Path(runs[0]) / "plots"
    wanted = [k for k in ("fronts", "convergence") if kind in (k, "all") and (k != "fronts" or multi)]
    for k in wanted:
        for f in fmts:
            check_output_file(out_dir / f"{k}.{f}", overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[str] = []
    meta: Dict[str, Any] = {"runs": len(found), "strategies": sorted({r.label for r in found})}
    if "fronts" in wanted:
        fig, info = fronts_figure(found, refs, accuracy, title)
        written += [str(p) for p in save_figure(fig, out_dir / "fronts", fmts)]
        meta["fronts"] = info
    if "convergence" in wanted:
        fig, info = convergence_figure(found, title)
        written += [str(p) for p in save_figure(fig, out_dir / "convergence", fmts)]
        meta["convergence"] = info
    for w in written:
        echo(f"wrote {w}")
    emit_json({"out": str(out_dir), "files": written, **meta})
