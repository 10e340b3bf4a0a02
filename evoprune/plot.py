"""Figures for strategy comparisons: Pareto fronts and convergence curves (matplotlib, Agg canvas).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through ``pyplot``: no global
state, no display needed, and a user's interactive backend is left alone. Every function returns the figure and
draws on ``ax`` when one is given, so other commands (and notebooks) can compose them.
"""
from __future__ import annotations

import io
import json
import math
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evoprune.errors import EvopruneError

if TYPE_CHECKING:  # pragma: no cover
    from evoprune.runs import RunDir

# Colour-blind-safe cycle (Okabe-Ito), then markers so series differ in print too.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def new_figure(width: float = 6.4, height: float = 4.6) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def is_error(name: str) -> bool:
    return "error" in name.lower() or name.lower() in ("err", "top1_err", "top1-err")


def axis_label(name: str, accuracy: bool = False) -> str:
    """A readable axis label for an objective name (units where the name implies them)."""
    low = name.lower()
    if accuracy and is_error(name):
        return "accuracy (%)"
    if "mac" in low:
        return f"{name} (fraction of the unpruned model)" if "frac" in low or "ratio" in low else name
    return name.replace("_", " ")


def transform(values: np.ndarray, name: str, accuracy: bool) -> np.ndarray:
    """Raw objective values -> plotted values (error -> accuracy in % when ``accuracy``)."""
    v = np.asarray(values, dtype=float)
    return 100.0 * (1.0 - v) if accuracy and is_error(name) else v


def _style(i: int) -> Dict[str, Any]:
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}


