"""Indicators: exact hypervolume on hand-computed fronts, non-dominated filtering, curves, aggregation, ranks."""
from __future__ import annotations

import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from evoprune import indicators as I
from evoprune.errors import EvopruneError
from evoprune.strategies.base import Result


# ------------------------------------------------------------------------------------------------- hypervolume
def test_hv_2d_staircase_by_hand():
    # boxes to ref (4, 4): (1,3) -> 3x1, (2,2) adds 2x1, (3,1) adds 1x1
    F = [[1, 3], [2, 2], [3, 1]]
    assert I.hypervolume(F, [4, 4]) == pytest.approx(6.0, abs=0)


def test_hv_ignores_dominated_duplicate_and_outside_points():
    F = [[1, 3], [2, 2], [3, 1], [2.5, 2.5], [2, 2], [5, 0.5], [0.5, 4]]
    # (2.5,2.5) dominated, (2,2) duplicate, (5,0.5) beyond ref in x, (0.5,4) on the ref boundary in y: zero area
    assert I.hypervolume(F, [4, 4]) == pytest.approx(6.0)


def test_hv_single_point_and_empty():
    assert I.hypervolume([[1, 1]], [3, 2]) == pytest.approx(2.0)
    assert I.hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0
    assert I.hypervolume([[5, 5]], [1, 1]) == 0.0


def test_hv_maximised_objective_uses_weights():
    # objective 2 maximised. Minimisation form (f1, -f2): (1,-1), (2,-2), (3,-3), ref (4, -0): a staircase of 6
    F = [[1, 1], [2, 2], [3, 3]]
    assert I.hypervolume(F, ref=[4, 0], weights=(-1, 1)) == pytest.approx(6.0)
    # (1, 3) is cheaper and more valuable than the others: it dominates them, one box of 3 x 3
    assert I.hypervolume([[1, 3], [2, 2], [3, 1]], ref=[4, 0], weights=(-1, 1)) == pytest.approx(9.0)


def test_hv_1d():
    assert I.hypervolume([[0.25], [0.5]], [1.0]) == pytest.approx(0.75)


def test_hv_3d_by_hand():
    ref = [3, 3, 3]
    assert I.hypervolume([[1, 1, 1]], [2, 2, 2]) == pytest.approx(1.0)
    # two boxes of volume 2 overlapping in a unit cube
    assert I.hypervolume([[1, 2, 2], [2, 1, 2]], ref) == pytest.approx(3.0)
    # three boxes of 2, pairwise overlaps 1, triple overlap 1: 6 - 3 + 1
    F = np.array([[1, 2, 2], [2, 1, 2], [2, 2, 1]], dtype=float)
    assert I.hypervolume(F, ref) == pytest.approx(4.0)
    assert I._hv_slicing(F, np.asarray(ref, float)) == pytest.approx(4.0)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.just(2)), elements=st.floats(0, 1)))
def test_hv_2d_matches_moocore(F):
    moocore = pytest.importorskip("moocore")
    ref = np.array([1.1, 1.1])
    assert I.hypervolume(F, ref) == pytest.approx(float(moocore.hypervolume(F, ref=ref)), rel=1e-12, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.just(3)), elements=st.floats(0, 1)))
def test_hv_3d_slicing_matches_moocore(F):
    ref = np.array([1.2, 1.2, 1.2])
    assert I._hv_slicing(F[I.non_dominated_mask(F)], ref) == pytest.approx(I.hypervolume(F, ref), rel=1e-9, abs=1e-12)


def test_hv_bad_reference():
    with pytest.raises(EvopruneError, match="reference point has 3 values"):
        I.hypervolume([[1, 2]], [1, 2, 3])
    with pytest.raises(EvopruneError, match="finite"):
        I.hypervolume([[1, 2]], [np.inf, 2])


# -------------------------------------------------------------------------------------------- non-dominated
def test_non_dominated_by_hand():
    F = np.array([[1, 3], [2, 2], [3, 1], [2.5, 2.5], [2, 2], [1, 4]])
    mask = I.non_dominated_mask(F)
    assert mask.tolist() == [True, True, True, False, False, False]
    assert I.non_dominated_mask(F, keep_duplicates=True).tolist() == [True, True, True, False, True, False]
    assert I.non_dominated(F).tolist() == [0, 1, 2]
    # maximising both: (3,1),(1,4),(2.5,2.5) non-dominated; (2,2) dominated by (2.5,2.5)
    assert set(np.flatnonzero(I.non_dominated_mask(F, weights=(1, 1)))) == {2, 3, 5}


def test_single_objective_front_is_the_best():
    F = np.array([[3.0], [1.0], [2.0], [1.0]])
    assert np.flatnonzero(I.non_dominated_mask(F)).tolist() == [1]
    assert np.flatnonzero(I.non_dominated_mask(F, weights=(1,))).tolist() == [0]


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 15), st.integers(2, 4)),
                  elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])))
def test_non_dominated_matches_brute_force(F):
    dom = np.array([[np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in range(len(F))] for i in range(len(F))])
    expected = ~dom.any(axis=1)
    got = I.non_dominated_mask(F, keep_duplicates=True)
    assert got.tolist() == expected.tolist()


def test_dominates():
    assert I.dominates([1, 1], [1, 2])
    assert not I.dominates([1, 2], [1, 2])
    assert I.dominates([1, 2], [1, 1], weights=(-1, 1))


