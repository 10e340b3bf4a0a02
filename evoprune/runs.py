"""Run directories of ``evoprune search`` (one strategy on one problem) and ``evoprune compare`` (strategies x
seeds, with a summary), as a library: build the problem, check the strategies, run, write, read back.

Every run directory holds ``result.json`` (``Result.summary()``), ``evaluations.csv`` (every evaluated point),
``logbook.csv``, ``config.json`` (resolved options and the problem's description), ``env.json`` and the strategy
checkpoint (``strategy_state.json`` + ``.npz``) that a resumed run continues from. A compare run puts each run in
``DIR/<strategy>/seed<k>/`` and writes ``DIR/summary.json`` / ``DIR/summary.csv`` (indicators, mean/std over seeds,
ranks; see :mod:`evoprune.indicators`).

Problem parameters go to the problem factory, together with ``seed=problem_seed`` (the problem instance stays the
same across strategy seeds, so every strategy and seed faces the same problem) and, only when given, the network
options ``model/checkpoint/data/data_dir``. Strategy parameters: ``KEY=VALUE`` pairs (in a compare,
``NAME.KEY=VALUE`` targets one strategy) and the shortcuts ``pop_size/crossover/mutation/selection/init``.

:func:`run_search` and :func:`run_compare` do what the commands do, given parsed options; :class:`RunDir` and
:func:`collect_runs` read finished run directories back (for plots).
"""
from __future__ import annotations

import csv
import importlib
import inspect
import io
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from evoprune.errors import EvopruneError

CHECKPOINT_NAME = "strategy_state"
# options that do not change what a run computes: they may differ when resuming
NOT_COMPARED = {"out", "overwrite", "resume", "config", "device", "checkpoint_every", "seeds_list", "workers",
                "scheduler"}
Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------- parsing
def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, ``"none"`` -> None, anything else stays a string."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        return t
    if not math.isfinite(v):
        raise EvopruneError(f"value '{text}' is not a finite number")
    return v