def plot_fronts(fronts: Mapping[str, np.ndarray], objectives: Sequence[str], *,
                true_front: Optional[np.ndarray] = None, reference: Optional[Mapping[str, np.ndarray]] = None,
                accuracy: bool = False, title: Optional[str] = None, axes: Tuple[int, int] = (0, 1),
                ax: Any = None) -> Figure:
    """Pareto fronts of several strategies on one axes (objective ``axes[0]`` on x, ``axes[1]`` on y).

    ``fronts``: ``{label: [F, n_obj] raw objective values}``; ``true_front``: drawn as a grey line;
    ``reference``: ``{name: [P, n_obj]}`` named points (one point: a star; several: a dashed series, e.g. an L1
    sweep); ``accuracy``: plot ``100 * (1 - error)`` for objectives named like an error.
    """
    fig = ax.figure if ax is not None else new_figure()
    ax = ax if ax is not None else fig.add_subplot()
    i, j = axes
    xn, yn = objectives[i], objectives[j]
    if true_front is not None and len(true_front):
        tf = np.asarray(true_front, dtype=float)
        tf = tf[np.argsort(tf[:, i], kind="stable")]
        ax.plot(transform(tf[:, i], xn, accuracy), transform(tf[:, j], yn, accuracy), color="0.55", lw=1.5,
                ls="-", marker=".", ms=3, label="true front", zorder=1)
    for k, (label, F) in enumerate(fronts.items()):
        F = np.asarray(F, dtype=float).reshape(-1, len(objectives))
        if not len(F):
            continue
        F = F[np.argsort(F[:, i], kind="stable")]
        st = _style(k)
        ax.plot(transform(F[:, i], xn, accuracy), transform(F[:, j], yn, accuracy), ls="-", lw=1.0, ms=5,
                alpha=0.9, label=label, zorder=3 + k, **st)
    for k, (name, pts) in enumerate((reference or {}).items()):
        P = np.asarray(pts, dtype=float).reshape(-1, len(objectives))
        x, y = transform(P[:, i], xn, accuracy), transform(P[:, j], yn, accuracy)
        if len(P) == 1:
            ax.plot(x, y, ls="none", marker="*", ms=13, color="black", mec="white", zorder=10, label=name)
            ax.annotate(name, (x[0], y[0]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        else:
            order = np.argsort(x, kind="stable")
            ax.plot(x[order], y[order], ls="--", lw=1.2, marker="x", ms=6, color="0.2", zorder=9, label=name)
    ax.set_xlabel(axis_label(xn, accuracy))
    ax.set_ylabel(axis_label(yn, accuracy))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    ax.set_title(_wrap(title or "Pareto fronts"), fontsize=10)
    return fig


def plot_convergence(curves: Mapping[str, Tuple[np.ndarray, np.ndarray]], *, ylabel: str,
                     xlabel: str = "fitness evaluations", title: Optional[str] = None,
                     optimum: Optional[float] = None, log_y: bool = False, ax: Any = None) -> Figure:
    """Mean curve +- one standard deviation (band) over seeds for each strategy.

    ``curves``: ``{label: (evaluations [T], values [S, T])}`` -- one row per seed on a common evaluation grid.
    """
    fig = ax.figure if ax is not None else new_figure()
    ax = ax if ax is not None else fig.add_subplot()
    for k, (label, (x, Y)) in enumerate(curves.items()):
        Y = np.atleast_2d(np.asarray(Y, dtype=float))
        x = np.asarray(x, dtype=float)
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(Y, axis=0)
            std = np.nanstd(Y, axis=0, ddof=1) if len(Y) > 1 else np.zeros_like(mean)
        st = _style(k)
        n = len(Y)
        ax.plot(x, mean, color=st["color"], lw=1.8, label=f"{label} (mean of {n} seed{'s' if n != 1 else ''})")
        if n > 1:
            ax.fill_between(x, mean - std, mean + std, color=st["color"], alpha=0.18, lw=0)
    if optimum is not None and math.isfinite(optimum) and curves:
        xs = np.concatenate([np.asarray(x, dtype=float) for x, _ in curves.values()])
        # a plotted segment (not axhline) so autoscaling keeps the optimum in view
        ax.plot([xs.min(), xs.max()], [optimum, optimum], color="0.3", ls=":", lw=1.4, label=f"optimum ({optimum:.4g})")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85, title="shaded: ± 1 std over seeds", title_fontsize=8)
    ax.set_title(_wrap(title or "Convergence"), fontsize=10)
    return fig


def _wrap(text: str, width: int = 70) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


# --------------------------------------------------------------------------------------- figures of run dirs
def _problem_view(runs: List["RunDir"]) -> Any:
    info = runs[0].info
    return types.SimpleNamespace(
        name=info.get("name", runs[0].result.get("problem")), objectives=runs[0].objectives,
        weights=runs[0].weights,
        true_front=None if info.get("true_front") is None else np.asarray(info["true_front"], dtype=float),
        hv_ref=info.get("hv_ref"), optimum=info.get("optimum"),
    )


def _by_label(runs: List["RunDir"]) -> Dict[str, List["RunDir"]]:
    out: Dict[str, List["RunDir"]] = {}
    for r in runs:
        out.setdefault(r.label, []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r.seed)
    return out


def fronts_figure(runs: List["RunDir"], reference: Optional[Dict[str, np.ndarray]], accuracy: bool,
                  title: Optional[str]) -> Tuple[Any, Dict[str, Any]]:
    """Per strategy, the front of its median-hypervolume seed (a representative run, not a union of seeds).

    ``runs``: :class:`evoprune.runs.RunDir` of one problem (see :func:`evoprune.runs.collect_runs`).
    """
    from evoprune.indicators import hypervolume, reference_point

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
    objs = prob.objectives
    # accuracy-vs-cost is how pruning results are read: an error-like objective goes on the y axis
    axes = (1, 0) if is_error(objs[0]) and not is_error(objs[1]) else (0, 1)
    fig = plot_fronts(fronts, objs, true_front=prob.true_front, reference=reference, accuracy=accuracy,
                      title=title or f"Pareto fronts on {prob.name}", axes=axes)
    return fig, {"reference_point": np.asarray(ref).tolist(), "fronts": chosen}


def convergence_figure(runs: List["RunDir"], title: Optional[str], points: int = 100) -> Tuple[Any, Dict[str, Any]]:
    """Best objective (one objective) or hypervolume (several) vs evaluations, mean +- std over seeds."""
    from evoprune.indicators import best_at, hypervolume_curve, reference_point

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


def plot_runs(runs: Sequence[str], out: Optional[str] = None, kind: str = "all", reference: Optional[str] = None,
              accuracy: Optional[bool] = None, formats: str = "png,svg", title: Optional[str] = None,
              overwrite: bool = False) -> Dict[str, Any]:
    """Figures of search/compare run directories into ``out`` (default ``<first run>/plots``).

    ``kind``: ``all``, ``fronts`` (2+ objectives) or ``convergence``; ``reference``: a JSON file of named points
    (see :func:`load_reference_points`); ``accuracy``: plot error-like objectives as accuracy (None: when one
    exists); ``formats``: comma-separated png, svg, pdf. Existing figure files are refused unless ``overwrite``.
    Returns the summary: ``out``, the ``files`` written, the number of runs, the strategies and what each figure
    shows.
    """
    from evoprune.io import check_output_file
    from evoprune.runs import collect_runs

    fmts = parse_formats(formats)
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
    return {"out": str(out_dir), "files": written, **meta}


def parse_formats(formats: Any) -> List[str]:
    """``"png,svg"`` (or a list) -> ``["png", "svg"]``; anything but png, svg and pdf is a one-line error."""
    fmts = ([f.strip().lower() for f in formats.split(",") if f.strip()] if isinstance(formats, str)
            else list(formats))
    if not fmts or any(f not in ("png", "svg", "pdf") for f in fmts):
        given = formats if isinstance(formats, str) else ",".join(formats)
        raise EvopruneError(f"--format {given!r}: use png, svg and/or pdf, comma-separated")
    return fmts


def save_figure(fig: Figure, stem: Any, formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> List[Path]:
    """Write ``stem.<fmt>`` for every format, atomically; returns the paths."""
    from evoprune.io import atomic_write_bytes

    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def load_reference_points(path: Any, objectives: Sequence[str]) -> Dict[str, np.ndarray]:
    """Read named reference points from JSON.

    Format: ``{"name": point_or_series, ...}`` where a point is ``[v1, v2, ...]`` (one value per objective, raw
    units, in the problem's objective order) or ``{"objective name": value, ...}``, and a series (e.g. an L1
    sweep) is a list of points. Example::

        {"unpruned": {"error": 0.062, "macs": 1.0},
         "L1 sweep": [{"error": 0.07, "macs": 0.7}, {"error": 0.09, "macs": 0.5}]}
    """
    p = Path(path)
    if not p.is_file():
        raise EvopruneError(f"reference points file '{path}' does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"reference points file '{path}' is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise EvopruneError(f"reference points file '{path}' must be a JSON object {{name: point or [points]}}")
    out: Dict[str, np.ndarray] = {}
    for name, value in data.items():
        pts = value if isinstance(value, list) and value and isinstance(value[0], (list, dict)) else [value]
        rows = [_point(name, v, objectives, path) for v in pts]
        out[str(name)] = np.asarray(rows, dtype=float)
    return out


def _point(name: str, v: Any, objectives: Sequence[str], path: Any) -> List[float]:
    if isinstance(v, dict):
        missing = [o for o in objectives if o not in v]
        if missing:
            raise EvopruneError(f"reference point '{name}' in '{path}' lacks {', '.join(missing)}; "
                                f"give every objective: {', '.join(objectives)}")
        v = [v[o] for o in objectives]
    if not isinstance(v, list) or len(v) != len(objectives) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise EvopruneError(f"reference point '{name}' in '{path}' must be {len(objectives)} numbers "
                            f"({', '.join(objectives)}) or an object with those keys")
    return [float(x) for x in v]


# ----------------------------------------------------------------------------------------------- pipeline plots
def plot_sensitivity(sens: Any, stem: Any, formats: Sequence[str] = ("png", "svg")) -> List[Path]:
    """Accuracy-drop curves per unit vs keep ratio (colour runs from the first to the last unit)."""
    import matplotlib

    drops = sens.drops() * 100
    ratios = np.asarray(sens.ratios)
    order = np.argsort(ratios)
    fig = new_figure(7.5, 4.6)
    ax = fig.add_subplot(111)
    cmap = matplotlib.colormaps["viridis"]
    for i, u in enumerate(sens.units):
        ax.plot(ratios[order], drops[i, order], marker="o", ms=3, lw=1.2,
                color=cmap(i / max(1, len(sens.units) - 1)), label=f"{u} ({sens.sizes[i]})")
    ax.set_xlabel("keep ratio of the unit (all other units unpruned)")
    ax.set_ylabel("calibration accuracy drop (points, adaptive BN)")
    ax.set_title(f"Sensitivity per unit (channels by {sens.method}); base accuracy {sens.base_acc * 100:.1f} %")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    return save_figure(fig, stem, formats)


def plot_training(history: Sequence[Mapping[str, Any]], stem: Any, formats: Sequence[str] = ("png", "svg"),
                  title: str = "Training") -> List[Path]:
    """Loss and accuracy per epoch of a train/finetune run (``metrics.jsonl`` records)."""
    ep = [r["epoch"] for r in history]
    fig = new_figure(9.0, 3.8)
    ax1, ax2 = fig.add_subplot(121), fig.add_subplot(122)
    ax1.plot(ep, [r["train_loss"] for r in history], "o-", ms=3, color="tab:blue", label="train loss")
    if all("test_loss" in r for r in history):
        ax1.plot(ep, [r["test_loss"] for r in history], "o-", ms=3, color="tab:red", label="test loss")
    ax2.plot(ep, [100 * r["train_acc"] for r in history], "o-", ms=3, color="tab:blue", label="train top-1")
    if all("test_top1" in r for r in history):
        ax2.plot(ep, [100 * r["test_top1"] for r in history], "o-", ms=3, color="tab:red", label="test top-1")
    for ax, label in ((ax1, "loss"), (ax2, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, stem, formats)


def plot_keep_ratios(report: Any, stem: Any, formats: Sequence[str] = ("png", "svg")) -> List[Path]:
    """Bar chart of the per-unit keep ratio the pipeline applied (network order), labelled kept/original."""
    units = list(report.ratios)
    counts = {r["unit"]: (r["k"], r["n"]) for r in report.units}
    vals = [counts[u][0] / counts[u][1] if u in counts else 1.0 for u in units]
    fig = new_figure(max(6.0, 0.5 * len(units)), 4.2)
    ax = fig.add_subplot(111)
    ax.bar(range(len(units)), vals, color="tab:blue")
    for i, u in enumerate(units):
        if u in counts:
            ax.text(i, vals[i] + 0.01, f"{counts[u][0]}/{counts[u][1]}", ha="center", va="bottom", fontsize=6,
                    rotation=90)
    ax.set_xticks(range(len(units)))
    ax.set_xticklabels(units, rotation=70, ha="right", fontsize=7)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("kept channels / original channels")
    fin = report.final
    ax.set_title(f"Per-unit keep ratios: MACs {fin['macs_reduction']:.2f}x fewer, params "
                 f"{fin['params_reduction']:.2f}x fewer")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, stem, formats)


def plot_trajectory(report: Any, stem: Any, formats: Sequence[str] = ("png", "svg")) -> List[Path]:
    """Calibration accuracy vs remaining MACs after each unit: right after pruning it, and after its fine-tune."""
    base = report.base
    m = [1.0] + [r["macs"] / base["macs"] for r in report.units]
    ap = [base["calib_top1"]] + [r["calib_acc_after_prune"] for r in report.units]
    af = [base["calib_top1"]] + [r["calib_acc_after_finetune"] for r in report.units]
    fig = new_figure(6.6, 4.4)
    ax = fig.add_subplot(111)
    ax.plot(m, [a * 100 for a in ap], "o--", color="tab:red", ms=3, label="after pruning the unit (adaptive BN)")
    ax.plot(m, [a * 100 for a in af], "o-", color="tab:blue", ms=3, label="after its short fine-tune")
    ax.scatter([report.final["macs_ratio"]], [report.final["calib_top1"] * 100], marker="*", s=120, color="k",
               zorder=5, label="after the final fine-tune")
    ax.set_xlabel("MACs remaining (fraction of the unpruned network)")
    ax.set_ylabel("calibration accuracy (%)")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Layer-by-layer pruning trajectory")
    return save_figure(fig, stem, formats)


def plot_points(series: Mapping[str, Sequence[Tuple[float, float]]], stem: Any,
                title: str = "Accuracy vs MACs") -> List[Path]:
    """Named (MACs fraction, accuracy fraction) points or polylines on one axes (demo and reproduction plots)."""
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(111)
    for i, (name, pts) in enumerate(series.items()):
        arr = np.asarray(pts, dtype=float).reshape(-1, 2)
        style = _style(i)
        ax.plot(arr[:, 0], arr[:, 1] * 100, marker=style.get("marker", "o"), color=style.get("color"),
                ls="-" if len(arr) > 1 else "none", ms=7, label=name)
    ax.set_xlabel("MACs (fraction of the unpruned network)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, stem)
