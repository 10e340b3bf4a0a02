"""The strategy seam: what a search strategy is, how to register one, and how it builds its result.

A **strategy** is a function ::

    run(problem, budget, seed, callback=None, **params) -> Result

* ``problem``: anything with ``n_var``, ``objectives``, ``weights`` (DEAP weights, -1 minimise), ``encoding``
  (``"binary"`` or ``"real"``), ``sample(rng, size)``, ``repair(genomes, rng)`` and a batched
  ``evaluate(genomes [P, n_var]) -> [P, n_obj]`` (see :mod:`evoprune.problems`);
* ``budget``: fitness evaluations; wrap the problem in :class:`~evoprune.strategies.base.BudgetedEvaluator`, which
  counts them, refuses to go past the budget (raising :class:`~evoprune.strategies.base.BudgetExhausted` after
  recording what it scored) and keeps the history every indicator is computed from;
* ``seed``: :func:`~evoprune.strategies.base.seeded_rngs` seeds numpy and Python's ``random`` (DEAP's);
* ``callback(gen, genomes, fitness)``: call it after each generation; a truthy return stops the run;
* ``**params``: the strategy's own options. The CLI (``--strategy-param name.key=value``) passes only the options
  a strategy accepts: its ``param_names`` when it declares them (``register_strategy(defaults=...)``), else its
  signature. ``checkpoint=PATH`` / ``checkpoint_every=N`` / ``map_fn`` are offered only to strategies that
  take them (``**params`` takes everything).
* returns a :class:`~evoprune.strategies.base.Result`; :func:`make_result` builds it from the evaluator's history
  (best point; single objective: the distinct best genomes; several: the non-dominated archive).

Register with :func:`register_strategy` (name, objectives ``"single"|"multi"|"any"``, defaults, encodings) so that
``evoprune list strategies`` shows it and ``compare`` refuses an objective mismatch before any run; or give the CLI
``module:function`` / ``file.py:function`` without registering. ``examples/user_strategy.py`` is a complete one.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from evoprune.errors import EvopruneError
from evoprune.registry import STRATEGIES, accepted_kwargs

from .base import BudgetedEvaluator, Result

__all__ = ["register_strategy", "make_result", "get_strategy", "strategy_accepts", "accepted", "check_compatible",
           "OBJECTIVE_KINDS"]

OBJECTIVE_KINDS = ("single", "multi", "any")


def register_strategy(name: str, *, objectives: str = "any", defaults: Optional[Mapping[str, Any]] = None,
                      encodings: Sequence[str] = ("binary", "real"), validate: Optional[Callable] = None,
                      doc: Optional[str] = None, aliases: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """Decorator: register a strategy under ``name`` (and ``aliases``) with its metadata as attributes.

    ``defaults``: the strategy's own parameters and their default values (its ``param_names`` become these plus
    the common ``checkpoint``, ``checkpoint_every``, ``map_fn``); omit them to let the signature speak.
    ``validate(problem, budget, **params)``: checks run before any file is written.
    """
    if objectives not in OBJECTIVE_KINDS:
        raise EvopruneError(f"objectives must be one of {', '.join(OBJECTIVE_KINDS)}, got {objectives!r}")

    def deco(fn: Callable) -> Callable:
        from ._support import COMMON_PARAMS

        fn.objectives = objectives  # type: ignore[attr-defined]
        fn.encodings = tuple(encodings)  # type: ignore[attr-defined]
        if defaults is not None:
            fn.defaults = dict(defaults)  # type: ignore[attr-defined]
            fn.param_names = tuple(defaults) + tuple(COMMON_PARAMS)  # type: ignore[attr-defined]
        if validate is not None:
            fn.validate = validate  # type: ignore[attr-defined]
        for key in (name, *aliases):
            STRATEGIES.register(key, doc=doc if key == name else f"{doc or name} (alias of '{name}')")(fn)
        return fn

    return deco


def make_result(name: str, problem: Any, seed: int, evaluator: BudgetedEvaluator, elapsed: float,
                params: Optional[Mapping[str, Any]] = None, logbook: Any = None) -> Result:
    """The :class:`Result` of a run from its evaluator's history (what every built-in returns)."""
    from deap import tools

    from ._support import finish

    return finish(name, problem, seed, evaluator, logbook if logbook is not None else tools.Logbook(), elapsed,
                  dict(params or {}))


def get_strategy(name: Any) -> Callable[..., Result]:
    """A registered strategy name, a ``module:name`` / ``file.py:name`` spec, or a callable."""
    fn = name if callable(name) else STRATEGIES.get(name)
    if not callable(fn):
        raise EvopruneError(f"strategy '{name}' is a {type(fn).__name__}, not a function run(problem, budget, seed)")
    return fn


def strategy_accepts(fn: Callable, key: str) -> bool:
    """Whether a strategy takes parameter ``key``: its ``param_names`` attribute when declared, else its signature
    (a ``**params`` catch-all accepts everything)."""
    names = getattr(fn, "param_names", None)
    if names is not None:
        return key in names
    allowed = accepted_kwargs(fn)
    return allowed is None or (key in allowed and key not in ("problem", "budget", "seed", "callback"))


def accepted(fn: Callable, options: Mapping[str, Any]) -> Dict[str, Any]:
    """The subset of ``options`` (infrastructure the caller offers: checkpoint, map_fn, ...) ``fn`` accepts."""
    return {k: v for k, v in options.items() if strategy_accepts(fn, k)}


def check_compatible(name: str, fn: Callable, problem: Any) -> None:
    """Fail fast (before any run) when a strategy cannot handle the problem's number of objectives."""
    kind = getattr(fn, "objectives", "any")
    n = len(problem.objectives)
    if kind == "multi" and n < 2:
        raise EvopruneError(f"strategy '{name}' is multi-objective but problem '{problem.name}' has one objective; "
                            "use ga, cmaes, cmaes-1+l or random")
    if kind == "single" and n > 1:
        raise EvopruneError(f"strategy '{name}' is single-objective but problem '{problem.name}' has {n} "
                            f"objectives ({', '.join(problem.objectives)}); use nsga2, mo-cmaes or random")
    encodings = getattr(fn, "encodings", None)
    enc = getattr(problem, "encoding", "binary")
    if encodings is not None and enc not in encodings:
        raise EvopruneError(f"strategy '{name}' works on {'/'.join(encodings)} genomes but problem '{problem.name}' "
                            f"is {enc}")
