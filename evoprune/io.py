"""Run directories, atomic writes, checkpoints with metadata, safe loading.

Every file evoprune writes goes through here so that a crash or ``kill -9`` never leaves a half-written file where
a reader would pick it up: data goes to a temporary file in the same directory, is fsync'ed, then renamed.
"""
from __future__ import annotations

import datetime as _dt
import io as _io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from .errors import EvopruneError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published as tomli before it joined the standard library
    import tomli as tomllib

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------------------- writes
def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(str(d), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and dataclasses to JSON-friendly values."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        obj = float(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors
        return to_jsonable(obj.tolist())
    return obj


def write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def append_jsonl(path: PathLike, obj: Any) -> None:
    """Append one JSON line (metrics logs). Lines are small; a torn last line is skipped by :func:`read_jsonl`.

    A torn last line left by a crash (no final newline) is cut off first, so that a resumed run's new lines do not
    get glued to it (which would make :func:`read_jsonl` stop there and lose everything after).
    """
    line = (json.dumps(to_jsonable(obj)) + "\n").encode("utf-8")
    with open(path, "ab+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":  # rare (only after a crash): find the last complete line
                fh.seek(0)
                fh.truncate(fh.read().rfind(b"\n") + 1)
                fh.seek(0, os.SEEK_END)
        fh.write(line)
        fh.flush()


def read_jsonl(path: PathLike) -> list:
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # torn write at a crash: everything after it is untrusted
    return out


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvopruneError(f"{what} '{path}' does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"{what} '{path}' is not valid JSON ({exc}); fix or regenerate it") from None


# ------------------------------------------------------------------------------------------------------ torch files
def save_torch(path: PathLike, obj: Any) -> None:
    """``torch.save`` atomically. ``obj`` must hold only tensors and plain Python values (weights_only-loadable)."""
    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """Load a torch file safely (``weights_only=True``); every failure is a one-line :class:`EvopruneError`.

    A file whose pickle names anything beyond tensors and plain containers (e.g. a ``__reduce__`` that would call
    ``os.system``) is refused by torch's restricted unpickler before anything runs; the error says so.
    """
    import re
    import warnings

    import torch

    path = Path(path)
    if not path.exists():
        raise EvopruneError(f"{what} '{path}' does not exist; check the path")
    if path.is_dir():
        raise EvopruneError(f"{what} '{path}' is a directory, expected a file")
    is_zip = zipfile.is_zipfile(str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except PermissionError:
        raise EvopruneError(f"{what} '{path}' is not readable (permission denied)") from None
    except Exception as exc:  # unpickling errors come in many types
        text = str(exc)
        glob = re.search(r"GLOBAL\s+([\w.]+)|[Uu]nsupported global:\s*(?:GLOBAL\s+)?([\w.]+)", text)
        if glob:
            raise EvopruneError(
                f"{what} '{path}' was refused: loading it would import '{glob.group(1) or glob.group(2)}' (pickled "
                "code, not just weights); only evoprune checkpoints and plain state dicts load safely"
            ) from None
        unsafe = "weights only load failed" in text.lower() or "weightsunpickler" in text.lower()
        if not is_zip:
            with open(path, "rb") as fh:
                is_pickle = fh.read(1) == b"\x80"  # PROTO opcode: a raw pickle stream (or torch's legacy format)
            if not (unsafe and is_pickle):
                raise EvopruneError(f"{what} '{path}' is corrupt or truncated (not a torch archive); re-create it") from None
        if unsafe:
            detail = [l.strip() for l in text.splitlines() if l.strip() and "WeightsUnpickler" not in l
                      and "Weights only load failed" not in l and "Check the documentation" not in l
                      and "Please file an issue" not in l]
            raise EvopruneError(
                f"{what} '{path}' was refused: it is not a plain weights file (safe unpickling failed"
                f"{': ' + detail[0][:80] if detail else ''}); it is corrupt, or a pickle of objects that only an "
                "unsafe load could rebuild"
            ) from None
        last = [l for l in text.strip().splitlines() if l.strip()]
        raise EvopruneError(f"{what} '{path}' is corrupt or truncated ({(last[-1] if last else type(exc).__name__)[:120]})") from None


# ----------------------------------------------------------------------------------------------------- run directory
def environment_info(device: Optional[str] = None, seed: Optional[int] = None) -> Dict[str, Any]:
    import torch

    from . import __version__

    info = {
        "evoprune": __version__,
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "device": device,
        "seed": seed,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
    try:
        import deap

        info["deap"] = deap.__version__
    except Exception:  # pragma: no cover
        pass
    return info


_RUN_LOCKS: Dict[str, int] = {}  # lock file -> open descriptor, held by this process


def lock_run_dir(out: PathLike) -> None:
    """Hold an exclusive lock on run directory ``out`` for this process (a ``.NAME.lock`` file beside it).

    A second evoprune process given the same ``--out`` is refused in one line instead of mixing its files into the
    first one's (or deleting them with ``--overwrite``). The lock is released by :func:`release_run_locks` (every
    command does at its end) or when the process exits, also when it is killed.
    """
    out = Path(out).absolute()
    lock = out.parent / f".{out.name}.lock"
    if str(lock) in _RUN_LOCKS:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return  # a read-only parent: the run directory checks report it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                other = Path(lock).read_text().strip() or "another process"
            except OSError:
                other = "another process"
            raise EvopruneError(f"run directory '{out}' is in use by another evoprune command (pid {other}); wait "
                                "for it to finish or choose another --out") from None
        try:  # the holder before us may have removed the file after we opened it: lock the one on disk
            if os.fstat(fd).st_ino == os.stat(str(lock)).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _RUN_LOCKS[str(lock)] = fd


def release_run_locks() -> None:
    """Release every run-directory lock this process holds."""
    for path, fd in list(_RUN_LOCKS.items()):
        try:
            os.unlink(path)  # while still held: nothing of ours is left beside the run directory
        except OSError:
            pass
        try:
            os.close(fd)  # closing the descriptor drops the flock
        except OSError:
            pass
        _RUN_LOCKS.pop(path, None)


def _refuse(out: Path, overwrite: bool, resume: bool) -> None:
    """The one-line refusals of :func:`prepare_run_dir` (nothing on disk is touched before them)."""
    if overwrite and resume:
        raise EvopruneError("--overwrite and --resume contradict each other; choose one")
    if out.exists() and not out.is_dir():
        raise EvopruneError(f"output path '{out}' exists and is a file; choose another --out")
    used = out.exists() and any(out.iterdir())
    if resume and not used:
        raise EvopruneError(f"cannot --resume: run directory '{out}' does not exist")
    if used and not (resume or overwrite):
        raise EvopruneError(
            f"output directory '{out}' already exists; pass --resume to continue it or --overwrite to replace it"
        )


def prepare_run_dir(out: PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run directory ``out`` and lock it for this process (see :func:`lock_run_dir`).

    An existing non-empty directory is refused unless ``resume`` (continue it) or ``overwrite`` (replace it).
    Call this only after all inputs are validated, so a bad flag never destroys an earlier run.
    """
    out = Path(out)
    _refuse(out, overwrite, resume)
    lock_run_dir(out)  # before anything is read, replaced or deleted
    _refuse(out, overwrite, resume)  # again: another process may have written it before we held the lock
    if out.exists() and any(out.iterdir()):
        if resume:
            return out
        _check_writable(out.parent if out.parent != Path("") else Path("."))
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvopruneError(f"cannot create output directory '{out}': {exc.strerror}") from None
    _check_writable(out)
    return out


def _check_writable(d: Path) -> None:
    if not os.access(str(d), os.W_OK):
        raise EvopruneError(f"output directory '{d}' is not writable; choose another --out")


def check_output_file(path: PathLike, overwrite: bool) -> Path:
    """Refuse to clobber an existing output file unless ``overwrite``; check its folder is writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise EvopruneError(f"output file '{path}' already exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(str(parent), os.W_OK):
        raise EvopruneError(f"output folder '{parent}' is not writable; choose another path")
    return path


def read_options_file(path: str) -> Dict[str, Any]:
    """Read a TOML or JSON config into a flat dict of option names (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise EvopruneError(f"config file '{path}' does not exist")
    text = p.read_bytes()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text.decode("utf-8"))
        elif p.suffix.lower() in (".toml", ".tml"):
            data = tomllib.loads(text.decode("utf-8"))
        elif p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore
            except ImportError:
                raise EvopruneError("YAML config needs PyYAML (pip install pyyaml); or use TOML/JSON") from None
            data = yaml.safe_load(text)
        else:
            raise EvopruneError(f"config file '{path}' must end in .toml, .json or .yaml")
    except EvopruneError:
        raise
    except Exception as exc:
        raise EvopruneError(f"config file '{path}' cannot be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EvopruneError(f"config file '{path}' must hold a table/object of option = value")
    flat: Dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):  # allow [section] tables: options of one command grouped
            flat.update({kk.replace("-", "_"): vv for kk, vv in v.items()})
        else:
            flat[k.replace("-", "_")] = v
    return flat


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
