"""The single source of defaults: the pruning run's :class:`PruneConfig` and the operator table of every strategy.

Everything else takes its defaults from here: the options of ``evoprune prune`` / ``evoprune sensitivity``
(:func:`config_defaults`), :func:`evoprune.prune`, the pipeline, the GA and NSGA-II strategies and the problems.
This module imports nothing heavy (no torch, no pipeline, no CLI), so ``operators/`` and ``problems/`` may use it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from .errors import EvopruneError

DEFAULT_TARGET_MACS = 0.33
ALLOCATIONS = ("sensitivity", "uniform", "search")  # PruneConfig.allocation
SEEDINGS = ("greedy", "none")  # how the GA of prune starts (PruneConfig.seeding)
"""The target when none of any kind (MACs, parameters, ``max_drop``, ``ratios``) is given: keep a third of the MACs."""

# Operator names by kind. ``fixed_k``: the GA defaults for problems with a cardinality k, chosen by
# benchmarks/ga_operators.py (see evoprune/strategies/ga.py); the only pair that never needs repair.
# ``free_k``: without a cardinality constraint the positional operators are the natural ones.
OPERATOR_DEFAULTS: Dict[str, Dict[str, str]] = {
    "fixed_k": {"crossover": "cardinality", "mutation": "swap", "selection": "tournament", "init": "random-k"},
    "free_k": {"crossover": "uniform", "mutation": "flip", "selection": "tournament", "init": "bernoulli"},
}


def operator_defaults(fixed_k: bool = True) -> Dict[str, str]:
    """A copy of the default operator names for a problem with (``fixed_k``) or without a cardinality k."""
    return dict(OPERATOR_DEFAULTS["fixed_k" if fixed_k else "free_k"])


_LATER_FIELDS = {"refit": False, "at_weight": 0.0, "seeding": "none", "allocation": "sensitivity",
                 "allocation_strategy": "cmaes-1+l", "allocation_budget": 60,
                 "allocation_finetune_steps": 0, "allocation_finalists": 4,
                 "min_keep_ratio": 0.0}  # "none": what runs did before seeding


@dataclass
class PruneConfig:
    """Everything that decides the result of a pruning run (a resumed run must match it exactly).

    Give one kind of target: ``target_macs`` and/or ``target_params``, or ``max_drop``, or ``ratios``; with none,
    :meth:`apply_default_target` keeps :data:`DEFAULT_TARGET_MACS` of the MACs.
    """

    target_macs: Optional[float] = None     # keep this fraction of the MACs (DEFAULT_TARGET_MACS when no target)
    target_params: Optional[float] = None   # or of the parameters
    max_drop: Optional[float] = None        # or: every unit keeps the fewest channels with drop <= this
    ratios: Optional[Dict[str, float]] = None  # or: explicit per-unit keep ratios
    uniform: bool = False                   # one keep ratio for all units (baseline), still meeting the target
    # sensitivity: the paper's allocation from the curves; uniform: as --uniform; search: a strategy on the
    # whole-network problem (adaptive-BN accuracy under the budget), seeded with the sensitivity and uniform plans
    allocation: str = "sensitivity"
    allocation_strategy: str = "cmaes-1+l"
    allocation_budget: int = 60             # whole-network evaluations of the allocation search
    allocation_finetune_steps: int = 0      # > 0: the finalists are re-scored after this many KD steps each
    allocation_finalists: int = 4           # best distinct allocations re-scored that way
    selector: str = "ga"                    # ga | l1 | bn | taylor | random | thinet | module:fn
    order: str = "sensitivity"              # sensitivity | forward
    sensitivity_method: str = "l1"
    sensitivity_ratios: Tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
    exclude: Tuple[str, ...] = ()
    min_keep: int = 1
    min_keep_ratio: float = 0.0             # no unit below this keep ratio (Torch-Pruning: 1 - max_pruning_ratio)
    # GA (per unit) and its two-step fitness
    pop_size: int = 50
    generations: int = 60
    crossover: Optional[str] = None
    mutation: Optional[str] = None
    selection: Optional[str] = None
    fitness: str = "twostage"               # twostage | reconstruction | reconstruction-refit | module:Evaluator
    stage2_top_k: int = 3
    stage2_every: int = 10
    finalists: int = 5                      # hall of fame verified by stage 2 at the end of each unit's GA
    # greedy: 10 % of the GA's first population are ThiNet's greedy solution of the stage-1 error and swap mutants
    # of it (benchmarks/ga_vs_greedy.py); none: the paper's random initialisation only
    seeding: str = "greedy"
    # least-squares refit of each unit's consumers on the kept channels (ThiNet); None: every unit whose consumers
    # can be refit (plain conv/linear), the default since the ablation measured +0.45 pt after fine-tuning
    refit: Optional[bool] = None
    calib_batches: int = 4                  # batches of calibration data for stage 1 statistics
    bn_batches: int = 4                     # training batches for adaptive-BN re-estimation
    eval_batches: int = 4                   # held-out calibration batches for stage-2 / sensitivity accuracy
    # fine-tuning
    finetune_steps: int = 50                # KD steps after each unit
    finetune_epochs: int = 5                # final KD fine-tune
    finetune_lr: float = 0.01
    loss: str = "kd"                        # kd | ce
    temperature: float = 4.0
    alpha: float = 0.9
    at_weight: float = 0.0                  # attention-transfer term of the KD loss (0: plain Hinton KD)
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        self.apply_default_target()

    def apply_default_target(self) -> "PruneConfig":
        """The one place of the rule "no target of any kind given -> keep :data:`DEFAULT_TARGET_MACS` of the
        MACs" (in place; returns ``self``). Runs on construction and again in :meth:`validate`, so a config whose
        targets were cleared afterwards gets it too."""
        if self.target_macs is None and self.target_params is None and self.max_drop is None and self.ratios is None:
            self.target_macs = DEFAULT_TARGET_MACS
        return self

    def validate(self) -> None:
        self.apply_default_target()
        given = [self.target_macs is not None or self.target_params is not None, self.max_drop is not None,
                 self.ratios is not None]
        if sum(given) != 1:
            raise EvopruneError("give one kind of target: --target-macs and/or --target-params, or --max-drop, or "
                                "--ratios")
        for name in ("target_macs", "target_params"):
            v = getattr(self, name)
            if v is not None and not (0.0 < v <= 1.0 and np.isfinite(v)):
                raise EvopruneError(f"--{name.replace('_', '-')} must be a fraction in (0, 1], got {v}")
        if not (0.0 <= self.min_keep_ratio < 1.0):
            raise EvopruneError(f"--min-keep-ratio must be in [0, 1), got {self.min_keep_ratio}")
        if self.max_drop is not None and not (0.0 <= self.max_drop <= 1.0):
            raise EvopruneError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        if self.order not in ("sensitivity", "forward"):
            raise EvopruneError(f"--order must be 'sensitivity' or 'forward', got '{self.order}'")
        if self.seeding not in SEEDINGS:
            raise EvopruneError(f"--seeding must be one of {', '.join(SEEDINGS)}, got '{self.seeding}'")
        if self.loss not in ("kd", "ce"):
            raise EvopruneError(f"--loss must be 'kd' or 'ce', got '{self.loss}'")
        if self.allocation not in ALLOCATIONS:
            raise EvopruneError(f"--allocation must be one of {', '.join(ALLOCATIONS)}, got '{self.allocation}'")
        if self.allocation == "uniform":
            self.uniform = True
        if isinstance(self.allocation_budget, bool) or not isinstance(self.allocation_budget, int) \
                or self.allocation_budget < 1:
            raise EvopruneError(f"--allocation-budget must be a positive number of evaluations, got "
                                f"{self.allocation_budget!r}")
        for name, least in (("allocation_finetune_steps", 0), ("allocation_finalists", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise EvopruneError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {v!r}")
        if self.allocation_finetune_steps and self.allocation != "search":
            raise EvopruneError("--allocation-finetune-steps re-scores the finalists of --allocation search; add "
                                "--allocation search or drop it")
        if self.allocation == "search":
            if self.target_macs is None and self.target_params is None:
                raise EvopruneError("--allocation search needs a budget: --target-macs and/or --target-params")
            from .strategies import get_strategy

            fn = get_strategy(self.allocation_strategy)  # unknown: one-line error naming the known ones
            if getattr(fn, "objectives", "any") == "multi":
                raise EvopruneError(f"--allocation-strategy '{self.allocation_strategy}' is multi-objective; the "
                                    "allocation search maximises one accuracy under the budget: use cmaes-1+l, "
                                    "cmaes or random")
        if self.uniform and self.max_drop is not None:
            raise EvopruneError("--uniform needs --target-macs or --target-params, not --max-drop")
        for name in ("pop_size", "generations", "calib_batches", "bn_batches", "eval_batches", "batch_size",
                     "min_keep"):
            if getattr(self, name) < 1:
                raise EvopruneError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("finetune_steps", "finetune_epochs", "stage2_top_k"):
            if getattr(self, name) < 0:
                raise EvopruneError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        import evoprune.pruning  # noqa: F401  (registers the built-in selectors)
        from .registry import SELECTORS
        from .unit_selectors import resolve_strategy_selector

        strategy = resolve_strategy_selector(self.selector)  # a multi-objective strategy is refused here
        for name in ([self.selector] if strategy is None else []) + [self.sensitivity_method]:
            SELECTORS.get(name)  # an unknown name fails before any work or file
        for r in self.sensitivity_ratios:
            if not 0.0 < r < 1.0:
                raise EvopruneError(f"sensitivity ratios must lie in (0, 1), got {r}")
        if not (self.at_weight >= 0 and np.isfinite(self.at_weight)):
            raise EvopruneError(f"--at-weight must be >= 0, got {self.at_weight}")
        if self.at_weight > 0 and self.loss != "kd":
            raise EvopruneError("--at-weight is a term of the KD loss; use it with --loss kd")
        if not self.finetune_lr > 0:
            raise EvopruneError(f"--finetune-lr must be > 0, got {self.finetune_lr}")
        if self.ratios is not None:
            for u, r in self.ratios.items():
                if not (isinstance(r, (int, float)) and 0.0 < r <= 1.0):
                    raise EvopruneError(f"keep ratio for unit '{u}' must be in (0, 1], got {r!r}")

    def _searches(self) -> bool:
        """Whether the selector is a search strategy (the GA or another), not a criterion."""
        try:
            from .unit_selectors import resolve_strategy_selector

            return resolve_strategy_selector(self.selector) is not None
        except EvopruneError:
            return True

    def differences(self, stored: Mapping[str, Any]) -> str:
        """What differs from a run's stored ``config`` (``prune_config.json``), as ``field: then -> now`` pairs;
        a field the run predates counts with its value from before it existed."""
        def plain(d: Mapping[str, Any]) -> Dict[str, Any]:  # as JSON holds it: tuples are lists
            return json.loads(json.dumps(dict(d), default=str))

        now, then = plain(asdict(self)), plain(stored)
        diff = [f"{k}: {then.get(k, _LATER_FIELDS.get(k))!r} -> {v!r}" for k, v in now.items()
                if then.get(k, _LATER_FIELDS.get(k)) != v]
        return "; ".join(diff)

    def fingerprint(self) -> str:
        # options added later count only when set, so run directories made before them still resume
        d = {k: v for k, v in asdict(self).items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
        if d.get("seeding") is not None and not self._searches():
            d.pop("seeding")  # a criterion (l1, thinet, ...) has no GA to seed
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_defaults(cls: type = PruneConfig) -> Dict[str, Any]:
    """Field name -> default of a config dataclass (what the CLI options and :func:`evoprune.prune` default to)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


PRUNE_DEFAULTS: Mapping[str, Any] = MappingProxyType(config_defaults(PruneConfig))
""":class:`PruneConfig`'s defaults by field name (``target_macs`` is ``None``: see :data:`DEFAULT_TARGET_MACS`)."""
