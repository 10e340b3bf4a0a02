"""``prune --allocation search``: a strategy chooses the keep ratios on the whole network, seeded with the
sensitivity and uniform plans, within the budget; bad input is one line."""
import json

import pytest
from prune_helpers import FAST, cli


def test_searched_allocation_meets_the_budget(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    r = cli("--quiet", "prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", *FAST,
            "--allocation", "search", "--allocation-budget", "12", "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["final"]["macs_ratio"] <= 0.5 * 1.01
    plan = json.loads((out / "allocation.json").read_text())
    found = plan["search"]
    assert found["evaluations"] <= 12 + 2 and found["strategy"] == "cmaes-1+l" and len(found["seed_errors"]) == 2
    # the allocation is the best feasible genome seen, seeds included: never worse than the seeds on its fitness
    assert found["error"] <= min(e for e in found["seed_errors"] if e <= 1.0) + 1e-12
    assert plan["ratios"] == pytest.approx(found["ratios"])
    log = (out / "log.txt").read_text()
    assert "allocation search:" in log


@pytest.mark.parametrize("args,fragment", [
    (["--allocation", "search", "--max-drop", "0.1"], "needs a budget"),
    (["--allocation", "search", "--allocation-strategy", "nope"], "unknown strategy 'nope'"),
    (["--allocation", "search", "--allocation-strategy", "nsga2"], "multi-objective"),
    (["--allocation-budget", "0"], "--allocation-budget"),
    (["--allocation-finetune-steps", "5"], "add --allocation search"),
    (["--allocation", "search", "--target-macs", "0.5", "--allocation-finalists", "0"], "--allocation-finalists"),
    (["--allocation", "search", "--target-macs", "0.5", "--allocation-finetune-steps", "-1"],
     "--allocation-finetune-steps"),
])
def test_bad_allocation_options_are_one_line(tiny_checkpoint, tmp_path, args, fragment):
    r = cli("prune", "--checkpoint", tiny_checkpoint, *FAST, *args, "--out", tmp_path / "x")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_finalists_are_the_best_distinct_feasible_allocations():
    import numpy as np

    from evoprune.allocation_search import finalists

    counts = np.array([[4, 4], [4, 4], [3, 5], [2, 2], [5, 5], [3, 5]])
    errors = np.array([0.30, 0.20, 0.25, 1.40, 0.40, 0.10])  # row 3 is over budget (1 + violation)
    assert finalists(counts, errors, 3) == [5, 1, 4]  # row 2 repeats row 5's allocation; row 0 repeats row 1's
    assert finalists(counts, errors, 10) == [5, 1, 4]


def test_finetune_rescoring_picks_the_finalist_best_after_fine_tuning(tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    r = cli("--quiet", "prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", *FAST,
            "--allocation", "search", "--allocation-budget", "12", "--allocation-finetune-steps", "3",
            "--allocation-finalists", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    found = json.loads((out / "allocation.json").read_text())["search"]
    fin = found["finalists"]
    assert 1 <= len(fin) <= 3 and len({tuple(f["counts"]) for f in fin}) == len(fin)
    assert [f["error"] for f in fin] == sorted(f["error"] for f in fin)  # the search's best first
    best = min(fin, key=lambda f: f["finetuned_error"])
    assert found["finetuned_error"] == best["finetuned_error"] and found["error"] == best["error"]
    assert found["origin"] == best["origin"]
    res = json.loads((out / "results.json").read_text())
    assert res["final"]["macs_ratio"] <= 0.5 * 1.01