def parse_pairs(pairs: Iterable[str], option: str) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; malformed or repeated keys are one-line errors."""
    out: Dict[str, Any] = {}
    for item in pairs or ():
        key, sep, value = str(item).partition("=")
        scope, dot, pname = key.strip().rpartition(".")
        key = scope + dot + pname.replace("-", "_")  # pop-size == pop_size; a scope (strategy name) keeps its dashes
        if not sep or not key:
            raise EvopruneError(f"{option} '{item}' must look like KEY=VALUE")
        if key in out:
            raise EvopruneError(f"{option} gives '{key}' twice; give each key once")
        out[key] = parse_value(value)
    return out


def parse_seeds(seeds: str, first: int) -> List[int]:
    """``"5"`` -> seeds first..first+4; ``"0,3,7"`` -> those seeds; ``"2-5"`` -> 2, 3, 4, 5."""
    text = str(seeds).strip()
    try:
        if "," in text:
            out = [int(s) for s in text.split(",") if s.strip()]
        elif re.fullmatch(r"\d+\s*-\s*\d+", text):
            a, b = (int(s) for s in text.split("-"))
            out = list(range(a, b + 1))
        else:
            k = int(text)
            if k < 1:
                raise EvopruneError(f"--seeds must be a positive count, got {k}")
            out = list(range(first, first + k))
    except ValueError:
        raise EvopruneError(f"--seeds '{seeds}' must be a count (5), a list (0,3,7) or a range (2-5)") from None
    if not out or len(set(out)) != len(out):
        raise EvopruneError(f"--seeds '{seeds}' must name at least one seed, each once")
    return out


# ---------------------------------------------------------------------------------------------------- problems
def _import_problem_modules() -> None:
    """Import the problem modules so their factories are registered."""
    for mod in ("evoprune.problems", "evoprune.problems.benchmarks", "evoprune.problems.channel_selection",
                "evoprune.problems.network_pruning", "evoprune.checkpoint_problems"):
        importlib.import_module(mod)


def _accepts(fn: Callable, key: str) -> bool:
    from evoprune.registry import accepted_kwargs

    allowed = accepted_kwargs(fn)
    return allowed is None or key in allowed


def _names_param(fn: Callable, key: str) -> bool:
    try:
        return key in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def make_problem(name: str, params: Mapping[str, Any], seed: Optional[int] = 0,
                 extra: Optional[Mapping[str, Any]] = None, device: Optional[str] = None) -> Any:
    """Build a problem from :data:`~evoprune.registry.PROBLEMS` (a factory or a ready object).

    ``params`` are the factory's keywords; ``seed`` is added when the factory takes one; ``extra`` (network
    options) is passed only for the keys given (not None); ``device`` only to a factory with a ``device`` parameter.
    """
    from evoprune.registry import PROBLEMS

    _import_problem_modules()
    factory = PROBLEMS.get(name)
    kwargs = dict(params)
    for key, value in (extra or {}).items():
        if value is not None:
            if not _accepts(factory, key):
                raise EvopruneError(f"problem '{name}' does not take --{key.replace('_', '-')} "
                                    "(network problems only)")
            kwargs[key] = value
    if device is not None and callable(factory) and _names_param(factory, "device"):
        kwargs["device"] = device  # only for factories that name it (network problems); benchmarks run on numpy
    if not callable(factory):
        if kwargs:
            raise EvopruneError(f"problem '{name}' is a ready object and takes no parameters; drop --param")
        problem = factory
    else:
        if seed is not None and "seed" not in kwargs and _accepts(factory, "seed"):
            kwargs["seed"] = seed
        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            try:
                sig.bind(**kwargs)
            except TypeError as exc:
                accepted = [p for p, v in sig.parameters.items()
                            if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
                raise EvopruneError(f"problem '{name}' cannot take {sorted(kwargs)} ({exc}); its parameters: "
                                    f"{', '.join(accepted) or 'none'}") from None
        try:
            problem = factory(**kwargs)
        except TypeError as exc:
            # a factory taking **kw passes unknown keywords on; Python's message names the culprit
            m = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if not m:
                raise
            bad = m.group(1)
            what = f"--{bad.replace('_', '-')} (network problems only)" if bad in (extra or {}) else \
                f"parameter '{bad}'"
            raise EvopruneError(f"problem '{name}' does not take {what}; drop it or check the spelling") from None
    for attr in ("name", "n_var", "objectives", "weights", "sample", "repair", "evaluate"):
        if not hasattr(problem, attr):
            raise EvopruneError(f"problem '{name}' has no '{attr}'; see problems/base.py for the protocol")
    return problem


def problem_info(problem: Any) -> Dict[str, Any]:
    """What plots and summaries need to know about a problem, JSON-friendly."""
    info: Dict[str, Any] = {
        "name": problem.name, "n_var": int(problem.n_var), "objectives": list(problem.objectives),
        "weights": [float(w) for w in problem.weights], "encoding": getattr(problem, "encoding", "binary"),
    }
    k = getattr(problem, "k", None)
    if isinstance(k, (int, np.integer)):
        info["k"] = int(k)
    for attr in ("optimum", "hv_ref"):
        v = getattr(problem, attr, None)
        if v is not None:
            info[attr] = np.asarray(v, dtype=float).tolist()
    tf = getattr(problem, "true_front", None)
    if tf is not None and len(tf) <= 20000:
        info["true_front"] = np.asarray(tf, dtype=float).tolist()
    return info


# --------------------------------------------------------------------------------------------------- strategies
def strategy_params(fn: Callable, name: str, given: Mapping[str, Any], shortcuts: Mapping[str, Any],
                    strict: bool) -> Dict[str, Any]:
    """Parameters for one strategy: ``--strategy-param`` values plus the shortcut flags that were given.

    A ``given`` parameter the strategy does not take is an error. ``strict`` (search): so is a shortcut flag it does
    not use; otherwise (compare, where one flag serves several strategies) such a shortcut is skipped for it.
    """
    from evoprune.strategies import strategy_accepts

    out = dict(given)
    reserved = sorted(set(given) & {"checkpoint", "checkpoint_every", "map_fn", "callback"})
    if reserved:
        raise EvopruneError(f"--strategy-param {', '.join(reserved)} is set by the command (use --checkpoint-every; "
                            "checkpoints live in the run directory)")
    unknown = [k for k in given if not strategy_accepts(fn, k)]
    if unknown:
        known = getattr(fn, "param_names", None)
        raise EvopruneError(f"strategy '{name}' does not take {', '.join(unknown)}"
                            + (f"; it takes: {', '.join(known)}" if known else ""))
    for key, value in shortcuts.items():
        if value is None:
            continue
        if strategy_accepts(fn, key):
            out[key] = value
        elif strict:
            known = getattr(fn, "param_names", None)
            raise EvopruneError(f"strategy '{name}' does not use --{key.replace('_', '-')}"
                                + (f"; it takes: {', '.join(known)}" if known else ""))
    return out


def validate_strategy(fn: Callable, name: str, problem: Any, budget: int, params: Mapping[str, Any]) -> None:
    """Check a strategy's inputs before any run directory is touched (built-ins expose ``validate``)."""
    from evoprune.strategies import check_compatible

    check_compatible(name, fn, problem)
    validate = getattr(fn, "validate", None)
    if callable(validate):
        validate(problem, budget, **params)


