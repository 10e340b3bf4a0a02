"""CMA-ES on a continuous relaxation: ``cmaes`` ((mu/mu_w, lambda), ``deap.cma.Strategy``), ``cmaes-1+l``
((1+lambda), ``deap.cma.StrategyOnePlusLambda``) and ``mo-cmaes`` (``deap.cma.StrategyMultiObjective``).

Decoding (how a continuous CMA-ES point becomes a genome the problem can score)
------------------------------------------------------------------------------
* **Binary problems** -- CMA-ES searches per-variable scores ``x`` in R^n:

  - when the problem has an integer cardinality ``k`` attribute (choose k of n channels), the ``k`` highest
    scores become 1 (ties: lower index first): always feasible, no repair needed;
  - otherwise a variable is 1 when its score is > 0.5, then ``problem.repair`` makes the mask valid.

  The strategy adapts the scores themselves (the decoded mask is only what gets evaluated), so plateaus of equal
  masks are crossed by the step-size/covariance dynamics. ``cmaes`` starts from the centroid 0.5 (every mask equally
  likely); ``cmaes-1+l`` and ``mo-cmaes`` start from masks drawn by ``problem.sample``, encoded as scores 0.25 / 0.75
  so they decode to exactly those masks.
* **Real problems** -- CMA-ES works in the box normalised to [0, 1]^n (``lower``/``upper`` attributes of the
  problem, default [0, 1]); points outside are reflected back into the box (and the reflected point is what the
  strategy learns from), then scaled to the bounds and passed through ``problem.repair``.

DEAP's CMA-ES samples from numpy's global RNG; each run uses its own seeded ``RandomState`` swapped in around the
sampling calls, so runs are reproducible, checkpointable, and leave the caller's global RNG untouched.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from deap import cma

from evoprune.errors import EvopruneError
from evoprune.problems.base import wrap
from evoprune.strategies.protocol import register_strategy
from evoprune.signals import graceful
from evoprune.strategies import _support as S
from evoprune.strategies.base import BudgetedEvaluator, Result, seeded_rngs, timer


# ------------------------------------------------------------------------------------------------------- encoding
class _Relaxation:
    """Maps CMA-ES points to genomes (see the module docstring) and initial genomes back to CMA-ES points."""

    def __init__(self, name: str, problem: Any) -> None:
        self.problem = problem
        self.encoding = S.check_encoding(name, problem)
        if self.encoding == "real":
            self.lo, self.hi = S.bounds(problem)

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """The point the strategy should learn from (reflected into the box for real problems)."""
        return S.mirror_unit(X) if self.encoding == "real" else X

    def decode(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.encoding == "binary":
            return S.decode_binary(self.problem, X, rng)
        G = self.lo + np.clip(X, 0.0, 1.0) * (self.hi - self.lo)
        return np.asarray(self.problem.repair(G, rng), dtype=float)

    def encode(self, G: np.ndarray) -> np.ndarray:
        """Genomes -> CMA-ES points that decode back to them."""
        G = np.asarray(G)
        if self.encoding == "binary":
            return np.where(G.astype(bool), 0.75, 0.25)
        return (G.astype(float) - self.lo) / (self.hi - self.lo)

    def default_sigma(self, name: str) -> float:
        if self.encoding == "real":
            return 0.3 if name == "cmaes" else 0.2
        # 0.5 around a 0.5 centroid: the first generation is uniform over masks; around 0.25/0.75 scores, 0.15
        # flips a few percent of the variables per offspring (a mutation-like step) and is adapted from there.
        return 0.5 if name == "cmaes" else 0.15


def _evaluate_individuals(pop: List[Any], relax: _Relaxation, evaluator: BudgetedEvaluator,
                          rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Decode and score CMA-ES points; returns ``(genomes, fitness)`` of the rows the budget allowed."""
    X = relax.prepare(np.stack([np.asarray(ind) for ind in pop]))
    for ind, x in zip(pop, X):
        ind[:] = x
    G = relax.decode(X, rng)
    F = S.split_evaluate(evaluator, G)
    return G[: len(F)], F


