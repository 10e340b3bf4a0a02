"""Plumbing shared by the NSGA-II, CMA-ES and random-search strategies: parameters, logbooks, checkpoints, results.

Not a public API; strategy authors can copy what they need. Conventions used by every strategy here:

* ``callback(gen, genomes, fitness)`` is called after every generation (gen 0: the initial population) with copies
  of a 2-D genome array and its ``[P, n_obj]`` raw objective values -- the survivors for NSGA-II, the genomes
  evaluated in that generation for CMA-ES and random search -- as the GA does; a truthy return value stops the run.
  Per-generation statistics are in the logbook (``gen``, ``nevals``, ``evals``, per-objective min/avg/max).
* ``checkpoint=path`` (with ``checkpoint_every=N`` generations, default 10): the state is saved with
  :mod:`evoprune.strategies.checkpoint` after generation 0, every N generations, and at the end. When a checkpoint
  already exists at ``path`` the run *resumes* from it, and the result equals the uninterrupted run bit for bit
  (both RNG states, DEAP's global ``random`` and the numpy global RNG that ``deap.cma`` draws from, are saved).
  A checkpoint written with other settings (strategy, problem, seed, budget, parameters) is refused.
* ``Result.front_*``: the distinct non-dominated points of *everything evaluated* (the archive), so strategies
  are judged on all they spent their budget on, not on what their survival scheme kept; single-objective: the
  best genome. ``Result.best_*``: best evaluated point (multi-objective: the front point best on objective 0).
"""
from __future__ import annotations

import contextlib
import math
import numbers
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
from deap import tools

from evoprune.errors import EvopruneError
from evoprune.indicators import non_dominated, to_min
from evoprune.io import to_jsonable
from evoprune.strategies.base import BudgetExhausted, BudgetedEvaluator, Result, rng_state, set_rng_state
from evoprune.strategies.checkpoint import load_state, save_state

COMMON_PARAMS = {"checkpoint": None, "checkpoint_every": 10, "map_fn": None}


