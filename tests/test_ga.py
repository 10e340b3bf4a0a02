"""The paper's GA: known optima, exact budgets, determinism, checkpoint/resume, user operators, speed."""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matmuls: threads only add contention on shared CPUs

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import evoprune.problems  # noqa: F401
from evoprune.errors import EvopruneError
from evoprune.problems import ChannelSelectionProblem
from evoprune.registry import PROBLEMS, STRATEGIES
from evoprune.strategies.ga import GA_DEFAULTS, ga

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """numpy's OpenBLAS is loaded (by conftest's torch import) before our environment variable could act; on a
    shared 2-core machine a 2-thread BLAS makes these 100x512 matmuls ~20x slower, so ask it for one thread."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        set_, get = (getattr(lib, f"scipy_openblas_{what}_num_threads64_", None) for what in ("set", "get"))
        if set_ is not None and get is not None:
            before = get()
            set_(1)
            yield
            set_(before)
            return
    yield


class Trivial:
    wants_torch = False
    objectives = ("error",)
    weights = (-1.0,)
    name = "trivial"

    def evaluate(self, masks):
        return masks[:, :1].astype(float)


def copy_checkpoint(src: Path, dst: Path) -> None:
    meta = json.loads(src.with_name(src.name + ".json").read_text())
    npz = meta["npz"].replace(src.name, dst.name, 1)
    shutil.copy(src.with_name(meta["npz"]), dst.with_name(npz))
    meta["npz"] = npz
    dst.with_name(dst.name + ".json").write_text(json.dumps(meta))


def same_result(a, b):
    assert np.array_equal(a.best_genome, b.best_genome)
    assert np.array_equal(a.best_fitness, b.best_fitness)
    assert np.array_equal(a.front_genomes, b.front_genomes)
    assert np.array_equal(a.front_fitness, b.front_fitness)
    assert a.evaluations == b.evaluations
    assert np.array_equal(a.history_genomes, b.history_genomes)
    assert np.array_equal(a.history_fitness, b.history_fitness)
    assert [dict(r) for r in a.logbook] == [dict(r) for r in b.logbook]
    assert a.params == b.params


def test_registered_and_defaults():
    assert STRATEGIES.get("ga") is ga
    assert GA_DEFAULTS["crossover"] == "cardinality" and GA_DEFAULTS["mutation"] == "swap"


def test_random_qp_optimum_in_9_of_10_seeds_within_5000_evaluations():
    hits = 0
    for seed in range(10):
        p = PROBLEMS.get("random-qp")(n=20, k=10, seed=seed)
        res = ga(p, 5000, seed=seed)
        assert res.evaluations <= 5000 and p.is_valid(res.history_genomes).all()
        hits += bool(np.isclose(res.best_fitness[0], p.optimum, rtol=0, atol=1e-9))
    assert hits >= 9


def test_planted_512_within_one_percent():
    # Budget 30,000 evaluations (300 generations of 100); benchmarks/ga_operators.py: all 10 seeds reach the
    # exact optimum by 15,000. Within 1 % means exact here: one wrong channel already costs ~1.4 %.
    p = PROBLEMS.get("planted-qp")(n=512, k=256, seed=0)
    for seed in (0, 1, 2):
        res = ga(p, 30000, seed=seed)
        assert p.gap(res.best_fitness[0]) <= 0.01, (seed, p.gap(res.best_fitness[0]))
        assert res.best_genome.sum() == 256


@pytest.mark.parametrize("budget", [1, 37, 100, 1234])
def test_budget_is_respected_exactly(budget):
    p = PROBLEMS.get("onemax-k")(n=60, k=20, seed=0)
    res = ga(p, budget, seed=0, stagnation=None, pop_size=50)
    assert res.evaluations == budget
    assert len(res.history_genomes) == budget and len(res.history_fitness) == budget
    assert sum(r["nevals"] for r in res.logbook) == budget
    assert res.params["stop_reason"] == "budget"
    best = res.history_fitness[:, 0].max()
    assert res.best_fitness[0] == best  # maximisation: best = largest value ever seen
    assert p.is_valid(res.front_genomes).all()
    assert len({g.tobytes() for g in res.front_genomes}) == len(res.front_genomes)  # distinct


def test_logbook_result_and_determinism():
    p = PROBLEMS.get("random-qp")(n=20, k=10, seed=3)
    a = ga(p, 2000, seed=7)
    b = ga(p, 2000, seed=7)
    c = ga(p, 2000, seed=8)
    same_result(a, b)
    assert not np.array_equal(a.history_genomes, c.history_genomes)
    assert a.logbook.header == ["gen", "nevals", "min", "avg", "max"]
    rows = list(a.logbook)
    assert rows[0]["gen"] == 0 and rows[0]["nevals"] == GA_DEFAULTS["pop_size"]
    assert all(r["min"] <= r["avg"] <= r["max"] for r in rows)
    # the elite keeps the population's best from getting worse
    assert all(rows[i + 1]["min"] <= rows[i]["min"] + 1e-12 for i in range(len(rows) - 1))
    json.dumps(a.summary())
    assert a.params["crossover"] == "cardinality" and a.strategy == "ga" and a.problem == p.name


def test_stopping_rules_and_callback():
    p = PROBLEMS.get("onemax-k")(n=30, k=10, seed=0)
    res = ga(p, 10**6, seed=0, stagnation=5)
    assert res.params["stop_reason"] == "stagnation" and res.evaluations < 10**6
    res = ga(p, 10**6, seed=0, generations=4, stagnation=None)
    assert res.params["stop_reason"] == "generations" and res.params["generations_run"] == 4
    assert len(res.logbook) == 5
    seen = []

    def cb(gen, pop, fit):
        seen.append((gen, pop.shape, fit.shape))
        pop[:] = False  # copies: cannot corrupt the run
        return gen == 3

    res = ga(p, 10**6, seed=0, callback=cb, pop_size=20)
    assert [s[0] for s in seen] == [0, 1, 2, 3] and seen[0][1:] == ((20, 30), (20, 1))
    assert res.params["stop_reason"] == "callback" and p.is_valid(res.history_genomes).all()


def test_checkpoint_resume_is_bit_identical(tmp_path):
    p = PROBLEMS.get("random-qp")(n=20, k=10, seed=1)
    kw = dict(pop_size=30, stagnation=None, budget=1500, seed=4)
    ref = ga(p, **kw)

    ckpt = tmp_path / "ga_state"
    seen = []

    def crash_at_7(gen, pop, fit):
        seen.append(gen)
        if gen == 7:
            raise KeyboardInterrupt  # like a kill after generation 7; the last checkpoint is generation 6

    with pytest.raises(KeyboardInterrupt):
        ga(p, callback=crash_at_7, checkpoint=ckpt, checkpoint_every=3, **kw)
    state = json.loads((tmp_path / "ga_state.json").read_text())["state"]
    assert state["gen"] == 6 and not state["done"]
    resumed_gens = []
    res = ga(p, callback=lambda g, *_: resumed_gens.append(g), checkpoint=ckpt, checkpoint_every=3, **kw)
    assert resumed_gens[0] == 7  # resumed, not restarted
    same_result(ref, res)

    # resuming from a checkpoint taken mid-run of an uninterrupted run gives the same answer too
    ckpt2 = tmp_path / "full"

    def snapshot_at_10(gen, pop, fit):
        if gen == 10:  # the generation-10 checkpoint is on disk before the callback runs
            copy_checkpoint(ckpt2, tmp_path / "mid")

    same_result(ref, ga(p, checkpoint=ckpt2, checkpoint_every=1, callback=snapshot_at_10, **kw))
    assert json.loads((tmp_path / "mid.json").read_text())["state"]["gen"] == 10
    same_result(ref, ga(p, checkpoint=tmp_path / "mid", **kw))

    # a finished checkpoint returns its result without evaluating anything
    again = ga(p, checkpoint=ckpt2, **kw)
    same_result(ref, again)

    with pytest.raises(EvopruneError, match="different run.*pop_size 30 != 40"):
        ga(p, checkpoint=ckpt2, **{**kw, "pop_size": 40})


def test_map_fn_gives_the_same_result():
    p = PROBLEMS.get("random-qp")(n=20, k=10, seed=2)
    calls = []

    def mapper(fn, chunks):
        calls.append(len(chunks))
        return map(fn, chunks)

    same_result(ga(p, 800, seed=1), ga(p, 800, seed=1, map_fn=mapper))
    assert calls and max(calls) > 1


def test_user_operators(tmp_path):
    p = PROBLEMS.get("planted-qp")(n=64, k=32, seed=0)
    spec = f"{ROOT / 'examples' / 'custom_operator.py'}:my_mutation"
    res = ga(p, 3000, seed=0, mutation=spec, mutation_kw={"radius": 4})
    assert res.evaluations == 3000 and p.is_valid(res.history_genomes).all()
    assert res.params["mutation"] == spec and res.params["mutation_kw"] == {"radius": 4}
    # DEAP's own operators (python random, no rng keyword) work and stay deterministic under the seed
    a = ga(p, 600, seed=3, mutation="deap.tools:mutFlipBit", mutation_kw={"indpb": 0.05})
    b = ga(p, 600, seed=3, mutation="deap.tools:mutFlipBit", mutation_kw={"indpb": 0.05})
    same_result(a, b)
    assert p.is_valid(a.history_genomes).all()  # repaired back to k

    def shrink(ind, *, rng, **kw):
        return (ind[:-1],)

    with pytest.raises(EvopruneError, match=r"mutation operator '.*shrink' returned a genome of shape \(63,\)"):
        ga(p, 500, seed=0, mutation=shrink)
    with pytest.raises(EvopruneError, match="unknown crossover operator 'unifrom'.*did you mean 'uniform'"):
        ga(p, 500, seed=0, crossover="unifrom")


@pytest.mark.parametrize("sel", ["tournament", "roulette"])
@pytest.mark.parametrize("cx,mut", [("uniform", "flip"), ("one-point", "swap"), ("two-point", "flip")])
def test_every_operator_combination_runs_and_stays_feasible(cx, mut, sel):
    p = PROBLEMS.get("planted-qp")(n=40, k=13, seed=1)
    res = ga(p, 1000, seed=0, crossover=cx, mutation=mut, selection=sel, init="bernoulli")
    assert res.evaluations == 1000 and p.is_valid(res.history_genomes).all()


def test_bad_parameters_and_problems():
    p = PROBLEMS.get("onemax-k")(n=10, k=3)
    for kw, pattern in [({"pop_size": 1}, "pop_size must be an integer >= 2"),
                        ({"cxpb": 1.5}, r"cxpb must be a probability"),
                        ({"elite": 100}, "elite .* must be smaller than pop_size"),
                        ({"stagnation": 0}, "stagnation"),
                        ({"budget": 0}, "budget must be a positive number"),
                        ({"selection": "best"}, "unknown selection operator")]:
        with pytest.raises(EvopruneError, match=pattern):
            ga(p, **{"budget": 100, "seed": 0, **kw})
    with pytest.raises(EvopruneError, match="single-objective.*nsga2"):
        ga(PROBLEMS.get("biobjective-subset")(n=8), 100, seed=0)


def test_free_cardinality_problem_uses_its_default_operators():
    p = ChannelSelectionProblem(30, None, lambda m: np.abs(m.sum(1) - 7.0), min_keep=1)
    res = ga(p, 3000, seed=0)
    assert res.params["crossover"] == "uniform" and res.params["mutation"] == "flip"
    assert res.best_fitness[0] == 0 and res.best_genome.sum() == 7


def test_overhead_pop100_gen100_n512_well_under_a_second():
    p = ChannelSelectionProblem(512, 256, Trivial())
    ga(p, 10**6, seed=0, generations=2)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    res = ga(p, 10**6, seed=0, generations=100, stagnation=None)
    elapsed = time.perf_counter() - t0
    assert res.params["generations_run"] == 100
    assert elapsed < 1.0, f"GA overhead {elapsed:.2f} s for 100 x 100 on n=512"
