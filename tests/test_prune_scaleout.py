"""Scale-out of `evoprune prune` (issue 10): stage-2 checks and sensitivity curves on a map backend give the
same result as in-process; the pipeline's fine-tune steps run under torchrun (DDP, Gloo on CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from evoprune.fitness import CalibrationData, ReconstructionFitness, TwoStage, build_evaluator
from evoprune.models import create_model
from evoprune.parallel import make_map
from evoprune.pruning.space import PruningSpace

from prune_helpers import FAST, cli


def _batches(n, b, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


@pytest.fixture(scope="module")
def unit_setup():
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25).eval()
    calib = CalibrationData(_batches(2, 16, 1), _batches(2, 8, 2))
    space = PruningSpace(model)
    return model, space, calib, space.units[2]


def _two_stage(unit_setup, backend):
    model, space, calib, u = unit_setup
    s1 = ReconstructionFitness.from_space(space, u, calib, model=model)
    s2 = build_evaluator("network", space, u, calib, model=model, bn_batches=2)
    return TwoStage(s1, s2, top_k=3, backend=backend)


def test_twostage_on_processes_matches_in_process(unit_setup):
    n = unit_setup[3].channels
    rng = np.random.default_rng(0)
    pops = [torch.as_tensor(rng.random((12, n)) < 0.5) for _ in range(3)]
    ref = _two_stage(unit_setup, None)
    want = [ref.evaluate(p) for p in pops]
    with make_map("processes:2") as backend:
        ts = _two_stage(unit_setup, backend)
        got = [ts.evaluate(p) for p in pops]
        finals = ts.verify(pops[-1][:5])
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    assert torch.equal(finals, ref.verify(pops[-1][:5]))
    assert ts.stage2_evaluations == ref.stage2_evaluations == len(ref.verified) > 0
    assert ts.budget()["stage2_evaluations"] == ts.stage2_evaluations


def _results(out):
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def serial_run(pruned_run):
    return pruned_run[0]  # the same options in one process, no backend


def test_prune_with_process_workers_matches_serial(serial_run, tiny_checkpoint, tmp_path):
    out = tmp_path / "procs"
    r = cli("--quiet", "prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", *FAST, "--out", out,
            "--workers", "processes:2")
    assert r.returncode == 0, r.stderr
    a, b = _results(serial_run), _results(out)
    assert a["pruned"] == b["pruned"]
    assert a["final"] == b["final"]
    assert a["extra"]["sensitivity"]["acc"] == b["extra"]["sensitivity"]["acc"]
    ga = [u for u in b["units"] if "stage2_evaluations" in u]
    assert ga and all(u["stage2_evaluations"] > 0 for u in ga)
    for ua, ub in zip(a["units"], b["units"]):
        assert ua.get("stage2_loss") == ub.get("stage2_loss")


def test_prune_bad_workers_is_a_clear_error(tiny_checkpoint, tmp_path):
    r = cli("prune", "--checkpoint", tiny_checkpoint, *FAST, "--out", tmp_path / "x", "--workers", "0")
    assert r.returncode == 2 and "at least 1 worker" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
    r = cli("sensitivity", "--checkpoint", tiny_checkpoint, "--data", "mini-cifar10", "--out", tmp_path / "y",
            "--workers", "dask", "--scheduler", "tcp://127.0.0.1:1")
    assert r.returncode == 2 and "Traceback" not in r.stderr


dist = pytest.importorskip("torch.distributed")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no Gloo")
def test_prune_under_torchrun(serial_run, tiny_checkpoint, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m", "evoprune",
           "prune", "--checkpoint", str(tiny_checkpoint), "--target-macs", "0.5", *map(str, FAST), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _results(serial_run), _results(out)
    # the first unit is chosen before any fine-tuning, on the same network: the same channels
    first = a["order"][0]
    assert b["order"] == a["order"] and b["pruned"][first] == a["pruned"][first]
    assert b["final"]["macs"] == pytest.approx(a["final"]["macs"], rel=0.05)
    assert abs(b["final"]["macs_ratio"] / 0.5 - 1) <= 0.05
    # one voice: rank 0 alone logs (each unit once in the run's log)
    log = (out / "log.txt").read_text()
    assert log.count(f"] {first}:") == 1 and log.count("done: test top-1") == 1
    assert json.loads((out / "finetune_metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