# ------------------------------------------------------------------------------------------------------- writing
def write_run(out: Path, result: Any, problem: Any) -> None:
    """``result.json``, ``evaluations.csv`` and ``logbook.csv`` of one finished run."""
    from evoprune.io import atomic_write_text, write_json

    summary = result.summary()
    summary["objectives"] = list(problem.objectives)
    atomic_write_text(out / "evaluations.csv", evaluations_csv(result, problem))
    atomic_write_text(out / "logbook.csv", logbook_csv(result.logbook))
    write_json(out / "result.json", summary)  # last: its presence marks the run as finished


def evaluations_csv(result: Any, problem: Any) -> str:
    """One row per evaluation: ``eval``, the genome (a 0/1 string for binary problems, ``x0..`` columns for real
    ones), then one column per objective."""
    G = np.asarray(result.history_genomes if result.history_genomes is not None else np.zeros((0, problem.n_var)))
    F = np.asarray(result.history_fitness if result.history_fitness is not None else
                   np.zeros((0, len(problem.objectives))))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    binary = G.dtype == bool or getattr(problem, "encoding", "binary") == "binary"
    objs = list(problem.objectives)
    if binary:
        w.writerow(["eval", "genome"] + objs)
        bits = G.astype(np.uint8) + ord("0")
        for i in range(len(G)):
            w.writerow([i + 1, bits[i].tobytes().decode("ascii")] + [repr(float(v)) for v in F[i]])
    else:
        w.writerow(["eval"] + [f"x{j}" for j in range(G.shape[1])] + objs)
        for i in range(len(G)):
            w.writerow([i + 1] + [repr(float(v)) for v in G[i]] + [repr(float(v)) for v in F[i]])
    return buf.getvalue()


def logbook_csv(logbook: Any) -> str:
    records = [dict(r) for r in (logbook or [])]
    cols: List[str] = list(getattr(logbook, "header", None) or [])
    for r in records:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow(r)
    return buf.getvalue()


def read_history(run_dir: Path, objectives: Sequence[str]) -> np.ndarray:
    """Objective columns of ``evaluations.csv`` as ``[E, n_obj]``."""
    path = Path(run_dir) / "evaluations.csv"
    if not path.is_file():
        raise EvopruneError(f"run directory '{run_dir}' has no evaluations.csv; is it a search/compare run?")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return np.zeros((0, len(objectives)))
        try:
            cols = [header.index(o) for o in objectives]
        except ValueError:
            raise EvopruneError(f"'{path}' lacks objective columns {list(objectives)}") from None
        rows = [[float(r[c]) for c in cols] for r in reader if r]
    return np.asarray(rows, dtype=float).reshape(-1, len(objectives))


