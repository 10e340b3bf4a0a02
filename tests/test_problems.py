"""ChannelSelectionProblem, the benchmark problems and their known optima, DEAP wiring (toolbox, pickling)."""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import copy
import itertools
import pickle
import random

import numpy as np
import pytest
from deap import algorithms, tools

import evoprune.problems  # noqa: F401
from evoprune.errors import EvopruneError
from evoprune.problems import BenchmarkProblem, ChannelSelectionProblem, wrap
from evoprune.problems.benchmarks import knapsack_front
from evoprune.registry import PROBLEMS


class TorchError:
    """A stage-1-like evaluator: receives a torch bool tensor, returns a tensor [P, 1]."""

    objectives = ("error",)
    weights = (-1.0,)
    name = "torch-error"

    def __init__(self, n):
        import torch

        self.w = torch.arange(n, dtype=torch.float32)
        self.seen = None

    def evaluate(self, masks):
        self.seen = type(masks), masks.dtype
        return ((~masks).float() @ self.w)[:, None]


class NumpyError:
    wants_torch = False
    objectives = ("error",)
    weights = (-1.0,)
    name = "np-error"

    def evaluate(self, masks):
        assert isinstance(masks, np.ndarray) and masks.dtype == bool
        return (~masks).sum(1)


def test_evaluators_torch_numpy_and_callable():
    import torch

    ev = TorchError(6)
    p = ChannelSelectionProblem(6, 3, ev)
    pop = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], bool)
    f = p.evaluate(pop)
    assert ev.seen == (torch.Tensor, torch.bool)
    assert isinstance(f, np.ndarray) and f.shape == (2, 1) and f[:, 0].tolist() == [12.0, 3.0]
    assert p.objectives == ("error",) and p.weights == (-1.0,) and "torch-error" in p.name
    assert p.evaluate(pop[0]).shape == (1, 1)  # one genome is a population of one
    assert ChannelSelectionProblem(6, 3, NumpyError()).evaluate(pop)[:, 0].tolist() == [3.0, 3.0]
    cp = ChannelSelectionProblem(6, 3, lambda m: m[:, :2].sum(1), objectives=("x",), weights=(1.0,))
    assert cp.evaluate(pop)[:, 0].tolist() == [2.0, 0.0] and cp.weights == (1.0,)
    assert ChannelSelectionProblem(6, 3, lambda m: m.sum(1)).weights == (-1.0,)  # default: minimise


def test_bad_inputs_are_one_line_errors():
    cases = [
        (lambda: ChannelSelectionProblem(4, 5, NumpyError()), "k must satisfy 1 <= k <= n"),
        (lambda: ChannelSelectionProblem(4, 0, NumpyError()), "k must satisfy 1 <= k <= n"),
        (lambda: ChannelSelectionProblem(0, None, NumpyError()), "n must be a positive integer"),
        (lambda: ChannelSelectionProblem(4, 2, NumpyError(), min_keep=3), "min_keep"),
        (lambda: ChannelSelectionProblem(4, 2.5, NumpyError()), "k must be an integer"),
        (lambda: ChannelSelectionProblem(4, 2, 42), "evaluator must have an evaluate"),
        (lambda: ChannelSelectionProblem(4, 2, NumpyError(), weights=(-1.0, 1.0)), "give one DEAP weight"),
        (lambda: ChannelSelectionProblem(4, 2, NumpyError(), repair="min-keep"), "does not enforce k"),
        (lambda: ChannelSelectionProblem(4, 2, NumpyError(), repair="nope"), "unknown repair operator"),
        (lambda: ChannelSelectionProblem(4, 2, NumpyError(), importance=[1, 2]), "importance must be 4"),
        (lambda: ChannelSelectionProblem(4, 2, lambda m: np.zeros((len(m), 3))).evaluate(np.ones((2, 4))),
         r"returned shape \(2, 3\)"),
        (lambda: ChannelSelectionProblem(4, 2, NumpyError()).evaluate(np.ones((2, 5))), "expects genomes of length 4"),
        (lambda: PROBLEMS.get("planted-qp")(n=10, k=11), "k must satisfy"),
        (lambda: PROBLEMS.get("onemax-k")(n=10, k=0), "k must satisfy"),
        (lambda: PROBLEMS.get("random-qp")(n=30).brute_force(), "over the limit"),
    ]
    for fn, pattern in cases:
        with pytest.raises(EvopruneError, match=pattern) as info:
            fn()
        assert "\n" not in str(info.value)


