"""``prune --selector``: how the pipeline chooses one unit's channels -- the paper's GA on the two-step fitness,
any other single-objective strategy on the same problem, or a criterion of :data:`evoprune.registry.SELECTORS`
(l1, bn, taylor, random, thinet). (Parent selection inside a GA is another thing: ``operators/selection.py``.)

The GA searches ``ChannelSelectionProblem(n, k, fitness)``; with the two-step fitness, stage 2 verifies the
``stage2_top_k`` best stage-1 candidates every ``stage2_every`` generations, and at the end the hall of fame is
verified and the genome with the lowest held-out loss wins (stage 2 decides among the finalists; stage 1 only
proposes them).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Tuple

import numpy as np
from torch import nn


def calibration(loaders, cfg, seed: int):
    from .fitness import CalibrationData

    return CalibrationData.from_loaders(loaders, train_batches=max(cfg.calib_batches, cfg.bn_batches),
                                        held_out_batches=cfg.eval_batches, batch_size=cfg.batch_size, seed=seed)


def stage1_error(model: nn.Module, space, unit: str, masks: np.ndarray, calib) -> np.ndarray:
    """Normalised stage-1 reconstruction error of ``masks`` [P, n] (for logging any selector's choice)."""
    from .fitness import ReconstructionFitness

    ev = ReconstructionFitness.from_space(space, unit, calib, model=model)
    return ev.error(np.atleast_2d(masks)).numpy()


def resolve_strategy_selector(name: Any) -> Any:
    """The search strategy that ``--selector name`` names, or ``None`` when it names a criterion (l1, thinet, ...).

    Criteria win on a shared name (``random`` is the random-mask control; random search is ``random-search``).
    A multi-objective strategy is refused in one line: a selector must return one mask."""
    import inspect

    from .errors import EvopruneError
    from .registry import SELECTORS, STRATEGIES

    import evoprune.pruning  # noqa: F401  (registers the criteria: l1, random, thinet, ...)
    import evoprune.strategies  # noqa: F401  (registers the built-ins)

    if name == "ga":
        return STRATEGIES.get("ga")
    if isinstance(name, str) and name in SELECTORS:
        return None
    fn = STRATEGIES.get(name) if isinstance(name, str) and name in STRATEGIES else None
    if fn is None and isinstance(name, str) and ":" in name:
        obj = SELECTORS.get(name)
        try:
            first = next(iter(inspect.signature(obj).parameters), None)
        except (TypeError, ValueError):
            first = None
        fn = obj if first == "problem" else None  # run(problem, budget, seed, ...) is a strategy
    if fn is not None and getattr(fn, "objectives", "any") == "multi":
        raise EvopruneError(f"--selector '{name}' is a multi-objective strategy; a selector returns one mask per "
                            "unit: use ga, cmaes, cmaes-1+l or random-search, or 'evoprune search --problem "
                            "network' for accuracy-vs-MACs fronts")
    return fn


def strategy_params(fn: Any, cfg) -> Dict[str, Any]:
    """The pipeline's GA settings for the GA; ``pop_size`` (and operators) for any strategy that takes them."""
    from .strategies import strategy_accepts

    if getattr(fn, "__name__", "") == "ga" and fn.__module__ == "evoprune.strategies.ga":
        return {"pop_size": cfg.pop_size, "generations": cfg.generations, "crossover": cfg.crossover,
                "mutation": cfg.mutation, "selection": cfg.selection, "hof_size": max(1, cfg.finalists),
                **({"seeding": "greedy"} if cfg.seeding == "greedy" else {})}
    want = {"pop_size": cfg.pop_size, "crossover": cfg.crossover, "mutation": cfg.mutation,
            "selection": cfg.selection}
    return {k: v for k, v in want.items() if v is not None and strategy_accepts(fn, k)}


def ga_select(model: nn.Module, space, unit: str, k: int, loaders, cfg, seed: int,
              log: Callable[[str], None], backend: Any = None, strategy: Any = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Run the paper's GA (or ``strategy``, any single-objective one) for one unit; return the chosen bool mask
    and what it cost. Every strategy gets the same problem, the same two-step fitness and the same evaluation
    budget (``pop_size x (generations + 1)``); stage 2 picks the winner among its best genomes.

    ``backend`` (an :mod:`evoprune.parallel` backend): where the stage-2 checks run; the GA, stage 1 and every
    RNG stay here, so the mask is the same on any backend."""
    import torch

    from evoprune.problems.channel_selection import ChannelSelectionProblem

    from .fitness import TwoStage
    from .fitness.unit import unit_fitness
    from .strategies import run_strategy
    from .strategies.ga import ga

    strategy = ga if strategy is None else strategy

    t0 = time.perf_counter()
    calib = calibration(loaders, cfg, seed)
    u = space.unit(unit)
    s1, fitness = unit_fitness(space, u, calib, model, cfg.fitness, bn_batches=cfg.bn_batches,
                               top_k=cfg.stage2_top_k, every=cfg.stage2_every, backend=backend)
    problem = ChannelSelectionProblem(u.channels, k, fitness, min_keep=u.min_keep, name=f"channels[{unit}]",
                                      groups=u.channel_groups)  # per-block cardinality for grouped consumers
    params = strategy_params(strategy, cfg)
    if params.get("seeding") == "greedy" and problem.quadratic(exact=False) is None:
        params.pop("seeding")  # a user fitness without the stage-1 quadratic: no greedy to seed from
    res = run_strategy(strategy, problem, cfg.pop_size * (cfg.generations + 1), seed, **params)
    finalists = np.asarray(res.front_genomes, dtype=bool).reshape(-1, u.channels)[: max(1, cfg.finalists)]
    info: Dict[str, Any] = {"ga_evaluations": int(res.evaluations), "ga_generations": res.params.get("generations_run"),
                            "ga_stop": res.params.get("stop_reason")}
    if strategy is not ga:
        info["strategy"] = res.strategy
    if isinstance(fitness, TwoStage) and cfg.stage2_top_k > 0:
        scores = fitness.verify(torch.as_tensor(finalists)).numpy()  # [F, (loss, accuracy)]
        best = int(np.argmin(scores[:, 0]))
        mask = finalists[best]
        info.update({"stage2_loss": float(scores[best, 0]), "stage2_acc": float(scores[best, 1]),
                     "stage2_evaluations": fitness.stage2_evaluations})
    else:
        mask = np.asarray(res.best_genome, dtype=bool)
    info["stage1_error"] = float(s1.error(mask[None])[0])
    info["select_time_s"] = time.perf_counter() - t0
    return mask, info
