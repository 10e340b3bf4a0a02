"""``report.md`` of every run directory (what was run, the result, the tables, the plots) and the figures
``evoprune plot RUN_DIR`` redraws for prune, train, finetune and sensitivity runs (search/compare runs: :mod:`plot`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import EvopruneError
from .io import atomic_write_text, read_json
from .textable import markdown_table

REPORT = "report.md"


def is_prune_run(path: Any) -> bool:
    """A finished ``evoprune prune`` run directory (it holds ``results.json`` with per-unit steps)."""
    p = Path(path)
    return (p / "results.json").is_file() and (p / "prune_config.json").is_file()


def run_kind(path: Any) -> str:
    """``prune``, ``train``, ``finetune``, ``sensitivity`` or ``search`` (search/compare and anything else)."""
    p = Path(path)
    if is_prune_run(p):
        return "prune"
    if (p / "metrics.jsonl").is_file() and (p / "config.json").is_file():
        cfg = read_json(p / "config.json", "run config")
        return "finetune" if "teacher" in cfg else "train"
    if (p / "sensitivity.json").is_file() and not (p / "results.json").is_file():
        return "sensitivity"
    return "search"


def _figures(out: Path, figures: Sequence[Tuple[str, str]]) -> List[str]:
    shown = [(stem, title) for stem, title in figures if (out / f"{stem}.png").is_file()]
    return (["", "## Figures", ""] + [f"![{title}]({stem}.png)" for stem, title in shown]) if shown else []


RESULT_HEADER = ["", "test top-1", "calibration top-1", "MACs", "params"]


def result_rows(base: Mapping[str, Any], final: Mapping[str, Any]) -> List[List[str]]:
    """The original and the pruned network side by side (report.md's and ``prune``'s closing table)."""
    return [["original", f"{100 * base['test_top1']:.2f} %", f"{100 * base['calib_top1']:.2f} %", f"{base['macs']:,}",
             f"{base['params']:,}"],
            ["pruned", f"{100 * final['test_top1']:.2f} %", f"{100 * final['calib_top1']:.2f} %",
             f"{final['macs']:,} ({final['macs_reduction']:.2f}x fewer)",
             f"{final['params']:,} ({final['params_reduction']:.2f}x fewer)"]]


def prune_report(run_dir: Any) -> str:
    """The markdown report of a finished prune run."""
    out = Path(run_dir)
    res = read_json(out / "results.json", "prune results")
    opts = read_json(out / "config.json", "run config") if (out / "config.json").is_file() else {}
    cfg, base, final = res.get("config", {}), res["base"], res["final"]
    target = ", ".join(f"{k.replace('target_', '')} <= {cfg[k]:g}" for k in ("target_macs", "target_params")
                       if cfg.get(k) is not None) or (f"max drop {cfg['max_drop']:g}" if cfg.get("max_drop")
                                                      else "given ratios")
    lines = [f"# evoprune prune: {out.name}", "",
             f"- checkpoint: `{opts.get('checkpoint', '?')}`; data: `{opts.get('data', '?')}`",
             f"- budget: {target}; selector `{cfg.get('selector')}` with fitness `{cfg.get('fitness')}`"
             f" (pop {cfg.get('pop_size')}, {cfg.get('generations')} generations); order `{cfg.get('order')}`",
             f"- fine-tune: {cfg.get('finetune_steps')} {cfg.get('loss', '').upper()} steps after each unit, "
             f"{cfg.get('finetune_epochs')} final epoch(s) at lr {cfg.get('finetune_lr')}; seed {cfg.get('seed')}",
             f"- wall time: {res.get('wall_time_s', 0) / 60:.1f} min", "", "## Result", ""]
    lines += markdown_table(RESULT_HEADER, result_rows(base, final), "lrrrr")
    lines += ["", "## Unit by unit", ""]
    lines += markdown_table(["step", "unit", "channels", "calib. acc. after pruning", "after its fine-tune", "MACs left",
                     "time"],
                    [[u["step"], f"`{u['unit']}`", f"{u['n']} -> {u['k']}", f"{100 * u['calib_acc_after_prune']:.2f} %",
                      f"{100 * u['calib_acc_after_finetune']:.2f} %", f"{u['macs'] / base['macs']:.3f}",
                      f"{u['time_s']:.1f} s"] for u in res["units"]],
                    "rlrrrrr")
    lines += _figures(out, [("keep_ratios", "keep ratio per unit"), ("trajectory", "accuracy vs MACs, unit by unit"),
                            ("sensitivity", "sensitivity curves")])
    lines += ["", f"The pruned network: `model.pt` (reload with `evoprune evaluate --checkpoint {out / 'model.pt'}`, "
              "export with `evoprune export`)."]
    return "\n".join(lines) + "\n"


def compare_report(run_dir: Any, summary: Mapping[str, Any], problem: str, table: str) -> Path:
    """``report.md`` of a compare run: the problem, budget and seeds, the ranking table, the tests and figures."""
    out = Path(run_dir)
    lines = [f"# evoprune compare: {out.name}", "", f"- problem: `{problem}`",
             f"- strategies: {', '.join(f'`{n}`' for n in summary['strategies'])}; budget {summary.get('budget')} "
             f"evaluations; seeds {', '.join(map(str, summary.get('seeds', [])))}", "", "## Ranking", "",
             "```", table.rstrip(), "```"]
    stats = summary.get("statistics")
    if stats:
        worse = [n for n, t in stats["tests"].items() if t.get("worse")]
        lines += ["", f"Best by median {stats['metric']}: `{stats['best']}`; significantly worse (rank-sum vs the "
                      f"best, Holm, 0.05): {', '.join(f'`{n}`' for n in worse) or 'none'} (`tests.csv`)."]
    lines += _figures(out, [("ecdf", "ecdf")])
    lines += ["", "Per run: `<strategy>/seed<k>/` (result.json, evaluations.csv, logbook.csv); "
              f"`evoprune plot {out}` draws fronts and convergence."]
    path = out / REPORT
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def train_report(run_dir: Any) -> str:
    """The markdown report of a finished train or finetune run: settings, result, the epoch table, the curves."""
    from .io import read_jsonl

    out = Path(run_dir)
    cfg = read_json(out / "config.json", "run config")
    summ = read_json(out / "summary.json", "run summary")
    hist = read_jsonl(out / "metrics.jsonl")
    kind = run_kind(out)
    what = (f"`{cfg.get('model_name')}` width {cfg.get('width')}" + (f" from `{cfg['checkpoint']}`"
                                                                     if cfg.get("checkpoint") else "")
            if kind == "train" else f"`{cfg.get('checkpoint')}` by {str(summ.get('loss', '')).upper()}"
            + (f" from the teacher `{cfg['teacher']}`" if cfg.get("teacher") else ""))
    lines = [f"# evoprune {kind}: {out.name}", "", f"- {what}; data `{cfg.get('data')}`",
             f"- {summ.get('epochs')} epoch(s), batch {cfg.get('batch_size')}, lr {cfg.get('lr')} "
             f"({cfg.get('schedule', 'cosine')}), seed {cfg.get('seed')}"
             + (f", {summ['world_size']} processes" if summ.get("world_size", 1) > 1 else ""),
             f"- wall time: {summ.get('wall_time_s', 0) / 60:.1f} min", "", "## Result", ""]
    before = [f"{100 * summ['test_top1_before']:.2f} %"] if "test_top1_before" in summ else []
    lines += markdown_table((["test top-1 before"] if before else []) + ["test top-1", "test top-5", "params", "MACs"],
                    [before + [f"{100 * summ['test_top1']:.2f} %", f"{100 * summ['test_top5']:.2f} %",
                               f"{summ['params']:,}", f"{summ['macs']:,}"]], "r" * (4 + len(before)))
    cols = [c for c in ("lr", "train_loss", "train_acc", "test_loss", "test_top1") if any(c in r for r in hist)]
    fmt = {"lr": "{:.4g}", "train_loss": "{:.4f}", "test_loss": "{:.4f}"}
    lines += ["", "## Epoch by epoch", ""]
    lines += markdown_table(["epoch"] + [c.replace("_", " ") for c in cols] + ["time"],
                    [[r["epoch"]] + [("" if c not in r else fmt[c].format(r[c]) if c in fmt
                                      else f"{100 * r[c]:.2f} %") for c in cols] + [f"{r.get('time_s', 0):.0f} s"]
                     for r in hist], "r" * (len(cols) + 2))
    lines += _figures(out, [("curves", "loss and accuracy per epoch")])
    lines += ["", f"The model: `model.pt` (evaluate with `evoprune evaluate --checkpoint {out / 'model.pt'}`)."]
    return "\n".join(lines) + "\n"


def sensitivity_report(run_dir: Any) -> str:
    """The markdown report of a sensitivity run: the per-unit table (least sensitive first) and the curves."""
    from .sensitivity import Sensitivity

    out = Path(run_dir)
    sens = Sensitivity.from_json(read_json(out / "sensitivity.json", "sensitivity"))
    cfg = read_json(out / "config.json", "run config") if (out / "config.json").is_file() else {}
    score = sens.score()
    lines = [f"# evoprune sensitivity: {out.name}", "",
             f"- checkpoint: `{cfg.get('checkpoint', '?')}`; data: `{cfg.get('data', '?')}`; channels by "
             f"`{sens.method}`; calibration accuracy of the unpruned network {100 * sens.base_acc:.2f} %",
             "- each unit pruned alone at each keep ratio, BatchNorm re-estimated (adaptive BN); the pruning order "
             "is least sensitive first (smallest mean drop)", "", "## Per unit", ""]
    order = sens.order()
    lines += markdown_table(["unit", "channels", "mean drop", "order"] + [f"acc @ {r:g}" for r in sens.ratios],
                    [[f"`{u}`", sens.sizes[i], f"{100 * score[i]:.2f} pt", order.index(u) + 1]
                     + [f"{100 * a:.2f} %" for a in sens.acc[i]] for i, u in enumerate(sens.units)],
                    "lrrr" + "r" * len(sens.ratios))
    lines += _figures(out, [("sensitivity", "sensitivity curves")])
    lines += ["", f"Reuse with `evoprune prune --sensitivity {out / 'sensitivity.json'} ...`."]
    return "\n".join(lines) + "\n"


def search_report(run_dir: Any, summary: Mapping[str, Any]) -> str:
    """The markdown report of a search run: problem, strategy, budget, seed and the run's indicators."""
    out = Path(run_dir)
    cfg = read_json(out / "config.json", "run config")
    info = cfg.get("problem_info", {})
    params = ", ".join(f"{k}={v}" for k, v in (cfg.get("strategy_params") or {}).items()) or "defaults"
    lines = [f"# evoprune search: {out.name}", "",
             f"- problem: `{summary.get('problem')}` ({info.get('n_var')} variables, {info.get('encoding')}; "
             f"objectives {', '.join(f'`{o}`' for o in info.get('objectives', []))})",
             f"- strategy: `{summary.get('strategy')}` ({params}); budget {cfg.get('budget')} evaluations; seed "
             f"{summary.get('seed')}", "", "## Result", ""]
    skip = {"out", "strategy", "problem", "seed"}
    rows = [[k.replace("_", " "), _cell(v)] for k, v in summary.items() if k not in skip]
    lines += markdown_table(["", "value"], rows, "lr")
    lines += ["", "Files: `result.json` (best genome, front), `evaluations.csv`, `logbook.csv`; "
              f"`evoprune plot {out}` draws the front and the convergence."]
    return "\n".join(lines) + "\n"


