"""``report.md`` in every prune run directory, and ``evoprune plot`` on a prune run."""
from click.testing import CliRunner

from evoprune.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["--quiet", *map(str, args)])


def test_prune_run_has_a_report_with_its_numbers(pruned_run):
    import json

    out, _ = pruned_run
    text = (out / "report.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert f"{100 * res['final']['test_top1']:.2f} %" in text and f"{res['final']['macs']:,}" in text
    assert all(f"`{u['unit']}`" in text for u in res["units"])
    assert "![keep ratio per unit](keep_ratios.png)" in text and (out / "keep_ratios.png").is_file()
    header = [ln for ln in text.splitlines() if ln.startswith("| step")][0]
    assert header.count("|") == 8  # a well-formed table: 7 columns


def test_plot_redraws_a_prune_run(pruned_run, tmp_path):
    out, _ = pruned_run
    r = invoke("plot", out, "--out", tmp_path / "fig", "--format", "png")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["keep_ratios.png", "sensitivity.png",
                                                                  "trajectory.png"]
    r = invoke("plot", out, "--out", tmp_path / "fig", "--format", "png")  # no silent overwrite
    assert r.exit_code == 2 and "already exists" in r.output
    r = invoke("plot", out)  # in place: the run's own figures only with --overwrite
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = invoke("plot", out, out, "--out", tmp_path / "two")
    assert r.exit_code == 2 and "one prune run" in r.output


def test_compare_run_has_a_report(tmp_path):
    out = tmp_path / "cmp"
    r = invoke("compare", "--problem", "onemax-k", "--param", "n=30", "--param", "k=10", "--strategies",
               "ga,random", "--budget", 120, "--seeds", 2, "--out", out)
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    assert "onemax-k" in text and "`ga`" in text and "`random`" in text and "budget 120" in text
    assert "Best by median" in text and "![ecdf](ecdf.png)" in text
