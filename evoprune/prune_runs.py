"""``prune`` and ``sensitivity`` run directories from parsed options: what the commands do after parsing.

:func:`prune_from_options` and :func:`sensitivity_from_options` take the dict of option values (what
``evoprune prune`` / ``evoprune sensitivity`` parse, or a config file gives) and return the JSON summary the
commands print; Python callers get the same runs, directories and checks without click.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from .config import PRUNE_DEFAULTS, PruneConfig
from .errors import EvopruneError

Log = Callable[[str], None]
# inputs that make another run: resuming with a different one is refused
RUN_INPUTS = ("checkpoint", "model_name", "data", "data_dir", "calib_size", "exclude")


def config_from_options(p: Mapping[str, Any]) -> PruneConfig:
    """The :class:`PruneConfig` of parsed options: the values of its fields that ``p`` holds (the rest, and the
    default target, come from the dataclass); ``ratios`` names a JSON file unit -> keep ratio."""
    given = {k: p[k] for k in PRUNE_DEFAULTS if k in p}
    if given.get("ratios"):
        from .io import read_json

        data = read_json(p["ratios"], "ratios file")
        ratios = data.get("ratios", data) if isinstance(data, dict) else None
        if not isinstance(ratios, dict):
            raise EvopruneError(f"ratios file '{p['ratios']}' must hold an object unit -> keep ratio")
        given["ratios"] = ratios
    else:
        given["ratios"] = None
    if "exclude" in given:
        given["exclude"] = tuple(given["exclude"] or ())
    return PruneConfig(**given)


def load_setup(p: Mapping[str, Any], device: Any = None) -> Any:
    """Seeded model + data of the options (:func:`evoprune.session.build_setup`)."""
    from .device import resolve_device, seed_everything
    from .session import build_setup, data_kwargs

    device = resolve_device(p["device"]) if device is None else device
    seed_everything(p["seed"])
    s = build_setup(p["data"], p["data_dir"], p["model_name"], 1.0, p["checkpoint"], device,
                    batch_size=p["batch_size"], seed=p["seed"], calib_size=p["calib_size"], **data_kwargs(p))
    s.meta["source"] = str(p["checkpoint"])
    return s


def prepare_prune_dir(p: Mapping[str, Any], cfg: PruneConfig, device: Any, default_out: str) -> Path:
    """Create (or check, with ``resume``) the run directory and write its config; rank 0 only."""
    from .io import environment_info, prepare_run_dir, read_json, write_json

    out = prepare_run_dir(p["out"] or default_out, p["overwrite"], p["resume"])
    if p["resume"]:
        old = out / "prune_config.json"
        stored = read_json(old, "run config") if old.exists() else {}
        if old.exists() and stored.get("fingerprint") != cfg.fingerprint():
            diff = cfg.differences(stored.get("config") or {})
            before_default = cfg.refit is None and (stored.get("config") or {}).get("refit", False) is False
            hint = " (a run from before the refit became the default: add --no-refit)" if before_default else ""
            raise EvopruneError(f"cannot --resume '{out}': it was made with a different configuration"
                                + (f" ({diff})" if diff else "") + f"; use the same options{hint}, or --overwrite "
                                "to start over")
        if (out / "config.json").exists():
            before = read_json(out / "config.json", "run config")
            diff = [k for k in RUN_INPUTS
                    if k in before and before[k] != (list(p[k]) if isinstance(p[k], tuple) else p[k])]
            if diff:
                raise EvopruneError(f"cannot --resume '{out}': it was made with a different {', '.join(diff)}; use "
                                    "the same inputs, or --overwrite to start over")
    write_json(out / "config.json", dict(p))
    write_json(out / "env.json", environment_info(str(device), p["seed"]))
    return out


def result_table(base: Mapping[str, Any], final: Mapping[str, Any]) -> str:
    """The original and the pruned network side by side (the table ``prune`` ends with)."""
    from .report import RESULT_HEADER, result_rows
    from .textable import format_table

    return format_table(RESULT_HEADER, result_rows(base, final))


def allocation_table(plan: Mapping[str, Any], units: Any) -> list:
    """The lines of a dry run's allocation table."""
    from .textable import format_table

    lines = format_table(["unit", "channels", "keep", "ratio"],
                         [[u, n, plan["counts"][u], f"{plan['ratios'][u]:.3f}"] for u, n in units]).splitlines()
    lines.append(f"order: {', '.join(plan['order'])}")
    lines.append(f"MACs {plan['base_macs']:,} -> {plan['planned_macs']:,} "
                 f"({plan['planned_macs'] / plan['base_macs']:.3f}); params {plan['base_params']:,} -> "
                 f"{plan['planned_params']:,} ({plan['planned_params'] / plan['base_params']:.3f})")
    return lines


