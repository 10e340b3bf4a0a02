"""Kill it, resume it, get the same answer: ``search`` (GA), ``train`` and ``prune`` killed at three points each and
resumed with ``--resume`` end with results identical to an uninterrupted run.

Each test starts the uninterrupted reference run in the background and, meanwhile, the run that gets killed: a real
``python -m evoprune`` subprocess, killed with SIGKILL (``kill -9``: no handler, no cleanup; and SIGTERM once for
``train``, whose handler saves a mid-epoch state) at points drawn from a seeded RNG: "when the N-th checkpoint/log
line has appeared, plus a random delay", then resumed, killed again, ..., and finally resumed to the end. A kill
that lands after the process already finished fails the test (the kill points leave ample work after them).

Compared: GA genomes and the whole evaluation history byte for byte, result/logbook files; training weights
bit-identical, test accuracy/loss and per-epoch metrics equal; pruning weights bit-identical, results, allocation,
sensitivity and fine-tune logs equal. Only wall-clock fields (``*time_s``) and the run's own bookkeeping (``env.json``,
``log.txt``, the ``resume`` flag in ``config.json``) may differ.

Subprocesses run with one thread each (the same number in the reference and in the resumed runs: float reductions
must happen in the same order to be bit-identical).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # end-to-end runs (about 1-2 min for the file); `make test` runs them, test-fast not


def _env(tmp: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "EVOPRUNE_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    return env


class Runner:
    """Starts ``python -m evoprune ARGS`` subprocesses (output to log files) and kills them on cue."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.tmp, self.env, self.rng = tmp, _env(tmp), random.Random(seed)
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.n = 0
        self.procs: List[subprocess.Popen] = []

    def start(self, args: List[str], quiet: bool = True) -> subprocess.Popen:
        self.n += 1
        out = open(self.logs / f"{self.n}.out", "w")
        err = open(self.logs / f"{self.n}.err", "w")
        flags = ["--quiet"] if quiet else []
        p = subprocess.Popen([sys.executable, "-m", "evoprune", *flags, *map(str, args)], stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL, env=self.env, cwd=str(self.tmp))
        out.close()
        err.close()
        p.err_path = self.logs / f"{self.n}.err"  # type: ignore[attr-defined]
        p.out_path = self.logs / f"{self.n}.out"  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def finish(self, p: subprocess.Popen, timeout: float = 400) -> None:
        rc = p.wait(timeout=timeout)
        err = Path(p.err_path).read_text()  # type: ignore[attr-defined]
        assert rc == 0, f"exit {rc}: {err[-3000:]}"
        assert "Traceback" not in err, err[-3000:]

    def run(self, args: List[str]) -> None:
        self.finish(self.start(args))

    def kill_when(self, args: List[str], ready: Callable[[], bool], delay: float, sig: int = signal.SIGKILL,
                  timeout: float = 400) -> int:
        """Start a run, wait until ``ready()``, wait ``delay`` seconds more, send ``sig``; return the exit code."""
        p = self.start(args)
        t0 = time.monotonic()
        while not ready():
            if p.poll() is not None:
                err = Path(p.err_path).read_text()  # type: ignore[attr-defined]
                raise AssertionError(f"run ended (exit {p.returncode}) before its kill point: {err[-2000:]}")
            if time.monotonic() - t0 > timeout:
                p.kill()
                raise AssertionError("kill point never reached")
            time.sleep(0.01)
        time.sleep(delay)
        if p.poll() is not None:
            raise AssertionError(f"run ended (exit {p.returncode}) {delay:.2f}s after its kill point; move it earlier")
        p.send_signal(sig)
        return p.wait(timeout=60)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def runner(tmp_path, request):
    r = Runner(tmp_path, seed=sum(map(ord, request.node.name)))
    yield r
    r.cleanup()


@pytest.fixture(scope="module")
def module_runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("resume"), seed=20240917)
    yield r
    r.cleanup()


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _jsonl(path: Path) -> List[Any]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _strip_times(obj: Any) -> Any:
    """Drop wall-clock fields (``time_s``, ``wall_time_s``, ``select_time_s``, ...) at any depth."""
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if not (k.endswith("time_s") or k == "time")}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


