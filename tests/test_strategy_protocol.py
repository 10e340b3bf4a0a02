"""The strategy protocol: a user strategy written against it (examples/user_strategy.py) runs from the CLI, is
offered only the options it takes, and is refused in one line where it does not fit."""
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from evoprune.cli import main
from evoprune.strategies import BudgetedEvaluator, accepted, check_compatible, get_strategy, make_result, \
    register_strategy, strategy_accepts

ROOT = Path(__file__).resolve().parents[1]
USER = f"{ROOT / 'examples' / 'user_strategy.py'}:one_plus_lambda"
ONEMAX = ["--problem", "onemax-k", "--param", "n=40", "--param", "k=12"]


def invoke(*args):
    return CliRunner().invoke(main, ["--quiet", *map(str, args)])


def test_user_strategy_runs_from_the_cli_without_checkpoint_options(tmp_path):
    out = tmp_path / "run"
    r = invoke("search", *ONEMAX, "--strategy", USER, "--strategy-param", "offspring=6", "--budget", 150,
               "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "result.json").read_text())
    assert res["evaluations"] == 150 and res["params"] == {"offspring": 6}
    rows = (out / "evaluations.csv").read_text().strip().splitlines()
    assert len(rows) == 151  # header + every evaluation the budget allowed
    from evoprune.runs import CHECKPOINT_NAME

    assert not list(out.glob(f"{CHECKPOINT_NAME}*"))  # nothing checkpointed: it takes no checkpoint path


def test_user_strategy_in_compare_beside_builtins(tmp_path):
    r = invoke("compare", *ONEMAX, "--strategies", f"{USER},ga,random", "--budget", 120, "--seeds", 2,
               "--out", tmp_path / "cmp")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert len(summary["strategies"]) == 3


def test_mismatches_are_one_line_errors(tmp_path):
    r = invoke("compare", "--problem", "biobjective-subset", "--param", "n=12", "--strategies", f"{USER},nsga2",
               "--budget", 50, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "single-objective" in r.output and "Traceback" not in r.output, r.output
    r = invoke("search", *ONEMAX, "--strategy", USER, "--strategy-param", "sigma=2", "--budget", 50,
               "--out", tmp_path / "y")
    assert r.exit_code == 2 and "does not take sigma" in r.output, r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_register_strategy_metadata_and_accepted_options():
    @register_strategy("test-proto-any", objectives="any", defaults={"width": 3})
    def s(problem, budget, seed, callback=None, **params):
        ev = BudgetedEvaluator(problem, budget)
        ev.evaluate(problem.sample(np.random.default_rng(seed), budget))
        return make_result("test-proto-any", problem, seed, ev, 0.0, params)

    assert get_strategy("test-proto-any") is s and s.objectives == "any" and s.defaults == {"width": 3}
    assert strategy_accepts(s, "width") and strategy_accepts(s, "checkpoint") and not strategy_accepts(s, "depth")
    user = get_strategy(USER)
    offered = {"checkpoint": "x", "checkpoint_every": 3, "map_fn": map, "offspring": 2}
    assert accepted(user, offered) == {"offspring": 2}

    from evoprune.registry import PROBLEMS

    p = PROBLEMS.get("onemax-k")(n=20, k=5, seed=0)
    check_compatible("test-proto-any", s, p)
    res = s(p, 30, 0)
    assert res.evaluations == 30 and res.history_fitness.shape == (30, 1)
    assert res.best_fitness[0] == res.history_fitness.max()  # onemax-k is maximised