def load_result(run_dir: Path) -> Any:
    """A :class:`Result` rebuilt from a finished run directory (history from ``evaluations.csv``)."""
    from evoprune.io import read_json
    from evoprune.strategies.base import Result

    s = read_json(Path(run_dir) / "result.json", "run result")
    objectives = s.get("objectives") or []
    hist = read_history(run_dir, objectives) if objectives else None
    return Result(
        strategy=s["strategy"], problem=s["problem"], seed=int(s["seed"]),
        best_genome=np.asarray(s["best_genome"]), best_fitness=np.asarray(s["best_fitness"], dtype=float),
        front_genomes=np.asarray(s["front_genomes"]), front_fitness=np.asarray(s["front_fitness"], dtype=float),
        evaluations=int(s["evaluations"]), wall_time=float(s["wall_time_s"]), logbook=s.get("logbook"),
        history_fitness=hist, params=s.get("params", {}),
    )


# ------------------------------------------------------------------------------------------------------- running
def check_resume_config(out: Path, cfg: Mapping[str, Any]) -> None:
    """Refuse to resume ``out`` when its ``config.json`` was made with settings that change what a run computes."""
    from evoprune.io import read_json, to_jsonable

    path = out / "config.json"
    if not path.exists():
        return
    old = read_json(path, "run config")
    new = to_jsonable(dict(cfg))
    diff = sorted(k for k in set(old) | set(new) if k not in NOT_COMPARED and k != "problem_info"
                  and old.get(k) != new.get(k))
    if diff:
        raise EvopruneError(f"cannot --resume '{out}': it was made with different settings ({', '.join(diff)}); "
                            "repeat the original options, or use --overwrite to start again")


def run_one(out: Path, strategy: str, problem: Any, budget: int, seed: int, params: Mapping[str, Any],
            cfg: Mapping[str, Any], checkpoint_every: int, progress: bool = True, backend: Any = None,
            log: Log = print) -> Any:
    """Run one strategy into ``out`` (already prepared): config/env first, checkpoints while running, results last.

    A run whose ``result.json`` exists is complete and is loaded instead of re-run. ``progress``: a line through
    ``log`` at most every 2 s.
    """
    from evoprune.io import environment_info, write_json
    from evoprune.strategies import run_strategy

    if (out / "result.json").exists():
        return load_result(out)
    write_json(out / "config.json", cfg)
    write_json(out / "env.json", environment_info(cfg.get("device"), seed))
    weights = np.asarray(problem.weights, dtype=float)
    last = [-1e9]
    t0 = time.perf_counter()

    def report(gen: int, genomes: np.ndarray, fitness: np.ndarray) -> None:
        # at most one line every 2 s: runs on cheap benchmarks finish before the second line
        now = time.perf_counter() - t0
        if progress and len(fitness) and (gen == 0 or now - last[0] >= 2.0):
            last[0] = now
            best = fitness[np.argmax(fitness[:, 0] * weights[0]), 0]
            log(f"  gen {gen:5d}  {now:7.1f}s  best {problem.objectives[0]} in population {best:.6g}")

    from evoprune.strategies import accepted, get_strategy

    # only what the strategy takes: a user strategy without checkpoints (or **params) still runs, unresumable
    offered = {"checkpoint": str(out / CHECKPOINT_NAME), "checkpoint_every": checkpoint_every,
               **({"map_fn": backend.map} if backend is not None else {})}  # chunks go to the workers, order kept
    result = run_strategy(strategy, problem, budget, seed, report, **params,
                          **accepted(get_strategy(strategy), offered))
    write_run(out, result, problem)
    return result


