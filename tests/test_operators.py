"""Property tests for every built-in operator: valid genomes, cardinality, no hidden input mutation, determinism."""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matmuls: threads only add contention on shared CPUs

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evoprune.errors import EvopruneError
from evoprune.operators import get_operator, names
from evoprune.operators.core import pick_lowest, random_pick
from evoprune.registry import OPERATORS

SETTINGS = settings(max_examples=40, deadline=None)
CROSSOVERS = ("uniform", "one-point", "two-point", "cardinality")
MUTATIONS = ("flip", "swap")


@st.composite
def population(draw, min_n=1, max_n=40, max_p=6):
    """(pop [P, n] bool, k, seed) with every row holding exactly k ones, plus a random-cardinality twin."""
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(1, max_p))
    k = draw(st.integers(0, n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    fixed = np.zeros((p, n), dtype=bool)
    for i in range(p):
        fixed[i, rng.permutation(n)[:k]] = True
    free = rng.random((p, n)) < rng.random()
    return fixed, free, k, seed


def test_every_kind_is_registered_with_attributes():
    expected = {
        "init": {"random-k", "bernoulli", "importance"},
        "crossover": set(CROSSOVERS),
        "mutation": set(MUTATIONS),
        "repair": {"exact-k-random", "exact-k-importance", "min-keep"},
        "selection": {"tournament", "roulette"},
    }
    for kind, ops in expected.items():
        assert ops <= set(names(kind))
        for name in ops:
            op = OPERATORS[f"{kind}.{name}"]
            assert op.kind == kind and isinstance(op.preserves_k, bool) and op.__doc__
            assert get_operator(kind, name) is op and get_operator(kind, f"{kind}.{name}") is op
    assert OPERATORS["crossover.cardinality"].preserves_k and OPERATORS["mutation.swap"].preserves_k
    assert not OPERATORS["crossover.uniform"].preserves_k and not OPERATORS["mutation.flip"].preserves_k


# ---------------------------------------------------------------------------------------------------------- init
@SETTINGS
@given(n=st.integers(1, 60), size=st.integers(0, 8), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_init_operators(n, size, data, seed):
    k = data.draw(st.integers(0, n))
    imp = np.random.default_rng(seed).random(n)
    for name in ("random-k", "bernoulli", "importance"):
        op = get_operator("init", name)
        a = op(size, n, k, rng=np.random.default_rng(seed), importance=imp)
        b = op(size, n, k, rng=np.random.default_rng(seed), importance=imp)
        assert a.shape == (size, n) and a.dtype == bool
        assert np.array_equal(a, b)  # deterministic under a seed
        if op.preserves_k:
            assert (a.sum(1) == k).all()
        free = op(size, n, None, rng=np.random.default_rng(seed), importance=imp)
        assert free.shape == (size, n) and free.dtype == bool


def test_importance_init_prefers_important_channels():
    imp = np.r_[np.zeros(50), np.ones(50) * 10]
    pop = get_operator("init", "importance")(200, 100, 30, rng=np.random.default_rng(0), importance=imp,
                                             temperature=0.1)
    assert (pop.sum(1) == 30).all() and pop[:, 50:].mean() > 0.55 and pop[:, :50].mean() < 0.05
    with pytest.raises(EvopruneError, match="importance"):
        get_operator("init", "importance")(2, 10, 3, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------------ crossover
@SETTINGS
@given(population())
def test_crossover_batch_properties(case):
    fixed, free, k, seed = case
    for name in CROSSOVERS:
        op = get_operator("crossover", name)
        for pop in (fixed, free):
            a, b = pop.copy(), pop[::-1].copy()
            a0, b0 = a.copy(), b.copy()
            c, d = op.batch(a, b, rng=np.random.default_rng(seed))
            c2, d2 = op.batch(a, b, rng=np.random.default_rng(seed))
            assert np.array_equal(a, a0) and np.array_equal(b, b0)  # batch twin leaves its inputs alone
            assert c.shape == a.shape and d.shape == a.shape and c.dtype == bool and d.dtype == bool
            assert np.array_equal(c, c2) and np.array_equal(d, d2)
            # every crossover only redistributes the parents' bits position by position
            assert np.array_equal(c.astype(int) + d, a.astype(int) + b)
            if op.preserves_k:
                assert np.array_equal(c.sum(1), a.sum(1)) and np.array_equal(d.sum(1), b.sum(1))
                assert not (a & b & ~c).any() and not (c & ~(a | b)).any()  # common kept, nothing new


@SETTINGS
@given(population(max_p=2))
def test_crossover_deap_signature_in_place(case):
    fixed, _, k, seed = case
    for name in CROSSOVERS:
        op = get_operator("crossover", name)
        a, b = fixed[0].copy(), fixed[-1].copy()
        out = op(a, b, rng=np.random.default_rng(seed))
        assert isinstance(out, tuple) and len(out) == 2 and out[0] is a and out[1] is b  # DEAP: in place
        c, d = op.batch(fixed[:1], fixed[-1:], rng=np.random.default_rng(seed))
        assert np.array_equal(a, c[0]) and np.array_equal(b, d[0])  # same draws as the batched twin
        if op.preserves_k:
            assert a.sum() == k and b.sum() == k


def test_cardinality_crossover_mixes_parents():
    rng = np.random.default_rng(0)
    a = np.zeros((1, 20), bool)
    b = np.zeros((1, 20), bool)
    a[0, :10] = True
    b[0, 10:] = True
    seen = {tuple(np.flatnonzero(get_operator("crossover", "cardinality").batch(a, b, rng=rng)[0][0]))
            for _ in range(20)}
    assert len(seen) > 10  # the symmetric difference is dealt out at random


# ------------------------------------------------------------------------------------------------------- mutation
@SETTINGS
@given(population(), st.integers(1, 4))
def test_mutation_properties(case, n_swaps):
    fixed, free, k, seed = case
    for name in MUTATIONS:
        op = get_operator("mutation", name)
        for pop in (fixed, free):
            p0 = pop.copy()
            out = op.batch(pop, rng=np.random.default_rng(seed), n_swaps=n_swaps)
            out2 = op.batch(pop, rng=np.random.default_rng(seed), n_swaps=n_swaps)
            assert np.array_equal(pop, p0)
            assert out.shape == pop.shape and out.dtype == bool and np.array_equal(out, out2)
            if op.preserves_k:
                assert np.array_equal(out.sum(1), pop.sum(1))
                ones = pop.sum(1)
                s = np.minimum(n_swaps, np.minimum(ones, pop.shape[1] - ones))
                assert np.array_equal((out != pop).sum(1), 2 * s)  # exactly s swaps per row
            ind = pop[0].copy()
            res = op(ind, rng=np.random.default_rng(seed), n_swaps=n_swaps)
            assert isinstance(res, tuple) and len(res) == 1 and res[0] is ind
            assert np.array_equal(ind, op.batch(pop[:1], rng=np.random.default_rng(seed), n_swaps=n_swaps)[0])


def test_flip_rate_and_swap_uniformity():
    rng = np.random.default_rng(1)
    pop = np.zeros((2000, 50), bool)
    assert abs(get_operator("mutation", "flip").batch(pop, rng=rng).sum(1).mean() - 1.0) < 0.1
    assert get_operator("mutation", "flip").batch(pop, rng=rng, indpb=1.0).all()
    g = np.array([[1, 1, 0, 0, 1, 0]], bool).repeat(6000, 0)
    changed = (get_operator("mutation", "swap").batch(g, rng=rng) != g).mean(0)
    assert np.allclose(changed, 1 / 3, atol=0.03)


# --------------------------------------------------------------------------------------------------------- repair
@SETTINGS
@given(population(), st.data())
def test_repair_properties(case, data):
    _, free, _, seed = case
    n = free.shape[1]
    k = data.draw(st.integers(0, n))
    imp = np.random.default_rng(seed).random(n)
    for name in ("exact-k-random", "exact-k-importance", "min-keep"):
        op = get_operator("repair", name)
        p0 = free.copy()
        out = op(free, rng=np.random.default_rng(seed), k=k, min_keep=k, importance=imp)
        out2 = op(free, rng=np.random.default_rng(seed), k=k, min_keep=k, importance=imp)
        assert np.array_equal(free, p0) and np.array_equal(out, out2)
        assert out.shape == free.shape and out.dtype == bool
        counts = free.sum(1)
        if name == "min-keep":
            assert (out.sum(1) >= k).all() and not (free & ~out).any()
        else:
            assert (out.sum(1) == k).all()
        # rows already valid are untouched; others only lose kept or only gain pruned channels
        valid = (counts >= k) if name == "min-keep" else (counts == k)
        assert np.array_equal(out[valid], free[valid])
        assert not ((counts > k)[:, None] & out & ~free).any() and not ((counts < k)[:, None] & free & ~out).any()
        one = op(free[0], rng=np.random.default_rng(seed), k=k, min_keep=k, importance=imp)
        assert one.shape == (n,)


def test_importance_repair_keeps_the_most_important():
    imp = np.arange(10.0)
    g = np.ones((1, 10), bool)
    out = get_operator("repair", "exact-k-importance")(g, k=3, importance=imp)
    assert np.array_equal(np.flatnonzero(out[0]), [7, 8, 9])
    out = get_operator("repair", "exact-k-importance")(np.zeros((1, 10), bool), k=2, importance=imp)
    assert np.array_equal(np.flatnonzero(out[0]), [8, 9])
    with pytest.raises(EvopruneError, match="importance"):
        get_operator("repair", "exact-k-importance")(g, k=3)
    with pytest.raises(EvopruneError, match="needs the number of channels"):
        get_operator("repair", "exact-k-random")(g, rng=np.random.default_rng(0))


@SETTINGS
@given(population())
def test_random_pick_and_pick_lowest(case):
    _, free, _, seed = case
    rng = np.random.default_rng(seed)
    count = (free.sum(1) * rng.random(len(free))).astype(int)
    sel = random_pick(free, count, rng)
    assert np.array_equal(sel.sum(1), count) and not (sel & ~free).any()
    keys = rng.random(free.shape)
    low = pick_lowest(keys, count)
    for i in range(len(free)):
        assert set(np.flatnonzero(low[i])) == set(np.argsort(keys[i])[: count[i]])


# ------------------------------------------------------------------------------------------------------ selection
@SETTINGS
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30), st.integers(0, 50), st.integers(0, 2**32 - 1))
def test_selection_properties(fit, n_select, seed):
    f = np.array(fit)
    for name in ("tournament", "roulette"):
        op = get_operator("selection", name)
        f0 = f.copy()
        idx = op(f, n_select, rng=np.random.default_rng(seed))
        assert np.array_equal(f, f0)
        assert idx.shape == (n_select,) and idx.dtype.kind in "iu"
        assert ((idx >= 0) & (idx < len(f))).all()
        assert np.array_equal(idx, op(f, n_select, rng=np.random.default_rng(seed)))


def test_selection_pressure_and_roulette_transform():
    rng = np.random.default_rng(0)
    f = np.array([-10.0, -5.0, -1.0, -1.0 + 1e-9])  # weighted fitness: -error
    idx = get_operator("selection", "roulette")(f, 20000, rng=rng)
    share = np.bincount(idx, minlength=4) / 20000
    assert share[0] == 0  # windowing: the worst gets nothing
    assert np.allclose(share, (f - f.min()) / (f - f.min()).sum(), atol=0.02)
    assert np.bincount(get_operator("selection", "roulette")(np.ones(4), 4000, rng=rng), minlength=4).min() > 800
    t = get_operator("selection", "tournament")(f, 20000, rng=rng, tournsize=3)
    assert np.bincount(t, minlength=4)[0] < np.bincount(t, minlength=4)[3]
    inf = get_operator("selection", "tournament")(np.array([-np.inf, 0.0]), 200, rng=rng, tournsize=2)
    assert (inf == 1).mean() > 0.6


# ------------------------------------------------------------------------------------------- lookup and user ops
def test_unknown_and_wrong_kind_names_are_clear():
    with pytest.raises(EvopruneError, match=r"unknown mutation operator 'swp' \(did you mean 'swap'\?\)"):
        get_operator("mutation", "swp")
    with pytest.raises(EvopruneError, match="'uniform' is a crossover operator, not a mutation"):
        get_operator("mutation", "uniform")
    with pytest.raises(EvopruneError, match="unknown operator kind"):
        get_operator("mutator", "swap")
    with pytest.raises(EvopruneError, match="not found"):
        get_operator("mutation", "evoprune.operators.mutation:nope")
    with pytest.raises(EvopruneError, match="does not exist"):
        get_operator("mutation", "no/such/file.py:f")
    for err in (pytest.raises(EvopruneError),):
        with err as info:
            get_operator("mutation", "swp")
        assert "\n" not in str(info.value)


def test_user_operators_are_checked():
    def short(ind, *, rng, **kw):
        return (ind[:-1],)

    def floats(ind, *, rng, **kw):
        return (ind.astype(float) * 0.5,)

    def bare(ind, *, rng, **kw):
        return ind

    def ints(ind, *, rng, **kw):
        return (ind.astype(int),)

    g = np.zeros(8, bool)
    with pytest.raises(EvopruneError, match=r"mutation operator '.*short' returned a genome of shape \(7,\)"):
        get_operator("mutation", short)(g.copy(), rng=np.random.default_rng(0))
    with pytest.raises(EvopruneError, match="dtype float64"):
        get_operator("mutation", floats)(g.copy(), rng=np.random.default_rng(0))
    with pytest.raises(EvopruneError, match="returned a ndarray; it must return a 1-tuple"):
        get_operator("mutation", bare)(g.copy(), rng=np.random.default_rng(0))
    assert get_operator("mutation", ints)(g.copy(), rng=np.random.default_rng(0))[0].dtype.kind == "i"

    def one_child(a, b, *, rng):
        return (a,)

    with pytest.raises(EvopruneError, match="crossover operator .* must return a 2-tuple"):
        get_operator("crossover", one_child)(g.copy(), g.copy(), rng=np.random.default_rng(0))

    def bad_init(size, n, k, *, rng):
        return np.zeros((size, n + 1), bool)

    with pytest.raises(EvopruneError, match=r"init operator .* shape \(3, 6\), expected \(3, 5\)"):
        get_operator("init", bad_init)(3, 5, 2, rng=np.random.default_rng(0))

    def bad_select(fitness, n, *, rng):
        return np.arange(n) + 100

    with pytest.raises(EvopruneError, match="selection operator"):
        get_operator("selection", bad_select)(np.zeros(4), 3, rng=np.random.default_rng(0))


def test_deap_builtins_and_kwargs_filtering():
    import random

    random.seed(0)
    op = get_operator("mutation", "deap.tools:mutFlipBit")  # takes indpb but no rng: rng is filtered out
    ind = np.zeros(100, bool)
    (out,) = op(ind, rng=np.random.default_rng(0), indpb=0.5)
    assert out is ind and 20 < ind.sum() < 80
    # (not cxTwoPoint: its slice swap aliases numpy views, a DEAP caveat for numpy individuals)
    cx = get_operator("crossover", "deap.tools:cxUniform")
    a, b = np.zeros(10, bool), np.ones(10, bool)
    cx(a, b, rng=np.random.default_rng(0), indpb=0.5)
    assert a.sum() + b.sum() == 10 and 0 < a.sum() < 10


def test_user_operator_from_file(tmp_path):
    f = tmp_path / "ops.py"
    f.write_text("def invert(ind, *, rng, **kw):\n    ind[:] = ~ind\n    return (ind,)\n")
    op = get_operator("mutation", f"{f}:invert")
    (out,) = op(np.zeros(4, bool), rng=np.random.default_rng(0))
    assert out.all() and op.preserves_k is False and op.kind == "mutation"
