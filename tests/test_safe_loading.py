"""Safe loading: files crafted to run code when unpickled are refused everywhere evoprune reads files.

The payload is a pickle whose ``__reduce__`` calls ``os.system("touch MARKER")``; each test checks that the loader
refuses it *and* that the marker file was never created. ``test_the_payload_is_live`` proves the payload does create
the marker under an unsafe load, so a loader that silently ran it would be caught.

A static scan (``test_no_unsafe_loads_in_the_codebase``) keeps it that way: every ``torch.load`` passes
``weights_only=True``, no ``np.load(allow_pickle=True)``, no ``pickle``/``dill``/``joblib``/``yaml.load`` readers except
the audited ones listed in ``ALLOWED``.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evoprune.cli import main
from evoprune.errors import EvopruneError

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs ``os.system(cmd)``."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _cmd(marker: Path) -> str:
    return f"touch '{marker}'"


@pytest.fixture
def evil(tmp_path):
    """Crafted files, all of which would create ``marker`` if loaded unsafely."""
    marker = tmp_path / "PWNED"
    p = _Payload(_cmd(marker))
    files = {}
    files["torch_save"] = tmp_path / "evil.pt"  # a torch zip archive whose data.pkl calls os.system
    torch.save({"weights": p}, files["torch_save"])
    files["inside_checkpoint"] = tmp_path / "evil_ckpt.pt"  # a genuine-looking evoprune checkpoint, payload in meta
    torch.save({"format": "evoprune-checkpoint", "version": 1, "state_dict": {"w": torch.zeros(2)},
                "meta": {"arch": "vgg11", "note": p}}, files["inside_checkpoint"])
    for proto in (2, pickle.HIGHEST_PROTOCOL):  # raw pickles, not torch archives
        files[f"raw_pickle_p{proto}"] = tmp_path / f"evil_p{proto}.pkl"
        files[f"raw_pickle_p{proto}"].write_bytes(pickle.dumps(p, protocol=proto))
    files["legacy_torch"] = tmp_path / "evil_legacy.pt"  # torch's pre-1.6 (non-zip) serialisation
    torch.save(p, files["legacy_torch"], _use_new_zipfile_serialization=False)
    assert zipfile.is_zipfile(files["torch_save"]) and not zipfile.is_zipfile(files["legacy_torch"])
    return marker, files


def test_the_payload_is_live(tmp_path):
    """Control: an *unsafe* load of the crafted file does run the payload (so the tests below can fail)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"weights": _Payload(_cmd(marker))}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_torch_refuses_code(evil):
    from evoprune.io import load_torch

    marker, files = evil
    for kind, path in files.items():
        with pytest.raises(EvopruneError) as ei:
            load_torch(path, "checkpoint")
        msg = str(ei.value)
        assert "\n" not in msg and str(path) in msg and "refused" in msg, (kind, msg)
        assert not marker.exists(), kind
    # the common case names what the file tried to import
    with pytest.raises(EvopruneError, match=r"system"):
        load_torch(files["torch_save"])


def test_read_checkpoint_and_load_model_refuse_code(evil):
    from evoprune.models.checkpoint import load_model, read_checkpoint

    marker, files = evil
    for kind, path in files.items():
        with pytest.raises(EvopruneError, match="refused"):
            read_checkpoint(str(path))
        with pytest.raises(EvopruneError, match="refused"):
            load_model(str(path), arch="vgg11")
    assert not marker.exists()


