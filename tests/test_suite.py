"""Benchmark suites, the swap local search, the memetic/seeded GA and the statistics behind the suite reports."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.pruning.greedy import greedy_removal
from evoprune.strategies.local_search import swap_descent
from evoprune.suite import Instance, Suite, exhaustive_optimum, improve_best_known, load_suite


def random_q(n: int, seed: int = 0, rank: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, rank))
    q = a @ a.T + 0.05 * np.eye(n)
    return q / q.sum()


def err(q, mask):
    r = (~mask).astype(float)
    return float(r @ q @ r)


def small_suite(n=12, seeds=(0, 1)) -> Suite:
    insts = []
    for s in seeds:
        q = random_q(n, s)
        for ratio in (0.25, 0.5):
            k = int(n * ratio)
            inst = Instance(f"u{s}@{ratio}", f"u{s}", ratio, n, k, q)
            improve_best_known(inst, {"exhaustive": exhaustive_optimum(inst)})
            insts.append(inst)
    return Suite("tiny", insts, {"model_sha256": "x"})


# ------------------------------------------------------------------------------------------------ local search
def test_swap_descent_reaches_a_swap_local_optimum_with_exact_incremental_errors():
    q = random_q(40, 3)
    rng = np.random.default_rng(0)
    start = np.zeros(40, bool)
    start[rng.choice(40, 15, replace=False)] = True
    mask, value, used = swap_descent(q, start, rng=rng)
    assert mask.sum() == 15 and value == pytest.approx(err(q, mask), rel=1e-12) and used > 0
    assert value <= err(q, start)
    for a, b in itertools.product(np.flatnonzero(mask), np.flatnonzero(~mask)):  # no improving swap is left
        m2 = mask.copy()
        m2[a], m2[b] = False, True
        assert err(q, m2) >= value - 1e-12


def test_swap_descent_reports_every_neighbour_and_respects_its_budget():
    q = random_q(30, 1)
    start = greedy_removal(q, 10)
    rows = []

    def on_row(g, e):
        rows.append((g.copy(), e.copy()))
        return False

    mask, value, used = swap_descent(q, start, max_evals=47, on_row=on_row)
    assert used == 47 == sum(len(e) for _, e in rows)
    for g, e in rows:  # the incremental deltas are the true errors of the neighbours
        assert np.all(g.sum(1) == 10)
        assert np.allclose(e, [err(q, m) for m in g], rtol=1e-10)


def test_swap_descent_keeps_per_block_counts():
    q = random_q(16, 2)
    start = np.zeros(16, bool)
    start[[0, 1, 8, 9]] = True
    mask, _, _ = swap_descent(q, start, groups=2)
    assert mask[:8].sum() == 2 and mask[8:].sum() == 2


# ------------------------------------------------------------------------------------------------ seeded / memetic GA
def test_greedy_seeding_starts_from_the_greedy_and_memetic_ga_counts_every_evaluation():
    from evoprune.strategies.ga import ga

    inst = Instance("x", "x", 0.5, 48, 24, random_q(48, 5))
    g_err = err(inst.Q, greedy_removal(inst.Q, 24))
    r = ga(inst.problem(), 60, seed=0, pop_size=20, seeding="greedy")
    assert r.best_fitness[0] <= g_err + 1e-15  # the greedy itself is in generation 0
    r = ga(inst.problem(), 3000, seed=0, pop_size=20, local_search="swap")
    assert r.evaluations == len(r.history_fitness) <= 3000
    assert np.all(r.history_genomes.sum(1) == 24)
    assert np.allclose(r.history_fitness[:, 0], inst.error(r.history_genomes), rtol=1e-9)
    assert r.params["local_search"] == "swap"


def test_memetic_options_are_refused_where_they_cannot_work():
    from evoprune.problems import planted_qp
    from evoprune.strategies.ga import ga

    with pytest.raises(EvopruneError, match="stage-1 quadratic"):
        ga(planted_qp(n=16), 100, local_search="swap")
    with pytest.raises(EvopruneError, match="seeding"):
        ga(planted_qp(n=16), 100, seeding="magic")
    inst = Instance("x", "x", 0.5, 16, 8, random_q(16))
    with pytest.raises(EvopruneError, match="ls_evals"):
        ga(inst.problem(), 100, local_search="swap", ls_evals=0)


# ------------------------------------------------------------------------------------------------ suite files
def test_suite_roundtrip_and_numpy_only_loading(tmp_path):
    s = small_suite()
    path = s.save(tmp_path / "s.npz")
    t = load_suite(path)
    assert [i.name for i in t] == [i.name for i in s] and t.meta == s.meta
    for a, b in zip(s, t):
        assert np.array_equal(a.Q, b.Q) and np.array_equal(a.best_mask, b.best_mask) and a.best_value == b.best_value
    # loading needs numpy only: torch cannot even be imported here
    code = ("import sys; sys.modules['torch'] = None; from evoprune.suite import load_suite; "
            f"s = load_suite({str(path)!r}); print(len(s), s[0].error(s[0].best_mask)[0] == s[0].best_value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == [str(len(s)), "True"], out.stderr


def test_exhaustive_best_known_is_the_optimum():
    inst = small_suite()[0]
    best = min(err(inst.Q, np.isin(np.arange(inst.n), c))
               for c in itertools.combinations(range(inst.n), inst.k))
    assert inst.best_value == pytest.approx(best, rel=1e-12) and inst.gap(best) == pytest.approx(0.0, abs=1e-12)


def test_damaged_or_foreign_suite_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(EvopruneError, match="damaged"):
        load_suite(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(EvopruneError, match="not an evoprune suite"):
        load_suite(other)
    s = small_suite()
    p = s.save(tmp_path / "v.npz")
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    import json

    h = json.loads(bytes(arrays["header"]).decode())
    h["version"] = 99
    arrays["header"] = np.frombuffer(json.dumps(h).encode(), dtype=np.uint8)
    np.savez(tmp_path / "new.npz", **arrays)
    with pytest.raises(EvopruneError, match="version 99"):
        load_suite(tmp_path / "new.npz")
    with pytest.raises(EvopruneError, match="has no instance"):
        s["nope"]


# ------------------------------------------------------------------------------------------------ statistics
def test_holm_matches_its_definition():
    from evoprune.stats import holm

    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])


def test_friedman_ranks_and_critical_difference():
    from evoprune.stats import friedman

    table = np.array([[1.0, 2.0, 3.0]] * 6 + [[2.0, 1.0, 3.0]] * 2)
    fr = friedman(table, ["a", "b", "c"])
    assert fr["avg_ranks"] == {"a": 1.25, "b": 1.75, "c": 3.0}
    assert fr["p_value"] < 0.01 and fr["critical_difference"] == pytest.approx(2.343 * np.sqrt(3 * 4 / (6 * 8)))


def test_runtime_ecdf_counts_targets_when_first_reached():
    from evoprune.stats import runtime_ecdf

    traces = [(np.array([1.0, 10.0]), np.array([0.5, 0.0])), (np.array([1.0]), np.array([0.05]))]
    y = runtime_ecdf(traces, [0.1, 0.0], np.array([1, 5, 10, 100]))
    # pairs: (run0, 0.1) at 10, (run0, 0) at 10, (run1, 0.1) at 1, (run1, 0) never
    assert np.allclose(y, [0.25, 0.25, 0.75, 0.75])


def test_run_suite_reports_gaps_tests_ranks_and_ecdf(tmp_path):
    from evoprune.suite_bench import format_gap_table, run_suite

    s = small_suite()
    rep = run_suite(s, ["ga", "random", "ga"], [50, 300], [0, 1, 2], tmp_path / "r",
                    params={"ga+ls": {"local_search": "swap", "pop_size": 10}, "ga": {"pop_size": 10}},
                    labels=["ga", "random", "ga+ls"], log=lambda m: None)
    for f in ("runs.csv", "tests.csv", "gaps.csv", "summary.json", "ecdf.png", "cd_300.png", "report.md"):
        assert (tmp_path / "r" / f).exists(), f
    report = (tmp_path / "r" / "report.md").read_text()
    ga_row = [ln for ln in report.splitlines() if ln.startswith("| `ga` |")][0]
    assert f"{100 * rep['by_budget']['300']['strategies']['ga']['mean_gap']:.3f} %" in ga_row
    assert "![runtime ECDF](ecdf.png)" in report
    by = rep["by_budget"]["300"]["strategies"]
    assert set(by) == {"ga", "random", "ga+ls"} and all(v["mean_gap"] >= -1e-12 for v in by.values())
    assert rep["by_budget"]["300"]["strategies"]["ga"]["mean_gap"] <= rep["by_budget"]["50"]["strategies"]["ga"]["mean_gap"]
    assert "gap@300" in format_gap_table(rep)
    again = run_suite(s, ["ga", "random", "ga"], [50, 300], [0, 1, 2], tmp_path / "r",
                      params={"ga+ls": {"local_search": "swap", "pop_size": 10}, "ga": {"pop_size": 10}},
                      labels=["ga", "random", "ga+ls"], log=lambda m: None)  # from the stored traces
    assert again["by_budget"] == rep["by_budget"]
