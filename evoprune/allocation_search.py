"""``prune --allocation search``: choose the per-unit keep ratios with a search strategy instead of the curves.

The problem is the whole-network one (:class:`~evoprune.problems.NetworkPruningProblem`, ratio genomes, top-k L1
channels per unit, accuracy after adaptive BN on held-out calibration images -- EagleEye's fitness) in its
single-objective form: minimise the error subject to the MACs/params budget (an over-budget genome scores
``1 + violation`` without a forward pass). An unseeded search does no better than random sampling at budgets of a
few hundred evaluations (README), so the first genomes every strategy sees are the sensitivity allocation and the
uniform one (``problem.sample`` hands them out first); every genome is projected onto the budget (scaled to the
largest allocation within it: ``constraint="project"``), so no evaluation is spent over budget; the best genome of
the whole run -- seeds included -- is the allocation. ``benchmarks/allocation_search.py`` measures it against
random search.

Accuracy right after pruning barely predicts accuracy after fine-tuning (Liu et al. 2019), so with
``--allocation-finetune-steps N`` the search ends with a second, costlier fidelity (multi-fidelity, as in
Hyperband-style successive halving): the ``--allocation-finalists`` best distinct allocations are each pruned,
fine-tuned for ``N`` steps with the run's own loss (KD from the unpruned network) on the same batch stream, and
re-scored on the whole held-out calibration split; the lowest error after those steps wins. The per-unit
selector (the GA by default) then chooses channels at those ratios, as with any other allocation.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping

import numpy as np

from .errors import EvopruneError


class _Seeded:
    """A problem whose first ``sample`` call returns the given genomes first (one run's worth of seeding)."""

    def __init__(self, problem: Any, seeds: np.ndarray) -> None:
        self._problem, self._seeds = problem, np.asarray(seeds, dtype=float)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._problem, name)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = self._problem.sample(rng, size)
        if len(self._seeds):
            m = min(len(self._seeds), len(out))
            out[:m], self._seeds = self._seeds[:m], self._seeds[m:]
        return out


