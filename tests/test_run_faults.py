"""Faults around a run directory: two commands on one --out, the disk filling up during a checkpoint write."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from evoprune.cli import main

TRAIN = ["train", "--model", "vgg11", "--width", "0.125", "--batch-size", "64", "--calib-size", "100"]


def _one_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (r.exit_code, r.output)
    return lines[0]


def test_second_command_on_the_same_out_is_refused_and_nothing_is_touched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{\"keep\": true}\n")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from evoprune.io import prepare_run_dir; "
        f"prepare_run_dir({str(out)!r}, resume=True); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = CliRunner().invoke(main, [*TRAIN, "--epochs", "1", "--out", str(out), "--overwrite"])
        msg = _one_line(r)
        assert "in use by another evoprune command" in msg and str(holder.pid) in msg
        assert (out / "result.json").read_text() == "{\"keep\": true}\n" and sorted(os.listdir(out)) == ["result.json"]
    finally:
        holder.kill()
        holder.wait()
    # once the first one is gone, the directory is free again
    r = CliRunner().invoke(main, ["--quiet", *TRAIN, "--epochs", "1", "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_resume_works(tmp_path, monkeypatch):
    from evoprune import io as eio

    ref = tmp_path / "ref"
    r = CliRunner().invoke(main, ["--quiet", *TRAIN, "--epochs", "2", "--out", str(ref)])
    assert r.exit_code == 0, r.output

    out = tmp_path / "run"
    real = eio.atomic_write_bytes
    writes = {"n": 0}

    def full_disk(path, data):
        if Path(path).name == "train_state.pt":
            writes["n"] += 1
            if writes["n"] == 2:  # the checkpoint after epoch 2: the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(eio, "atomic_write_bytes", full_disk)
    r = CliRunner().invoke(main, ["--quiet", *TRAIN, "--epochs", "2", "--out", str(out)])
    msg = _one_line(r)
    assert os.strerror(errno.ENOSPC) in msg and "train_state.pt" in msg
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["epoch"] == 1  # the previous checkpoint, whole
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # no torn temporary file left behind

    monkeypatch.setattr(eio, "atomic_write_bytes", real)  # room again
    r = CliRunner().invoke(main, ["--quiet", *TRAIN, "--epochs", "2", "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    a = torch.load(ref / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