def prune_from_options(p: Mapping[str, Any], *, log: Log = print, progress: Union[bool, Callable[[], bool]] = True,
                       on_rank: Optional[Callable[[int], None]] = None, default_out: str = "runs/prune"
                       ) -> Dict[str, Any]:
    """Everything ``evoprune prune`` does after parsing; returns its JSON summary (a dry run: the plan).

    Under ``torchrun`` every rank calls this; ``on_rank(rank)`` runs first (the CLI silences ranks > 0) and rank 0
    alone writes the run directory. ``progress`` may be a callable, asked after ``on_rank``.
    """
    from .device import resolve_device
    from .parallel import parse_workers
    from .train import distributed

    cfg = config_from_options(p)
    cfg.validate()
    workers = parse_workers(p["workers"], p["scheduler"])  # bad specs fail before anything is built
    with distributed(resolve_device(p["device"])) as (device, rank, _world):
        if on_rank is not None:
            on_rank(rank)
        show = progress() if callable(progress) else bool(progress)
        return _prune(p, cfg, workers, device, log, show, default_out)


def _prune(p: Mapping[str, Any], cfg: PruneConfig, workers: Any, device: Any, echo: Log, progress: bool,
           default_out: str) -> Dict[str, Any]:
    from . import pipeline
    from .io import read_json
    from .parallel import make_map
    from .train import is_main_process, on_rank0

    sens = None
    if p["sensitivity_file"]:
        from .sensitivity import Sensitivity

        sens = Sensitivity.from_json(read_json(p["sensitivity_file"], "sensitivity file"))
    s = load_setup(p, device)
    out = on_rank0(lambda: prepare_prune_dir(p, cfg, s.device, default_out))
    main = is_main_process()
    log_file = open(out / "log.txt", "a") if main else None

    def log(msg: str) -> None:
        if log_file is not None:
            log_file.write(msg + "\n")
            log_file.flush()
        echo(msg)

    try:
        if p["dry_run"]:
            cfg.finetune_epochs = cfg.finetune_steps = 0

            def plan() -> Dict[str, Any]:
                summary, units = pipeline.dry_run(s.model, s.loaders, cfg, out, device=s.device, log=log)
                for line in allocation_table(summary, units):
                    log(line)
                return {"out": str(out), **summary}

            return on_rank0(plan)
        with make_map(workers if main else "serial") as backend:
            if p["workers"] != "serial" and main:
                echo(f"network-level evaluations on {backend.describe()}")
            _, report = pipeline.run(s.model, s.loaders, cfg, out=out, resume=p["resume"], meta=s.meta, log=log,
                                     progress=progress, sensitivity=sens,
                                     backend=None if p["workers"] == "serial" else backend)
        if main:
            log(result_table(report.base, report.final))
    finally:
        if log_file is not None:
            log_file.close()
    return {"out": str(out), "checkpoint": str(out / "model.pt"), **{f"base_{k}": v for k, v in report.base.items()},
            **{f"final_{k}": v for k, v in report.final.items()}, "wall_time_s": report.wall_time_s}


def parse_grid(text: str) -> Tuple[float, ...]:
    """``"0.9,0.5"`` -> ``(0.9, 0.5)``; a one-line error otherwise."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise EvopruneError(f"--ratios must be comma-separated numbers, got '{text}'") from None


def sensitivity_from_options(p: Mapping[str, Any], *, log: Log = print, default_out: str = "runs/sensitivity"
                             ) -> Dict[str, Any]:
    """Everything ``evoprune sensitivity`` does after parsing (``grid``: comma-separated keep ratios); returns its
    JSON summary and prints the table through ``log``."""
    from . import pipeline
    from .io import environment_info, prepare_run_dir, write_json
    from .parallel import make_map, parse_workers
    from .pipeline import example_input
    from .pruning.space import PruningSpace

    grid = parse_grid(p["grid"])
    cfg = config_from_options(dict(p, ratios=None))
    cfg.sensitivity_ratios = grid
    cfg.validate()
    workers = parse_workers(p["workers"], p["scheduler"])
    s = load_setup(p)
    out = prepare_run_dir(p["out"] or default_out, p["overwrite"], p["resume"])
    write_json(out / "config.json", dict(p))
    write_json(out / "env.json", environment_info(str(s.device), p["seed"]))
    space = PruningSpace(s.model, example_input(s.loaders).to(s.device), exclude=cfg.exclude, min_keep=cfg.min_keep)
    t0 = time.perf_counter()
    with make_map(workers) as backend:
        sens = pipeline.compute_sensitivity(s.model, space, s.loaders, cfg, log=log,
                                            backend=None if p["workers"] == "serial" else backend)
    pipeline.save_sensitivity(sens, out)
    from .report import write_report

    write_report(out)
    score = sens.score()
    from .textable import format_table

    log(format_table(["unit", "channels", "mean drop"] + [f"acc@{r:g}" for r in grid],
                     [[u, sens.sizes[i], f"{score[i]:.4f}"] + [f"{a:.3f}" for a in sens.acc[i]]
                      for i, u in enumerate(sens.units)]))
    log(f"base calibration accuracy {sens.base_acc:.4f}; {time.perf_counter() - t0:.0f}s; -> {out}")
    return {"out": str(out), **sens.to_json()}
