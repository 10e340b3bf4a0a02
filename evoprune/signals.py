"""SIGINT/SIGTERM as a request to stop at the next safe point (after a checkpoint), not a crash mid-write."""
from __future__ import annotations

import contextlib
import functools
import signal
import threading
from typing import Any, Callable, Dict, Iterator

_state = {"stop": False, "depth": 0}


def requested() -> bool:
    """True once SIGINT or SIGTERM arrived inside :func:`stop_on_signals`."""
    return bool(_state["stop"])


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :func:`requested` for the block (main thread only; nesting is fine).

    A request that arrives after the block's last safe point (a strategy's final verification, say) is not
    forgotten: the outermost block then ends with ``KeyboardInterrupt``, so a caller running one block after
    another (the pipeline, unit by unit) stops too instead of going on to the next one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: Dict[int, Any] = {}

    def handle(signum, frame):
        _state["stop"] = True

    if _state["depth"] == 0:
        _state["stop"] = False
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handle)
    _state["depth"] += 1
    pending = False
    try:
        yield
    finally:
        _state["depth"] -= 1
        for s, h in old.items():
            signal.signal(s, h)
        if _state["depth"] == 0:
            pending = bool(_state["stop"])
            _state["stop"] = False
    if pending:  # reached only when the block itself ended normally
        raise KeyboardInterrupt


def install_cli_handler() -> None:
    """For the CLI: SIGTERM behaves like Ctrl-C (KeyboardInterrupt -> 'interrupted', exit 130) outside the
    sections that stop at a safe point themselves, instead of killing the process mid-step."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handle)


def graceful(fn: Callable) -> Callable:
    """Run ``fn`` inside :func:`stop_on_signals`; ``fn`` checks :func:`requested` at its safe points."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with stop_on_signals():
            return fn(*args, **kwargs)

    return wrapper
