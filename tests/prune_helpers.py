"""Shared by the pipeline tests: fast `evoprune prune` settings and a subprocess CLI runner."""
import subprocess
import sys

FAST = ["--data", "mini-cifar10", "--batch-size", "32", "--bn-batches", "1", "--eval-batches", "1",
        "--calib-batches", "1", "--pop-size", "8", "--generations", "3", "--finalists", "2", "--stage2-top-k", "1",
        "--stage2-every", "2", "--finetune-steps", "1", "--finetune-epochs", "1", "--device", "cpu"]


def cli(*args, timeout=600, env=None):
    """``python -m evoprune ARGS`` in a subprocess; ``env``: extra environment variables."""
    import os

    return subprocess.run([sys.executable, "-m", "evoprune", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})
