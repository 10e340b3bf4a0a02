"""The common strategy interface: ``run(problem, budget, seed, callback=None, **params) -> Result``.

Budget is counted in fitness evaluations (one genome scored once = one evaluation), and is respected exactly:
:class:`BudgetedEvaluator` refuses to score beyond it and records every evaluated point, so all strategies are
compared on identical terms. Wall time is recorded too.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from evoprune.errors import EvopruneError


@dataclasses.dataclass
class Result:
    """What every strategy returns. Arrays are plain numpy; ``history_*`` hold every evaluated point in order."""

    strategy: str
    problem: str
    seed: int
    best_genome: np.ndarray
    best_fitness: np.ndarray  # objective values of best_genome (raw objectives, not weighted)
    front_genomes: np.ndarray  # [F, n_var]; single-objective: the best genome(s)
    front_fitness: np.ndarray  # [F, n_obj]
    evaluations: int
    wall_time: float
    logbook: Any = None  # deap.tools.Logbook (records per generation)
    history_genomes: Optional[np.ndarray] = None  # [E, n_var]
    history_fitness: Optional[np.ndarray] = None  # [E, n_obj]
    params: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        """A JSON-friendly summary (``result.json``)."""
        return {
            "strategy": self.strategy,
            "problem": self.problem,
            "seed": self.seed,
            "evaluations": int(self.evaluations),
            "wall_time_s": float(self.wall_time),
            "best_fitness": np.asarray(self.best_fitness).tolist(),
            "best_genome": np.asarray(self.best_genome).astype(float if self.best_genome.dtype.kind == "f" else int).tolist(),
            "front_fitness": np.asarray(self.front_fitness).tolist(),
            "front_genomes": np.asarray(self.front_genomes).astype(
                float if self.front_genomes.dtype.kind == "f" else int
            ).tolist(),
            "params": self.params,
            "logbook": [dict(r) for r in (self.logbook or [])],
        }


class BudgetExhausted(Exception):
    """Raised internally when a strategy asks for more evaluations than its budget; strategies catch it."""


class BudgetedEvaluator:
    """Wraps ``problem.evaluate``: counts evaluations, enforces the budget exactly, records history.

    ``evaluate(pop)`` scores at most the remaining budget; if the population is larger than what remains it scores
    the first ``remaining`` genomes and raises :class:`BudgetExhausted` *after* recording them, so strategies can
    finish with a partially evaluated final generation.
    """

    def __init__(self, problem: Any, budget: int, map_fn: Optional[Callable] = None,
                 chunks: Optional[int] = None) -> None:
        if not isinstance(budget, (int, np.integer)) or budget < 1:
            raise EvopruneError(f"budget must be a positive number of evaluations, got {budget!r}")
        self.problem = problem
        self.budget = int(budget)
        self.used = 0
        self.map_fn = map_fn  # map_fn(fn, chunks) -> results in order, like builtins.map; None: one direct call
        self.chunks = chunks  # chunks per map_fn call; default: the backend's workers, else min(population, CPUs)
        self._genomes: List[np.ndarray] = []
        self._fitness: List[np.ndarray] = []

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def evaluate(self, population: np.ndarray) -> np.ndarray:
        pop = np.asarray(population)
        if self.remaining <= 0:
            raise BudgetExhausted()
        take = min(len(pop), self.remaining)
        part = pop[:take]
        fit = np.asarray(self._score(part), dtype=float)
        if fit.ndim == 1:
            fit = fit[:, None]
        if fit.shape[0] != take:
            raise EvopruneError(f"problem '{self.problem.name}' returned {fit.shape[0]} fitness rows for {take} genomes")
        self.used += take
        self._genomes.append(part.copy())
        self._fitness.append(fit.copy())
        if take < len(pop):
            raise BudgetExhausted()
        return fit

    def record(self, genomes: np.ndarray, fitness: np.ndarray) -> int:
        """Count and record points scored outside ``problem.evaluate`` (a local search's incremental deltas):
        at most the remaining budget; raises :class:`BudgetExhausted` after recording if that cut them short."""
        g = np.asarray(genomes)
        f = np.asarray(fitness, dtype=float).reshape(len(g), -1)
        if self.remaining <= 0:
            raise BudgetExhausted()
        take = min(len(g), self.remaining)
        self.used += take
        self._genomes.append(g[:take].copy())
        self._fitness.append(f[:take].copy())
        if take < len(g):
            raise BudgetExhausted()
        return take

    def _score(self, part: np.ndarray) -> np.ndarray:
        """``problem.evaluate(part)``, or, with ``map_fn``, chunks of ``part`` scored via ``map_fn`` (order kept)."""
        if self.map_fn is None or len(part) <= 1:
            return self.problem.evaluate(part)
        n_chunks = int(self.chunks or _workers(self.map_fn) or min(len(part), os.cpu_count() or 1))
        pieces = [c for c in np.array_split(part, max(1, n_chunks)) if len(c)]
        results = [np.asarray(f, dtype=float) for f in self.map_fn(self.problem.evaluate, pieces)]
        results = [r[:, None] if r.ndim == 1 else r for r in results]
        return np.concatenate(results)

    def history(self):
        if not self._genomes:
            n = self.problem.n_var
            return np.zeros((0, n)), np.zeros((0, len(self.problem.objectives)))
        return np.concatenate(self._genomes), np.concatenate(self._fitness)

    # checkpoint support ---------------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        g, f = self.history()
        return {"used": self.used, "genomes": g, "fitness": f}

    def load_state(self, state: Dict[str, Any]) -> None:
        self.used = int(state["used"])
        self._genomes = [np.asarray(state["genomes"])] if len(state["genomes"]) else []
        self._fitness = [np.asarray(state["fitness"])] if len(state["fitness"]) else []


def _workers(map_fn: Callable) -> Optional[int]:
    """One chunk per worker of an :mod:`evoprune.parallel` backend (``None`` for a plain ``map``)."""
    from evoprune.parallel import backend_workers

    return backend_workers(map_fn)


STRATEGY_STREAM = 0x5EA2C4  # mixed into strategy seeds, see seeded_rngs


def seeded_rngs(seed: int) -> np.random.Generator:
    """Seed Python's ``random`` (DEAP's selection uses it) and return a numpy Generator.

    The Generator is *not* ``np.random.default_rng(seed)``: problem factories build their instances from that
    stream, and a strategy run with the same seed would replay it -- e.g. a random-k initialisation of seed k
    rebuilds exactly the top-k weights of ``onemax-k`` seed k and "finds" the optimum in its first sample.
    """
    random.seed(seed)
    return np.random.default_rng([int(seed), STRATEGY_STREAM])


def rng_state(rng: np.random.Generator) -> Dict[str, Any]:
    """Both RNG states (numpy Generator and Python ``random``) as JSON-friendly values, for checkpoints."""
    py = random.getstate()
    return {"numpy": rng.bit_generator.state, "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(rng: np.random.Generator, state: Dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))


def timer() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
