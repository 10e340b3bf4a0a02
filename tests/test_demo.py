"""The demo's inputs: the bundled network is checked before anything runs; an existing --out is never replaced."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from click.testing import CliRunner

from evoprune import demo as demo_mod
from evoprune.cli import main


def one_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.exit_code, r.output)
    return lines[0]


def test_bundled_network_is_the_shipped_file():
    assert hashlib.sha256(demo_mod.BUNDLED.read_bytes()).hexdigest() == demo_mod.BUNDLED_SHA256


def test_damaged_bundled_network_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "net.pt"
    shutil.copyfile(demo_mod.BUNDLED, bad)
    with open(bad, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    monkeypatch.setattr(demo_mod, "BUNDLED", bad)
    monkeypatch.setattr(demo_mod.bundled_network, "__defaults__", (bad, demo_mod.BUNDLED_SHA256))
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d")])
    assert "damaged" in one_line(r) and "--train" in r.stderr
    assert not (tmp_path / "d").exists()


def test_existing_out_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert "already exists" in one_line(r)
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_impossible_target_is_one_line(tmp_path):
    assert "fraction" in one_line(CliRunner().invoke(main, ["demo", "--target-macs", "1.5", "--out",
                                                            str(tmp_path / "x")]))


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch):
    from evoprune import demo_prune

    # the whole path at a third of the demo's search and fine-tune (its numbers are the README's, not this test's)
    monkeypatch.setattr(demo_prune, "SETTINGS", dict(demo_prune.SETTINGS, generations=8, finetune_epochs=1,
                                                     finetune_steps=5))
    r = CliRunner().invoke(main, ["--quiet", "demo", "--out", str(tmp_path / "d"), "--budget", "24"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "pareto.png").exists() and (tmp_path / "d" / "summary.json").exists()
