"""evoprune.io: atomic writes, crash safety, run-directory rules, JSON-lines logs, safe torch loading errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from evoprune import io as eio
from evoprune.errors import EvopruneError


def _listing(d: Path):
    return sorted(p.name for p in d.iterdir())


class Boom(Exception):
    pass


# ----------------------------------------------------------------------------------------------------- atomic writes
def test_atomic_writes_leave_only_the_target(tmp_path):
    eio.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    eio.atomic_write_text(tmp_path / "b.txt", "hé")
    eio.write_json(tmp_path / "c.json", {"x": np.float32(1.5), "n": np.int64(3), "bad": float("nan")})
    eio.save_torch(tmp_path / "d.pt", {"w": torch.arange(3)})
    eio.atomic_write_bytes(tmp_path / "a.bin", b"again")  # replacing an existing file
    assert _listing(tmp_path) == ["a.bin", "b.txt", "c.json", "d.pt"]
    assert (tmp_path / "a.bin").read_bytes() == b"again"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "hé"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1.5, "n": 3, "bad": None}
    assert torch.equal(eio.load_torch(tmp_path / "d.pt")["w"], torch.arange(3))


def test_atomic_write_creates_parent_folders(tmp_path):
    eio.write_json(tmp_path / "x" / "y" / "z.json", [1])
    assert json.loads((tmp_path / "x" / "y" / "z.json").read_text()) == [1]


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch, where):
    """A failure at any stage of the write (the data, the fsync, the rename) leaves the previous content intact and
    no temporary file behind."""
    target = tmp_path / "state.json"
    eio.write_json(target, {"generation": 1})
    old = target.read_bytes()

    if where == "write":
        real_fdopen = os.fdopen

        class Torn:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *a):
                self.fh.close()

            def write(self, data):
                self.fh.write(data[: len(data) // 2])  # half the bytes reach the temp file, then the crash
                self.fh.flush()
                raise Boom("disk full")

            def __getattr__(self, k):
                return getattr(self.fh, k)

        monkeypatch.setattr(eio.os, "fdopen", lambda fd, mode: Torn(real_fdopen(fd, mode)))
    elif where == "fsync":
        monkeypatch.setattr(eio.os, "fsync", lambda fd: (_ for _ in ()).throw(Boom("io error")))
    else:
        monkeypatch.setattr(eio.os, "replace", lambda a, b: (_ for _ in ()).throw(Boom("rename failed")))
    with pytest.raises(Boom):
        eio.write_json(target, {"generation": 2, "pad": "x" * 10000})
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert _listing(tmp_path) == ["state.json"]


def test_keyboard_interrupt_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    eio.save_torch(target, {"w": torch.ones(4)})
    old = target.read_bytes()
    monkeypatch.setattr(eio.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        eio.save_torch(target, {"w": torch.zeros(4)})
    monkeypatch.undo()
    assert target.read_bytes() == old and _listing(tmp_path) == ["model.pt"]


def test_save_torch_that_cannot_serialise_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    eio.save_torch(target, {"w": torch.ones(2)})
    old = target.read_bytes()
    with pytest.raises(Exception):
        eio.save_torch(target, {"w": lambda: 0})  # lambdas do not pickle: fails while serialising
    assert target.read_bytes() == old and _listing(tmp_path) == ["model.pt"]


def test_a_stale_temp_file_is_never_read_as_the_target(tmp_path):
    """What a kill -9 mid-write leaves (a hidden ``.name.*.tmp``) is not what readers open."""
    eio.write_json(tmp_path / "r.json", {"ok": True})
    (tmp_path / ".r.json.abc123.tmp").write_text('{"ok": fal')
    assert eio.read_json(tmp_path / "r.json") == {"ok": True}


# -------------------------------------------------------------------------------------------------- prepare_run_dir
def test_prepare_run_dir_creates_a_new_directory(tmp_path):
    out = eio.prepare_run_dir(tmp_path / "runs" / "a")
    assert out.is_dir() and _listing(out) == []


def test_prepare_run_dir_accepts_an_existing_empty_directory(tmp_path):
    (tmp_path / "a").mkdir()
    assert eio.prepare_run_dir(tmp_path / "a").is_dir()


def _precious(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.pt").write_bytes(b"weights")
    (d / "sub").mkdir()
    (d / "sub" / "log.txt").write_text("log")
    return d


def test_prepare_run_dir_refuses_an_existing_run(tmp_path):
    d = _precious(tmp_path)
    with pytest.raises(EvopruneError, match=r"already exists.*--resume.*--overwrite"):
        eio.prepare_run_dir(d)
    assert (d / "model.pt").read_bytes() == b"weights" and (d / "sub" / "log.txt").read_text() == "log"


def test_prepare_run_dir_resume_keeps_everything(tmp_path):
    d = _precious(tmp_path)
    assert eio.prepare_run_dir(d, resume=True) == d
    assert (d / "model.pt").read_bytes() == b"weights" and (d / "sub" / "log.txt").read_text() == "log"


def test_prepare_run_dir_overwrite_replaces(tmp_path):
    d = _precious(tmp_path)
    out = eio.prepare_run_dir(d, overwrite=True)
    assert out == d and out.is_dir() and _listing(out) == []


def test_prepare_run_dir_overwrite_and_resume_contradict(tmp_path):
    d = _precious(tmp_path)
    with pytest.raises(EvopruneError, match="--overwrite and --resume"):
        eio.prepare_run_dir(d, overwrite=True, resume=True)
    assert (d / "model.pt").read_bytes() == b"weights"


def test_prepare_run_dir_resume_needs_a_run(tmp_path):
    with pytest.raises(EvopruneError, match="cannot --resume.*does not exist"):
        eio.prepare_run_dir(tmp_path / "nothere", resume=True)
    assert not (tmp_path / "nothere").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvopruneError, match="cannot --resume"):
        eio.prepare_run_dir(tmp_path / "empty", resume=True)


def test_prepare_run_dir_refuses_files_and_paths_below_files(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(EvopruneError, match="is a file"):
        eio.prepare_run_dir(f)
    with pytest.raises(EvopruneError, match="is a file"):
        eio.prepare_run_dir(f, overwrite=True)  # --overwrite replaces run directories, never plain files
    with pytest.raises(EvopruneError, match="cannot create output directory"):
        eio.prepare_run_dir(f / "sub")  # unwritable for every user, root included
    assert f.read_text() == "x"


def test_check_output_file(tmp_path):
    f = tmp_path / "model.onnx"
    assert eio.check_output_file(f, overwrite=False) == f
    f.write_bytes(b"old")
    with pytest.raises(EvopruneError, match="already exists"):
        eio.check_output_file(f, overwrite=False)
    assert eio.check_output_file(f, overwrite=True) == f and f.read_bytes() == b"old"


# ------------------------------------------------------------------------------------------------------ JSON lines
def test_jsonl_roundtrip_and_missing_file(tmp_path):
    log = tmp_path / "metrics.jsonl"
    assert eio.read_jsonl(log) == []
    for i in range(3):
        eio.append_jsonl(log, {"epoch": i, "loss": np.float64(1.0 / (i + 1))})
    assert eio.read_jsonl(log) == [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 1 / 3}]


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    eio.append_jsonl(log, {"epoch": 1})
    eio.append_jsonl(log, {"epoch": 2})
    with open(log, "a") as fh:
        fh.write('{"epoch": 3, "lo')  # kill -9 in the middle of an append
    assert eio.read_jsonl(log) == [{"epoch": 1}, {"epoch": 2}]


def test_read_jsonl_ignores_blank_lines_and_stops_at_garbage(tmp_path):
    log = tmp_path / "m.jsonl"
    log.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n{"a": 4}\n')
    assert eio.read_jsonl(log) == [{"a": 1}, {"a": 2}]  # after a torn line nothing is trusted


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(EvopruneError, match="does not exist"):
        eio.read_json(tmp_path / "none.json", "run config")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(EvopruneError, match="run config.*not valid JSON") as ei:
        eio.read_json(bad, "run config")
    assert "\n" not in str(ei.value)


# ------------------------------------------------------------------------------------------------------- load_torch
def test_load_torch_errors(tmp_path):
    good = tmp_path / "good.pt"
    eio.save_torch(good, {"w": torch.randn(64, 64)})
    cases = {"missing": (tmp_path / "none.pt", "does not exist"), "directory": (tmp_path, "is a directory")}
    (tmp_path / "garbage.pt").write_bytes(b"hello world")
    cases["garbage"] = (tmp_path / "garbage.pt", "corrupt or truncated")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.pt", "corrupt or truncated")
    data = good.read_bytes()
    for frac in (0.3, 0.9):
        p = tmp_path / f"trunc{frac}.pt"
        p.write_bytes(data[: int(len(data) * frac)])
        cases[f"trunc{frac}"] = (p, "corrupt or truncated")
    for name, (path, pattern) in cases.items():
        with pytest.raises(EvopruneError, match=pattern) as ei:
            eio.load_torch(path, "checkpoint")
        assert "\n" not in str(ei.value), name


def test_to_jsonable():
    from dataclasses import dataclass

    @dataclass
    class D:
        a: int
        p: Path

    out = eio.to_jsonable({"arr": np.arange(3), "t": torch.tensor([1.5]), "b": np.bool_(True), "d": D(1, Path("x")),
                           "inf": float("inf"), 3: (1, 2)})
    assert out == {"arr": [0, 1, 2], "t": [1.5], "b": True, "d": {"a": 1, "p": "x"}, "inf": None, "3": [1, 2]}
    json.dumps(out)


# ----------------------------------------------------------------------------------------------- strategy checkpoints
def test_strategy_checkpoint_torn_pair_falls_back_to_the_previous_one(tmp_path):
    """A crash between writing the new npz and the JSON naming it: the previous complete checkpoint is loaded."""
    from evoprune.strategies import checkpoint as ck

    prefix = tmp_path / "strategy_state"
    ck.save_state(prefix, {"gen": 1, "pop": np.zeros((2, 3))})
    real_write_json = ck.write_json

    def crash(*a, **k):
        raise Boom("killed between the two writes")

    ck.write_json = crash
    try:
        with pytest.raises(Boom):
            ck.save_state(prefix, {"gen": 2, "pop": np.ones((2, 3))})
    finally:
        ck.write_json = real_write_json
    st = ck.load_state(prefix)
    assert st["gen"] == 1 and np.array_equal(st["pop"], np.zeros((2, 3)))
    ck.save_state(prefix, {"gen": 3, "pop": np.ones((2, 3))})  # the next save cleans up the orphan
    assert ck.load_state(prefix)["gen"] == 3
    assert len(list(tmp_path.glob("strategy_state.*.npz"))) == 1


def test_strategy_checkpoint_checksum_mismatch_is_an_error(tmp_path):
    from evoprune.strategies import checkpoint as ck

    prefix = tmp_path / "s"
    assert ck.load_state(prefix) is None
    ck.save_state(prefix, {"gen": 1, "pop": np.zeros(5)})
    npz = next(tmp_path.glob("s.*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(EvopruneError, match="checksum"):
        ck.load_state(prefix)


def test_append_after_a_torn_line_keeps_the_log_readable(tmp_path):
    """kill -9 mid-append, then a resumed run appends: the new lines must not be glued to the torn one."""
    log = tmp_path / "metrics.jsonl"
    eio.append_jsonl(log, {"epoch": 1})
    with open(log, "a") as fh:
        fh.write('{"epoch": 2, "lo')
    eio.append_jsonl(log, {"epoch": 2})
    eio.append_jsonl(log, {"epoch": 3})
    assert eio.read_jsonl(log) == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    log.write_text('{"torn": ')  # a torn first line: the file starts over
    eio.append_jsonl(log, {"epoch": 1})
    assert log.read_text() == '{"epoch": 1}\n'