def search_allocation(model: Any, space: Any, loaders: Any, cfg: Any, seeds: List[Mapping[str, float]], seed: int,
                      log: Callable[[str], None] = print, constraint: str = "project",
                      loss_fn: Any = None) -> Dict[str, Any]:
    """Run ``cfg.allocation_strategy`` for ``cfg.allocation_budget`` evaluations; returns ``ratios`` (unit -> keep
    ratio of the best feasible genome), its held-out ``error``, where it came from and the seeds' errors.

    ``constraint``: ``"project"`` scales every genome to the budget boundary (each evaluation is a full-budget
    allocation; ``benchmarks/allocation_search.py`` measured it against ``"penalty"``, the README says how)."""
    from .problems.network_pruning import NetworkPruningProblem
    from .strategies import run_strategy

    problem = NetworkPruningProblem(model, space, loaders, representation="ratios", objectives=("error",),
                                    max_macs=cfg.target_macs, max_params=cfg.target_params,
                                    bn_batches=cfg.bn_batches, eval_batches=cfg.eval_batches,
                                    batch_size=cfg.batch_size, seed=seed, min_ratio=max(0.05, cfg.min_keep_ratio),
                                    importance=cfg.sensitivity_method if cfg.sensitivity_method in ("l1", "bn")
                                    else "l1", threads=None, constraint=constraint)
    names = problem.unit_names
    S = np.asarray([[float(r.get(u, 1.0)) for u in names] for r in seeds])
    seed_err = problem.evaluate(problem.repair(S))[:, 0]
    log(f"allocation search: {cfg.allocation_strategy}, {cfg.allocation_budget} evaluations on the whole network "
        f"(seeds: sensitivity error {seed_err[0]:.4f}" + (f", uniform {seed_err[1]:.4f}" if len(S) > 1 else "") + ")")
    try:
        res = run_strategy(cfg.allocation_strategy, _Seeded(problem, S), int(cfg.allocation_budget), int(seed))
    except EvopruneError as exc:  # the strategy speaks of --budget: here it is --allocation-budget
        raise EvopruneError(f"--allocation-strategy {cfg.allocation_strategy} with --allocation-budget "
                            f"{cfg.allocation_budget}: {exc}") from None
    G = np.concatenate([problem.repair(S), np.asarray(res.history_genomes, dtype=float)])
    F = np.concatenate([seed_err, np.asarray(res.history_fitness, dtype=float)[:, 0]])
    feasible = F <= 1.0  # over-budget genomes score 1 + violation
    if not feasible.any():
        raise EvopruneError("the allocation search found no allocation within the budget; raise "
                            "--allocation-budget or loosen --target-macs/--target-params")
    best = int(np.flatnonzero(feasible)[np.argmin(F[feasible])])
    origin = lambda i: "sensitivity seed" if i == 0 else ("uniform seed" if i < len(S) else cfg.allocation_strategy)  # noqa: E731
    log(f"allocation search: best held-out error {F[best]:.4f} ({origin(best)}); {problem.evaluations} forwards, "
        f"{problem.cache_hits} cache hits, {problem.infeasible} over budget")
    out: Dict[str, Any] = {"error": float(F[best]), "seed_errors": seed_err.tolist(),
                           "evaluations": int(res.evaluations) + len(S), "strategy": cfg.allocation_strategy}
    C = problem.counts(G)
    steps = cfg.allocation_finetune_steps
    if steps > 0:
        finals = finalists(C, F, cfg.allocation_finalists)
        rescored = [finetuned_error(model, problem, G[i], loaders, cfg, steps, seed, loss_fn) for i in finals]
        for i, e in zip(finals, rescored):
            log(f"allocation search: finalist ({origin(i)}) error {F[i]:.4f} -> {e:.4f} after {steps} fine-tune "
                "steps (whole calibration split)")
        best = finals[int(np.argmin(rescored))]
        out["finalists"] = [{"origin": origin(i), "error": float(F[i]), "finetuned_error": float(e),
                             "counts": C[i].tolist()} for i, e in zip(finals, rescored)]
        out["finetuned_error"] = float(min(rescored))
        out["error"] = float(F[best])
    out["ratios"] = {u: float(c) / float(n) for u, c, n in zip(names, C[best], problem.sizes)}
    out["origin"] = origin(best)
    return out


def finalists(counts: np.ndarray, errors: np.ndarray, k: int) -> List[int]:
    """Indices of the ``k`` lowest-error feasible genomes that decode to distinct allocations (``counts`` rows)."""
    seen, picked = set(), []
    for i in np.argsort(errors, kind="stable"):
        key = counts[i].tobytes()
        if errors[i] > 1.0 or key in seen:  # over budget, or the same allocation again
            continue
        seen.add(key)
        picked.append(int(i))
        if len(picked) == k:
            break
    return picked


def finetuned_error(model: Any, problem: Any, genome: np.ndarray, loaders: Any, cfg: Any, steps: int, seed: int,
                    loss_fn: Any = None) -> float:
    """Held-out error of one allocation after pruning (top-k L1 channels), adaptive BN and ``steps`` fine-tune
    steps (0: adaptive BN alone, on the whole split); every finalist sees the same BN batches and the same batch
    stream (common random numbers)."""
    import copy

    import torch

    from .distill import kd_loss
    from .pipeline import short_finetune
    from .pruning.apply import apply
    from .pruning.masked import reestimate_bn
    from .train import evaluate

    device = next(model.parameters()).device
    torch.manual_seed(seed)
    net = apply(model, problem.decode(genome), problem.space)
    for p in net.parameters():
        p.requires_grad_(True)
    reestimate_bn(net, loaders.train_batches(cfg.bn_batches, seed=seed))
    if loss_fn is None:
        loss_fn = kd_loss(copy.deepcopy(model).eval(), cfg.temperature, cfg.alpha)
    short_finetune(net, loaders, steps, cfg.finetune_lr, seed * 7_919 + 17, loss_fn)
    return 1.0 - float(evaluate(net, loaders.calib_batches(None, batch_size=cfg.batch_size), device)["top1"])