def test_sample_repair_validity_and_no_input_mutation():
    rng = np.random.default_rng(0)
    p = ChannelSelectionProblem(30, 7, NumpyError(), importance=np.arange(30.0))
    pop = p.sample(rng, 20)
    assert pop.shape == (20, 30) and pop.dtype == bool and p.is_valid(pop).all()
    raw = rng.random((20, 30)) < 0.5
    raw0 = raw.copy()
    fixed = p.repair(raw, rng)
    assert np.array_equal(raw, raw0) and (fixed.sum(1) == 7).all()
    imp = ChannelSelectionProblem(30, 7, NumpyError(), importance=np.arange(30.0), repair="exact-k-importance",
                                  init="importance")
    assert (imp.repair(np.ones((1, 30), bool), rng)[0] == (np.arange(30) >= 23)).all()
    assert imp.sample(rng, 50)[:, 15:].mean() > imp.sample(rng, 50)[:, :15].mean()
    free = ChannelSelectionProblem(10, None, NumpyError(), min_keep=2)
    assert free.default_operators["mutation"] == "flip"
    assert (free.repair(np.zeros((3, 10), bool), rng).sum(1) == 2).all()


def test_pickle_and_deepcopy_keep_fitness_weights():
    p = PROBLEMS.get("onemax-k")(n=12, k=4)  # maximisation: weights (+1,)
    q = pickle.loads(pickle.dumps(p))
    g = p.sample(np.random.default_rng(0), 5)
    assert np.array_equal(p.evaluate(g), q.evaluate(g))
    ind = wrap(g[0], p.weights, p.evaluate(g[:1])[0])
    for clone in (copy.deepcopy(ind), pickle.loads(pickle.dumps(ind))):
        assert np.array_equal(clone, ind) and clone.fitness.weights == (1.0,)
        assert clone.fitness.values == ind.fitness.values
        del clone.fitness.values
        clone.fitness.values = (2.0,)
        assert clone.fitness.wvalues == (2.0,)  # still maximising after a clone


def test_toolbox_runs_classic_easimple():
    p = PROBLEMS.get("onemax-k")(n=40, k=10, seed=3)
    random.seed(0)
    tb = p.toolbox(seed=0)
    pop = tb.population(30)
    hof = tools.HallOfFame(3, similar=np.array_equal)
    stats = tools.Statistics(lambda ind: ind.fitness.values[0])
    stats.register("max", np.max)
    pop, log = algorithms.eaSimple(pop, tb, cxpb=0.7, mutpb=0.5, ngen=30, stats=stats, halloffame=hof,
                                   verbose=False)
    assert all(np.asarray(ind).sum() == 10 for ind in pop)
    assert log.select("max")[-1] >= log.select("max")[0]
    assert hof[0].fitness.values[0] >= 0.95 * p.optimum
    # positional operators: the toolbox repairs their children back to k
    tb2 = p.toolbox(seed=1, crossover="one-point", mutation="flip", mutation_kw={"indpb": 0.2})
    a, b = tb2.individual(), tb2.individual()
    tb2.mate(a, b)
    tb2.mutate(a)
    assert a.sum() == 10 and b.sum() == 10
    multi = PROBLEMS.get("biobjective-subset")(n=8).toolbox(seed=0)
    assert multi.select.func is tools.selNSGA2
    ind = multi.individual()
    assert len(multi.evaluate(ind)) == 2