def _assert_same_weights(a: Path, b: Path) -> None:
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["meta"] == cb["meta"]
    sa, sb = ca["state_dict"], cb["state_dict"]
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"tensor '{k}' differs"


def _gen_of(state_json: Path) -> int:
    try:
        return int(json.loads(state_json.read_text())["state"]["gen"])
    except (OSError, ValueError, KeyError):
        return -1


# ------------------------------------------------------------------------------------------------------------- GA
GA_ARGS = ["search", "--problem", "planted-qp", "--strategy", "ga", "--budget", "20000", "--seed", "3",
           "--checkpoint-every", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def ga_runs(module_runner):
    """The uninterrupted reference and the run killed three times (kill -9) then resumed, side by side."""
    runner = module_runner
    ref, run = runner.tmp / "ga_ref", runner.tmp / "ga_run"
    ref_proc = runner.start(GA_ARGS + ["--out", ref])
    # three kill points: generation numbers (seeded; this seed runs ~130 generations), plus a random extra delay
    targets = sorted(runner.rng.sample(range(5, 80), 3))
    state = run / "strategy_state.json"
    for i, g in enumerate(targets):
        args = GA_ARGS + ["--out", run] + (["--resume"] if i else [])
        rc = runner.kill_when(args, lambda: _gen_of(state) >= g, delay=runner.rng.uniform(0.0, 0.05))
        assert rc == -signal.SIGKILL
        assert not (run / "result.json").exists()
    runner.run(GA_ARGS + ["--out", run, "--resume"])
    runner.finish(ref_proc)
    return ref, run, targets


def test_ga_search_killed_three_times_equals_uninterrupted(ga_runs):
    ref, run, targets = ga_runs
    a, b = _json(ref / "result.json"), _json(run / "result.json")
    assert a["params"]["generations_run"] >= targets[-1] + 40  # the kills left plenty of work after them
    assert a["best_genome"] == b["best_genome"] and a["front_genomes"] == b["front_genomes"]
    assert _strip_times(a) == _strip_times(b)
    for name in ("evaluations.csv", "logbook.csv", "config.json"):
        assert (ref / name).read_bytes() == (run / name).read_bytes(), name
    assert a["evaluations"] == len((run / "evaluations.csv").read_text().splitlines()) - 1


def test_search_kill_before_result_json_resumes(ga_runs, runner, tmp_path):
    """result.json is written last: a kill -9 after the CSVs but before it (simulated on a copy of a finished run)
    leaves a run that --resume completes to the same files."""
    import shutil

    ref, done, _ = ga_runs
    run = tmp_path / "run"
    shutil.copytree(done, run)
    (run / "result.json").unlink()
    (run / "logbook.csv").write_text("torn")
    runner.run(GA_ARGS + ["--out", run, "--resume"])
    for name in ("evaluations.csv", "logbook.csv"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    assert _strip_times(_json(run / "result.json")) == _strip_times(_json(ref / "result.json"))


def test_search_sigterm_stops_gracefully_and_resumes(ga_runs, runner, tmp_path):
    """SIGTERM while the GA runs: it checkpoints, exits 130 with one line, and --resume finishes identically."""
    ref, _, _ = ga_runs
    run = tmp_path / "run"
    args = GA_ARGS + ["--out", run]
    rc = runner.kill_when(args, lambda: (run / "strategy_state.json").exists(), delay=0.2, sig=signal.SIGTERM)
    assert rc == 130, rc
    err = Path(runner.procs[-1].err_path).read_text()  # type: ignore[attr-defined]
    assert "interrupted" in err and "Traceback" not in err, err
    assert not (run / "result.json").exists()
    runner.run(args + ["--resume"])
    assert _strip_times(_json(run / "result.json")) == _strip_times(_json(ref / "result.json"))


# ---------------------------------------------------------------------------------------------------------- train
TRAIN_ARGS = ["train", "--model", "vgg11", "--width", "0.125", "--epochs", "3", "--data", "mini-cifar10",
              "--device", "cpu", "--seed", "0"]


def test_train_killed_three_times_equals_uninterrupted(runner, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref_proc = runner.start(TRAIN_ARGS + ["--out", ref], quiet=False)  # in parallel with the interrupted chain
    rng = runner.rng
    metrics = run / "metrics.jsonl"

    def lines() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    # 1. kill -9 early in epoch 1 (config.json is written just before training starts): nothing saved yet
    rc = runner.kill_when(TRAIN_ARGS + ["--out", run], lambda: (run / "config.json").exists(),
                          delay=rng.uniform(0.0, 0.3))
    assert rc == -signal.SIGKILL
    # 2. SIGTERM during epoch 2: the handler saves a mid-epoch state (batch > 0) and exits 130. The delay is a
    # random fraction of epoch 1's training time, so that it lands inside epoch 2 on a fast or a slow machine.
    t_epoch = [0.0]

    def epoch1_done() -> bool:
        if lines() < 1:
            return False
        t_epoch[0] = float(_jsonl(metrics)[0]["time_s"])
        return True

    p = runner.start(TRAIN_ARGS + ["--out", run, "--resume"])
    while not epoch1_done():
        assert p.poll() is None, Path(p.err_path).read_text()  # type: ignore[attr-defined]
        time.sleep(0.01)
    time.sleep(rng.uniform(0.15, 0.5) * t_epoch[0])
    assert p.poll() is None, "run ended before the SIGTERM"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 130, Path(p.err_path).read_text()  # type: ignore[attr-defined]
    assert "--resume" in Path(p.err_path).read_text()  # type: ignore[attr-defined]
    st = torch.load(run / "train_state.pt", weights_only=True)
    assert st["epoch"] == 1 and st["batch"] > 0, (st["epoch"], st["batch"])  # a mid-epoch state
    # 3. kill -9 during epoch 3 (the state on disk is the one from the end of epoch 2)
    rc = runner.kill_when(TRAIN_ARGS + ["--out", run, "--resume"], lambda: lines() >= 2,
                          delay=rng.uniform(0.1, 0.7) * t_epoch[0])
    assert rc == -signal.SIGKILL
    runner.run(TRAIN_ARGS + ["--out", run, "--resume"])
    runner.finish(ref_proc)
    # not --quiet, but stdout/stderr are files: per-epoch lines, no progress bars
    assert Path(ref_proc.err_path).read_text() == ""  # type: ignore[attr-defined]
    assert "epoch   3" in Path(ref_proc.out_path).read_text() and "\r" not in Path(ref_proc.out_path).read_text()

    _assert_same_weights(ref / "model.pt", run / "model.pt")
    a, b = _json(ref / "summary.json"), _json(run / "summary.json")
    for key in ("test_top1", "test_top5", "test_loss", "params", "macs", "epochs"):
        assert a[key] == b[key], key
    assert _strip_times(a["history"]) == _strip_times(b["history"])
    # the log has each epoch once, with the same numbers (also the epoch split by SIGTERM)
    assert _strip_times(_jsonl(ref / "metrics.jsonl")) == _strip_times(_jsonl(run / "metrics.jsonl"))
    ca, cb = _json(ref / "config.json"), _json(run / "config.json")
    assert {k: v for k, v in ca.items() if k not in ("out", "resume")} == \
           {k: v for k, v in cb.items() if k not in ("out", "resume")}


# ---------------------------------------------------------------------------------------------------------- prune
def _prune_args(ckpt: Path) -> List[str]:
    return ["prune", "--checkpoint", ckpt, "--data", "mini-cifar10", "--target-macs", "0.5", "--selector", "l1",
            "--finetune-steps", "2", "--finetune-epochs", "1", "--batch-size", "64", "--bn-batches", "1",
            "--eval-batches", "1", "--calib-batches", "1", "--device", "cpu", "--seed", "0"]


def _done(run: Path) -> int:
    try:
        return int(_json(run / "state" / "progress.json")["done"])
    except (OSError, ValueError, KeyError):
        return 0


def _n_units(run: Path) -> int:
    try:
        return len(_json(run / "allocation.json")["order"])
    except (OSError, ValueError, KeyError):
        return 10**9


def _tiny_checkpoint(path: Path) -> Path:
    """An untrained VGG-11 width 0.125 for mini-cifar10, saved as 'train' would (the point is resuming, not
    accuracy; no training needed)."""
    from evoprune.data import load_dataset
    from evoprune.models import create_model
    from evoprune.models.checkpoint import save_checkpoint

    data = load_dataset("mini-cifar10")
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 3, "width": 0.125}
    save_checkpoint(str(path), create_model("vgg11", **kwargs), dict(data.meta(), arch="vgg11", model_kwargs=kwargs))
    return path


@pytest.fixture(scope="module")
def prune_runs(module_runner):
    runner = module_runner
    ckpt = _tiny_checkpoint(runner.tmp / "tiny.pt")
    ref, run = runner.tmp / "prune_ref", runner.tmp / "prune_run"
    args = _prune_args(ckpt)
    ref_proc = runner.start(args + ["--out", ref])
    rng = runner.rng
    # 1. during or right after the sensitivity pass
    rc = runner.kill_when(args + ["--out", run], lambda: (run / "sensitivity.json").exists(),
                          delay=rng.uniform(0.0, 0.3))
    assert rc == -signal.SIGKILL
    # 2. after a random number of pruned units (at least one left)
    k = rng.randint(1, 4)
    rc = runner.kill_when(args + ["--out", run, "--resume"], lambda: _done(run) >= min(k, _n_units(run) - 1),
                          delay=rng.uniform(0.0, 0.2))
    assert rc == -signal.SIGKILL
    # 3. during the final fine-tune (one short epoch)
    rc = runner.kill_when(args + ["--out", run, "--resume"], lambda: _done(run) >= _n_units(run),
                          delay=rng.uniform(0.0, 0.3))
    assert rc == -signal.SIGKILL and not (run / "results.json").exists()
    runner.run(args + ["--out", run, "--resume"])
    runner.finish(ref_proc)
    return ref, run, args


def test_prune_killed_three_times_equals_uninterrupted(prune_runs):
    ref, run, _ = prune_runs
    assert _n_units(ref) >= 3
    _assert_same_weights(ref / "model.pt", run / "model.pt")
    assert _strip_times(_json(ref / "results.json")) == _strip_times(_json(run / "results.json"))
    for name in ("allocation.json", "sensitivity.json", "prune_config.json", "state/progress.json"):
        assert _strip_times(_json(ref / name)) == _strip_times(_json(run / name)), name
    assert _strip_times(_jsonl(ref / "finetune_metrics.jsonl")) == _strip_times(_jsonl(run / "finetune_metrics.jsonl"))
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))  # noqa: E731
    assert files(ref) == files(run)


