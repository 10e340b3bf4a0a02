"""NSGA-II, CMA-ES variants and random search on the benchmark problems: budget, progress, reproducibility,
checkpoint-resume, the known true front, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.indicators import hypervolume, non_dominated, reference_point
from evoprune.registry import PROBLEMS, STRATEGIES
from evoprune.strategies import compare, run_strategy
from evoprune.strategies._support import decode_binary

import evoprune.problems  # noqa: F401  (registers the benchmarks)


# ------------------------------------------------------------------------------------------------- problems
class Sphere:
    """A real-encoded single-objective problem: minimise ||x - 1||^2 on [-5, 5]^n (optimum 0)."""

    name, encoding, objectives, weights = "sphere", "real", ("f",), (-1.0,)
    lower, upper, optimum = -5.0, 5.0, 0.0

    def __init__(self, n: int = 6) -> None:
        self.n_var = n

    def sample(self, rng, size):
        return rng.uniform(-5, 5, (size, self.n_var))

    def repair(self, genomes, rng):
        return np.clip(genomes, -5, 5)

    def evaluate(self, pop):
        return ((np.asarray(pop) - 1.0) ** 2).sum(1, keepdims=True)


class Schaffer:
    """Real-encoded bi-objective: (x^2, (x-2)^2) averaged over variables; front for x in [0, 2]."""

    name, encoding, objectives, weights = "schaffer", "real", ("f1", "f2"), (-1.0, -1.0)
    lower, upper = -4.0, 4.0

    def __init__(self, n: int = 3) -> None:
        self.n_var = n
        x = np.linspace(0, 2, 201)
        self.true_front = np.stack([x ** 2, (x - 2) ** 2], 1)

    def sample(self, rng, size):
        return rng.uniform(-4, 4, (size, self.n_var))

    def repair(self, genomes, rng):
        return np.clip(genomes, -4, 4)

    def evaluate(self, pop):
        x = np.asarray(pop)
        return np.stack([(x ** 2).mean(1), ((x - 2) ** 2).mean(1)], 1)


@pytest.fixture(scope="module")
def onemax():
    return PROBLEMS.get("onemax-k")(n=40, k=12, seed=1)


@pytest.fixture(scope="module")
def qp():
    return PROBLEMS.get("planted-qp")(n=48, k=16, seed=2)


@pytest.fixture(scope="module")
def bio():
    return PROBLEMS.get("biobjective-subset")(n=20, seed=0)


def _problem(name, request):
    return {"sphere": Sphere, "schaffer": Schaffer}[name]() if name in ("sphere", "schaffer") else \
        request.getfixturevalue(name)


# strategy, problem fixture, params; budgets below are deliberately not multiples of the population sizes
CASES = [
    ("random", "onemax", {"pop_size": 20}),
    ("random", "bio", {"pop_size": 20}),
    ("cmaes", "onemax", {}),
    ("cmaes", "qp", {}),
    ("cmaes", "sphere", {}),
    ("cmaes-1+l", "qp", {}),
    ("cmaes-1+l", "sphere", {}),
    ("nsga2", "bio", {"pop_size": 40}),
    ("nsga2", "schaffer", {"pop_size": 20}),
    ("mo-cmaes", "bio", {"pop_size": 12}),
    ("mo-cmaes", "schaffer", {"pop_size": 10}),
]
IDS = [f"{s}-{p}" for s, p, _ in CASES]
BUDGET = 701


def _same(a, b):
    assert np.array_equal(a.history_genomes, b.history_genomes)
    assert np.array_equal(a.history_fitness, b.history_fitness)
    assert np.array_equal(a.best_genome, b.best_genome) and np.array_equal(a.best_fitness, b.best_fitness)
    assert np.array_equal(a.front_genomes, b.front_genomes) and np.array_equal(a.front_fitness, b.front_fitness)
    assert [dict(r) for r in a.logbook] == [dict(r) for r in b.logbook]


def _initial_quality(result, problem):
    """Best of the first generation (single objective) or its hypervolume (several), and the final value."""
    first = result.logbook[0]["nevals"]
    F0, F = result.history_fitness[:first], result.history_fitness
    w = np.asarray(problem.weights)
    if len(w) == 1:
        return (F0[:, 0] * w[0]).max(), (F[:, 0] * w[0]).max()
    ref = reference_point(problem, [F], problem.weights)
    return hypervolume(F0, ref, problem.weights), hypervolume(result.front_fitness, ref, problem.weights)


@pytest.fixture(scope="module")
def runs(request):
    """One run per case (seed 3), shared by the tests below."""
    out = {}
    for (s, p, kw), case_id in zip(CASES, IDS):
        out[case_id] = run_strategy(s, _problem(p, request), BUDGET, 3, **kw)
    return out


@pytest.mark.parametrize("case", IDS)
def test_budget_is_respected_exactly(case, runs):
    r = runs[case]
    assert r.evaluations == BUDGET
    assert len(r.history_fitness) == len(r.history_genomes) == BUDGET
    assert r.logbook[-1]["evals"] == BUDGET
    assert sum(rec["nevals"] for rec in r.logbook) == BUDGET


@pytest.mark.parametrize("case", IDS)
def test_improves_on_initial_population(case, runs, request):
    s, p, _ = CASES[IDS.index(case)]
    initial, final = _initial_quality(runs[case], _problem(p, request))
    assert final > initial


@pytest.mark.parametrize("case", IDS)
def test_reproducible_and_resume_is_bit_identical(case, runs, request, tmp_path):
    s, p, kw = CASES[IDS.index(case)]
    problem = _problem(p, request)
    again = run_strategy(s, problem, BUDGET, 3, **kw)
    _same(runs[case], again)

    class Crash(Exception):
        pass

    def crash_at_gen_3(gen, genomes, fitness):
        assert genomes.shape[0] == fitness.shape[0] and genomes.shape[1] == problem.n_var
        if gen == 3:
            raise Crash()

    ckpt = tmp_path / "state"
    with pytest.raises(Crash):
        run_strategy(s, problem, BUDGET, 3, crash_at_gen_3, checkpoint=str(ckpt), checkpoint_every=2, **kw)
    np.random.seed(12345)  # a resumed run must not depend on the global RNGs the caller left behind
    resumed = run_strategy(s, problem, BUDGET, 3, checkpoint=str(ckpt), checkpoint_every=2, **kw)
    _same(runs[case], resumed)
    finished = run_strategy(s, problem, BUDGET, 3, checkpoint=str(ckpt), checkpoint_every=2, **kw)
    _same(runs[case], finished)  # a finished checkpoint returns the same result


def test_other_seed_differs(runs, onemax):
    other = run_strategy("cmaes", onemax, BUDGET, 4)
    assert not np.array_equal(other.history_genomes, runs["cmaes-onemax"].history_genomes)


def test_nsga2_reaches_95_percent_of_the_true_front(bio):
    ref = reference_point(bio)
    hv_true = hypervolume(bio.true_front, ref, bio.weights)
    for seed in (0, 1):
        r = run_strategy("nsga2", bio, 3000, seed, pop_size=40)
        assert hypervolume(r.front_fitness, ref, bio.weights) >= 0.95 * hv_true


def test_front_is_the_non_dominated_archive(runs, bio):
    r = runs["nsga2-bio"]
    idx = non_dominated(r.history_fitness, bio.weights)
    assert np.array_equal(np.sort(r.front_fitness, axis=0), np.sort(r.history_fitness[idx], axis=0))
    assert np.array_equal(bio.evaluate(r.front_genomes), r.front_fitness)


def test_cmaes_keeps_cardinality_and_leaves_global_rng_alone(onemax):
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    r = run_strategy("cmaes", onemax, 300, 0)
    assert np.array_equal(np.random.get_state()[1], before)
    assert np.all(r.history_genomes.sum(1) == onemax.k)


def test_decoding_top_k_and_threshold():
    class P:
        k, name = 2, "p"

    X = np.array([[0.1, 0.9, 0.5, 0.9], [0.3, 0.2, 0.1, 0.0]])
    assert decode_binary(P(), X, np.random.default_rng(0)).tolist() == [[False, True, False, True],
                                                                         [True, True, False, False]]

    class Q:
        k, name = None, "q"

        def repair(self, g, rng):
            g = g.copy()
            g[g.sum(1) == 0, 0] = True  # at least one kept
            return g

    assert decode_binary(Q(), X, np.random.default_rng(0)).tolist() == [[False, True, False, True],
                                                                         [True, False, False, False]]


def test_map_fn_scores_chunks_in_order(bio):
    calls = []

    def my_map(fn, chunks):
        calls.append([len(c) for c in chunks])
        return list(map(fn, chunks))

    # Schaffer's objectives are row-wise means, so chunking cannot change a single bit: the runs must be equal
    a = run_strategy("nsga2", Schaffer(), 300, 1, pop_size=20)
    b = run_strategy("nsga2", Schaffer(), 300, 1, pop_size=20, map_fn=my_map)
    _same(a, b)
    assert calls and all(sum(c) <= 20 for c in calls)
    # a BLAS-scored problem may differ in the last bit between batch sizes; the order must still be kept
    c = run_strategy("random", bio, 100, 1, map_fn=my_map)
    assert np.allclose(bio.evaluate(c.history_genomes), c.history_fitness, rtol=1e-12, atol=1e-12)


def flip_two(ind, *, rng, **kw):
    """A user mutation with only the DEAP signature: flips two random bits."""
    i = rng.choice(len(ind), 2, replace=False)
    ind[i] = ~ind[i]
    return (ind,)


def test_user_operator_and_user_strategy_by_spec(bio):
    r = run_strategy("nsga2", bio, 200, 0, pop_size=20, mutation=f"{__file__}:flip_two")
    assert r.evaluations == 200 and r.params["mutation"].endswith(":flip_two")
    fn = STRATEGIES.get("evoprune.strategies.random_search:random_search")
    assert fn(bio, 50, 0).evaluations == 50


def test_compare_runs_every_strategy_and_seed(onemax):
    res = compare(onemax, ["random", "cmaes"], 200, seeds=[0, 1])
    assert list(res) == ["random", "cmaes"]
    assert [r.seed for r in res["cmaes"]] == [0, 1] and all(r.evaluations == 200 for r in res["random"])


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda p, b: run_strategy("no-such-strategy", p, 100, 0), "unknown strategy 'no-such-strategy'"),
    (lambda p, b: run_strategy("nsga2", b, 30, 0, pop_size=40), "budget 30 is smaller"),
    (lambda p, b: run_strategy("cmaes", p, 5, 0), "budget 5 is smaller"),
    (lambda p, b: run_strategy("mo-cmaes", b, 20, 0, pop_size=12), "budget 20 is smaller"),
    (lambda p, b: run_strategy("nsga2", p, 1000, 0), "multi-objective but problem .* has one objective"),
    (lambda p, b: run_strategy("mo-cmaes", p, 1000, 0), "multi-objective but problem .* has one objective"),
    (lambda p, b: run_strategy("cmaes", b, 1000, 0), "single-objective but problem .* has 2 objectives"),
    (lambda p, b: run_strategy("nsga2", b, 1000, 0, pop_size=42), "multiple of 4"),
    (lambda p, b: run_strategy("nsga2", b, 1000, 0, popsize=40), "does not take parameter.*popsize"),
    (lambda p, b: run_strategy("nsga2", b, 1000, 0, mutation="no-such-op"), "unknown mutation operator"),
    (lambda p, b: run_strategy("cmaes", p, 1000, 0, sigma=-1.0), "sigma must be a positive number"),
    (lambda p, b: run_strategy("random", p, 0, 0), "budget must be a positive"),
])
def test_bad_input_is_one_clear_line(call, match, onemax, bio):
    with pytest.raises(EvopruneError, match=match) as exc:
        call(onemax, bio)
    assert "\n" not in str(exc.value)


def test_checkpoint_of_another_run_is_refused(onemax, tmp_path):
    ck = str(tmp_path / "state")
    run_strategy("random", onemax, 100, 0, checkpoint=ck)
    with pytest.raises(EvopruneError, match="different run .*seed"):
        run_strategy("random", onemax, 100, 1, checkpoint=ck)