# --------------------------------------------------------------------------------------------------- benchmarks
def test_registered_benchmarks_accept_cli_style_numbers():
    assert {"onemax-k", "planted-qp", "random-qp", "biobjective-subset"} <= set(PROBLEMS.names())
    p = PROBLEMS.get("planted-qp")(n=64.0, k=32, seed=1)
    assert isinstance(p, BenchmarkProblem) and p.n_var == 64 and p.k == 32
    assert PROBLEMS.get("onemax-k")(n="20", k="5").k == 5


@pytest.mark.parametrize("n,k,seed", [(12, 6, 0), (12, 1, 1), (13, 2, 2), (14, 7, 3), (10, 10, 4), (11, 3, 5)])
def test_planted_qp_optimum_is_the_brute_force_optimum(n, k, seed):
    p = PROBLEMS.get("planted-qp")(n=n, k=k, seed=seed)
    g, v = p.brute_force()
    assert v[0] == p.optimum and np.array_equal(g, p.optimal_genome)
    assert p.evaluate(p.optimal_genome)[0, 0] == p.optimum


def test_planted_qp_large_is_exact_and_planted_is_best_locally():
    p = PROBLEMS.get("planted-qp")(n=512, k=256, seed=0)
    assert p.evaluator.Q.dtype == np.float32  # integer entries: float32 scoring is exact here
    rng = np.random.default_rng(0)
    g = p.sample(rng, 50)
    Q = p.evaluator.Q.astype(np.int64)
    exact = np.einsum("ij,ij->i", g.astype(np.int64) @ Q, g.astype(np.int64))
    assert np.array_equal(p.evaluate(g)[:, 0], exact.astype(float))
    from evoprune.operators.mutation import swap_batch

    near = swap_batch(np.repeat(p.optimal_genome[None], 200, 0), rng=rng, n_swaps=3)
    assert (p.evaluate(near)[:, 0] > p.optimum).all()
    assert p.gap(p.optimum) == 0.0


def test_onemax_and_random_qp_brute_force():
    o = PROBLEMS.get("onemax-k")(n=14, k=5, seed=2)
    g, v = o.brute_force()
    assert np.isclose(v[0], o.optimum) and np.array_equal(g, o.optimal_genome)
    r = PROBLEMS.get("random-qp")(n=12, k=5, seed=0)
    Q = r.evaluator.Q
    best = min(sum(Q[i, j] for i in c for j in c) for c in itertools.combinations(range(12), 5))
    assert np.isclose(r.optimum, best) and r.optimal_genome.sum() == 5
    assert np.isclose(r.evaluate(r.optimal_genome)[0, 0], r.optimum)


@pytest.mark.parametrize("cost_max,min_keep,seed", [(1, 1, 0), (5, 1, 1), (3, 0, 2), (4, 2, 3)])
def test_biobjective_true_front_matches_brute_force(cost_max, min_keep, seed):
    p = PROBLEMS.get("biobjective-subset")(n=11, seed=seed, cost_max=cost_max, min_keep=min_keep)
    assert p.objectives == ("cost", "loss") and p.weights == (-1.0, -1.0) and p.k is None
    g, f = p.brute_force()
    assert p.true_front.shape == f.shape and np.allclose(p.true_front, f, atol=1e-9)
    assert np.allclose(p.evaluate(g), f)
    assert (np.diff(p.true_front[:, 0]) > 0).all() and (np.diff(p.true_front[:, 1]) < 0).all()


def test_knapsack_front_unit_costs_is_sorting():
    v = np.array([0.5, 0.1, 0.9, 0.3])
    front = knapsack_front(np.ones(4, int), v, min_keep=1)
    expected_loss = v.sum() - np.cumsum(np.sort(v)[::-1])
    assert np.allclose(front[:, 0], [1, 2, 3, 4]) and np.allclose(front[:, 1], expected_loss)