def result_line(result: Any, problem: Any) -> str:
    """One line on a finished run: best value and gap (one objective) or front size and hypervolume (several)."""
    from evoprune.indicators import run_indicators

    ind = run_indicators(result, problem)
    parts = [f"{result.evaluations} evaluations", f"{result.wall_time:.2f}s"]
    if "best" in ind:
        parts.insert(0, f"best {problem.objectives[0]} {ind['best']:.6g}")
        if "gap" in ind:
            parts.insert(1, f"gap {ind['gap']:.4g}")
    else:
        parts.insert(0, f"front {ind['front_size']} points, hv {ind['hv']:.6g}")
        if "hv_ratio" in ind:
            parts.insert(1, f"{100 * ind['hv_ratio']:.1f}% of the true front's hv")
    return ", ".join(parts)


def search_config(problem: str, problem_params: Mapping[str, Any], problem_seed: Optional[int], strategy: str,
                  params: Mapping[str, Any], budget: int, seed: int, checkpoint_every: int,
                  extra: Optional[Mapping[str, Any]], info: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``config.json`` of one search run (``extra``: the network options, kept only when given)."""
    return {"command": "search", "problem": problem, "problem_params": problem_params, "problem_seed": problem_seed,
            "strategy": strategy, "strategy_params": params, "budget": budget, "seed": seed,
            "checkpoint_every": checkpoint_every, **{k: v for k, v in (extra or {}).items() if v is not None},
            "problem_info": info}


# -------------------------------------------------------------------------------------------------------- search
def run_search(problem: str, problem_params: Mapping[str, Any], out: Union[str, Path], *,
               strategy: Optional[str] = None, strategy_args: Optional[Mapping[str, Any]] = None,
               shortcuts: Optional[Mapping[str, Any]] = None, budget: int = 2000, seed: int = 0,
               problem_seed: Optional[int] = 0, checkpoint_every: int = 10,
               extra: Optional[Mapping[str, Any]] = None, device: Optional[str] = "auto", workers: str = "serial",
               scheduler: Optional[str] = None, overwrite: bool = False, resume: bool = False,
               log: Log = print) -> Dict[str, Any]:
    """Run one strategy on one problem with a fixed evaluation budget into the run directory ``out``.

    ``strategy``: a name (default: ga for one objective, nsga2 for several); ``strategy_args``: its parameters;
    ``shortcuts``: ``pop_size/crossover/mutation/selection/init`` values (None: not given; one the strategy does
    not use is an error). ``extra``: network options (``model``, ``checkpoint``, ``data``, ``data_dir``).
    ``workers``/``scheduler``: where populations are evaluated (see :func:`evoprune.parallel.parse_workers`).
    Everything is checked before ``out`` is touched. Progress lines go to ``log``; returns the summary (run
    directory, strategy, problem, seed, best fitness and the run's indicators).
    """
    from evoprune.indicators import run_indicators
    from evoprune.io import prepare_run_dir
    from evoprune.parallel import make_map, parse_workers
    from evoprune.strategies import get_strategy

    spec = parse_workers(workers, scheduler)  # bad specs fail before anything is built
    if strategy is not None:
        fn = get_strategy(strategy)  # an unknown name fails before the (maybe slow) problem is built
    prob = make_problem(problem, problem_params, problem_seed, extra, device)
    if strategy is None:
        strategy = "nsga2" if len(prob.objectives) > 1 else "ga"
        fn = get_strategy(strategy)
    sparams = strategy_params(fn, strategy, strategy_args or {}, shortcuts or {}, strict=True)
    validate_strategy(fn, strategy, prob, budget, sparams)
    cfg = search_config(problem, problem_params, problem_seed, strategy, sparams, budget, seed, checkpoint_every,
                        extra, problem_info(prob))
    run_dir = prepare_run_dir(out, overwrite, resume)
    if resume:
        check_resume_config(run_dir, cfg)
    log(f"{strategy} on {prob.name} (n={prob.n_var}, objectives {', '.join(prob.objectives)}), "
        f"budget {budget}, seed {seed} -> {run_dir}")
    with make_map(spec) as backend:
        if workers != "serial":
            log(f"evaluating on {backend.describe()}")
        result = run_one(run_dir, strategy, prob, budget, seed, sparams, cfg, checkpoint_every,
                         backend=None if workers == "serial" else backend, log=log)
    log(f"done: {result_line(result, prob)}")
    summary = {"out": str(run_dir), "strategy": strategy, "problem": prob.name, "seed": seed,
               "best_fitness": np.asarray(result.best_fitness).tolist(), **run_indicators(result, prob)}
    from evoprune.report import write_report

    write_report(run_dir, summary)
    return summary


# ------------------------------------------------------------------------------------------------------- compare
def split_scoped(given: Mapping[str, Any], names: Sequence[str]) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """``{"nsga2.pop_size": 40, "sigma": 0.3}`` -> shared ``{"sigma": 0.3}``, scoped ``{"nsga2": {"pop_size": 40}}``."""
    shared: Dict[str, Any] = {}
    scoped: Dict[str, Dict[str, Any]] = {n: {} for n in names}
    for key, value in given.items():
        scope, dot, name = key.rpartition(".")
        if dot and scope:
            if scope not in scoped:
                raise EvopruneError(f"--strategy-param '{key}': '{scope}' is not among --strategies "
                                    f"({', '.join(names)})")
            scoped[scope][name] = value
        else:
            shared[key] = value
    return shared, scoped


def dir_name(name: str) -> str:
    """A strategy name as a directory name (``module:fn`` -> ``module_fn``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._") or "strategy"


def default_strategies(problem: Any) -> List[str]:
    from evoprune.registry import STRATEGIES

    want = ["nsga2", "mo-cmaes", "random"] if len(problem.objectives) > 1 else ["ga", "cmaes", "cmaes-1+l", "random"]
    return [s for s in want if s in STRATEGIES]


def write_summary(out: Path, summary: Mapping[str, Any]) -> None:
    """``summary.json`` (everything) and ``summary.csv`` (one row per strategy, best first)."""
    from evoprune.io import atomic_write_text, write_json

    write_json(out / "summary.json", summary)
    keys = [k for k in ("best", "gap", "hv", "hv_ratio", "front_size", "evaluations", "wall_time_s")
            if any(k in s for s in summary["strategies"].values())]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "strategy", "mean_rank", "seeds"] + [f"{k}_{a}" for k in keys for a in ("mean", "std")])
    for name in summary["ranking"]:
        s = summary["strategies"][name]
        n = max((s[k]["n"] for k in keys if k in s), default=0)
        row = [s.get("rank", ""), name, _num(s.get("mean_rank")), n]
        for k in keys:
            row += [_num(s[k]["mean"]), _num(s[k]["std"])] if k in s else ["", ""]
        w.writerow(row)
    atomic_write_text(out / "summary.csv", buf.getvalue())


def _num(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    return repr(x) if math.isfinite(x) else ""


def compare_runs(out: Path, cfg: Mapping[str, Any], dirs: Sequence[str], problem: Any,
                 extra: Optional[Mapping[str, Any]], results: Dict[str, List[Any]], backend: Any,
                 log: Log = print) -> None:
    """Every strategy x seed of the compare config ``cfg`` into ``out/<dir>/seed<k>/`` (finished runs are loaded,
    not re-run); each result is appended to ``results[strategy]``."""
    names, all_params = cfg["strategies"], cfg["strategy_params"]
    for name, dname in zip(names, dirs):
        for seed in cfg["seeds"]:
            run_dir = out / dname / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            run_cfg = search_config(cfg["problem"], cfg["problem_params"], cfg["problem_seed"], name,
                                    all_params[name], cfg["budget"], seed, cfg["checkpoint_every"], extra,
                                    cfg["problem_info"])
            was_done = (run_dir / "result.json").exists()
            res = run_one(run_dir, name, problem, cfg["budget"], seed, all_params[name], run_cfg,
                          cfg["checkpoint_every"], progress=False, backend=backend, log=log)
            res.strategy = name
            results[name].append(res)
            log(f"{name:>12s} seed {seed}: {result_line(res, problem)}" + (" (already done)" if was_done else ""))


def run_compare(problem: str, problem_params: Mapping[str, Any], out: Union[str, Path], *,
                strategies: Union[str, Sequence[str], None] = None, strategy_args: Optional[Mapping[str, Any]] = None,
                shortcuts: Optional[Mapping[str, Any]] = None, budget: int = 2000, seeds: Sequence[int] = (0,),
                seed: int = 0, problem_seed: Optional[int] = 0, checkpoint_every: int = 10,
                extra: Optional[Mapping[str, Any]] = None, device: Optional[str] = "auto", workers: str = "serial",
                scheduler: Optional[str] = None, overwrite: bool = False, resume: bool = False,
                log: Log = print) -> Dict[str, Any]:
    """Run several strategies x ``seeds`` with the same budget on one problem into ``out``; write summary.json/.csv.

    ``strategies``: names, or one comma-separated string (default: see :func:`default_strategies`);
    ``strategy_args``: parameters, ``NAME.KEY`` for one strategy, ``KEY`` for every strategy that takes it;
    ``shortcuts`` apply to the strategies that use them. ``seed`` is the one recorded in ``env.json``. Other
    arguments as in :func:`run_search`. Progress lines and the summary table go to ``log``; returns the summary
    (run directory, problem, ranking, primary indicator and each strategy's statistics).
    """
    from evoprune.indicators import format_table, summarize
    from evoprune.io import environment_info, prepare_run_dir, write_json
    from evoprune.parallel import make_map, parse_workers
    from evoprune.strategies import get_strategy, strategy_accepts

    spec = parse_workers(workers, scheduler)
    seeds = list(seeds)
    prob = make_problem(problem, problem_params, problem_seed, extra, device)
    raw = strategies if isinstance(strategies, str) or strategies is None else ",".join(strategies)
    names = [s.strip() for s in raw.split(",") if s.strip()] if raw else default_strategies(prob)
    if not names:
        raise EvopruneError("--strategies is empty; name at least one strategy, e.g. --strategies ga,random")
    if len(set(names)) != len(names):
        raise EvopruneError(f"--strategies names a strategy twice ({raw}); give each once")
    dirs = [dir_name(n) for n in names]
    if len(set(dirs)) != len(dirs):
        raise EvopruneError("two --strategies map to the same directory name; rename one")
    fns = [get_strategy(n) for n in names]
    shared, scoped = split_scoped(strategy_args or {}, names)
    all_params: Dict[str, Dict[str, Any]] = {}
    for name, fn in zip(names, fns):
        mine = {k: v for k, v in shared.items() if strategy_accepts(fn, k)}
        mine.update(scoped[name])
        all_params[name] = strategy_params(fn, name, mine, shortcuts or {}, strict=False)
    unused = [k for k in shared if not any(k in all_params[n] for n in names)]
    if unused:
        raise EvopruneError(f"--strategy-param {', '.join(unused)}: no strategy among {', '.join(names)} takes it")
    for name, fn in zip(names, fns):
        validate_strategy(fn, name, prob, budget, all_params[name])
    cfg = {
        "command": "compare", "problem": problem, "problem_params": problem_params,
        "problem_seed": problem_seed, "strategies": names, "strategy_params": all_params, "seeds": seeds,
        "budget": budget, "checkpoint_every": checkpoint_every,
        **{k: v for k, v in (extra or {}).items() if v is not None},
        "problem_info": problem_info(prob),
    }
    run_dir = prepare_run_dir(out, overwrite, resume)
    if resume:
        check_resume_config(run_dir, cfg)
    write_json(run_dir / "config.json", cfg)
    write_json(run_dir / "env.json", environment_info(None, seed))
    log(f"compare {', '.join(names)} on {prob.name} (n={prob.n_var}), budget {budget}, "
        f"seeds {', '.join(map(str, seeds))} -> {run_dir}")
    results: Dict[str, List[Any]] = {n: [] for n in names}
    backend = make_map(spec)  # one backend for every run: the problem ships to the workers once
    try:
        compare_runs(run_dir, cfg, dirs, prob, extra, results, None if workers == "serial" else backend, log)
    finally:
        backend.close()
    summary = summarize(results, prob)
    summary["budget"] = budget
    summary["seeds"] = seeds
    summary["runs_dir"] = {n: f"{d}/seed<k>" for n, d in zip(names, dirs)}
    if len(seeds) >= 2:  # rank-sum tests (Holm) and the runtime ECDF: tests.csv, ecdf.png
        from evoprune.stats import compare_report

        summary["statistics"] = compare_report(results, prob, run_dir)
    write_summary(run_dir, summary)
    table = format_table(summary)
    from evoprune.report import compare_report

    compare_report(run_dir, summary, prob.name, table)
    log("")
    log(table)
    return {"out": str(run_dir), "problem": prob.name, "ranking": summary["ranking"], "primary": summary["primary"],
            "strategies": {n: {k: v for k, v in s.items()} for n, s in summary["strategies"].items()}}


# ------------------------------------------------------------------------------------------------------ reading
class RunDir:
    """One finished run directory: label, seed, front, history and its problem description."""

    def __init__(self, path: Path) -> None:
        from evoprune.io import read_json

        self.path = path
        self.result = read_json(path / "result.json", "run result")
        cfg = read_json(path / "config.json", "run config") if (path / "config.json").exists() else {}
        info = cfg.get("problem_info") or {}
        self.objectives: List[str] = list(self.result.get("objectives") or info.get("objectives") or [])
        if not self.objectives:
            raise EvopruneError(f"run '{path}' does not name its objectives; was it written by evoprune search?")
        self.weights = list(info.get("weights") or [-1.0] * len(self.objectives))
        self.info = info
        self.strategy = str(self.result.get("strategy"))
        self.seed = int(self.result.get("seed", 0))
        self.front = np.asarray(self.result.get("front_fitness") or [], dtype=float).reshape(-1, len(self.objectives))
        self._history: Optional[np.ndarray] = None
        self.label = self.strategy

    @property
    def history(self) -> np.ndarray:
        if self._history is None:
            self._history = read_history(self.path, self.objectives)
        return self._history


def collect_runs(paths: Sequence[str]) -> List[RunDir]:
    """Run directories under each path: the path itself (a search run), or ``*/seed*/`` (a compare run)."""
    runs: List[RunDir] = []
    for raw in paths:
        p = Path(raw)
        if (p / "result.json").is_file():
            found = [p]
        else:
            found = sorted({r.parent for r in p.glob("*/seed*/result.json")}
                           | {r.parent for r in p.glob("*/result.json")})
        if not found:
            raise EvopruneError(f"'{raw}' holds no runs (no result.json in it or in */seed*/); "
                                "give a search or compare output directory")
        for d in found:
            runs.append(RunDir(d))
    objs = {tuple(r.objectives) for r in runs}
    if len(objs) > 1:
        raise EvopruneError(f"the runs have different objectives ({' vs '.join(map(str, sorted(objs)))}); "
                            "plot runs of one problem together")
    # the same strategy from different directories (two compare runs) is told apart by its directory
    roots = {}
    for r in runs:
        root = r.path.parent.parent if r.path.name.startswith("seed") else r.path
        roots.setdefault(r.strategy, set()).add(str(root))
    for r in runs:
        if len(roots[r.strategy]) > 1:
            root = r.path.parent.parent if r.path.name.startswith("seed") else r.path
            r.label = f"{r.strategy} ({root.name})"
    return runs
