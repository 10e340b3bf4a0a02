"""NSGA-II (Deb et al. 2002) on DEAP: ``tools.selNSGA2`` survival, ``tools.selTournamentDCD`` mating selection.

For any problem with two or more objectives (error vs MACs, or the bi-objective benchmarks). One generation:
crowded-dominance tournament -> pairs crossed with probability ``cxpb`` -> each child mutated with probability
``mutpb`` -> ``problem.repair`` -> evaluate -> NSGA-II survival over parents + children.

Variation operators (binary problems) come from :func:`evoprune.operators.get_operator`, by name or
``module:name``; defaults: the problem's ``default_operators`` when it declares them, else ``crossover.cardinality``
+ ``mutation.swap`` when the problem has a fixed cardinality ``k`` (children stay feasible) and
``crossover.uniform`` + ``mutation.flip`` (1/n per bit) otherwise. Real-encoded
problems use DEAP's bounded SBX crossover and polynomial mutation (``sbx``, ``polynomial``).

The population is kept as one 2-D genome array; DEAP only sees light handles carrying a fitness (its selection
needs nothing else), so no per-individual numpy wrapper is built in the loop.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from deap import tools

from evoprune.config import operator_defaults
from evoprune.errors import EvopruneError
from evoprune.problems.base import FitnessND
from evoprune.strategies.protocol import register_strategy
from evoprune.signals import graceful
from evoprune.strategies import _support as S
from evoprune.strategies.base import BudgetedEvaluator, Result, seeded_rngs, timer

NAME = "nsga2"
DEFAULTS: Dict[str, Any] = {
    "pop_size": 100, "cxpb": 0.9, "mutpb": 1.0, "crossover": None, "mutation": None, "init": None, "indpb": None,
    "eta_cx": 15.0, "eta_mut": 20.0,
}


class _Handle:
    """What DEAP's NSGA-II selection needs of an individual: a fitness. ``i`` indexes the genome array."""

    __slots__ = ("fitness", "i")

    def __init__(self, values: np.ndarray, weights: Tuple[float, ...], i: int) -> None:
        self.fitness = FitnessND()
        self.fitness.weights = weights
        self.fitness.values = tuple(float(v) for v in values)
        self.i = i


def _handles(F: np.ndarray, weights: Tuple[float, ...], start: int = 0) -> List[_Handle]:
    return [_Handle(f, weights, start + j) for j, f in enumerate(F)]


