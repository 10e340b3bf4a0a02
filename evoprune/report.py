"""``report.md`` of prune and compare run directories (what was run, the result, the tables, the plots) and the
prune-run figures ``evoprune plot RUN_DIR`` redraws."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from .errors import EvopruneError
from .io import atomic_write_text, read_json

REPORT = "report.md"


def is_prune_run(path: Any) -> bool:
    """A finished ``evoprune prune`` run directory (it holds ``results.json`` with per-unit steps)."""
    p = Path(path)
    return (p / "results.json").is_file() and (p / "prune_config.json").is_file()


def _table(header: Sequence[str], rows: List[Sequence[Any]], align: str = "") -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align or ["---"] * len(header)) + "|"]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


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
    lines += _table(["", "test top-1", "calibration top-1", "MACs", "params"], [
        ["original", f"{100 * base['test_top1']:.2f} %", f"{100 * base['calib_top1']:.2f} %", f"{base['macs']:,}",
         f"{base['params']:,}"],
        ["pruned", f"{100 * final['test_top1']:.2f} %", f"{100 * final['calib_top1']:.2f} %",
         f"{final['macs']:,} ({final['macs_reduction']:.2f}x fewer)",
         f"{final['params']:,} ({final['params_reduction']:.2f}x fewer)"]], ["---", "---:", "---:", "---:", "---:"])
    lines += ["", "## Unit by unit", ""]
    lines += _table(["step", "unit", "channels", "calib. acc. after pruning", "after its fine-tune", "MACs left",
                     "time"],
                    [[u["step"], f"`{u['unit']}`", f"{u['n']} -> {u['k']}", f"{100 * u['calib_acc_after_prune']:.2f} %",
                      f"{100 * u['calib_acc_after_finetune']:.2f} %", f"{u['macs'] / base['macs']:.3f}",
                      f"{u['time_s']:.1f} s"] for u in res["units"]],
                    ["---:", "---", "---:", "---:", "---:", "---:", "---:"])
    plots = [(name, title) for name, title in (("keep_ratios", "keep ratio per unit"),
                                               ("trajectory", "accuracy vs MACs, unit by unit"),
                                               ("sensitivity", "sensitivity curves")) if (out / f"{name}.png").is_file()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{title}]({name}.png)" for name, title in plots]
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
    figs = [f for f in ("ecdf.png",) if (out / f).is_file()]
    if figs:
        lines += ["", "## Figures", ""] + [f"![{f[:-4]}]({f})" for f in figs]
    lines += ["", "Per run: `<strategy>/seed<k>/` (result.json, evaluations.csv, logbook.csv); "
              f"`evoprune plot {out}` draws fronts and convergence."]
    path = out / REPORT
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_prune_report(run_dir: Any) -> Path:
    path = Path(run_dir) / REPORT
    atomic_write_text(path, prune_report(run_dir))
    return path


def plot_prune_run(run_dir: Any, out: Any = None, formats: Any = "png,svg", overwrite: bool = False
                   ) -> Dict[str, Any]:
    """Redraw a prune run's figures (keep ratios, trajectory, sensitivity) into ``out`` (default: the run dir;
    its own figures are replaced only with ``overwrite``); ``formats``: comma-separated png, svg, pdf."""
    if isinstance(formats, str):
        formats = [f.strip().lower() for f in formats.split(",") if f.strip()]
    if not formats or any(f not in ("png", "svg", "pdf") for f in formats):
        raise EvopruneError(f"--format {','.join(formats)!r}: use png, svg and/or pdf, comma-separated")
    from .io import check_output_file
    from .pipeline import PruneReport
    from .plot import plot_keep_ratios, plot_sensitivity, plot_trajectory

    src = Path(run_dir)
    res = read_json(src / "results.json", "prune results")
    try:
        report = PruneReport(**{k: res[k] for k in ("base", "final", "units", "ratios", "order", "config", "pruned")})
    except KeyError as exc:
        raise EvopruneError(f"'{src / 'results.json'}' lacks {exc}; it is not from 'evoprune prune'") from None
    dest = Path(out) if out else src
    dest.mkdir(parents=True, exist_ok=True)
    stems = ["keep_ratios", "trajectory"] + (["sensitivity"] if (src / "sensitivity.json").is_file() else [])
    for stem in stems:  # the run directory's own figures too: redrawn in place only with overwrite
        for fmt in formats:
            check_output_file(dest / f"{stem}.{fmt}", overwrite)
    files: List[Path] = []
    files += plot_keep_ratios(report, dest / "keep_ratios", formats)
    files += plot_trajectory(report, dest / "trajectory", formats)
    if "sensitivity" in stems:
        from .sensitivity import Sensitivity

        files += plot_sensitivity(Sensitivity.from_json(read_json(src / "sensitivity.json", "sensitivity")),
                                  dest / "sensitivity", formats)
    return {"out": str(dest), "files": [str(f) for f in files], "runs": 1, "kind": "prune"}
