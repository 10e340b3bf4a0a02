"""The paper's genetic algorithm: a generational GA over binary channel masks with elitism.

Each generation: keep the ``elite`` best individuals; select ``pop_size - elite`` parents; pair them and cross each
pair with probability ``cxpb``; mutate each child with probability ``mutpb``; repair (a no-op after
cardinality-preserving operators); score only the children that differ from their parent, as one batched call; the
hall of fame keeps the ``hof_size`` best distinct genomes ever scored. The run stops when the evaluation budget is
spent (exactly: the last generation may be scored only in part), after ``generations`` generations, after
``stagnation`` generations without a better genome, or when ``callback`` returns True.

The loop works on the population as one 2-D bool array and the fitness as a float array, using the operators'
vectorised ``batch`` twins (user operators without one are applied row by row and their outputs checked); DEAP
supplies the Logbook and Statistics. Randomness comes from one numpy Generator (and Python's ``random`` for DEAP
operators a user may plug in), both seeded from ``seed`` and saved in checkpoints, so a resumed run is bit-identical
to an uninterrupted one.

Defaults come from ``benchmarks/ga_operators.py`` (planted k-subset QP, n=512, k=256, proven optimum; pop 100,
30,000 evaluations, 10 seeds; results in ``benchmarks/results/ga_operators.{csv,png}``):

* ``crossover="cardinality"``, ``mutation="swap"`` for fixed-k problems: the only pair that never needs repair; it
  and uniform + flip (with random exact-k repair) were the only pairs to reach the optimum in 10/10 seeds, and it
  got there first (mean gap 1.5 % at 10k evaluations vs 2.8 %, all seeds optimal by 14k vs 15k). The positional
  crossovers (one-/two-point) and uniform + swap stall at 1-6 %. Problems without a fixed k default to
  uniform + flip (their ``default_operators``).
* ``mutpb=0.7``: with ``mutpb=1`` every child carries a random swap, the population cannot keep exact copies of
  its best members, and runs stall one swap from the optimum (gap 1.4 %); 0.5 leaves too little variation
  (7/10 seeds). 0.6-0.8 all work (9-10/10); it was tuned on this pair, so the pair comparison slightly favours it.
* ``selection="tournament"`` (size 3) rather than the paper's roulette wheel: roulette on windowed fitness
  (``p ∝ max(error) - error``) weakens as the population's errors bunch up late in a run; with the same operators
  it reached the optimum in 9/10 seeds at 30k evaluations (mean gap 0.14 %) against 10/10 by 14k for tournament.
  ``selection="roulette"`` (with the same elitism) is there for paper-faithful runs.
* ``elite=2`` (the paper's elitism), ``stagnation=50`` generations without a better genome, ``hof_size=10``
  (distinct best genomes, e.g. for a stage-2 check of the top candidates).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from deap import tools

from evoprune.config import OPERATOR_DEFAULTS
from evoprune.errors import EvopruneError
from evoprune.signals import graceful

from .base import BudgetedEvaluator, BudgetExhausted, Result, seeded_rngs, timer
from . import _support as S
from .protocol import register_strategy

GA_DEFAULTS: Dict[str, Any] = {
    "pop_size": 100,
    "cxpb": 0.9,
    "mutpb": 0.7,
    **OPERATOR_DEFAULTS["fixed_k"],  # crossover, mutation, selection, init
    "elite": 2,
    "stagnation": 50,
    "hof_size": 10,
    "seeding": None,
    "seed_fraction": 0.1,
    "local_search": None,
    "ls_evals": None,
}
"""Defaults for fixed-k problems; ``None`` arguments fall back to ``problem.default_operators`` first."""

_NO_PROGRESS_LIMIT = 1000  # generations without a single new evaluation: variation has nothing left to change
_LOG_FIELDS = ("gen", "nevals", "min", "avg", "max")


def _stats() -> tools.Statistics:
    stats = tools.Statistics()  # applied to the raw first objective of every individual
    stats.register("min", lambda v: float(np.min(v)))
    stats.register("avg", lambda v: float(np.mean(v)))
    stats.register("max", lambda v: float(np.max(v)))
    return stats


def _logbook(rows: np.ndarray) -> tools.Logbook:
    lb = tools.Logbook()
    lb.header = list(_LOG_FIELDS)
    for r in rows:
        lb.record(gen=int(r[0]), nevals=int(r[1]), min=float(r[2]), avg=float(r[3]), max=float(r[4]))
    return lb


def _label(op: Any) -> Any:
    return op if isinstance(op, str) or op is None else getattr(op, "__qualname__", repr(op))


def _check_params(pop_size: int, cxpb: float, mutpb: float, elite: int, stagnation: Optional[int],
                  generations: Optional[int], hof_size: int, checkpoint_every: int) -> None:
    def integer(name: str, v: Any, lo: int, extra: str = "") -> None:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise EvopruneError(f"ga: {name} must be an integer >= {lo}{extra}, got {v!r}")

    integer("pop_size", pop_size, 2)
    integer("elite", elite, 0)
    if elite >= pop_size:
        raise EvopruneError(f"ga: elite ({elite}) must be smaller than pop_size ({pop_size})")
    integer("hof_size", hof_size, 1)
    integer("checkpoint_every", checkpoint_every, 1)
    if stagnation is not None:
        integer("stagnation", stagnation, 1, " (or None to disable)")
    if generations is not None:
        integer("generations", generations, 0, " (or None: until the budget is spent)")
    for name, p in (("cxpb", cxpb), ("mutpb", mutpb)):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0.0 <= float(p) <= 1.0:
            raise EvopruneError(f"ga: {name} must be a probability in [0, 1], got {p!r}")


class _HallOfFame:
    """The ``size`` best distinct genomes seen, best first (ties: the earlier one first). Genomes compare by value
    (``np.array_equal`` semantics, via their packed bytes), so copies never take two places."""

    def __init__(self, size: int, weight: float, n: int, n_obj: int) -> None:
        self.size, self.weight = size, weight
        self.genomes = np.zeros((0, n), dtype=bool)
        self.fitness = np.zeros((0, n_obj))

    def update(self, genomes: np.ndarray, fitness: np.ndarray) -> None:
        if not len(genomes):
            return
        w = fitness[:, 0] * self.weight
        if len(self.genomes) == self.size:
            better = w > self.fitness[-1, 0] * self.weight
            if not better.any():
                return
            genomes, fitness, w = genomes[better], fitness[better], w[better]
        all_g = np.concatenate([self.genomes, genomes])
        all_f = np.concatenate([self.fitness, fitness])
        all_w = np.concatenate([self.fitness[:, 0] * self.weight, w])
        order = np.argsort(-all_w, kind="stable")
        packed = np.packbits(all_g, axis=1)
        seen, keep = set(), []
        for i in order:
            key = packed[i].tobytes()
            if key in seen:
                continue
            seen.add(key)
            keep.append(i)
            if len(keep) == self.size:
                break
        self.genomes, self.fitness = all_g[keep], all_f[keep]

    @property
    def best_w(self) -> float:
        return float(self.fitness[0, 0] * self.weight) if len(self.fitness) else -math.inf


@graceful
def ga(problem: Any, budget: int, seed: int = 0, callback: Optional[Callable[..., Any]] = None, *,
       pop_size: int = GA_DEFAULTS["pop_size"], cxpb: float = GA_DEFAULTS["cxpb"],
       mutpb: float = GA_DEFAULTS["mutpb"], crossover: Any = None, mutation: Any = None, selection: Any = None,
       init: Any = None, elite: int = GA_DEFAULTS["elite"], stagnation: Optional[int] = GA_DEFAULTS["stagnation"],
       generations: Optional[int] = None, hof_size: int = GA_DEFAULTS["hof_size"],
       crossover_kw: Optional[dict] = None, mutation_kw: Optional[dict] = None,
       selection_kw: Optional[dict] = None, init_kw: Optional[dict] = None,
       seeding: Optional[str] = GA_DEFAULTS["seeding"], seed_fraction: float = GA_DEFAULTS["seed_fraction"],
       local_search: Optional[str] = GA_DEFAULTS["local_search"], ls_evals: Optional[int] = GA_DEFAULTS["ls_evals"],
       checkpoint: Any = None, checkpoint_every: int = 1, map_fn: Optional[Callable] = None) -> Result:
    """Run the GA on a single-objective binary ``problem`` for at most ``budget`` evaluations.

    Operators are names (``"swap"``), ``"module:name"`` / ``"file.py:name"`` specs or callables; ``None`` means the
    problem's ``default_operators`` (else :data:`GA_DEFAULTS`). ``*_kw`` are passed to the operator (e.g.
    ``mutation_kw={"n_swaps": 2}``, ``selection_kw={"tournsize": 5}``). ``callback(gen, population, fitness)`` runs
    after every generation (gen 0 = the initial population) with copies of the arrays; returning True stops the run.
    ``checkpoint``: a path; state is saved every ``checkpoint_every`` generations and at the end, and a run started
    with an existing checkpoint resumes from it (a finished one returns its result). ``map_fn(fn, chunks)`` scores
    population chunks in parallel, order kept.

    ``seeding="greedy"`` starts ``seed_fraction`` of the population from ThiNet's greedy solution of the stage-1
    quadratic (the greedy itself plus swap mutants of it), ``"importance"`` from the importance init; the rest is
    drawn by ``init``. ``local_search="swap"`` makes the GA memetic: every generation the best child descends by
    first-improvement swaps on the quadratic objective (:mod:`evoprune.strategies.local_search`; each neighbour
    looked at is one evaluation of the budget; at most ``ls_evals`` per generation, default ``pop_size``, so the
    descent costs no more than one generation) and replaces itself (Lamarckian).
    """
    from evoprune.operators import get_operator

    clock = timer()
    _check_params(pop_size, cxpb, mutpb, elite, stagnation, generations, hof_size, checkpoint_every)
    _check_memetic(problem, seeding, seed_fraction, local_search, ls_evals)
    n_obj = len(problem.objectives)
    if n_obj != 1:
        raise EvopruneError(f"ga is single-objective but problem '{problem.name}' has {n_obj} objectives "
                            f"{tuple(problem.objectives)}; use strategy 'nsga2'")
    if getattr(problem, "encoding", "binary") != "binary":
        raise EvopruneError(f"ga works on binary genomes but problem '{problem.name}' is {problem.encoding}; "
                            "use strategy 'cmaes'")
    defaults = dict(GA_DEFAULTS)
    defaults.update({kk: v for kk, v in (getattr(problem, "default_operators", {}) or {}).items() if v})
    names = {"init": init or defaults["init"], "crossover": crossover or defaults["crossover"],
             "mutation": mutation or defaults["mutation"], "selection": selection or defaults["selection"]}
    adapt = getattr(problem, "adapt_operator", lambda kind, op: op)  # per-block operators for grouped units
    ops = {kind: adapt(kind, get_operator(kind, nm)) for kind, nm in names.items()}
    kws = {"init": dict(init_kw or {}), "crossover": dict(crossover_kw or {}), "mutation": dict(mutation_kw or {}),
           "selection": dict(selection_kw or {})}
    params: Dict[str, Any] = {
        "budget": int(budget), "pop_size": int(pop_size), "cxpb": float(cxpb), "mutpb": float(mutpb),
        "elite": int(elite), "stagnation": stagnation, "generations": generations, "hof_size": int(hof_size),
        **({"seeding": seeding, "seed_fraction": float(seed_fraction)} if seeding else {}),
        **({"local_search": local_search, "ls_evals": ls_evals} if local_search else {}),
        **{kind: _label(nm) for kind, nm in names.items()},
        **{f"{kind}_kw": kw for kind, kw in kws.items() if kw},
    }

    run = _Run(problem, int(budget), int(seed), ops, kws, params, int(hof_size), checkpoint, checkpoint_every,
               map_fn, clock)
    reason = run.resume()
    if run.finished:
        return run.result(reason, run.wall_before)
    if not run.resumed:
        run.start(int(pop_size), seeding, seed_fraction)
        reason = run.after_generation(run.stop_reason(run.exhausted, stagnation, generations), callback)
    while reason is None:
        run.generation(int(pop_size), int(elite), cxpb, mutpb, local_search, ls_evals)
        reason = run.after_generation(run.stop_reason(run.exhausted, stagnation, generations), callback)
    return run.result(reason, run.wall_before + clock())


class _Run:
    """One GA run: population, fitness, hall of fame, logbook rows, counters, checkpoints; the steps as methods."""

    def __init__(self, problem: Any, budget: int, seed: int, ops: Dict[str, Any], kws: Dict[str, Dict[str, Any]],
                 params: Dict[str, Any], hof_size: int, checkpoint: Any, checkpoint_every: int,
                 map_fn: Optional[Callable], clock: Callable[[], float]) -> None:
        self.problem, self.seed, self.ops, self.kws, self.params, self.clock = problem, seed, ops, kws, params, clock
        self.n, self.k = int(problem.n_var), getattr(problem, "k", None)
        self.weight = float(problem.weights[0])
        self.rng = seeded_rngs(seed)
        self.ev = BudgetedEvaluator(problem, budget, map_fn=map_fn)
        self.hof = _HallOfFame(hof_size, self.weight, self.n, 1)
        self.stats = _stats()
        self.log_rows: List[Tuple[float, ...]] = []
        self.wall_before = 0.0
        self.ckpt = S.Checkpointer(checkpoint, checkpoint_every, S.signature("ga", problem, seed, budget, params))
        self.gen = self.stall = self.idle = 0
        self.pop = np.zeros((0, self.n), dtype=bool)
        self.fit = np.zeros((0, 1))
        self.exhausted = self.resumed = self.finished = False

    # ------------------------------------------------------------------------------------------------ pieces
    def evaluate(self, rows: np.ndarray) -> Tuple[np.ndarray, bool]:
        """Fitness of the first m rows (m = len(rows) unless the budget ran out) and whether it ran out."""
        before = self.ev.used
        try:
            return self.ev.evaluate(rows), False
        except BudgetExhausted:
            got = self.ev.used - before
            return (self.ev.history()[1][-got:] if got else np.zeros((0, 1))), True

    def record(self, nevals: int) -> None:
        rec = self.stats.compile(self.fit[:, 0])
        self.log_rows.append((self.gen, nevals, rec["min"], rec["avg"], rec["max"]))

    def save(self, reason: Optional[str]) -> None:
        st = S.common_state(self.gen, self.ev, _logbook(np.asarray(self.log_rows).reshape(-1, 5)), self.rng,
                            self.wall_before + self.clock(), done=reason is not None)
        st.update({"stall": self.stall, "idle": self.idle, "stop_reason": reason,
                   "population": np.packbits(self.pop, axis=1), "fitness": np.asarray(self.fit, dtype=float),
                   "hof_genomes": np.packbits(self.hof.genomes, axis=1), "hof_fitness": self.hof.fitness})
        self.ckpt.save(st)

    def result(self, reason: Optional[str], wall: float) -> Result:
        hg, hf = self.ev.history()
        hof = self.hof
        return Result(
            strategy="ga", problem=self.problem.name, seed=self.seed, best_genome=hof.genomes[0].copy(),
            best_fitness=hof.fitness[0].copy(), front_genomes=hof.genomes.copy(), front_fitness=hof.fitness.copy(),
            evaluations=self.ev.used, wall_time=wall, logbook=_logbook(np.asarray(self.log_rows).reshape(-1, 5)),
            history_genomes=np.asarray(hg, dtype=bool), history_fitness=np.asarray(hf, dtype=float),
            params={**self.params, "generations_run": self.gen, "stop_reason": reason},
        )

    def stop_reason(self, exhausted: bool, stagnation: Optional[int], generations: Optional[int]) -> Optional[str]:
        return _stop_reason(exhausted or self.ev.remaining == 0, self.stall, self.idle, self.gen, stagnation,
                            generations)

    def after_generation(self, reason: Optional[str], callback: Optional[Callable]) -> Optional[str]:
        return _after_generation(reason, self.gen, self.pop, self.fit, callback, self.ckpt, self.save)

    # ------------------------------------------------------------------------------------------------- steps
    def resume(self) -> Optional[str]:
        """Load a checkpoint if there is one (``resumed``; ``finished`` when it holds the end of the run)."""
        state = self.ckpt.load()
        if state is None:
            return None
        self.resumed = True
        self.gen, _, self.wall_before, self.finished = S.restore_common(state, self.problem, self.ev, self.rng)
        n = self.n
        unpack = lambda a: np.unpackbits(np.asarray(a, dtype=np.uint8), axis=1, count=n).astype(bool)  # noqa: E731
        self.hof.genomes = unpack(state["hof_genomes"])
        self.hof.fitness = np.asarray(state["hof_fitness"], dtype=float)
        self.log_rows = [tuple(float(r[f]) for f in _LOG_FIELDS) for r in state["logbook"]]
        self.stall, self.idle = int(state["stall"]), int(state["idle"])
        self.pop, self.fit = unpack(state["population"]), np.asarray(state["fitness"], dtype=float)
        return state["stop_reason"] if self.finished else None

    def start(self, pop_size: int, seeding: Optional[str], seed_fraction: float) -> None:
        """Generation 0: the initial population (seeded, if asked), scored."""
        problem, rng = self.problem, self.rng
        pop = problem.repair(_init(self.ops["init"], pop_size, self.n, self.k, rng, problem, self.kws["init"]), rng)
        if seeding:
            pop = _seed_population(pop, seeding, seed_fraction, problem, self.ops, self.kws, rng)
        fit, self.exhausted = self.evaluate(pop)
        self.pop, self.fit = pop[: len(fit)], fit
        self.hof.update(self.pop, fit)
        self.record(len(fit))

    def generation(self, pop_size: int, elite: int, cxpb: float, mutpb: float, local_search: Optional[str],
                   ls_evals: Optional[int]) -> None:
        """Elitism, selection, variation, repair; score the changed children; optional memetic descent."""
        problem, rng, ev, weight, pop, fit = self.problem, self.rng, self.ev, self.weight, self.pop, self.fit
        self.gen += 1
        prev_best = self.hof.best_w
        order = np.argsort(-(fit[:, 0] * weight), kind="stable")
        elites = order[:elite]
        parents = np.asarray(self.ops["selection"](fit[:, 0] * weight, pop_size - elite, rng=rng,
                                                   **self.kws["selection"]))
        off = problem.repair(_vary(pop[parents], self.ops, self.kws, cxpb, mutpb, rng), rng)
        off_fit = fit[parents].copy()
        before_gen = ev.used
        changed = np.flatnonzero(np.any(off != pop[parents], axis=1))
        exhausted = False
        nevals = 0
        if len(changed):
            new_fit, exhausted = self.evaluate(off[changed])
            scored = changed[: len(new_fit)]
            off_fit[scored] = new_fit
            self.hof.update(off[scored], new_fit)
            if exhausted:  # the budget ran out inside this generation: unscored children are dropped
                keep = np.ones(len(off), dtype=bool)
                keep[changed[len(new_fit):]] = False
                off, off_fit = off[keep], off_fit[keep]
            nevals = len(new_fit)
        if local_search and not exhausted and len(off):
            cap = int(ls_evals) if ls_evals else pop_size
            exhausted = _descend_best(off, off_fit, weight, problem, ev, self.hof, rng, cap) or exhausted
            nevals = ev.used - before_gen
        self.pop = np.concatenate([pop[elites], off])
        self.fit = np.concatenate([fit[elites], off_fit])
        self.stall = 0 if self.hof.best_w > prev_best else self.stall + 1
        self.idle = 0 if nevals else self.idle + 1
        self.exhausted = exhausted
        self.record(nevals)


def _check_memetic(problem: Any, seeding: Optional[str], seed_fraction: float, local_search: Optional[str],
                   ls_evals: Optional[int] = None) -> None:
    if ls_evals is not None and (isinstance(ls_evals, bool) or not isinstance(ls_evals, (int, np.integer))
                                 or ls_evals < 1):
        raise EvopruneError(f"ga: ls_evals must be a positive integer (neighbours per generation), got {ls_evals!r}")
    if seeding not in (None, "greedy", "importance"):
        raise EvopruneError(f"ga: seeding must be 'greedy', 'importance' or None, got {seeding!r}")
    if not (isinstance(seed_fraction, (int, float)) and 0.0 < float(seed_fraction) <= 1.0):
        raise EvopruneError(f"ga: seed_fraction must be in (0, 1], got {seed_fraction!r}")
    if local_search not in (None, "swap"):
        raise EvopruneError(f"ga: local_search must be 'swap' or None, got {local_search!r}")
    quad = getattr(problem, "quadratic", None)
    if getattr(problem, "k", None) is None and (seeding == "greedy" or local_search):
        raise EvopruneError("ga: greedy seeding and local search need a fixed-k channel problem")
    if seeding == "greedy" and (quad is None or quad(exact=False) is None):
        raise EvopruneError(f"ga: seeding='greedy' needs the stage-1 quadratic; problem '{problem.name}' has none "
                            "(use a channel-selection problem with the reconstruction or two-stage fitness)")
    if local_search and (quad is None or quad(exact=True) is None):
        raise EvopruneError(f"ga: local_search='swap' needs a problem whose objective is the stage-1 quadratic; "
                            f"'{problem.name}' is not (use fitness=reconstruction or a suite instance)")
    if seeding == "importance" and getattr(problem, "importance", None) is None:
        raise EvopruneError(f"ga: seeding='importance' needs channel importances; problem '{problem.name}' has none")


def _seed_population(pop: np.ndarray, seeding: str, fraction: float, problem: Any, ops: Dict[str, Any],
                     kws: Dict[str, Dict[str, Any]], rng: np.random.Generator) -> np.ndarray:
    """Replace the first ``fraction`` of ``pop`` by seeds: the greedy solution and swap mutants of it, or rows of
    the importance init."""
    from evoprune.operators import get_operator

    m = max(1, int(round(fraction * len(pop))))
    n, k = pop.shape[1], problem.k
    if seeding == "greedy":
        from evoprune.pruning.greedy import greedy_removal

        g = greedy_removal(problem.quadratic(exact=False), k, groups=getattr(problem, "groups", 1))
        seeds = np.repeat(g[None], m, axis=0)
        if m > 1:
            adapt = getattr(problem, "adapt_operator", lambda kind, op: op)
            seeds[1:] = adapt("mutation", get_operator("mutation", "swap")).batch(seeds[1:], rng=rng)
    else:
        init = getattr(problem, "adapt_operator", lambda kind, op: op)("init", get_operator("init", "importance"))
        seeds = init(m, n, k, rng=rng, importance=problem.importance)
    pop = pop.copy()
    pop[:m] = problem.repair(np.asarray(seeds, dtype=bool), rng)
    return pop


def _descend_best(off: np.ndarray, off_fit: np.ndarray, weight: float, problem: Any, ev: BudgetedEvaluator,
                  hof: "_HallOfFame", rng: np.random.Generator, cap: int) -> bool:
    """Swap descent of the best child, in place (Lamarckian); returns whether the budget ran out."""
    from .local_search import swap_descent

    i = int(np.argmax(off_fit[:, 0] * weight))
    exhausted = [False]

    def on_row(genomes: np.ndarray, errors: np.ndarray) -> bool:
        try:
            ev.record(genomes, errors[:, None])
        except BudgetExhausted:
            exhausted[0] = True
        return exhausted[0]

    mask, value, _ = swap_descent(problem.quadratic(exact=True), off[i], groups=getattr(problem, "groups", 1),
                                  max_evals=min(cap, ev.remaining), rng=rng,
                                  on_row=on_row)
    if value * weight > off_fit[i, 0] * weight:
        off[i], off_fit[i, 0] = mask, value
        hof.update(mask[None], np.array([[value]]))
    return exhausted[0] or ev.remaining == 0


def _init(op: Callable, size: int, n: int, k: Optional[int], rng: np.random.Generator, problem: Any,
          kw: Dict[str, Any]) -> np.ndarray:
    out = op(int(size), n, k, rng=rng, importance=getattr(problem, "importance", None), **kw)
    return np.asarray(out, dtype=bool)


def _vary(off: np.ndarray, ops: Dict[str, Any], kws: Dict[str, Dict[str, Any]], cxpb: float, mutpb: float,
          rng: np.random.Generator) -> np.ndarray:
    """Crossover of consecutive pairs with probability ``cxpb``, then mutation of each row with probability
    ``mutpb``; returns new rows (``off`` is a fresh copy owned by the caller)."""
    m = len(off)
    cx_rows = np.flatnonzero(rng.random(m // 2) < cxpb)
    if len(cx_rows):
        a, b = 2 * cx_rows, 2 * cx_rows + 1
        op = ops["crossover"]
        batch = getattr(op, "batch", None)
        if batch is not None:
            c, d = batch(off[a], off[b], rng=rng, **kws["crossover"])
            off[a], off[b] = c, d
        else:
            for i, j in zip(a, b):
                c, d = op(off[i].copy(), off[j].copy(), rng=rng, **kws["crossover"])
                off[i], off[j] = np.asarray(c, dtype=bool), np.asarray(d, dtype=bool)
    mut_rows = np.flatnonzero(rng.random(m) < mutpb)
    if len(mut_rows):
        op = ops["mutation"]
        batch = getattr(op, "batch", None)
        if batch is not None:
            off[mut_rows] = batch(off[mut_rows], rng=rng, **kws["mutation"])
        else:
            for i in mut_rows:
                (c,) = op(off[i].copy(), rng=rng, **kws["mutation"])
                off[i] = np.asarray(c, dtype=bool)
    return off


def _stop_reason(exhausted: bool, stall: int, idle: int, gen: int, stagnation: Optional[int],
                 generations: Optional[int]) -> Optional[str]:
    if exhausted:
        return "budget"
    if stagnation is not None and stall >= stagnation:
        return "stagnation"
    if generations is not None and gen >= generations:
        return "generations"
    if idle >= _NO_PROGRESS_LIMIT:
        return "no-progress"
    return None


def _after_generation(reason: Optional[str], gen: int, pop: np.ndarray, fit: np.ndarray,
                      callback: Optional[Callable], ckpt: "S.Checkpointer",
                      save: Callable[[Optional[str]], None]) -> Optional[str]:
    """Checkpoint (periodic, before the callback so a crash inside it loses nothing; SIGINT/SIGTERM: save, then
    stop), then the callback, then the final checkpoint if the run stops here."""
    if reason is None and ckpt.due(gen):
        save(None)
    if callback is not None and callback(gen, pop.copy(), fit.copy()) and reason is None:
        reason = "callback"
    if ckpt.path is not None and reason is not None:
        save(reason)
    return reason


def _validate(problem: Any, budget: int, **params: Any) -> None:
    """Check ``ga``'s parameters and the problem before any run starts (the CLI calls this before writing files)."""
    import inspect

    sig = inspect.signature(ga)
    unknown = [k for k in params if k not in sig.parameters]
    if unknown:
        raise EvopruneError(f"ga has no parameter '{unknown[0]}'; see evoprune.strategies.ga.ga")
    p = {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}
    p.update(params)
    _check_params(p["pop_size"], p["cxpb"], p["mutpb"], p["elite"], p["stagnation"], p["generations"],
                  p["hof_size"], p["checkpoint_every"])
    _check_memetic(problem, p["seeding"], p["seed_fraction"], p["local_search"], p["ls_evals"])
    if len(problem.objectives) != 1:
        raise EvopruneError(f"ga is single-objective but problem '{problem.name}' has {len(problem.objectives)} "
                            "objectives; use strategy 'nsga2'")


register_strategy("ga", objectives="single", encodings=("binary",), validate=_validate,
                  doc="the paper's generational GA with elitism (cardinality crossover + swap mutation)")(ga)
