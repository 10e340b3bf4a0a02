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


def test_prune_prints_its_result_table(pruned_run):
    out, summary = pruned_run
    log = (out / "log.txt").read_text()
    row = [ln for ln in log.splitlines() if ln.startswith("pruned ")][0]
    assert f"{100 * summary['final_test_top1']:.2f} %" in row and f"{summary['final_macs']:,}" in row


def test_train_run_has_a_report_and_its_curves_replot(tiny_checkpoint, tmp_path):
    import json

    run = tiny_checkpoint.parent
    text = (run / "report.md").read_text()
    summ = json.loads((run / "summary.json").read_text())
    assert text.startswith("# evoprune train") and f"{100 * summ['test_top1']:.2f} %" in text
    assert f"{summ['params']:,}" in text and "![loss and accuracy per epoch](curves.png)" in text
    assert (run / "curves.png").is_file()
    epochs = [ln for ln in text.splitlines() if ln.startswith("| 1 |")]
    assert len(epochs) == 1 and epochs[0].count("|") == 8  # epoch, lr, 2 train, 2 test columns, time
    r = invoke("plot", run, "--out", tmp_path / "fig", "--format", "png,svg")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["curves.png", "curves.svg"]
    r = invoke("plot", run, "--format", "png")
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_sensitivity_run_has_a_report(tiny_checkpoint, tmp_path):
    import json

    out = tmp_path / "sens"
    r = invoke("sensitivity", "--checkpoint", tiny_checkpoint, "--data", "mini-cifar10", "--batch-size", 32,
               "--bn-batches", 1, "--eval-batches", 1, "--ratios", "0.75,0.5", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    sens = json.loads((out / "sensitivity.json").read_text())
    text = (out / "report.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert [ln.split("`")[1] for ln in rows] == sens["units"]
    assert all(f"{100 * a:.2f} %" in row for row, accs in zip(rows, sens["acc"]) for a in accs)
    assert "order" in text and "![sensitivity curves](sensitivity.png)" in text
    r = invoke("plot", out, "--out", tmp_path / "fig", "--format", "png")
    assert r.exit_code == 0 and (tmp_path / "fig" / "sensitivity.png").is_file(), r.output


def test_search_run_has_a_report(tmp_path):
    import json

    out = tmp_path / "s"
    r = CliRunner().invoke(main, ["--json", "search", "--problem", "onemax-k", "--param", "n=30", "--param", "k=10",
                                  "--budget", "120", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    text = (out / "report.md").read_text()
    assert "`ga`" in text and "budget 120" in text and f"{summary['gap']:.6g}" in text


def test_text_tables_align_every_column():
    import pytest

    from evoprune.textable import format_table

    text = format_table(["unit", "channels", "acc"], [["features.0", 8, "0.500"], ["a.very.long.unit.name", 128,
                                                                                      "0.25"]])
    lines = text.splitlines()
    assert len({len(ln) for ln in lines}) == 1  # right-aligned last column: every line ends at the same place
    assert lines[1].split() == ["-" * len("a.very.long.unit.name"), "-" * len("channels"), "-" * 5]
    assert lines[3].startswith("a.very.long.unit.name       128")
    assert format_table(["a", "b"], [["x"]], align="ll").splitlines()[-1] == "x"
    with pytest.raises(ValueError, match="one 'l' or 'r'"):
        format_table(["a", "b"], [], align="x")
    with pytest.raises(ValueError, match="more cells"):
        format_table(["a"], [["1", "2"]])


def test_markdown_tables_pad_escape_and_align():
    import pytest

    from evoprune.textable import markdown_table

    lines = markdown_table(["run", "acc", "MACs"], [["ours", "81.7 %", "3.27x"], ["a|b"]], align="lrr")
    assert lines == ["| run | acc | MACs |", "|---|---:|---:|", "| ours | 81.7 % | 3.27x |", "| a\\|b |  |  |"]
    assert markdown_table(["a"], [])[1] == "|---|"
    with pytest.raises(ValueError, match="one 'l' or 'r'"):
        markdown_table(["a", "b"], [], align="l")
    with pytest.raises(ValueError, match="more cells"):
        markdown_table(["a"], [["1", "2"]])