def test_evaluate_cli_refuses_code(evil):
    """The real entry point: exit 2, one line on stderr naming the refusal, no marker."""
    marker, files = evil
    for kind in ("torch_save", "raw_pickle_p2"):
        r = subprocess.run([sys.executable, "-m", "evoprune", "evaluate", "--checkpoint", str(files[kind]),
                            "--device", "cpu"], capture_output=True, text=True, timeout=180,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2, (kind, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "refused" in lines[0], (kind, r.stderr)
        assert "Traceback" not in r.stderr
        assert not marker.exists(), kind


@pytest.mark.parametrize("command", ["train", "prune", "sensitivity", "export"])
def test_other_commands_refuse_code_checkpoints(evil, tmp_path, command):
    marker, files = evil
    extra = {"train": ["--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "o")],
             "prune": ["--device", "cpu", "--out", str(tmp_path / "o")],
             "sensitivity": ["--device", "cpu", "--out", str(tmp_path / "o")],
             "export": ["--out", str(tmp_path / "o.onnx")]}[command]
    r = CliRunner().invoke(main, [command, "--checkpoint", str(files["inside_checkpoint"]), *extra])
    assert r.exit_code == 2, r.output
    assert "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not marker.exists()
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.onnx").exists()


def test_train_resume_refuses_a_tampered_training_state(tmp_path):
    """A run directory's own train_state.pt replaced by a payload: --resume refuses it, and changes nothing."""
    from evoprune.commands.train import train as train_cmd
    from evoprune.io import write_json

    out = tmp_path / "run"
    args = ["train", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--data", "mini-cifar10",
            "--device", "cpu", "--out", str(out), "--resume"]
    # a started run (no need to train for this): config.json as 'train' writes it, and a tampered state file
    params = dict(train_cmd.make_context("train", args[1:]).params)
    params.pop("config", None)
    out.mkdir()
    write_json(out / "config.json", params)
    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(_cmd(marker))}, out / "train_state.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = CliRunner().invoke(main, ["--quiet", *args])
    assert r.exit_code == 2, r.output
    assert "train_state.pt" in r.stderr and "refused" in r.stderr, r.stderr
    assert not marker.exists()
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "env.json"}  # env.json: refreshed on resume
    assert after == before, sorted(set(after) ^ set(before))


def test_pipeline_resume_refuses_a_tampered_unit_model(tmp_path):
    from evoprune.pipeline import PruneConfig, _load_progress
    from evoprune.io import write_json
    from evoprune.models import create_model

    cfg = PruneConfig(target_macs=0.5, selector="l1")
    state = tmp_path / "state"
    state.mkdir()
    marker = tmp_path / "PWNED"
    torch.save({"format": "evoprune-checkpoint", "state_dict": {}, "meta": {"x": _Payload(_cmd(marker))}},
               state / "model_001.pt")
    write_json(state / "progress.json", {"fingerprint": cfg.fingerprint(), "done": 1, "model": "model_001.pt",
                                         "pruned": {}, "records": []})
    with pytest.raises(EvopruneError, match="refused"):
        _load_progress(state, cfg, create_model("vgg11", width=0.125))
    assert not marker.exists()


def test_dataset_cache_ignores_a_tampered_cache_file(tmp_path, monkeypatch):
    """The decoded-dataset cache is a torch file too: a payload there is skipped (rebuilt), never run."""
    from evoprune import data

    monkeypatch.setenv("EVOPRUNE_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "PWNED"
    (tmp_path / "cache").mkdir()
    torch.save({"x_train": _Payload(_cmd(marker))}, tmp_path / "cache" / "k.pt")
    built = {"x_train": torch.zeros(1, 3, 2, 2, dtype=torch.uint8)}
    got = data._cached("k", lambda: built)
    assert torch.equal(got["x_train"], built["x_train"])
    assert not marker.exists()
    # and the tampered file was replaced by a clean one
    assert torch.equal(torch.load(tmp_path / "cache" / "k.pt", weights_only=True)["x_train"], built["x_train"])


# ---------------------------------------------------------------------------------------------- strategy checkpoints
def _tamper_strategy_checkpoint(prefix: Path, marker: Path) -> None:
    """Replace one array of a saved strategy checkpoint by a pickled object array; fix up the checksum."""
    meta_path = prefix.with_name(prefix.name + ".json")
    meta = json.loads(meta_path.read_text())
    npz = prefix.with_name(meta["npz"])
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(_cmd(marker))
    arrays[next(iter(arrays))] = obj
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    npz.write_bytes(buf.getvalue())
    meta["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    meta_path.write_text(json.dumps(meta))


@pytest.fixture
def tampered_strategy(tmp_path):
    from evoprune.strategies.checkpoint import load_state, save_state

    prefix = tmp_path / "strategy_state"
    save_state(prefix, {"gen": 3, "population": np.ones((4, 8), dtype=np.uint8), "fitness": np.zeros(4)})
    assert load_state(prefix)["gen"] == 3
    marker = tmp_path / "PWNED"
    _tamper_strategy_checkpoint(prefix, marker)
    return prefix, marker


def test_strategy_checkpoint_refuses_pickled_npz(tampered_strategy):
    from evoprune.strategies.checkpoint import load_state

    prefix, marker = tampered_strategy
    with pytest.raises(Exception):
        load_state(prefix)
    assert not marker.exists()


def test_strategy_checkpoint_refusal_is_a_user_error(tampered_strategy):
    from evoprune.strategies.checkpoint import load_state

    prefix, marker = tampered_strategy
    with pytest.raises(EvopruneError):
        load_state(prefix)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- static scan
# (file, dotted call) pairs that were audited: they only ever read files this process itself just wrote.
ALLOWED = {
    ("evoprune/parallel.py", "pickle.load"),   # worker side of the process backend: its own private temp files
    ("evoprune/parallel.py", "pickle.loads"),  # Dask worker plugin payload sent by this process
    ("evoprune/export.py", "torch.jit.load"),  # re-loads the TorchScript file it just wrote, to verify it
}
_FORBIDDEN = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
              "dill.load", "dill.loads", "joblib.load", "marshal.load", "marshal.loads", "shelve.open",
              "yaml.load", "yaml.unsafe_load", "yaml.full_load", "pandas.read_pickle", "pd.read_pickle",
              "torch.jit.load", "np.lib.format.read_array"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _scan(path: Path, rel: str):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = {}  # import numpy as np -> np: numpy; from torch import load -> load: torch.load
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = aliases.get(head, head) + ("." + rest if rest else "")
        full = full.replace("numpy.", "np.") if full.startswith("numpy.") else full
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        where = f"{rel}:{node.lineno}"
        if full == "torch.load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                yield f"{where}: torch.load without weights_only=True"
        elif full == "np.load":
            ap = kw.get("allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                yield f"{where}: np.load with allow_pickle={ast.unparse(ap)}"
        elif full in _FORBIDDEN and (rel, full) not in ALLOWED:
            yield f"{where}: {full} (unsafe deserialisation)"


def test_no_unsafe_loads_in_the_codebase():
    sources = [p for d in ("evoprune", "operators", "problems", "benchmarks", "examples") if (ROOT / d).is_dir()
               for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(sources) > 20
    problems = [msg for p in sources for msg in _scan(p, p.relative_to(ROOT).as_posix())]
    assert not problems, "\n".join(problems)


def test_scanner_catches_violations(tmp_path):
    """The scanner itself: it flags each kind of unsafe call (so an empty report means something)."""
    src = tmp_path / "bad.py"
    src.write_text("import torch, pickle, yaml\nimport numpy as np\nfrom torch import load as tl\n"
                   "torch.load('a')\ntorch.load('a', weights_only=False)\ntl('a')\nnp.load('a', allow_pickle=True)\n"
                   "pickle.loads(b'')\nyaml.load('x')\ntorch.load('a', weights_only=True)\nnp.load('a')\n")
    found = list(_scan(src, "bad.py"))
    assert len(found) == 6, found
