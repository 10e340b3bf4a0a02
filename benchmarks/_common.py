"""Helpers shared by the benchmark scripts: where the shared data is, machine description, result files."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_manifest_lock = threading.Lock()  # ablation runs its jobs in threads


def shared_cifar10() -> str:
    """Path of the CIFAR-10 JPEG archive (``$EVOPRUNE_SHARED_DATA`` or ``../shared/datasets``)."""
    base = Path(os.environ.get("EVOPRUNE_SHARED_DATA", ROOT.parent / "shared" / "datasets"))
    path = base / "cifar10-jpeg.tar.gz"
    if not path.exists():
        sys.exit(f"error: {path} not found; set EVOPRUNE_SHARED_DATA to the folder holding cifar10-jpeg.tar.gz")
    return str(path)


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def evoprune_cmd(*args: str) -> list:
    return [sys.executable, "-m", "evoprune", *args]


def run(cmd: list, log: Path | None = None) -> str:
    """Run a command, stream its output to ``log`` (if given), return stdout; exit on failure."""
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return proc.stdout


def save(name: str, obj: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(obj, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def record_sha256(root: Path) -> None:
    """Make ``CHECKPOINTS.sha256`` true for ``root`` (a file or folder under ``benchmarks/results``): drop the lines
    of the files at or under it, then add one for each ``.pt`` file there now (none when it is gone)."""
    manifest, base = RESULTS / "CHECKPOINTS.sha256", RESULTS.resolve()
    rel = root.resolve().relative_to(base).as_posix()
    files = [root] if root.is_file() else sorted(root.rglob("*.pt")) if root.is_dir() else []
    with _manifest_lock:
        lines = manifest.read_text().splitlines() if manifest.exists() else []
        kept = [ln for ln in lines if ln.strip() and not (
            (name := ln.split(None, 1)[1].strip()) == rel or name.startswith(rel + "/"))]
        kept += [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.resolve().relative_to(base).as_posix()}"
                 for f in files]
        manifest.write_text("".join(ln + "\n" for ln in kept))


def carried(keep: Path, out: Path) -> Path:
    """Where an interrupted run's folder is kept between sessions (committed, without its plots)."""
    return keep.parent / "partial" / out.name


def prune_run(flags: list, out: Path, keep: Path | None = None, log: Path | None = None) -> dict:
    """One ``evoprune prune`` run into ``out`` (resumed when the folder exists); returns its results.json.

    ``keep``: a committed copy of results.json; when it exists the run is not rerun (a fresh machine, where the
    run folders of an earlier session are gone, continues a benchmark from what was committed). A run that stops
    before its end (``kill -TERM`` of the ``evoprune prune`` process: it saves at its next safe point) leaves its
    resumable folder in :func:`carried`, with its sha256 lines; the next session, on a fresh machine, resumes it
    from there, and the finished run removes it."""
    if keep is not None and keep.exists():
        return json.loads(keep.read_text())
    carry = carried(keep, out) if keep is not None else None
    if carry is not None and carry.is_dir() and not out.exists():
        shutil.copytree(carry, out)
    if not (out / "results.json").exists():
        try:
            run(evoprune_cmd("--quiet", "prune", *flags, "--out", str(out), *(["--resume"] if out.exists() else [])),
                log)
        except SystemExit:
            if carry is not None and out.is_dir():
                shutil.rmtree(carry, ignore_errors=True)
                shutil.copytree(out, carry, ignore=shutil.ignore_patterns("*.png", "*.svg"))
                record_sha256(carry)
            raise
    res = json.loads((out / "results.json").read_text())
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(json.dumps(res, indent=1) + "\n")
    if carry is not None and carry.exists():
        shutil.rmtree(carry)
        record_sha256(carry)
    return res


def step_finetune(model, loaders, steps: int, lr: float, loss_fn, state: Path | None = None) -> None:
    """Exactly ``steps`` optimiser steps of ``loss_fn`` through :func:`evoprune.train.fit`, cosine over them: the
    fine-tune of every network a benchmark compares at a fixed step budget (resumable from ``state``)."""
    import math

    from evoprune.train import TrainConfig, fit

    for p in model.parameters():  # a copy of the teacher inherits its frozen parameters (kd_loss freezes them)
        p.requires_grad_(True)
    cfg = TrainConfig(epochs=max(1, math.ceil(steps / len(loaders.train))), lr=lr, schedule="cosine",
                      max_steps=steps)
    fit(model, loaders, cfg, loss_fn=loss_fn, state_path=None if state is None else str(state), progress=False,
        evaluate_each_epoch=False)