def _ind_init(weights: tuple) -> Callable[[Any], Any]:
    return lambda a: wrap(np.asarray(a, dtype=float), weights)


# --------------------------------------------------------------------------------------------------- (mu/mu_w, lambda)
CMAES_DEFAULTS = {"pop_size": None, "mu": None, "sigma": None, "centroid": 0.5, "recombination": "superlinear"}


def _cmaes_config(problem: Any, budget: int, params: Dict[str, Any]) -> tuple:
    """Validate and resolve the parameters of ``cmaes`` (also used to check CLI input before a run starts)."""
    name = "cmaes"
    p = S.resolve_params(name, params, CMAES_DEFAULTS)
    S.require_objectives(name, problem, multi=False)
    relax = _Relaxation(name, problem)
    n = int(problem.n_var)
    lam = S.positive_int(name, "pop_size", p["pop_size"] if p["pop_size"] is not None else int(4 + 3 * math.log(n)),
                         minimum=2)
    mu = S.positive_int(name, "mu", p["mu"] if p["mu"] is not None else lam // 2)
    if mu > lam:
        raise EvopruneError(f"strategy '{name}': mu ({mu}) must not exceed pop_size ({lam})")
    sigma = S.positive_float(name, "sigma", p["sigma"] if p["sigma"] is not None else relax.default_sigma(name))
    centroid = p["centroid"]
    if isinstance(centroid, bool) or not isinstance(centroid, (int, float)) or not math.isfinite(centroid):
        raise EvopruneError(f"strategy '{name}': centroid must be a number (initial score of every variable), "
                            f"got {centroid!r}")
    centroid = float(centroid)
    if p["recombination"] not in ("superlinear", "linear", "equal"):
        raise EvopruneError(f"strategy '{name}': recombination must be superlinear, linear or equal, "
                            f"got {p['recombination']!r}")
    S.require_budget(name, budget, lam, f"one generation (pop_size={lam})")
    p.update(pop_size=lam, mu=mu, sigma=sigma)
    return p, relax, n, lam, mu, sigma, centroid


def _start(name: str, problem: Any, budget: int, seed: int, p: Dict[str, Any]) -> tuple:
    """What every CMA-ES run sets up first: seeded RNGs (ours and the numpy state DEAP's CMA draws from), the
    budgeted evaluator, a logbook, the checkpointer and any saved state to resume from."""
    rng = seeded_rngs(seed)
    legacy = np.random.RandomState(seed)
    evaluator = BudgetedEvaluator(problem, budget, map_fn=p["map_fn"])
    logbook = S.new_logbook(problem)
    ckpt = S.Checkpointer(p["checkpoint"], p["checkpoint_every"], S.signature(name, problem, seed, budget, p))
    return rng, legacy, evaluator, logbook, ckpt, ckpt.load()


@graceful
def cmaes(problem: Any, budget: int, seed: int, callback: Optional[Callable] = None, **params: Any) -> Result:
    """CMA-ES (deap.cma.Strategy) on a continuous relaxation; binary masks by top-k or threshold 0.5 + repair."""
    name = "cmaes"
    p, relax, n, lam, mu, sigma, centroid = _cmaes_config(problem, budget, params)
    rng, legacy, evaluator, logbook, ckpt, state = _start(name, problem, budget, seed, p)
    weights = tuple(problem.weights)
    strategy = cma.Strategy(centroid=[centroid] * n, sigma=sigma, lambda_=lam, mu=mu, weights=p["recombination"])
    gen, elapsed, done = 0, 0.0, False
    if state is not None:
        gen, logbook, elapsed, done = S.restore_common(state, problem, evaluator, rng)
        S.set_legacy_state(legacy, state)
        for key in ("centroid", "pc", "ps", "C", "diagD", "B", "BD"):
            setattr(strategy, key, np.asarray(state["cma_" + key], dtype=float))
        strategy.sigma = float(state["cma_sigma"])
        strategy.cond = float(state["cma_cond"])
        strategy.update_count = int(state["cma_update_count"])
        gen += 1

    def snapshot(gen_: int, done_: bool) -> Dict[str, Any]:
        st = S.common_state(gen_, evaluator, logbook, rng, elapsed + clock(), done_)
        st.update(S.legacy_state(legacy))
        for key in ("centroid", "pc", "ps", "C", "diagD", "B", "BD"):
            st["cma_" + key] = np.asarray(getattr(strategy, key), dtype=float)
        st.update(cma_sigma=float(strategy.sigma), cma_cond=float(strategy.cond),
                  cma_update_count=int(strategy.update_count))
        return st

    clock = timer()
    _generations(strategy, _ind_init(weights), relax, evaluator, rng, legacy, logbook, problem, ckpt, callback, gen,
                 done, snapshot)
    return S.finish(name, problem, seed, evaluator, logbook, elapsed + clock(), p)


# ----------------------------------------------------------------------------------------------------- (1+lambda)
ONEPLUS_DEFAULTS = {"pop_size": None, "sigma": None}


def _oneplus_config(problem: Any, budget: int, params: Dict[str, Any]) -> tuple:
    """Validate and resolve the parameters of ``cmaes-1+l``."""
    name = "cmaes-1+l"
    p = S.resolve_params(name, params, ONEPLUS_DEFAULTS)
    S.require_objectives(name, problem, multi=False)
    relax = _Relaxation(name, problem)
    n = int(problem.n_var)
    lam = S.positive_int(name, "pop_size", p["pop_size"] if p["pop_size"] is not None else int(4 + 3 * math.log(n)))
    sigma = S.positive_float(name, "sigma", p["sigma"] if p["sigma"] is not None else relax.default_sigma(name))
    S.require_budget(name, budget, 1 + lam, f"the parent plus one generation (1 + pop_size={lam})")
    p.update(pop_size=lam, sigma=sigma)
    return p, relax, n, lam, sigma


@graceful
def cmaes_one_plus_lambda(problem: Any, budget: int, seed: int, callback: Optional[Callable] = None,
                          **params: Any) -> Result:
    """(1+lambda)-CMA-ES (deap.cma.StrategyOnePlusLambda), elitist, started from a problem.sample genome."""
    name = "cmaes-1+l"
    p, relax, n, lam, sigma = _oneplus_config(problem, budget, params)
    rng, legacy, evaluator, logbook, ckpt, state = _start(name, problem, budget, seed, p)
    weights = tuple(problem.weights)
    ind_init = _ind_init(weights)
    clock = timer()
    if state is not None:
        gen, logbook, elapsed, done = S.restore_common(state, problem, evaluator, rng)
        S.set_legacy_state(legacy, state)
        parent = wrap(np.asarray(state["cma_parent"], dtype=float), weights)
        parent.fitness.wvalues = tuple(float(v) for v in state["cma_parent_wvalues"])  # exact, no re-weighting
        strategy = cma.StrategyOnePlusLambda(parent, float(state["cma_sigma"]), lambda_=lam)
        for key in ("C", "A", "pc"):
            setattr(strategy, key, np.asarray(state["cma_" + key], dtype=float))
        strategy.psucc = float(state["cma_psucc"])
        gen += 1
    else:
        gen, elapsed, done = 0, 0.0, False
        x0 = relax.encode(problem.sample(rng, 1))[:1]
        parent = ind_init(x0[0])
        G0, F0 = _evaluate_individuals([parent], relax, evaluator, rng)
        parent.fitness.values = tuple(F0[0])
        strategy = cma.StrategyOnePlusLambda(parent, sigma, lambda_=lam)
        S.record(logbook, problem, gen, 1, evaluator.used, F0)
        done = evaluator.remaining == 0
        if ckpt.due(gen) or done:
            ckpt.save(_oneplus_snapshot(gen, strategy, evaluator, logbook, rng, legacy, elapsed + clock(), done))
        if S.call_back(callback, gen, G0, F0):
            return S.finish(name, problem, seed, evaluator, logbook, elapsed + clock(), p)
        gen += 1

    _generations(strategy, ind_init, relax, evaluator, rng, legacy, logbook, problem, ckpt, callback, gen, done,
                 lambda g, d: _oneplus_snapshot(g, strategy, evaluator, logbook, rng, legacy, elapsed + clock(), d))
    return S.finish(name, problem, seed, evaluator, logbook, elapsed + clock(), p)


def _oneplus_snapshot(gen: int, strategy: Any, evaluator: BudgetedEvaluator, logbook: Any,
                      rng: np.random.Generator, legacy: np.random.RandomState, elapsed: float,
                      done: bool) -> Dict[str, Any]:
    st = S.common_state(gen, evaluator, logbook, rng, elapsed, done)
    st.update(S.legacy_state(legacy))
    st["cma_parent"] = np.asarray(strategy.parent, dtype=float)
    st["cma_parent_wvalues"] = np.asarray(strategy.parent.fitness.wvalues, dtype=float)
    for key in ("C", "A", "pc"):
        st["cma_" + key] = np.asarray(getattr(strategy, key), dtype=float)
    st.update(cma_sigma=float(strategy.sigma), cma_psucc=float(strategy.psucc))
    return st


# ------------------------------------------------------------------------------------------------------ MO-CMA-ES
MO_DEFAULTS = {"pop_size": 20, "offspring": None, "sigma": None}


def _mo_config(problem: Any, budget: int, params: Dict[str, Any]) -> tuple:
    """Validate and resolve the parameters of ``mo-cmaes``."""
    name = "mo-cmaes"
    p = S.resolve_params(name, params, MO_DEFAULTS)
    S.require_objectives(name, problem, multi=True)
    relax = _Relaxation(name, problem)
    mu = S.positive_int(name, "pop_size", p["pop_size"], minimum=2)
    lam = S.positive_int(name, "offspring", p["offspring"] if p["offspring"] is not None else mu)
    sigma = S.positive_float(name, "sigma", p["sigma"] if p["sigma"] is not None else relax.default_sigma(name))
    S.require_budget(name, budget, mu + lam, f"the initial population plus one generation "
                                             f"(pop_size={mu} + offspring={lam})")
    p.update(pop_size=mu, offspring=lam, sigma=sigma)
    return p, relax, mu, lam, sigma


@graceful
def mo_cmaes(problem: Any, budget: int, seed: int, callback: Optional[Callable] = None, **params: Any) -> Result:
    """MO-CMA-ES (deap.cma.StrategyMultiObjective): mu (1+1)-CMA-ES with hypervolume-based survival."""
    name = "mo-cmaes"
    p, relax, mu, lam, sigma = _mo_config(problem, budget, params)
    rng, legacy, evaluator, logbook, ckpt, state = _start(name, problem, budget, seed, p)
    weights = tuple(problem.weights)
    ind_init = _ind_init(weights)
    clock = timer()
    if state is not None:
        gen, logbook, elapsed, done = S.restore_common(state, problem, evaluator, rng)
        S.set_legacy_state(legacy, state)
        X, WP = np.asarray(state["mo_parents"], dtype=float), np.asarray(state["mo_parents_wvalues"], dtype=float)
        parents = [wrap(x, weights) for x in X]
        for ind, wv in zip(parents, WP):
            ind.fitness.wvalues = tuple(float(v) for v in wv)  # exact, no re-weighting
        strategy = cma.StrategyMultiObjective(parents, sigma, mu=mu, lambda_=lam)
        k = len(parents)
        strategy.sigmas = [float(v) for v in state["mo_sigmas"][:k]]
        strategy.A = [np.array(a) for a in state["mo_A"][:k]]
        strategy.invCholesky = [np.array(a) for a in state["mo_invCholesky"][:k]]
        strategy.pc = [np.array(a) for a in state["mo_pc"][:k]]
        strategy.psucc = [float(v) for v in state["mo_psucc"][:k]]
        gen += 1
    else:
        gen, elapsed, done = 0, 0.0, False
        parents = [ind_init(x) for x in relax.encode(problem.sample(rng, mu))]
        G0, F0 = _evaluate_individuals(parents, relax, evaluator, rng)  # budget >= mu was checked
        for ind, f in zip(parents, F0):
            ind.fitness.values = tuple(f)
        strategy = cma.StrategyMultiObjective(parents, sigma, mu=mu, lambda_=lam)
        S.record(logbook, problem, gen, len(F0), evaluator.used, F0)
        if ckpt.due(gen):
            ckpt.save(_mo_snapshot(gen, strategy, evaluator, logbook, rng, legacy, elapsed + clock(), done))
        if S.call_back(callback, gen, G0, F0):
            return S.finish(name, problem, seed, evaluator, logbook, elapsed + clock(), p)
        gen += 1

    _generations(strategy, ind_init, relax, evaluator, rng, legacy, logbook, problem, ckpt, callback, gen, done,
                 lambda g, d: _mo_snapshot(g, strategy, evaluator, logbook, rng, legacy, elapsed + clock(), d))
    return S.finish(name, problem, seed, evaluator, logbook, elapsed + clock(), p)


def _mo_snapshot(gen: int, strategy: Any, evaluator: BudgetedEvaluator, logbook: Any, rng: np.random.Generator,
                 legacy: np.random.RandomState, elapsed: float, done: bool) -> Dict[str, Any]:
    st = S.common_state(gen, evaluator, logbook, rng, elapsed, done)
    st.update(S.legacy_state(legacy))
    st["mo_parents"] = np.stack([np.asarray(ind, dtype=float) for ind in strategy.parents])
    st["mo_parents_wvalues"] = np.asarray([ind.fitness.wvalues for ind in strategy.parents], dtype=float)
    st["mo_sigmas"] = np.asarray(strategy.sigmas, dtype=float)
    st["mo_A"] = np.stack(strategy.A).astype(float)
    st["mo_invCholesky"] = np.stack(strategy.invCholesky).astype(float)
    st["mo_pc"] = np.stack(strategy.pc).astype(float)
    st["mo_psucc"] = np.asarray(strategy.psucc, dtype=float)
    return st


def _validator(config: Callable) -> Callable:
    def validate(problem: Any, budget: int, **params: Any) -> None:
        """Check parameters, problem and budget without running (the CLI calls this before touching --out)."""
        config(problem, budget, params)

    return validate


for _name, _fn, _defaults, _obj, _cfg in (("cmaes", cmaes, CMAES_DEFAULTS, "single", _cmaes_config),
                                          ("cmaes-1+l", cmaes_one_plus_lambda, ONEPLUS_DEFAULTS, "single",
                                           _oneplus_config),
                                          ("mo-cmaes", mo_cmaes, MO_DEFAULTS, "multi", _mo_config)):
    register_strategy(_name, objectives=_obj, defaults=_defaults, validate=_validator(_cfg))(_fn)


def _generations(strategy: Any, ind_init: Any, relax: Any, evaluator: Any, rng: Any, legacy: Any, logbook: Any,
                 problem: Any, ckpt: Any, callback: Any, gen: int, done: bool,
                 snapshot: Callable[[int, bool], Any]) -> None:
    """The generate -> evaluate -> update loop shared by every CMA-ES variant."""
    while not done and evaluator.remaining > 0:
        with S.numpy_global_rng(legacy), S.single_thread_blas():
            pop = strategy.generate(ind_init)
        G, F = _evaluate_individuals(pop, relax, evaluator, rng)
        complete = len(F) == len(pop)
        if complete:  # a generation cut short by the budget is recorded but not learnt from
            for ind, f in zip(pop, F):
                ind.fitness.values = tuple(f)
            with S.single_thread_blas():
                strategy.update(pop)
        S.record(logbook, problem, gen, len(F), evaluator.used, F)
        done = evaluator.remaining == 0 or not complete
        if ckpt.due(gen) or done:
            ckpt.save(snapshot(gen, done))
        if S.call_back(callback, gen, G, F):
            break
        gen += 1
