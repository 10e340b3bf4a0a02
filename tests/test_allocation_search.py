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
])
def test_bad_allocation_options_are_one_line(tiny_checkpoint, tmp_path, args, fragment):
    r = cli("prune", "--checkpoint", tiny_checkpoint, *FAST, *args, "--out", tmp_path / "x")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
