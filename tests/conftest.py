import os

# numpy's OpenBLAS reads this at import (torch imports numpy): 2 BLAS threads on a shared 2-core machine make small
# matrix products ~20x slower
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# one thread: tiny test models gain nothing from two, and CLI subprocess tests run beside the main process
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path:
    return Path(os.environ.get("EVOPRUNE_SHARED_DATA", ROOT.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # decoded-dataset cache per test session, never the user's home
    monkeypatch.setenv("EVOPRUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A VGG-11 width 0.125 trained for 1 epoch on the bundled mini set (seconds)."""
    from click.testing import CliRunner

    from evoprune.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    r = CliRunner().invoke(main, ["--quiet", "train", "--model", "vgg11", "--width", "0.125", "--epochs", "1",
                                  "--data", "mini-cifar10", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out / "model.pt"


@pytest.fixture(scope="session")
def pruned_run(tiny_checkpoint, tmp_path_factory):
    """One fast `evoprune prune --target-macs 0.5` run of the tiny checkpoint: (run dir, --json summary)."""
    import json

    from prune_helpers import FAST, cli

    out = tmp_path_factory.mktemp("prune") / "run"
    r = cli("--json", "prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", *FAST, "--out", out)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout.strip().splitlines()[-1])
