"""The paper's method end to end, resumable.

``sensitivity -> per-unit keep ratios -> for each unit, least sensitive first: choose channels (GA on the two-step
fitness, or a baseline selector) -> physical pruning -> adaptive BN -> short KD fine-tune -> next unit -> final KD
fine-tune``. Every step writes to the run directory; a rerun with ``resume=True`` continues after the last completed
unit and, because every random choice is seeded by (seed, unit index), ends with the same model as an
uninterrupted run.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .config import PruneConfig  # noqa: F401  (defined there; `from evoprune.pipeline import PruneConfig` works)
from .data import Loaders
from .errors import EvopruneError
from .io import read_json, write_json
from .pruning.masked import reestimate_bn

Log = Callable[[str], None]


@dataclass
class PruneReport:
    """What a pruning run produced (also written as ``results.json``)."""

    base: Dict[str, float]
    final: Dict[str, float]
    units: List[Dict[str, Any]]
    ratios: Dict[str, float]
    order: List[str]
    config: Dict[str, Any]
    pruned: Dict[str, List[int]]
    wall_time_s: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------- helpers
def example_input(loaders: Loaders) -> torch.Tensor:
    d = loaders.data
    return torch.zeros(1, d.in_channels, d.image_size, d.image_size)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _unit_loaders(loaders: Loaders, seed: int) -> Loaders:
    """The same data with a different shuffling seed (each unit's fine-tune sees its own batch stream)."""
    train = loaders.train.with_options(shuffle=True, augment=True, seed=seed, shard=(0, 1))
    return dataclasses.replace(loaders, train=train)


def short_finetune(model: nn.Module, loaders: Loaders, steps: int, lr: float, seed: int, loss_fn: Any,
                   progress: bool = False, desc: str = "fine-tune") -> None:
    """``steps`` fine-tune steps at a constant ``lr`` on the batch stream of ``seed`` (nothing when 0): the
    pipeline's per-unit steps and the allocation search's finalists."""
    from .train import TrainConfig, fit

    if steps <= 0:
        return
    ul = _unit_loaders(loaders, seed)
    fit(model, ul, TrainConfig(epochs=max(1, -(-steps // max(1, len(ul.train)))), lr=lr, schedule="constant",
                               max_steps=steps),
        _device_of(model), loss_fn=loss_fn, progress=progress, desc=desc, evaluate_each_epoch=False)


def _cost_fraction_fn(space, cost, what: str, min_keep: int) -> Callable[[Dict[str, float]], float]:
    from .sensitivity import keep_count

    base = cost.base_macs if what == "MACs" else cost.base_params
    def fn(ratios: Dict[str, float]) -> float:
        counts = np.array([keep_count(ratios.get(u.name, 1.0), u.channels, min_keep, u.channel_groups)
                           for u in space.units])
        v = cost.macs_counts(counts) if what == "MACs" else cost.params_counts(counts)
        return float(v) / float(base)

    return fn


# --------------------------------------------------------------------------------------------------- selection
def select_channels(model: nn.Module, space, unit: str, k: int, loaders: Loaders, cfg: PruneConfig,
                    seed: int, log: Log, backend: Any = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Choose ``k`` channels of ``unit``: the GA on the two-step fitness, or an importance selector."""
    rng = np.random.default_rng(seed)
    from .unit_selectors import ga_select, resolve_strategy_selector

    strategy = resolve_strategy_selector(cfg.selector)
    if strategy is not None:  # the GA, or any single-objective strategy on the same two-step fitness and budget
        return ga_select(model, space, unit, k, loaders, cfg, seed, log, backend=backend,
                         strategy=None if cfg.selector == "ga" else strategy)
    from .registry import SELECTORS

    from .unit_selectors import calibration, stage1_error

    t0 = time.perf_counter()
    fn = SELECTORS.get(cfg.selector)
    calib = calibration(loaders, cfg, seed)
    mask = np.asarray(fn(model, space, unit, k, batches=calib.train, rng=rng))
    n = space.unit(unit).channels
    if mask.dtype != bool or mask.shape != (n,) or int(mask.sum()) != k:
        raise EvopruneError(f"selector '{cfg.selector}' must return a bool mask of length {n} with {k} True values, "
                            f"got dtype {mask.dtype}, shape {mask.shape}, {int(np.count_nonzero(mask))} kept")
    # the same stage-1 error the GA minimises, so selectors can be compared on it
    return mask, {"stage1_error": float(stage1_error(model, space, unit, mask, calib)[0]),
                  "select_time_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------------- the run
def run(model: nn.Module, loaders: Loaders, cfg: PruneConfig, out: Optional[Path] = None, resume: bool = False,
        meta: Optional[Dict[str, Any]] = None, log: Log = print, progress: bool = False,
        sensitivity: Optional[Any] = None, backend: Any = None) -> Tuple[nn.Module, PruneReport]:
    """Prune ``model`` (not modified) with the paper's pipeline; return the pruned model and a report.

    ``out``: run directory (created by the caller) for checkpoints, logs and plots; ``None`` keeps everything in
    memory (no resume). ``meta``: checkpoint metadata of ``model`` (architecture, dataset) for the saved files.
    ``backend``: an :mod:`evoprune.parallel` backend for the network-level evaluations (sensitivity curves and
    the GA's stage-2 checks); results are identical to ``None`` (in-process).
    """
    from .distill import ce_loss, kd_loss
    from .pruning.cost import CostModel
    from .pruning.space import PruningSpace
    from .train import evaluate, is_main_process

    cfg.validate()
    # under torchrun every rank runs this function: rank 0 chooses channels and writes, all ranks fine-tune (DDP)
    wout = out if is_main_process() else None
    t_start = time.perf_counter()
    device = _device_of(model)
    meta = dict(meta or {})
    teacher = copy.deepcopy(model).eval()
    x0 = example_input(loaders).to(device)
    space0 = PruningSpace(model, x0, exclude=cfg.exclude, min_keep=cfg.min_keep)
    cost0 = CostModel(space0)
    from .pruning.refit import refit_units

    refit, no_refit = refit_units(model, space0, cfg.refit)  # --refit: refused here, before any work, not midway
    if no_refit:  # one line, however many depthwise units a MobileNet has
        first = next(iter(no_refit.values()))
        log(f"refit: {len(refit)} of {len(space0.names)} units; not {', '.join(no_refit)} ({first}"
            + (f"; and {len(no_refit) - 1} more)" if len(no_refit) > 1 else ")"))
    calib = loaders.calib_batches(cfg.eval_batches, batch_size=cfg.batch_size)  # = CalibrationData.held_out
    base_calib = evaluate(model, calib, device)
    base_test = evaluate(model, loaders.test, device)
    base = {"calib_top1": base_calib["top1"], "test_top1": base_test["top1"], "macs": int(cost0.base_macs),
            "params": int(cost0.base_params)}
    state_dir = out / "state" if out is not None else None
    if wout is not None:
        write_json(wout / "prune_config.json", {"config": asdict(cfg), "fingerprint": cfg.fingerprint()})

    # 1. sensitivity (needed for the order and for target/threshold allocation)
    sens = _sensitivity(model, space0, loaders, cfg, sensitivity, out, wout, log, backend)

    # 2. per-unit keep ratios and order
    loss_fn = kd_loss(teacher, cfg.temperature, cfg.alpha, cfg.at_weight) if cfg.loss == "kd" else ce_loss()
    plan = plan_allocation(space0, cost0, cfg, sens)
    if cfg.allocation == "search":
        plan = searched_plan(model, space0, cost0, loaders, cfg, sens, plan, out if resume else None, log, loss_fn)
    ratios, counts, order = plan["ratios"], plan["counts"], plan["order"]
    if wout is not None:
        write_json(wout / "allocation.json", plan)
    log(f"plan: {len(order)} units to prune, MACs {plan['base_macs']:,} -> {plan['planned_macs']:,} "
        f"({plan['planned_macs'] / plan['base_macs']:.3f}), params {plan['base_params']:,} -> "
        f"{plan['planned_params']:,} ({plan['planned_params'] / plan['base_params']:.3f})")

    # 3. layer by layer
    current = copy.deepcopy(model)
    pruned: Dict[str, List[int]] = {}
    records: List[Dict[str, Any]] = []
    done = 0
    if state_dir is not None and resume:
        current, pruned, records, done = _load_progress(state_dir, cfg, current)
        if done:
            log(f"resuming after {done} completed unit(s)")
    for i, unit in enumerate(order):
        if i < done:
            continue
        current, rec = _prune_unit(current, i, unit, counts[unit], x0, loaders, cfg, calib, loss_fn, log, progress,
                                   backend, refit=unit in refit)
        pruned[unit] = rec.pop("kept")
        rec["macs"], rec["params"] = _macs_params(cost0, space0, pruned)
        records.append(rec)
        log(f"[{i + 1}/{len(order)}] {unit}: {rec['n']} -> {rec['k']}  acc after prune "
            f"{rec['calib_acc_after_prune']:.4f}, after fine-tune {rec['calib_acc_after_finetune']:.4f}  MACs "
            f"{rec['macs'] / base['macs']:.3f}  ({rec['time_s']:.1f}s)")
        if state_dir is not None and wout is not None:
            _save_progress(state_dir, cfg, current, pruned, records, i + 1, meta)

    # 4. final fine-tune
    if cfg.finetune_epochs > 0 and order:
        log(f"final {cfg.loss.upper()} fine-tune: {cfg.finetune_epochs} epoch(s)")
        _final_finetune(current, loaders, cfg, loss_fn, out, progress)
    report = _report(current, loaders, calib, cfg, base, records, ratios, order, pruned, cost0, space0, plan, sens,
                     time.perf_counter() - t_start)
    if wout is not None:
        _write_outputs(wout, current, report, meta)
    log(f"done: test top-1 {base['test_top1']:.4f} -> {report.final['test_top1']:.4f}; MACs "
        f"x{report.final['macs_reduction']:.2f} fewer, params x{report.final['params_reduction']:.2f} fewer "
        f"({report.wall_time_s:.0f}s)")
    return current, report


def _sensitivity(model: nn.Module, space0: Any, loaders: Loaders, cfg: PruneConfig, given: Optional[Any],
                 out: Optional[Path], wout: Optional[Path], log: Log, backend: Any) -> Optional[Any]:
    """The curves: given, read back from ``out`` (resume), or measured on rank 0; saved to the run directory."""
    from .train import on_rank0

    need = cfg.order == "sensitivity" or cfg.ratios is None and not cfg.uniform
    sens = given
    if sens is not None:
        missing = [u for u in space0.names if u not in sens.units]
        if missing:
            raise EvopruneError(f"the sensitivity curves do not cover unit '{missing[0]}' of this model; they were "
                                "measured on another network: rerun 'evoprune sensitivity' on this checkpoint")
    elif need:
        sens_path = out / "sensitivity.json" if out is not None else None
        if sens_path is not None and sens_path.exists():
            from .sensitivity import Sensitivity

            sens = Sensitivity.from_json(read_json(sens_path, "sensitivity file"))
            # saved again below: a kill may have come between the JSON and its CSV/plots
        else:
            log(f"sensitivity of {len(space0)} units at keep ratios {list(cfg.sensitivity_ratios)} ...")
            sens = on_rank0(lambda: compute_sensitivity(model, space0, loaders, cfg, log=log, backend=backend))
    if sens is not None and wout is not None:
        save_sensitivity(sens, wout)
    return sens


def _prune_unit(current: nn.Module, i: int, unit: str, k: int, x0: torch.Tensor, loaders: Loaders,
                cfg: PruneConfig, calib: Any, loss_fn: Any, log: Log, progress: bool, backend: Any, refit: bool
                ) -> Tuple[nn.Module, Dict[str, Any]]:
    """One step of the layer-by-layer loop: choose ``k`` channels of ``unit`` (rank 0), refit if asked, prune,
    adaptive BN, a short fine-tune; returns the pruned model and the step's record (``kept``: the channels)."""
    from .pruning.apply import apply
    from .pruning.space import PruningSpace
    from .train import evaluate, on_rank0

    t0 = time.perf_counter()
    device = _device_of(current)
    useed = cfg.seed * 10_007 + i
    torch.manual_seed(useed)
    space = PruningSpace(current, x0, exclude=cfg.exclude, min_keep=cfg.min_keep, warn=False)
    n = space.unit(unit).channels
    mask, info = on_rank0(lambda: select_channels(current, space, unit, k, loaders, cfg, useed, log, backend=backend))
    if backend is not None:
        backend.clear_shared()  # the workers' copy of this unit's evaluator is stale after pruning
    if refit:
        from .pruning.refit import refit_unit

        info["refit"] = refit_unit(current, space, unit, mask, loaders.train_batches(cfg.calib_batches, seed=useed),
                                   seed=useed)
    current = apply(current, {unit: mask}, space)
    reestimate_bn(current, loaders.train_batches(cfg.bn_batches, seed=useed))
    after_prune = evaluate(current, calib, device)
    short_finetune(current, loaders, cfg.finetune_steps, cfg.finetune_lr, useed, loss_fn, progress=progress,
                   desc=f"fine-tune {unit}")
    after_ft = evaluate(current, calib, device)
    rec = {"step": i + 1, "unit": unit, "n": n, "k": k, "calib_acc_after_prune": after_prune["top1"],
           "calib_acc_after_finetune": after_ft["top1"], "macs": None, "params": None,
           "time_s": time.perf_counter() - t0, **info, "kept": np.flatnonzero(mask).tolist()}
    return current, rec


def _final_finetune(current: nn.Module, loaders: Loaders, cfg: PruneConfig, loss_fn: Any, out: Optional[Path],
                    progress: bool) -> None:
    """The closing fine-tune of the whole pruned network (cosine schedule; resumable from ``out``)."""
    from .train import TrainConfig, fit

    fit(current, _unit_loaders(loaders, cfg.seed * 10_007 + 999_983),
        TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, schedule="cosine"), _device_of(current),
        loss_fn=loss_fn, progress=progress, desc="final fine-tune", evaluate_each_epoch=False,
        state_path=str(out / "finetune_state.pt") if out is not None else None,
        log_path=str(out / "finetune_metrics.jsonl") if out is not None else None)


def _report(current: nn.Module, loaders: Loaders, calib: Any, cfg: PruneConfig, base: Dict[str, Any],
            records: List[Dict[str, Any]], ratios: Dict[str, float], order: List[str], pruned: Dict[str, List[int]],
            cost0: Any, space0: Any, plan: Dict[str, Any], sens: Optional[Any], wall: float) -> "PruneReport":
    from .train import evaluate

    device = _device_of(current)
    final_test = evaluate(current, loaders.test, device)
    final_calib = evaluate(current, calib, device)
    macs, params = _macs_params(cost0, space0, pruned)
    final = {"calib_top1": final_calib["top1"], "test_top1": final_test["top1"], "macs": macs, "params": params,
             "macs_ratio": macs / base["macs"], "params_ratio": params / base["params"],
             "macs_reduction": base["macs"] / macs, "params_reduction": base["params"] / params}
    return PruneReport(base, final, records, ratios, order, asdict(cfg), pruned, wall,
                       {"plan": plan, "sensitivity": None if sens is None else sens.to_json()})


def _write_outputs(out: Path, current: nn.Module, report: "PruneReport", meta: Dict[str, Any]) -> None:
    """``model.pt`` (with the pruned record), ``results.json``, the keep-ratio and trajectory plots, ``report.md``."""
    from .models.checkpoint import save_checkpoint
    from .plot import plot_keep_ratios, plot_trajectory

    device = _device_of(current)
    fmeta = dict(meta, pruned=report.pruned, accuracy=report.final["test_top1"], pruned_from=meta.get("source"))
    save_checkpoint(str(out / "model.pt"), current.to("cpu"), fmeta)
    current.to(device)
    write_json(out / "results.json", report.to_json())
    plot_keep_ratios(report, out / "keep_ratios")
    plot_trajectory(report, out / "trajectory")
    from .report import write_report

    write_report(out)  # last: it links the figures above


def plan_allocation(space, cost, cfg: PruneConfig, sens) -> Dict[str, Any]:
    """Per-unit keep ratios and channel counts, pruning order and the planned cost (see :mod:`sensitivity`)."""
    from .sensitivity import allocate, keep_count, ratios_for_drop, uniform_ratio

    if cfg.ratios is not None:
        unknown = [u for u in cfg.ratios if u not in space]
        if unknown:
            space.unit(unknown[0])  # raises a one-line error naming valid units
        ratios = {u: float(cfg.ratios.get(u, 1.0)) for u in space.names}
    elif cfg.max_drop is not None:
        ratios = ratios_for_drop(sens, cfg.max_drop, cfg.min_keep_ratio)
    else:
        targets = [(w, t) for w, t in (("MACs", cfg.target_macs), ("params", cfg.target_params)) if t is not None]
        fns = {w: _cost_fraction_fn(space, cost, w, cfg.min_keep) for w, _ in targets}
        if len(targets) == 1:
            (what, target), frac = targets[0], fns[targets[0][0]]
        else:
            # both budgets: the binding one decides; cost as a fraction of each target, met when <= 1
            for w, t in targets:  # each one alone must be reachable (its own one-line error otherwise)
                if not cfg.uniform:
                    allocate(sens, fns[w], t, cfg.min_keep, w, floor=cfg.min_keep_ratio)
            what, target = "cost", 1.0
            frac = lambda r: max(fns[w](r) / t for w, t in targets)  # noqa: E731
        if cfg.uniform:
            ratios = uniform_ratio(frac, space.names, target)
            r = next(iter(ratios.values()), 1.0)
            if r < cfg.min_keep_ratio:
                raise EvopruneError(f"the uniform keep ratio that meets the target is {r:.3f}, below --min-keep-ratio "
                                    f"{cfg.min_keep_ratio:g}: raise the target or lower --min-keep-ratio")
        else:
            ratios = allocate(sens, frac, target, cfg.min_keep, what, floor=cfg.min_keep_ratio)
    counts = {u.name: keep_count(ratios[u.name], u.channels, cfg.min_keep, u.channel_groups) for u in space.units}
    order = sens.order() if cfg.order == "sensitivity" else list(space.names)
    order = [u for u in order if u in counts and counts[u] < space.unit(u).channels]
    planned = np.array([counts[u] for u in space.names])
    return {"ratios": ratios, "counts": counts, "order": order,
            "planned_macs": int(cost.macs_counts(planned)), "planned_params": int(cost.params_counts(planned)),
            "base_macs": int(cost.base_macs), "base_params": int(cost.base_params)}


def searched_plan(model: nn.Module, space, cost, loaders: Loaders, cfg: PruneConfig, sens, plan: Dict[str, Any],
                  resume_from: Optional[Path], log: Log, loss_fn: Any = None) -> Dict[str, Any]:
    """``--allocation search``: the plan of the ratios a search strategy finds, seeded with the sensitivity plan
    and the uniform one (:mod:`evoprune.allocation_search`); on resume, the plan the run already chose."""
    from .allocation_search import search_allocation
    from .train import on_rank0

    saved = resume_from / "allocation.json" if resume_from is not None else None
    if saved is not None and saved.exists():
        found = read_json(saved, "allocation").get("search")
        if found:
            log("allocation search: reusing the allocation this run chose")
            return dict(plan_allocation(space, cost, dataclasses.replace(cfg, ratios=found["ratios"]), sens),
                        search=found)
    if cfg.allocation_finetune_steps and torch.distributed.is_available() and torch.distributed.is_initialized():
        raise EvopruneError("--allocation-finetune-steps fine-tunes the finalists on rank 0 alone: run the search "
                            "without torchrun (or drop the option), then prune with --ratios <allocation.json ratios>")
    uniform = plan_allocation(space, cost, dataclasses.replace(cfg, uniform=True), sens)
    found = on_rank0(lambda: search_allocation(model, space, loaders, cfg, [plan["ratios"], uniform["ratios"]],
                                               cfg.seed, log, loss_fn=loss_fn))
    return dict(plan_allocation(space, cost, dataclasses.replace(cfg, ratios=found["ratios"]), sens), search=found)


def dry_run(model: nn.Module, loaders: Loaders, cfg: PruneConfig, out: Path, device: Any = None,
            log: Log = print) -> Tuple[Dict[str, Any], List[Tuple[str, int]]]:
    """Sensitivity + allocation only: what :func:`run` would prune, pruning nothing.

    The sensitivity curves are computed when the allocation or the order needs them and saved to ``out`` as in a
    run; the plan of :func:`plan_allocation` goes to ``out/allocation.json``. Returns the plan and every unit with
    its channel count, in network order.
    """
    from .pruning.cost import CostModel
    from .pruning.space import PruningSpace

    device = _device_of(model) if device is None else device
    space = PruningSpace(model, example_input(loaders).to(device), exclude=cfg.exclude, min_keep=cfg.min_keep)
    sens = compute_sensitivity(model, space, loaders, cfg, log=log) if (
        cfg.ratios is None or cfg.order == "sensitivity") else None
    if sens is not None:
        save_sensitivity(sens, out)
    plan = plan_allocation(space, CostModel(space), cfg, sens)
    if cfg.allocation == "search":
        plan = searched_plan(model, space, CostModel(space), loaders, cfg, sens, plan, None, log)
    write_json(out / "allocation.json", plan)
    return plan, list(zip(space.names, space.sizes))


def _macs_params(cost, space, pruned: Dict[str, List[int]]) -> Tuple[int, int]:
    """Exact MACs and parameters of the network pruned so far (the analytic cost model of the original network;
    it equals FlopCounterMode and the parameter count of the physically pruned model)."""
    counts = np.array([len(pruned[u]) if u in pruned else n for u, n in zip(space.names, space.sizes)])
    return int(cost.macs_counts(counts)), int(cost.params_counts(counts))


# --------------------------------------------------------------------------------------------------- sensitivity
def compute_sensitivity(model: nn.Module, space, loaders: Loaders, cfg: PruneConfig, log: Log = print,
                        backend: Any = None):
    """Adaptive-BN calibration accuracy with each unit pruned alone at each ratio (channels by ``cfg.sensitivity_method``).

    Uses stage 2 of the two-step fitness (:class:`NetworkFitness`), one evaluator per unit scoring all ratios in
    one call, so the network before the unit runs once per unit (once per worker with a ``backend``).
    """
    from .parallel import chunked_evaluate

    from .fitness import NetworkFitness
    from .registry import SELECTORS
    from .unit_selectors import calibration
    from .sensitivity import Sensitivity, keep_count
    from .train import evaluate

    for r in cfg.sensitivity_ratios:
        if not 0.0 < r < 1.0:
            raise EvopruneError(f"sensitivity ratios must lie in (0, 1), got {r}")
    calib = calibration(loaders, cfg, cfg.seed)
    base_acc = evaluate(model, calib.held_out, _device_of(model))["top1"]
    select = SELECTORS.get(cfg.sensitivity_method)
    rng = np.random.default_rng(cfg.seed)
    ratios = list(cfg.sensitivity_ratios)
    acc = np.zeros((len(space), len(ratios)))
    loss = np.zeros_like(acc)
    t0 = time.perf_counter()
    for i, u in enumerate(space.units):
        masks = np.stack([np.asarray(select(model, space, u.name, keep_count(r, u.channels, cfg.min_keep,
                                                                             u.channel_groups),
                                            batches=calib.train, rng=rng), dtype=bool) for r in ratios])
        ev = NetworkFitness.from_space(space, u, calib, model=model, bn_batches=cfg.bn_batches)
        res = ev.evaluate(masks).numpy() if backend is None else chunked_evaluate(backend, ev.evaluate, masks)
        if backend is not None:
            backend.clear_shared()  # one unit's evaluator at a time on the workers
        loss[i], acc[i] = res[:, 0], res[:, 1]
        log(f"  {u.name:<24} ({u.channels:>4} ch)  acc at {ratios[0]:g}..{ratios[-1]:g}: "
            + " ".join(f"{a:.3f}" for a in acc[i]))
    sens = Sensitivity(space.names, space.sizes, ratios, acc, base_acc, cfg.sensitivity_method, loss)
    sens.extra["time_s"] = time.perf_counter() - t0
    return sens


def save_sensitivity(sens, out: Path) -> None:
    write_json(out / "sensitivity.json", sens.to_json())
    sens.write_csv(out / "sensitivity.csv")
    from .plot import plot_sensitivity

    plot_sensitivity(sens, out / "sensitivity")


# --------------------------------------------------------------------------------------------------- progress
def _save_progress(state_dir: Path, cfg: PruneConfig, model: nn.Module, pruned, records, done: int, meta) -> None:
    from .models.checkpoint import save_checkpoint

    state_dir.mkdir(parents=True, exist_ok=True)
    name = f"model_{done:03d}.pt"
    save_checkpoint(str(state_dir / name), model, dict(meta, pruned=pruned))
    write_json(state_dir / "progress.json", {"fingerprint": cfg.fingerprint(), "done": done, "model": name,
                                             "pruned": pruned, "records": records})
    for old in state_dir.glob("model_*.pt"):  # the previous unit's model is superseded once progress.json names this
        if old.name != name:
            old.unlink(missing_ok=True)


def _load_progress(state_dir: Path, cfg: PruneConfig, model: nn.Module):
    from .models.checkpoint import load_model

    path = state_dir / "progress.json"
    if not path.exists():
        return model, {}, [], 0
    st = read_json(path, "pipeline progress")
    if st.get("fingerprint") != cfg.fingerprint():
        raise EvopruneError(f"cannot resume '{state_dir.parent}': it was made with a different configuration; "
                            "use the same options, or --overwrite to start over")
    loaded, _ = load_model(str(state_dir / st["model"]))
    return loaded.to(_device_of(model)), dict(st["pruned"]), list(st["records"]), int(st["done"])
