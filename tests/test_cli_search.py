"""``evoprune search`` / ``compare`` / ``plot`` on benchmark problems, and their bad-input cases (exit 2, one line)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from evoprune.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["--quiet", *map(str, args)])


def assert_user_error(res, *fragments):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for frag in fragments:
        assert frag in lines[0], lines[0]


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


ONEMAX = ["--problem", "onemax-k", "--param", "n=30", "--param", "k=10"]
BIO = ["--problem", "biobjective-subset", "--param", "n=12"]


# ------------------------------------------------------------------------------------------------------- search
def test_search_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    res = invoke("search", *ONEMAX, "--strategy", "cmaes", "--budget", 203, "--seed", 1, "--out", out)
    assert res.exit_code == 0, res.output
    for name in ("result.json", "evaluations.csv", "logbook.csv", "config.json", "env.json", "strategy_state.json"):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 203 and result["strategy"] == "cmaes" and result["objectives"] == ["value"]
    ev = rows(out / "evaluations.csv")
    assert len(ev) == 203 and all(len(r["genome"]) == 30 and r["genome"].count("1") == 10 for r in ev)
    assert max(float(r["value"]) for r in ev) == pytest.approx(result["best_fitness"][0])
    assert int(rows(out / "logbook.csv")[-1]["evals"]) == 203
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["problem_params"] == {"n": 30, "k": 10} and cfg["problem_info"]["k"] == 10
    assert "python" in json.loads((out / "env.json").read_text())


def test_search_json_summary_and_shortcut_flags(tmp_path):
    res = CliRunner().invoke(main, ["--json", "search", *BIO, "--strategy", "nsga2", "--pop-size", 12,
                                    "--crossover", "two-point", "--mutation", "flip", "--budget", 120,
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["evaluations"] == 120 and summary["hv"] > 0 and 0 < summary["hv_ratio"] <= 1
    params = json.loads((tmp_path / "r" / "result.json").read_text())["params"]
    assert params["crossover"] == "two-point" and params["pop_size"] == 12


def test_existing_run_is_refused_then_overwritten(tmp_path):
    out = tmp_path / "run"
    assert invoke("search", *ONEMAX, "--strategy", "random", "--budget", 50, "--out", out).exit_code == 0
    assert_user_error(invoke("search", *ONEMAX, "--strategy", "random", "--budget", 50, "--out", out),
                      "already exists", "--overwrite")
    res = invoke("search", *ONEMAX, "--strategy", "random", "--budget", 60, "--out", out, "--overwrite")
    assert res.exit_code == 0 and json.loads((out / "result.json").read_text())["evaluations"] == 60


def test_interrupted_search_resumes_to_the_same_result(tmp_path, monkeypatch):
    args = [*BIO, "--strategy", "nsga2", "--pop-size", 12, "--budget", 150, "--checkpoint-every", 1]
    assert invoke("search", *args, "--out", tmp_path / "full").exit_code == 0

    import evoprune.strategies as strategies

    real = strategies.run_strategy

    def interrupted(name, problem, budget, seed, callback=None, **kw):
        def stop(gen, g, f):
            if gen == 4:
                raise KeyboardInterrupt
        return real(name, problem, budget, seed, stop, **kw)

    monkeypatch.setattr(strategies, "run_strategy", interrupted)
    res = invoke("search", *args, "--out", tmp_path / "cut")
    assert res.exit_code == 130 and "--resume" in res.stderr
    assert not (tmp_path / "cut" / "result.json").exists()
    monkeypatch.setattr(strategies, "run_strategy", real)
    assert_user_error(invoke("search", *args, "--budget", 999, "--out", tmp_path / "cut", "--resume"), "budget")
    assert invoke("search", *args, "--out", tmp_path / "cut", "--resume").exit_code == 0
    full, cut = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("full", "cut"))
    for key in ("front_fitness", "front_genomes", "best_fitness", "evaluations", "logbook"):
        assert full[key] == cut[key], key
    assert (tmp_path / "full" / "evaluations.csv").read_text() == (tmp_path / "cut" / "evaluations.csv").read_text()


# ------------------------------------------------------------------------------------------------------ compare
@pytest.fixture(scope="module")
def mo_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "bio"
    res = invoke("compare", *BIO, "--strategies", "nsga2,mo-cmaes,random", "--budget", 160, "--seeds", 2,
                 "--strategy-param", "nsga2.pop_size=16", "--strategy-param", "mo-cmaes.pop_size=8",
                 "--out", out)
    assert res.exit_code == 0, res.output
    return out


def test_compare_layout_and_summary(mo_compare):
    for s in ("nsga2", "mo-cmaes", "random"):
        for k in (0, 1):
            d = mo_compare / s / f"seed{k}"
            assert json.loads((d / "result.json").read_text())["evaluations"] == 160
            assert (d / "evaluations.csv").is_file() and (d / "logbook.csv").is_file()
    summary = json.loads((mo_compare / "summary.json").read_text())
    assert summary["primary"] == "hv" and summary["higher_is_better"]
    assert sorted(summary["ranking"]) == ["mo-cmaes", "nsga2", "random"]
    assert len(summary["reference_point"]) == 2 and len(summary["runs"]) == 6
    hv = summary["strategies"]["nsga2"]["hv"]
    per_seed = [r["hv"] for r in summary["runs"] if r["strategy"] == "nsga2"]
    assert hv["mean"] == pytest.approx(np.mean(per_seed)) and hv["std"] == pytest.approx(np.std(per_seed, ddof=1))
    table = rows(mo_compare / "summary.csv")
    assert [r["strategy"] for r in table] == summary["ranking"] and table[0]["rank"] == "1"
    assert {"hv_mean", "hv_std", "hv_ratio_mean", "mean_rank"} <= set(table[0])


def test_compare_single_objective_with_gap_and_resume(tmp_path):
    out = tmp_path / "so"
    args = ["compare", *ONEMAX, "--strategies", "ga,cmaes,random", "--budget", 120, "--seeds", "0,2", "--out", out]
    assert invoke(*args).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["primary"] == "best" and "gap" in summary["strategies"]["cmaes"]
    assert (out / "cmaes" / "seed2" / "result.json").is_file()
    before = (out / "random" / "seed2" / "evaluations.csv").read_text()
    (out / "summary.json").unlink()
    assert invoke(*args, "--resume").exit_code == 0  # finished runs are loaded, not re-run
    assert (out / "random" / "seed2" / "evaluations.csv").read_text() == before
    assert json.loads((out / "summary.json").read_text())["ranking"] == summary["ranking"]
    assert all(r["evaluations"] == 120 for r in summary["runs"]) and len(summary["runs"]) == 6


def test_default_strategy_follows_the_objectives(tmp_path):
    res = CliRunner().invoke(main, ["--json", "search", *BIO, "--budget", 100, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["strategy"] == "nsga2"
    assert_user_error(invoke("search", "--budget", 10, "--out", tmp_path / "x"), "--problem is required")


def test_config_file_values_under_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('problem = "onemax-k"\nparam = ["n=20", "k=5"]\nbudget = 90\nstrategy = "random"\n')
    out = tmp_path / "r"
    assert invoke("search", "--config", cfg, "--budget", 70, "--out", out).exit_code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 70 and result["strategy"] == "random" and len(result["best_genome"]) == 20


# --------------------------------------------------------------------------------------------------------- plot
def test_plot_fronts_and_convergence(mo_compare, tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"keep all": {"cost": 30, "loss": 0.0}, "sweep": [[5, 4.0], [10, 2.0], [20, 0.5]]}))
    out = tmp_path / "plots"
    res = invoke("plot", mo_compare, "--reference", ref, "--out", out)
    assert res.exit_code == 0, res.output
    for name in ("fronts.png", "fronts.svg", "convergence.png", "convergence.svg"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_user_error(invoke("plot", mo_compare, "--out", out), "already exists")


def test_plot_library_shows_accuracy_for_error_objectives(tmp_path):
    from evoprune.plot import plot_convergence, plot_fronts, save_figure

    fronts = {"nsga2": np.array([[0.10, 0.3], [0.08, 0.6]]), "random": np.array([[0.2, 0.4]])}
    fig = plot_fronts(fronts, ["error", "macs"], reference={"unpruned": np.array([[0.06, 1.0]])}, accuracy=True,
                      axes=(1, 0))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "macs" and ax.get_ylabel() == "accuracy (%)"
    ys = np.concatenate([line.get_ydata() for line in ax.lines])
    assert np.isclose(ys, 94.0).any() and ys.max() <= 100
    fig2 = plot_convergence({"a": (np.arange(1, 4), np.array([[3.0, 2, 1], [4, 2, 2]]))}, ylabel="best error",
                            optimum=0.5)
    paths = save_figure(fig2, tmp_path / "conv", ["svg"])
    assert paths[0].read_text().lstrip().startswith("<?xml")


def test_plot_single_objective_run(tmp_path):
    run = tmp_path / "run"
    assert invoke("search", *ONEMAX, "--strategy", "random", "--budget", 40, "--out", run).exit_code == 0
    res = invoke("plot", run, "--format", "png")
    assert res.exit_code == 0, res.output
    assert (run / "plots" / "convergence.png").is_file() and not (run / "plots" / "fronts.png").exists()
    assert_user_error(invoke("plot", run, "--kind", "fronts", "--out", tmp_path / "p2"), "one objective")


# --------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, fragments", [
    (["search", *ONEMAX, "--strategy", "no-such", "--budget", 10], ["unknown strategy 'no-such'"]),
    (["search", "--problem", "no-such-problem", "--strategy", "random"], ["unknown problem 'no-such-problem'"]),
    (["search", *BIO, "--strategy", "nsga2", "--pop-size", 40, "--budget", 10], ["budget 10 is smaller"]),
    (["search", *ONEMAX, "--strategy", "nsga2", "--budget", 500], ["has one objective"]),
    (["search", *ONEMAX, "--strategy", "mo-cmaes", "--budget", 500], ["has one objective"]),
    (["search", *BIO, "--strategy", "cmaes", "--budget", 500], ["single-objective"]),
    (["search", *ONEMAX, "--param", "oops", "--strategy", "random"], ["KEY=VALUE"]),
    (["search", *ONEMAX, "--param", "bogus=3", "--strategy", "random"], ["bogus"]),
    (["search", *ONEMAX, "--strategy", "cmaes", "--selection", "roulette"], ["does not use --selection"]),
    (["search", *ONEMAX, "--strategy", "cmaes", "--strategy-param", "sigmaa=1"], ["does not take sigmaa"]),
    (["search", *BIO, "--strategy", "nsga2", "--crossover", "nope"], ["unknown crossover operator 'nope'"]),
    (["search", *ONEMAX, "--strategy", "random", "--model", "vgg11"], ["--model"]),
    (["compare", *BIO, "--strategies", "nsga2,cmaes", "--budget", 100], ["'cmaes' is single-objective"]),
    (["compare", *ONEMAX, "--strategies", "random,nope", "--budget", 100], ["unknown strategy 'nope'"]),
    (["compare", *ONEMAX, "--strategies", "random", "--seeds", "x"], ["--seeds"]),
    (["compare", *ONEMAX, "--strategies", "random", "--strategy-param", "ga.pop_size=4"], ["not among"]),
])
def test_bad_input_exits_2_with_one_line(args, fragments, tmp_path):
    out = tmp_path / "never"
    assert_user_error(invoke(*args, "--out", out), *fragments)
    assert not out.exists()  # validated before the run directory is made


def test_plot_bad_inputs(tmp_path, mo_compare):
    assert_user_error(invoke("plot", tmp_path), "holds no runs")
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps({"x": {"cost": 1}}))
    assert_user_error(invoke("plot", mo_compare, "--reference", bad, "--out", tmp_path / "o"), "lacks loss")
    assert_user_error(invoke("plot", mo_compare, "--format", "gif", "--out", tmp_path / "o"), "--format")


def test_search_workers_processes_matches_serial(tmp_path):
    """--workers processes:2 evaluates population chunks in worker processes; the run equals the serial one."""
    import json
    import subprocess
    import sys

    outs = {}
    for spec in ("serial", "processes:2"):
        out = tmp_path / spec.replace(":", "_")
        r = subprocess.run([sys.executable, "-m", "evoprune", "--json", "search", "--problem", "onemax-k",
                            "--param", "n=40", "--param", "k=10", "--strategy", "ga", "--budget", "300",
                            "--workers", spec, "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs[spec] = json.loads((out / "result.json").read_text())
    assert outs["serial"]["best_genome"] == outs["processes:2"]["best_genome"]
    assert outs["serial"]["evaluations"] == outs["processes:2"]["evaluations"] == 300


@pytest.mark.parametrize("spec", ["0", "processes:0", "threads:4"])
def test_search_bad_workers_exit_2(tmp_path, spec):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "evoprune", "search", "--problem", "onemax-k", "--workers", spec,
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
