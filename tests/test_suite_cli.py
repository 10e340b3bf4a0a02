"""The suite and per-layer problem from the CLI: same results as Python, bad input in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from evoprune.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.exit_code, r.output)
    return lines[0]


@pytest.fixture(scope="module")
def suite_file(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "tiny.npz"
    r = invoke("--quiet", "suite", "export", "--checkpoint", tiny_checkpoint, "--units", "features.0,features.4",
               "--ratios", "0.5", "--calib-batches", "1", "--batch-size", "32", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def test_suite_run_from_the_cli_equals_python(suite_file, tmp_path):
    from evoprune.suite import load_suite
    from evoprune.suite_bench import run_suite

    r = invoke("--json", "suite", "run", "--suite", suite_file, "--strategies", "ga,random", "--strategy-param",
               "pop_size=10", "--budgets", "40,120", "--seeds", "2", "--out", tmp_path / "cli")
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout.strip().splitlines()[-1])["by_budget"]
    py = run_suite(load_suite(suite_file), ["ga", "random"], [40, 120], [0, 1], tmp_path / "py",
                   params={"ga": {"pop_size": 10}, "random": {"pop_size": 10}}, log=lambda m: None)["by_budget"]
    for b in ("40", "120"):
        for s in ("ga", "random"):
            assert cli[b][s]["mean_gap"] == pytest.approx(py[b]["strategies"][s]["mean_gap"], abs=0)


def test_user_strategy_runs_on_the_suite_from_the_cli(suite_file, tmp_path):
    r = invoke("suite", "run", "--suite", suite_file, "--strategies", "examples/compare_strategies.py:hillclimb,ga",
               "--budgets", "50", "--seeds", "2", "--out", tmp_path / "u")
    assert r.exit_code == 0, r.output
    assert "examples/compare_strategies.py:hillclimb" in (tmp_path / "u" / "gaps.csv").read_text()


def test_suite_bad_input_is_one_line(suite_file, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert "damaged" in one_line(invoke("suite", "run", "--suite", bad, "--out", tmp_path / "a"))
    assert "positive integers" in one_line(invoke("suite", "run", "--suite", suite_file, "--budgets", "10,-5",
                                                  "--out", tmp_path / "b"))
    assert "positive integers" in one_line(invoke("suite", "run", "--suite", suite_file, "--budgets", "ten",
                                                  "--out", tmp_path / "c"))
    assert "unknown suite" in one_line(invoke("suite", "run", "--suite", "nosuch", "--out", tmp_path / "d"))
    assert "has no instance" in one_line(invoke("suite", "run", "--suite", suite_file, "--instances", "x@1",
                                                "--out", tmp_path / "e"))
    assert not any((tmp_path / d).exists() for d in "abcde")
    # a finished run is not reused with other settings, and --overwrite with a bad parameter destroys nothing
    ok = invoke("--quiet", "suite", "run", "--suite", suite_file, "--strategies", "random", "--budgets", "20",
                "--seeds", "2", "--out", tmp_path / "f")
    assert ok.exit_code == 0, ok.output
    assert "other settings" in one_line(invoke("suite", "run", "--suite", suite_file, "--strategies", "random",
                                               "--budgets", "40", "--seeds", "2", "--out", tmp_path / "f", "--resume"))
    assert "pop_sizee" in one_line(invoke("suite", "run", "--suite", suite_file, "--strategies", "random",
                                          "--strategy-param", "pop_sizee=3", "--out", tmp_path / "f", "--overwrite"))
    assert (tmp_path / "f" / "summary.json").exists()


def test_channels_problem_bad_input_is_one_line(tiny_checkpoint, tmp_path):
    base = ["search", "--problem", "channels", "--checkpoint", tiny_checkpoint, "--budget", "20",
            "--param", "calib_batches=1", "--param", "batch_size=32"]
    assert "unknown unit 'nope'" in one_line(invoke(*base, "--param", "unit=nope", "--out", tmp_path / "a"))
    assert "keep must be a fraction" in one_line(invoke(*base, "--param", "keep=1.5", "--out", tmp_path / "b"))
    assert "fitness must be one of" in one_line(invoke(*base, "--param", "fitness=magic", "--out", tmp_path / "c"))


def test_channels_problem_cli_equals_python(tiny_checkpoint, tmp_path):
    from evoprune.strategies import run_strategy
    from evoprune.checkpoint_problems import channel_problem

    r = invoke("--json", "search", "--problem", "channels", "--checkpoint", tiny_checkpoint, "--param",
               "unit=features.4", "--param", "keep=0.5", "--param", "calib_batches=1", "--param", "batch_size=32",
               "--strategy", "ga", "--budget", "60", "--pop-size", "10", "--seed", "3", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout.strip().splitlines()[-1])
    p = channel_problem(str(tiny_checkpoint), unit="features.4", keep=0.5, calib_batches=1, batch_size=32)
    res = run_strategy("ga", p, 60, 3, pop_size=10)
    assert np.allclose(cli["best_fitness"], res.best_fitness, rtol=0, atol=0)


def test_compare_writes_rank_sum_tests_and_ecdf(tmp_path):
    import csv

    r = invoke("--quiet", "compare", "--problem", "planted-qp", "--param", "n=24", "--strategies", "ga,random",
               "--budget", "150", "--seeds", "3", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "c" / "tests.csv")))
    assert {row["strategy"] for row in rows} == {"ga", "random"} and sum(row["best"] == "True" for row in rows) == 1
    assert (tmp_path / "c" / "ecdf.png").exists()
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["statistics"]["metric"] == "best"