# ------------------------------------------------------------------------------------------------------ parameters
def resolve_params(strategy: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """Merge ``given`` over ``defaults`` (+ checkpoint/map_fn options); unknown names are a one-line error."""
    known = dict(COMMON_PARAMS)
    known.update(defaults)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise EvopruneError(
            f"strategy '{strategy}' does not take parameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(known))}"
        )
    out = dict(known)
    out.update(given)
    every = out["checkpoint_every"]
    if not isinstance(every, numbers.Integral) or every < 1:
        raise EvopruneError(f"checkpoint_every must be a positive integer (generations), got {every!r}")
    return out


def positive_int(strategy: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise EvopruneError(f"strategy '{strategy}': {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def probability(strategy: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 <= float(value) <= 1.0):
        raise EvopruneError(f"strategy '{strategy}': {name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def positive_float(strategy: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            float(value) > 0 and math.isfinite(value)):
        raise EvopruneError(f"strategy '{strategy}': {name} must be a positive number, got {value!r}")
    return float(value)


def require_budget(strategy: str, budget: int, needed: int, what: str) -> None:
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 1:
        raise EvopruneError(f"budget must be a positive number of evaluations, got {budget!r}")
    if budget < needed:
        raise EvopruneError(
            f"strategy '{strategy}': budget {budget} is smaller than {what} ({needed} evaluations); "
            f"raise --budget to at least {needed} or lower the population size"
        )


def require_objectives(strategy: str, problem: Any, multi: bool) -> None:
    n = len(problem.objectives)
    if multi and n < 2:
        raise EvopruneError(
            f"strategy '{strategy}' is multi-objective but problem '{problem.name}' has one objective "
            f"({problem.objectives[0]}); use a single-objective strategy (ga, cmaes, random) or a bi-objective problem"
        )
    if not multi and n > 1:
        raise EvopruneError(
            f"strategy '{strategy}' is single-objective but problem '{problem.name}' has {n} objectives "
            f"({', '.join(problem.objectives)}); use nsga2, mo-cmaes or random"
        )


# ---------------------------------------------------------------------------------------------------- RNG helpers
@contextlib.contextmanager
def numpy_global_rng(rs: np.random.RandomState) -> Iterator[None]:
    """Run a block with numpy's global RNG set to ``rs`` (``deap.cma`` samples from ``numpy.random``), then put
    the caller's global state back: runs stay reproducible and do not disturb the user's own global RNG."""
    saved = np.random.get_state()
    np.random.set_state(rs.get_state())
    try:
        yield
    finally:
        rs.set_state(np.random.get_state())
        np.random.set_state(saved)


_BLAS: Optional[List[tuple]] = None
_BLAS_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                 ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                 ("openblas_get_num_threads", "openblas_set_num_threads"))


def _blas_handles() -> List[tuple]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux; elsewhere none)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = []
        try:
            import ctypes

            with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
                paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
            for path in paths:
                lib = ctypes.CDLL(path)
                for get_name, set_name in _BLAS_SYMBOLS:
                    if hasattr(lib, get_name) and hasattr(lib, set_name):
                        _BLAS.append((getattr(lib, get_name), getattr(lib, set_name)))
                        break
        except Exception:  # not Linux, no OpenBLAS, or an unusual build: leave threading alone
            _BLAS = []
    return _BLAS


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run a block with OpenBLAS limited to one thread, then restore its thread count.

    DEAP's CMA-ES eigendecomposes (or factorises) an n x n matrix every generation: far too small to gain from
    threads, and measured here 10-40x *slower* with threaded OpenBLAS on a loaded 2-core machine. One thread also
    keeps the floating-point reduction order, hence the search trajectory, independent of the machine's core count.
    """
    handles = _blas_handles()
    saved = []
    for get, set_ in handles:
        try:
            saved.append((set_, int(get())))
            set_(1)
        except Exception:
            pass
    try:
        yield
    finally:
        for set_, n in saved:
            try:
                set_(n)
            except Exception:
                pass


def legacy_state(rs: np.random.RandomState) -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = rs.get_state()
    return {"legacy_name": name, "legacy_keys": np.asarray(keys, dtype=np.uint32), "legacy_pos": int(pos),
            "legacy_has_gauss": int(has_gauss), "legacy_cached": float(cached)}


def set_legacy_state(rs: np.random.RandomState, st: Mapping[str, Any]) -> None:
    rs.set_state((st["legacy_name"], np.asarray(st["legacy_keys"], dtype=np.uint32), int(st["legacy_pos"]),
                  int(st["legacy_has_gauss"]), float(st["legacy_cached"])))


# ------------------------------------------------------------------------------------------------------- logbook
def new_logbook(problem: Any) -> tools.Logbook:
    lb = tools.Logbook()
    cols = ["gen", "nevals", "evals"]
    for name in problem.objectives:
        cols += [f"min_{name}", f"avg_{name}", f"max_{name}"]
    lb.header = cols
    return lb


def record(logbook: tools.Logbook, problem: Any, gen: int, nevals: int, evals: int, F: np.ndarray) -> Dict[str, Any]:
    """Append one generation's record (statistics of ``F``, raw objectives) and return a copy of it."""
    rec: Dict[str, Any] = {"gen": int(gen), "nevals": int(nevals), "evals": int(evals)}
    F = np.asarray(F, dtype=float).reshape(-1, len(problem.objectives))
    for j, name in enumerate(problem.objectives):
        col = F[:, j] if len(F) else np.asarray([np.nan])
        rec[f"min_{name}"] = float(np.min(col))
        rec[f"avg_{name}"] = float(np.mean(col))
        rec[f"max_{name}"] = float(np.max(col))
    logbook.record(**rec)
    return dict(rec)


def logbook_from_records(problem: Any, records: Sequence[Mapping[str, Any]]) -> tools.Logbook:
    lb = new_logbook(problem)
    for r in records:
        lb.record(**{k: (float("nan") if v is None else v) for k, v in r.items()})
    return lb


# ---------------------------------------------------------------------------------------------------- checkpoints
class Checkpointer:
    """Saves a strategy's state every ``every`` generations and resumes from an existing checkpoint.

    ``signature`` (strategy, problem, seed, budget, parameters) is stored and must match on resume.
    """

    def __init__(self, path: Optional[Any], every: int, signature: Mapping[str, Any]) -> None:
        self.path = Path(path) if path else None
        self.every = int(every)
        self.signature = to_jsonable(dict(signature))

    def load(self) -> Optional[Dict[str, Any]]:
        if self.path is None:
            return None
        state = load_state(self.path)
        if state is None:
            return None
        saved = state.get("signature")
        if saved != self.signature:
            raise EvopruneError(
                f"checkpoint '{self.path}' was written by a different run "
                f"({'; '.join(_differences(saved or {}, self.signature)) or '?'}); "
                "resume with the same settings, or remove it (--overwrite) to start afresh"
            )
        return state

    def due(self, gen: int) -> bool:
        """Save this generation? Also after SIGINT/SIGTERM (see :mod:`evoprune.signals`); without a checkpoint
        path such a signal stops the run here."""
        from evoprune import signals

        if signals.requested():
            if self.path is None:
                raise KeyboardInterrupt
            return True
        return self.path is not None and gen % self.every == 0

    def save(self, state: Dict[str, Any]) -> None:
        from evoprune import signals

        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = dict(state)
        state["signature"] = self.signature
        save_state(self.path, state)
        if signals.requested() and not state.get("done"):  # the state is on disk: --resume continues it
            raise KeyboardInterrupt


def _differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """``key saved != now`` for every differing entry (one level into ``params``)."""
    out: List[str] = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{kk} {a.get(kk)!r} != {b.get(kk)!r}" for kk in sorted(set(a) | set(b)) if a.get(kk) != b.get(kk)]
        else:
            out.append(f"{k} {a!r} != {b!r}")
    return out


def common_state(gen: int, evaluator: BudgetedEvaluator, logbook: tools.Logbook, rng: np.random.Generator,
                 elapsed: float, done: bool = False) -> Dict[str, Any]:
    """The part of a checkpoint every strategy has: generation, evaluator history, logbook, RNGs, time."""
    ev = evaluator.state()
    return {
        "gen": int(gen),
        "done": bool(done),
        "elapsed": float(elapsed),
        "ev_used": int(ev["used"]),
        "ev_genomes": np.asarray(ev["genomes"]),
        "ev_fitness": np.asarray(ev["fitness"], dtype=float),
        "logbook": [dict(r) for r in logbook],
        "rng": rng_state(rng),
    }


def restore_common(state: Mapping[str, Any], problem: Any, evaluator: BudgetedEvaluator,
                   rng: np.random.Generator) -> tuple:
    """Restore what :func:`common_state` saved; returns ``(gen, logbook, elapsed, done)``."""
    evaluator.load_state({"used": state["ev_used"], "genomes": state["ev_genomes"], "fitness": state["ev_fitness"]})
    set_rng_state(rng, state["rng"])
    return int(state["gen"]), logbook_from_records(problem, state["logbook"]), float(state["elapsed"]), \
        bool(state.get("done", False))


def call_back(callback: Optional[Callable], gen: int, genomes: np.ndarray, fitness: np.ndarray) -> bool:
    """Invoke ``callback(gen, genomes, fitness)`` with copies (the GA's convention); a truthy return means stop."""
    if callback is None:
        return False
    return bool(callback(int(gen), np.array(genomes, copy=True), np.array(fitness, dtype=float, copy=True)))


# --------------------------------------------------------------------------------------------------------- results
def best_index(F: np.ndarray, weights: Sequence[float]) -> int:
    """Index of the best row: best weighted objective 0, ties by the next objectives, then first occurrence."""
    Z = to_min(F, weights)
    return int(np.lexsort(tuple(Z[:, j] for j in reversed(range(Z.shape[1]))))[0])


def finish(name: str, problem: Any, seed: int, evaluator: BudgetedEvaluator, logbook: tools.Logbook,
           elapsed: float, params: Mapping[str, Any]) -> Result:
    """Build the :class:`Result` from the evaluator's history (best point, archive front)."""
    G, F = evaluator.history()
    weights = tuple(problem.weights)
    if len(F) == 0:
        raise EvopruneError(f"strategy '{name}' evaluated nothing; raise the budget")
    if len(weights) > 1:
        idx = non_dominated(F, weights)
        front_g, front_f = G[idx], F[idx]
        b = best_index(front_f, weights)
        best_g, best_f = front_g[b], front_f[b]
    else:
        b = best_index(F, weights)
        best_g, best_f = G[b], F[b]
        same = np.flatnonzero(F[:, 0] == F[b, 0])
        # distinct genomes reaching the best value (a few): the single-objective "front"
        _, first = np.unique(G[same], axis=0, return_index=True)
        keep = same[np.sort(first)][:16]
        front_g, front_f = G[keep], F[keep]
    # where checkpoints went and how the population was mapped do not change what was computed
    shown = {k: v for k, v in params.items() if k not in COMMON_PARAMS and not callable(v)}
    return Result(
        strategy=name, problem=getattr(problem, "name", str(problem)), seed=int(seed),
        best_genome=np.array(best_g), best_fitness=np.array(best_f, dtype=float),
        front_genomes=np.array(front_g), front_fitness=np.array(front_f, dtype=float),
        evaluations=int(evaluator.used), wall_time=float(elapsed), logbook=logbook,
        history_genomes=G, history_fitness=F, params=to_jsonable(shown),
    )


def signature(name: str, problem: Any, seed: int, budget: int, params: Mapping[str, Any]) -> Dict[str, Any]:
    """What a checkpoint must agree on to be resumed (the checkpoint options themselves may differ)."""
    p = {k: v for k, v in params.items() if k not in ("checkpoint", "checkpoint_every", "map_fn") and not callable(v)}
    return {"strategy": name, "problem": getattr(problem, "name", str(problem)), "n_var": int(problem.n_var),
            "seed": int(seed), "budget": int(budget), "params": to_jsonable(p)}


def split_evaluate(evaluator: BudgetedEvaluator, genomes: np.ndarray) -> np.ndarray:
    """Evaluate ``genomes``; when the budget runs out part-way, return the rows that were scored (maybe none)."""
    before = evaluator.used
    try:
        return evaluator.evaluate(genomes)
    except BudgetExhausted:
        n = evaluator.used - before
        if n == 0:
            return np.zeros((0, len(evaluator.problem.objectives)))
        return evaluator.history()[1][-n:]


def decode_binary(problem: Any, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Continuous scores -> binary masks (the CMA-ES relaxation).

    With a cardinality ``problem.k`` (an int): the ``k`` highest scores are 1 (ties: lower index first), the
    mask is feasible by construction. Otherwise: score > 0.5 is 1, then ``problem.repair`` makes it valid.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    k = getattr(problem, "k", None)
    if isinstance(k, numbers.Integral) and not isinstance(k, bool) and 0 < k <= X.shape[1]:
        order = np.argsort(-X, axis=1, kind="stable")[:, : int(k)]
        M = np.zeros(X.shape, dtype=bool)
        np.put_along_axis(M, order, True, axis=1)
        return M
    return np.asarray(problem.repair(X > 0.5, rng), dtype=bool)


def bounds(problem: Any) -> tuple:
    """``(lower, upper)`` arrays of a real-encoded problem (``lower``/``upper`` attributes, default [0, 1])."""
    n = problem.n_var
    lo = np.broadcast_to(np.asarray(getattr(problem, "lower", 0.0), dtype=float), (n,)).copy()
    hi = np.broadcast_to(np.asarray(getattr(problem, "upper", 1.0), dtype=float), (n,)).copy()
    if not np.all(hi > lo):
        raise EvopruneError(f"problem '{problem.name}' has bounds with upper <= lower; fix its lower/upper")
    return lo, hi


def mirror_unit(X: np.ndarray) -> np.ndarray:
    """Reflect values into [0, 1] (period 2): a bound-respecting, scale-free boundary handling for CMA-ES."""
    Y = np.mod(X, 2.0)
    return np.where(Y > 1.0, 2.0 - Y, Y)


def check_encoding(name: str, problem: Any) -> str:
    enc = getattr(problem, "encoding", "binary")
    if enc not in ("binary", "real"):
        raise EvopruneError(f"strategy '{name}': problem '{problem.name}' has encoding {enc!r}; "
                            "expected 'binary' or 'real'")
    return enc


def as_list(x: Any) -> List[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]
