"""Strategy checkpoints without pickle: arrays in one ``.npz``, everything else in JSON, written atomically.

A checkpoint is a dict whose values are numpy arrays (stored in the npz) or JSON-friendly values (stored in the
JSON). ``save_state`` writes ``<path>.npz`` then ``<path>.json``; the JSON names the npz's sha256, so a pair torn by a
crash between the two writes is detected and the previous complete checkpoint is kept instead.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.io import atomic_write_bytes, to_jsonable, write_json


def save_state(path: str | Path, state: Dict[str, Any]) -> None:
    """Atomically save ``state`` (arrays + JSON values) as ``path.npz`` + ``path.json``."""
    path = Path(path)
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    npz = path.with_name(path.name + f".{digest[:12]}.npz")
    atomic_write_bytes(npz, data)
    write_json(path.with_name(path.name + ".json"), {"npz": npz.name, "sha256": digest, "state": to_jsonable(rest)})
    for old in path.parent.glob(path.name + ".*.npz"):  # older generations, now superseded
        if old.name != npz.name:
            try:
                old.unlink()
            except OSError:
                pass


def load_state(path: str | Path) -> Optional[Dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_state`; ``None`` if there is none. Corruption is a clear error."""
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        npz = path.with_name(meta["npz"])
        data = npz.read_bytes()
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise EvopruneError(f"strategy checkpoint '{meta_path}' is unreadable ({exc}); remove it or use --overwrite") from None
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise EvopruneError(f"strategy checkpoint '{npz}' does not match its checksum; remove it or use --overwrite")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:  # object arrays need pickle: refused, never unpickled
        raise EvopruneError(f"strategy checkpoint '{npz}' cannot be loaded safely ({str(exc).splitlines()[0][:100]}); "
                            "remove it or use --overwrite") from None
    state = dict(meta["state"])
    state.update(arrays)
    return state