# -------------------------------------------------------------------------------------------------------- variation
class _Variation:
    """Crossover + mutation + repair on a 2-D array of selected parents (consecutive rows are mates)."""

    def __init__(self, problem: Any, p: Dict[str, Any]) -> None:
        self.problem = problem
        self.cxpb = S.probability(NAME, "cxpb", p["cxpb"])
        self.mutpb = S.probability(NAME, "mutpb", p["mutpb"])
        self.indpb = None if p["indpb"] is None else S.probability(NAME, "indpb", p["indpb"])
        self.encoding = S.check_encoding(NAME, problem)
        if self.encoding == "real":
            self.lo, self.hi = S.bounds(problem)
            self.eta_cx = S.positive_float(NAME, "eta_cx", p["eta_cx"])
            self.eta_mut = S.positive_float(NAME, "eta_mut", p["eta_mut"])
            self.cx_name = p["crossover"] or "sbx"
            self.mut_name = p["mutation"] or "polynomial"
            self.cx = None if self.cx_name == "sbx" else self._user_op("crossover", self.cx_name)
            self.mut = None if self.mut_name == "polynomial" else self._user_op("mutation", self.mut_name)
        else:
            from evoprune.operators import get_operator

            fixed_k = isinstance(getattr(problem, "k", None), numbers.Integral)
            preferred = dict(getattr(problem, "default_operators", None) or {})
            fallback = operator_defaults(fixed_k)
            self.cx_name = p["crossover"] or preferred.get("crossover") or fallback["crossover"]
            self.mut_name = p["mutation"] or preferred.get("mutation") or fallback["mutation"]
            self.cx = get_operator("crossover", self.cx_name)
            self.mut = get_operator("mutation", self.mut_name)
        p["crossover"], p["mutation"] = self.cx_name, self.mut_name

    def _user_op(self, kind: str, name: str) -> Callable:
        if not (callable(name) or ":" in str(name)):
            raise EvopruneError(
                f"strategy '{NAME}': problem '{self.problem.name}' is real-encoded; the built-in {kind} operators "
                f"are binary. Use {'sbx' if kind == 'crossover' else 'polynomial'} or your own 'module:name'"
            )
        from evoprune.registry import load_object

        return name if callable(name) else load_object(name, f"{kind} operator")

    def __call__(self, P: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        O = np.array(P, copy=True)
        half = len(O) // 2
        cx_rows = np.flatnonzero(rng.random(half) < self.cxpb)
        a_idx, b_idx = 2 * cx_rows, 2 * cx_rows + 1
        if len(cx_rows):
            O[a_idx], O[b_idx] = self._crossover(O[a_idx], O[b_idx], rng)
        mut_rows = np.flatnonzero(rng.random(len(O)) < self.mutpb)
        if len(mut_rows):
            O[mut_rows] = self._mutate(O[mut_rows], rng)
        return np.asarray(self.problem.repair(O, rng), dtype=O.dtype)

    def _crossover(self, A: np.ndarray, B: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        if self.encoding == "real" and self.cx is None:
            C, D = A.copy(), B.copy()
            for c, d in zip(C, D):
                x, y = c.tolist(), d.tolist()
                tools.cxSimulatedBinaryBounded(x, y, eta=self.eta_cx, low=self.lo.tolist(), up=self.hi.tolist())
                c[:], d[:] = x, y
            return C, D
        batch = getattr(self.cx, "batch", None)
        if callable(batch):
            C, D = batch(A, B, rng=rng)
            return np.asarray(C), np.asarray(D)
        C, D = A.copy(), B.copy()
        for j in range(len(C)):  # a user operator with only the DEAP signature: pair by pair, in place
            c, d = self.cx(C[j], D[j], rng=rng)
            C[j], D[j] = c, d
        return C, D

    def _mutate(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kw = {} if self.indpb is None else {"indpb": self.indpb}
        if self.encoding == "real" and self.mut is None:
            Y = X.copy()
            indpb = self.indpb if self.indpb is not None else 1.0 / X.shape[1]
            for y in Y:
                v = y.tolist()
                tools.mutPolynomialBounded(v, eta=self.eta_mut, low=self.lo.tolist(), up=self.hi.tolist(), indpb=indpb)
                y[:] = v
            return Y
        batch = getattr(self.mut, "batch", None)
        if callable(batch):
            return np.asarray(batch(X, rng=rng, **kw))
        Y = X.copy()
        for j in range(len(Y)):
            (y,) = self.mut(Y[j], rng=rng, **kw)
            Y[j] = y
        return Y


def _initial(problem: Any, p: Dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    if p["init"] is None:
        return np.asarray(problem.sample(rng, size))
    if getattr(problem, "encoding", "binary") != "binary":
        raise EvopruneError(f"strategy '{NAME}': init operators are binary; problem '{problem.name}' is real-encoded")
    from evoprune.operators import get_operator

    init = get_operator("init", p["init"])
    k = getattr(problem, "k", None)
    G = init(size, int(problem.n_var), k if isinstance(k, numbers.Integral) else None, rng=rng,
             importance=getattr(problem, "importance", None))
    return np.asarray(problem.repair(np.asarray(G, dtype=bool), rng), dtype=bool)


# --------------------------------------------------------------------------------------------------------- strategy
def _config(problem: Any, budget: int, params: Dict[str, Any]) -> Tuple[Dict[str, Any], int, _Variation]:
    """Validate and resolve the parameters (also used to check CLI input before a run starts)."""
    p = S.resolve_params(NAME, params, DEFAULTS)
    S.require_objectives(NAME, problem, multi=True)
    mu = S.positive_int(NAME, "pop_size", p["pop_size"], minimum=4)
    if mu % 4:
        raise EvopruneError(f"strategy '{NAME}': pop_size must be a multiple of 4 (DEAP's selTournamentDCD), got "
                            f"{mu}; use {mu - mu % 4} or {mu + 4 - mu % 4}")
    S.require_budget(NAME, budget, mu, f"the initial population (pop_size={mu})")
    variation = _Variation(problem, p)
    p["pop_size"] = mu
    return p, mu, variation


def _validate(problem: Any, budget: int, **params: Any) -> None:
    """Check parameters, problem and budget without running."""
    _config(problem, budget, params)


@graceful
def nsga2(problem: Any, budget: int, seed: int, callback: Optional[Callable] = None, **params: Any) -> Result:
    """NSGA-II (tools.selNSGA2 + selTournamentDCD) for problems with 2+ objectives (e.g. error vs MACs)."""
    p, mu, variation = _config(problem, budget, params)

    rng = seeded_rngs(seed)
    weights = tuple(float(w) for w in problem.weights)
    evaluator = BudgetedEvaluator(problem, budget, map_fn=p["map_fn"])
    logbook = S.new_logbook(problem)
    ckpt = S.Checkpointer(p["checkpoint"], p["checkpoint_every"], S.signature(NAME, problem, seed, budget, p))
    state = ckpt.load()
    clock = timer()

    def snapshot(gen: int, G: np.ndarray, F: np.ndarray, pop: List[_Handle], elapsed_: float,
                 done_: bool) -> Dict[str, Any]:
        st = S.common_state(gen, evaluator, logbook, rng, elapsed_, done_)
        st["pop_genomes"], st["pop_fitness"] = G, F
        st["pop_crowding"] = np.asarray([h.fitness.crowding_dist for h in pop], dtype=float)
        return st

    if state is not None:
        gen, logbook, elapsed, done = S.restore_common(state, problem, evaluator, rng)
        G, F = np.asarray(state["pop_genomes"]), np.asarray(state["pop_fitness"], dtype=float)
        pop = _handles(F, weights)
        for h, cd in zip(pop, np.asarray(state["pop_crowding"], dtype=float)):
            h.fitness.crowding_dist = float(cd)
        gen += 1
    else:
        gen, elapsed, done = 0, 0.0, False
        G = _initial(problem, p, mu, rng)
        F = evaluator.evaluate(G)  # budget >= mu was checked
        pop = tools.selNSGA2(_handles(F, weights), mu)  # sorts and assigns crowding distances
        G, F = _reorder(pop, G, F)
        S.record(logbook, problem, gen, mu, evaluator.used, F)
        done = evaluator.remaining == 0
        if ckpt.due(gen) or done:
            ckpt.save(snapshot(gen, G, F, pop, elapsed + clock(), done))
        if S.call_back(callback, gen, G, F):
            return S.finish(NAME, problem, seed, evaluator, logbook, elapsed + clock(), p)
        gen += 1

    while not done and evaluator.remaining > 0:
        chosen = tools.selTournamentDCD(pop, mu)
        O = variation(G[[h.i for h in chosen]], rng)
        FO = S.split_evaluate(evaluator, O)
        complete = len(FO) == len(O)
        if complete:  # a generation cut short by the budget is recorded (it is in the archive) but not selected
            O = O[: len(FO)]
            union_G, union_F = np.concatenate([G, O]), np.concatenate([F, FO])
            pop = tools.selNSGA2(pop + _handles(FO, weights, start=len(G)), mu)
            G, F = _reorder(pop, union_G, union_F)
        S.record(logbook, problem, gen, len(FO), evaluator.used, F if complete else FO)
        done = evaluator.remaining == 0 or not complete
        if ckpt.due(gen) or done:
            ckpt.save(snapshot(gen, G, F, pop, elapsed + clock(), done))
        if S.call_back(callback, gen, G if complete else O[: len(FO)], F if complete else FO):
            break
        gen += 1
    return S.finish(NAME, problem, seed, evaluator, logbook, elapsed + clock(), p)


def _reorder(pop: List[_Handle], G: np.ndarray, F: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Gather the survivors' rows in selection order and re-point the handles at them."""
    idx = np.asarray([h.i for h in pop], dtype=np.intp)
    for j, h in enumerate(pop):
        h.i = j
    return G[idx].copy(), F[idx].copy()


register_strategy(NAME, objectives="multi", defaults=DEFAULTS, validate=_validate)(nsga2)
