"""`evoprune train` under torchrun (DDP, Gloo on CPU): runs, only rank 0 writes and talks, and its loss curve matches
one process; plus the helpers that make it work (torchrun env, data sharding, rank-0 setup)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evoprune.errors import EvopruneError

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with Gloo is not available")

TRAIN = ["train", "--model", "vgg11", "--width", "0.125", "--data", "mini-cifar10", "--epochs", "2",
         "--batch-size", "64", "--device", "cpu", "--seed", "0"]
RUN_FILES = {"config.json", "env.json", "metrics.jsonl", "model.pt", "summary.json", "train_state.pt", "report.md",
             "curves.png"}


def torchrun(args, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone",
           "-m", "evoprune", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def metrics(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------- helpers
def test_torchrun_env(monkeypatch):
    from evoprune.train import torchrun_env

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert torchrun_env() is None  # one process: the plain single-process path
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == (3, 4, 1)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(EvopruneError):
        torchrun_env()


def test_without_torchrun_nothing_changes(monkeypatch):
    from evoprune.train import distributed, on_rank0

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed(torch.device("cpu")) as (device, rank, world):
        assert (device.type, rank, world) == ("cpu", 0, 1)
        assert not dist.is_initialized()
        assert on_rank0(lambda: 42) == 42


def test_shard_loader_splits_each_epoch():
    from evoprune.data import BatchLoader
    from evoprune.train import shard_loader

    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()
    y = torch.arange(40)
    full = BatchLoader(x, y, 8, (0.0,), (1.0,), shuffle=True, seed=3, drop_last=True)
    shards = [shard_loader(full, r, 2) for r in range(2)]
    assert shard_loader(full, 0, 1) is full
    assert [s.batch_size for s in shards] == [4, 4] and len(shards[0]) == len(shards[1]) == len(full)
    for epoch in (0, 1):
        seen = []
        for s in shards:
            s.set_epoch(epoch)
            seen.append(torch.cat([yb for _, yb in s]))
        assert not set(seen[0].tolist()) & set(seen[1].tolist())  # disjoint shards ...
        assert sorted(torch.cat(seen).tolist()) == list(range(40))  # ... covering the epoch
    with pytest.raises(EvopruneError, match="global batch"):
        shard_loader(BatchLoader(x, y, 1, (0.0,), (1.0,)), 0, 2)


# ------------------------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_match_one(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from evoprune.cli import main
    from evoprune.models.checkpoint import load_model

    two = tmp_path / "two"
    r = torchrun([*TRAIN, "--out", str(two)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    # only rank 0 wrote: exactly the run files, one metrics record per epoch (not one per rank and epoch) ...
    assert {p.name for p in two.iterdir()} == RUN_FILES
    hist2 = metrics(two)
    assert [m["epoch"] for m in hist2] == [1, 2]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and json.loads((two / "env.json").read_text())["world_size"] == 2
    # ... and only rank 0 spoke: one banner, one line per epoch, one result line
    assert r.stdout.count("training vgg11") == 1 and "on 2 processes (DDP, gloo)" in r.stdout
    assert r.stdout.count("epoch   1 ") == r.stdout.count("epoch   2 ") == r.stdout.count("test top-1") == 1
    model, _ = load_model(str(two / "model.pt"))  # a plain model (no DDP "module." prefix) that loads and runs
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

    # the same command without torchrun (in-process, one thread like each torchrun worker)
    one = tmp_path / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = CliRunner().invoke(main, ["--quiet", *TRAIN, "--out", str(one)])
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    hist1 = metrics(one)
    assert json.loads((one / "summary.json").read_text())["world_size"] == 1

    # same recipe (global batch 64, same steps and LR schedule), different batch composition: same trend
    assert [m["step"] for m in hist1] == [m["step"] for m in hist2]
    for hist in (hist1, hist2):
        assert hist[1]["train_loss"] < hist[0]["train_loss"] - 0.1
        assert hist[1]["test_top1"] > 0.2  # well above chance (0.1)
    assert abs(hist1[-1]["train_loss"] - hist2[-1]["train_loss"]) < 0.15
    assert abs(hist1[-1]["test_loss"] - hist2[-1]["test_loss"]) < 0.2


@pytest.mark.slow  # a second torchrun start (~15 s on 2 busy cores); the happy path above runs always
def test_torchrun_rank0_error_reaches_every_rank(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    r = torchrun([*TRAIN, "--epochs", "1", "--out", str(out)], timeout=180)
    assert r.returncode != 0
    # rank 0's one-line error, printed by both ranks: rank 1 got it from rank 0 instead of hanging or being killed
    assert (r.stdout + r.stderr).count("already exists; pass --resume") == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_torchrun_finetune_with_kd(tmp_path, tiny_checkpoint):
    """`evoprune finetune` (KD from a teacher) under torchrun: runs, rank 0 alone writes, the model reloads."""
    import json

    out = tmp_path / "ft"
    r = torchrun(["finetune", "--checkpoint", str(tiny_checkpoint), "--teacher", str(tiny_checkpoint),
                  "--data", "mini-cifar10", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
                  "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loss"] == "kd" and 0.0 <= summary["test_top1_after"] <= 1.0
    assert len([l for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]) == 1  # one writer
    from evoprune.models.checkpoint import load_model

    load_model(str(out / "model.pt"))