def test_prune_kill_right_after_sensitivity_json_resumes(prune_runs, runner, tmp_path):
    """kill -9 just after sensitivity.json was written (simulated on a copy of a finished run: later files gone)."""
    import shutil

    ref, done, args = prune_runs
    run = tmp_path / "run"
    shutil.copytree(done, run)
    for name in ("sensitivity.csv", "sensitivity.png", "sensitivity.svg"):
        (run / name).unlink(missing_ok=True)
    runner.run(args + ["--out", run, "--resume"])
    assert (run / "sensitivity.csv").read_bytes() == (ref / "sensitivity.csv").read_bytes()
    assert (run / "sensitivity.png").exists() and (run / "sensitivity.svg").exists()


NSGA2_ARGS = ["search", "--problem", "biobjective-subset", "--param", "n=60", "--strategy", "nsga2", "--pop-size",
              "20", "--budget", "30000", "--seed", "1", "--checkpoint-every", "5", "--device", "cpu"]


def test_nsga2_sigterm_stops_gracefully_and_resumes(runner, tmp_path):
    """SIGTERM inside NSGA-II (the shared checkpointer of the non-GA strategies): checkpoint, exit 130, and
    --resume ends exactly where an uninterrupted run ends."""
    ref = tmp_path / "ref"
    ref_proc = runner.start(NSGA2_ARGS + ["--out", ref])
    run = tmp_path / "run"
    rc = runner.kill_when(NSGA2_ARGS + ["--out", run], lambda: (run / "strategy_state.json").exists(), delay=0.2,
                          sig=signal.SIGTERM)
    assert rc == 130, rc
    assert not (run / "result.json").exists()
    runner.run(NSGA2_ARGS + ["--out", run, "--resume"])
    runner.finish(ref_proc)
    assert _strip_times(_json(run / "result.json")) == _strip_times(_json(ref / "result.json"))
    assert (run / "evaluations.csv").read_bytes() == (ref / "evaluations.csv").read_bytes()
