"""`prune --selector` runs any registered single-objective strategy on the paper's per-unit problem."""
from __future__ import annotations

import json

import pytest
import torch

from prune_helpers import FAST, cli


def test_selector_names_resolve_to_strategies_or_criteria():
    from evoprune.registry import STRATEGIES
    from evoprune.unit_selectors import resolve_strategy_selector

    assert resolve_strategy_selector("random") is None  # the random-mask control stays a criterion
    assert resolve_strategy_selector("l1") is None and resolve_strategy_selector("thinet") is None
    assert resolve_strategy_selector("random-search") is STRATEGIES.get("random")
    assert resolve_strategy_selector("cmaes-1+l") is STRATEGIES.get("cmaes-1+l")


@pytest.mark.parametrize("selector", ["cmaes"])
def test_prune_with_another_strategy_as_selector(tiny_checkpoint, tmp_path, selector):
    out = tmp_path / selector
    r = cli("--json", "prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", "--selector", selector,
            *FAST, "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    for u in res["units"]:  # the same budget as the GA: pop_size x (generations + 1) = 8 x 4
        assert u["ga_evaluations"] <= 32 and "stage2_loss" in u and u["strategy"] in (selector, "random")
    ck = torch.load(out / "model.pt", weights_only=True)
    assert ck["meta"]["pruned"]


def test_multi_objective_selector_is_refused_in_one_line(tiny_checkpoint, tmp_path):
    r = cli("prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", "--selector", "nsga2", *FAST,
            "--out", tmp_path / "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "multi-objective" in r.stderr and "ga, cmaes" in r.stderr and not (tmp_path / "x").exists()


def test_user_strategy_file_as_selector(tiny_checkpoint, tmp_path):
    plug = tmp_path / "mystrat.py"
    plug.write_text(
        "from evoprune.strategies import run_strategy\n"
        "def first_sample(problem, budget, seed, callback=None, **params):\n"
        "    return run_strategy('random', problem, min(budget, 4), seed)\n")
    out = tmp_path / "user"
    r = cli("prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", "--selector",
            f"{plug}:first_sample", *FAST, "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert all(u["ga_evaluations"] <= 4 for u in res["units"])