# ---------------------------------------------------------------------------------------- reference point
def test_reference_point_conventions():
    p = types.SimpleNamespace(weights=(-1.0, -1.0), hv_ref=(1.0, 1.0), true_front=None)
    assert I.reference_point(p).tolist() == [1.0, 1.0]
    p = types.SimpleNamespace(weights=(-1.0, -1.0), true_front=np.array([[0.0, 10.0], [5.0, 0.0]]))
    assert I.reference_point(p).tolist() == pytest.approx([5.5, 11.0])  # nadir + 10 % of the range
    p = types.SimpleNamespace(weights=(-1.0, 1.0), true_front=None)
    ref = I.reference_point(p, fronts=[np.array([[0.0, 10.0], [5.0, 0.0]])])
    assert ref.tolist() == pytest.approx([5.5, -1.0])  # maximised objective: below the worst value
    with pytest.raises(EvopruneError, match="reference point"):
        I.reference_point(types.SimpleNamespace(weights=(-1.0, -1.0)), fronts=[])


# ------------------------------------------------------------------------------------------------- curves
def test_best_so_far_and_best_at():
    F = np.array([[5.0], [3.0], [4.0], [1.0]])
    assert I.best_so_far(F).tolist() == [5, 3, 3, 1]
    assert I.best_so_far(F, weights=(1,)).tolist() == [5, 5, 5, 5]
    assert I.best_at(F, [1, 2, 4, 10]).tolist() == [5, 3, 1, 1]
    assert np.isnan(I.best_at(F, [0])[0])


def test_hypervolume_curve_is_monotone_and_ends_at_the_total():
    rng = np.random.default_rng(0)
    F = rng.random((200, 2))
    ref = [1.1, 1.1]
    at, hv = I.hypervolume_curve(F, ref, n_points=20)
    assert at[-1] == 200 and np.all(np.diff(hv) >= 0)
    assert hv[-1] == pytest.approx(I.hypervolume(F, ref))
    at2, hv2 = I.hypervolume_curve(F, ref, at=[10, 500])
    assert hv2[0] == pytest.approx(I.hypervolume(F[:10], ref)) and hv2[1] == pytest.approx(hv[-1])


def test_optimum_gap():
    assert I.optimum_gap(12.0, 10.0, -1) == 2.0
    assert I.optimum_gap(8.0, 10.0, +1) == 2.0
    assert I.optimum_gap(10.0, 10.0, -1) == 0.0


# -------------------------------------------------------------------------------------------- aggregation
def test_aggregate_mean_std():
    a = I.aggregate([1.0, 2.0, 3.0])
    assert a["mean"] == 2.0 and a["std"] == pytest.approx(1.0) and a["n"] == 3
    assert I.aggregate([4.0])["std"] == 0.0
    assert I.aggregate([])["n"] == 0


def test_rank_table_ties_and_direction():
    scores = {"a": {0: 1.0, 1: 1.0}, "b": {0: 2.0, 1: 0.5}, "c": {0: 1.0, 1: 3.0}}
    low = I.rank_table(scores, higher_is_better=False)
    # seed 0: a,c tie (1.5 each), b 3; seed 1: b 1, a 2, c 3
    assert low["a"]["mean_rank"] == pytest.approx(1.75)
    assert low["b"]["mean_rank"] == pytest.approx(2.0)
    assert low["c"]["mean_rank"] == pytest.approx(2.25)
    assert low["a"]["rank"] == 1  # mean 1.0 beats b's 1.25 and c's 2.0
    high = I.rank_table(scores, higher_is_better=True)
    assert high["c"]["rank"] == 1


def _result(name, seed, best=None, front=None):
    front = np.asarray(front if front is not None else [[best]], dtype=float)
    return Result(strategy=name, problem="p", seed=seed, best_genome=np.zeros(3, bool),
                  best_fitness=front[0], front_genomes=np.zeros((len(front), 3), bool), front_fitness=front,
                  evaluations=10, wall_time=0.1)


def test_summarize_single_objective():
    prob = types.SimpleNamespace(name="p", objectives=("err",), weights=(-1.0,), optimum=0.5)
    res = {"x": [_result("x", 0, 1.0), _result("x", 1, 2.0)], "y": [_result("y", 0, 0.5), _result("y", 1, 0.7)]}
    s = I.summarize(res, prob)
    assert s["primary"] == "best" and not s["higher_is_better"]
    assert s["ranking"] == ["y", "x"]
    assert s["strategies"]["x"]["best"]["mean"] == 1.5
    assert s["strategies"]["y"]["gap"]["mean"] == pytest.approx(0.1)
    text = I.format_table(s)
    assert "y" in text and "gap" in text


def test_summarize_multi_objective_uses_one_reference_point():
    tf = np.array([[0.0, 1.0], [1.0, 0.0]])
    prob = types.SimpleNamespace(name="p", objectives=("a", "b"), weights=(-1.0, -1.0), true_front=tf)
    res = {"good": [_result("good", 0, front=tf)], "bad": [_result("bad", 0, front=[[1.0, 1.0]])]}
    s = I.summarize(res, prob)
    assert s["reference_point"] == pytest.approx([1.1, 1.1])
    assert s["strategies"]["good"]["hv_ratio"]["mean"] == pytest.approx(1.0)
    assert s["ranking"] == ["good", "bad"]
