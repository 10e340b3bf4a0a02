"""CLI conventions: train/evaluate/list work; bad input is one line on stderr and exit code 2."""
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from evoprune.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_list_models_and_datasets():
    r = invoke("list", "models")
    assert r.exit_code == 0 and "vgg16" in r.output and "resnet56" in r.output
    r = invoke("--json", "list", "datasets")
    assert "mini-cifar10" in json.loads(r.output.strip().splitlines()[-1])["datasets"]


def test_train_then_evaluate(tiny_checkpoint):
    r = invoke("--json", "evaluate", "--checkpoint", str(tiny_checkpoint), "--no-latency", "--device", "cpu")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert 0.0 <= res["test_top1"] <= 1.0 and res["params"] > 0 and res["macs"] > 0


def test_checkpoint_roundtrip(tiny_checkpoint):
    from evoprune.models.checkpoint import load_model

    m1, meta = load_model(str(tiny_checkpoint))
    m2, _ = load_model(str(tiny_checkpoint))
    x = torch.randn(2, 3, 32, 32)
    assert meta["arch"] == "vgg11" and meta["classes"][0] == "airplane"
    assert torch.equal(m1.eval()(x), m2.eval()(x))


def test_python_m_evoprune_works():
    out = subprocess.run([sys.executable, "-m", "evoprune", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


@pytest.fixture
def bad_files(tmp_path, tiny_checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file at all")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:500])
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    empty = tmp_path / "emptyfolder"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    return {"corrupt": corrupt, "truncated": truncated, "existing": existing, "empty": empty, "tmp": tmp_path}


CASES = [
    (["train", "--data", "nosuchdata"], "unknown dataset"),
    (["train", "--data", "cifar10", "--data-dir", "{tmp}/missing"], "does not exist"),
    (["train", "--data", "imagefolder:{empty}"], "needs train"),
    (["train", "--model", "vgg17"], "unknown model"),
    (["train", "--model", "{tmp}/nofile.py:make"], "does not exist"),
    (["train", "--epochs", "0"], "must be > 0"),
    (["train", "--batch-size", "-1"], "must be > 0"),
    (["train", "--lr", "inf"], "must be a finite number"),
    (["finetune", "--checkpoint", "x.pt", "--at-weight", "nan"], "must be a finite number"),
    (["evaluate", "--checkpoint", "{corrupt}"], "corrupt or truncated|cannot be read"),
    (["evaluate", "--checkpoint", "{truncated}"], "corrupt or truncated|cannot be read"),
    (["evaluate", "--checkpoint", "{tmp}/nothere.pt"], "does not exist"),
    (["train", "--epochs", "1", "--out", "{existing}"], "already exists"),
]


@pytest.mark.parametrize("args,pattern", CASES)
def test_bad_input_exit_2_one_line(args, pattern, bad_files):
    import re

    args = [a.format(**bad_files) for a in args]
    before = (bad_files["existing"] / "keep.txt").read_bytes()
    r = subprocess.run([sys.executable, "-m", "evoprune", *args, "--device", "cpu"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 or lines[-1].startswith("Error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert re.search(pattern, r.stderr), r.stderr
    assert (bad_files["existing"] / "keep.txt").read_bytes() == before