def suite_report(run_dir: Any, summary: Mapping[str, Any]) -> str:
    """The markdown report of a suite run: strategy x budget gaps, wins, Friedman ranks, the figures."""
    out = Path(run_dir)
    budgets = [str(b) for b in summary["budgets"]]
    last = summary["by_budget"][budgets[-1]]
    fr = last["friedman"]
    lines = [f"# evoprune suite run: {out.name}", "",
             f"- suite `{summary['suite']}` ({summary['instances']} instances); strategies "
             f"{', '.join(f'`{l}`' for l in summary['strategies'])}; {len(summary['seeds'])} seeds; gaps to the "
             f"best-known read at {', '.join(budgets)} evaluations", "", "## Mean gap to the best-known", ""]
    lines += markdown_table(["strategy"] + [f"gap @ {b}" for b in budgets]
                    + [f"instances won @ {budgets[-1]}", f"significantly worse @ {budgets[-1]}",
                       f"Friedman rank @ {budgets[-1]}"],
                    [[f"`{l}`"] + [f"{100 * summary['by_budget'][b]['strategies'][l]['mean_gap']:.3f} %"
                                   for b in budgets]
                     + [last["strategies"][l]["wins"], last["strategies"][l]["significantly_worse"],
                        f"{fr['avg_ranks'][l]:.2f}"] for l in summary["strategies"]],
                    "l" + "r" * (len(budgets) + 3))
    if fr.get("p_value") == fr.get("p_value") and fr.get("critical_difference") is not None:  # not NaN
        lines += ["", f"Friedman at {budgets[-1]} evaluations: p = {fr['p_value']:.2g}, Nemenyi critical difference "
                      f"{fr['critical_difference']:.2f} (ranks closer than that are not significantly apart). "
                      "Significantly worse: rank-sum against the best strategy of the instance, Holm-corrected, "
                      "0.05 (`tests.csv`)."]
    lines += _figures(out, [("ecdf", "runtime ECDF"), (f"cd_{budgets[-1]}", "critical-difference diagram")])
    lines += ["", "Files: `runs.csv` (every run's best value at every budget), `gaps.csv`, `tests.csv`, "
              "`summary.json`."]
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def write_report(run_dir: Any, summary: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``report.md`` into a finished run directory of any kind (``summary``: a search run's summary)."""
    kind = run_kind(run_dir)
    if kind == "search":
        if summary is None:
            raise EvopruneError(f"'{run_dir}': a search report needs the run's summary")
        text = search_report(run_dir, summary)
    else:
        text = {"prune": prune_report, "train": train_report, "finetune": train_report,
                "sensitivity": sensitivity_report}[kind](run_dir)
    path = Path(run_dir) / REPORT
    atomic_write_text(path, text)
    return path



def _stems(src: Path, kind: str) -> List[str]:
    if kind == "prune":
        return ["keep_ratios", "trajectory"] + (["sensitivity"] if (src / "sensitivity.json").is_file() else [])
    return ["curves"] if kind in ("train", "finetune") else ["sensitivity"]


def _draw(src: Path, kind: str, stem: str, dest: Path, formats: Sequence[str]) -> List[Path]:
    from . import plot

    if stem == "sensitivity":
        from .sensitivity import Sensitivity

        sens = Sensitivity.from_json(read_json(src / "sensitivity.json", "sensitivity"))
        return plot.plot_sensitivity(sens, dest / stem, formats)
    if stem == "curves":
        from .io import read_jsonl

        hist = read_jsonl(src / "metrics.jsonl")
        if not hist:
            raise EvopruneError(f"'{src / 'metrics.jsonl'}' holds no finished epoch yet: nothing to plot")
        return plot.plot_training(hist, dest / stem, formats, title=f"evoprune {kind}: {src.name}")
    from .pipeline import PruneReport

    res = read_json(src / "results.json", "prune results")
    try:
        report = PruneReport(**{k: res[k] for k in ("base", "final", "units", "ratios", "order", "config", "pruned")})
    except KeyError as exc:
        raise EvopruneError(f"'{src / 'results.json'}' lacks {exc}; it is not from 'evoprune prune'") from None
    return (plot.plot_keep_ratios if stem == "keep_ratios" else plot.plot_trajectory)(report, dest / stem, formats)


def plot_run_dir(run_dir: Any, out: Any = None, formats: Any = "png,svg", overwrite: bool = False
                 ) -> Dict[str, Any]:
    """Redraw the figures of a prune (keep ratios, trajectory, sensitivity), train/finetune (loss and accuracy
    curves) or sensitivity run into ``out`` (default: the run dir; its own figures are replaced only with
    ``overwrite``); ``formats``: comma-separated png, svg, pdf."""
    from .plot import parse_formats

    formats = parse_formats(formats)
    src = Path(run_dir)
    kind = run_kind(src)
    if kind == "search":
        raise EvopruneError(f"'{src}' is a search/compare run: plot it with plot.plot_runs")
    dest = Path(out) if out else src
    dest.mkdir(parents=True, exist_ok=True)
    from .io import check_output_file

    stems = _stems(src, kind)
    for stem in stems:  # the run directory's own figures too: redrawn in place only with overwrite
        for fmt in formats:
            check_output_file(dest / f"{stem}.{fmt}", overwrite)
    files: List[Path] = []
    for stem in stems:
        files += _draw(src, kind, stem, dest, formats)
    return {"out": str(dest), "files": [str(f) for f in files], "runs": 1, "kind": kind}


def draw_run_figures(run_dir: Any) -> List[Path]:
    """The figures a finished train/finetune run keeps beside its report (PNG only: cheap, and what it links)."""
    src = Path(run_dir)
    kind = run_kind(src)
    return [f for stem in _stems(src, kind) for f in _draw(src, kind, stem, src, ["png"])]
