"""Shared machinery of the operator modules: registration, lookup of user operators, output validation.

Every built-in operator is a plain function with a DEAP signature plus attributes:

* ``kind``: ``init``, ``crossover``, ``mutation``, ``repair`` or ``selection``;
* ``op_name``: its short name (registered as ``"<kind>.<op_name>"`` in :data:`evoprune.registry.OPERATORS`);
* ``preserves_k``: whether it keeps the number of kept channels (ones) of its input(s);
* ``batch``: a vectorised twin on 2-D populations that returns new arrays (the GA's hot loop uses it).

User operators need only the DEAP signature; :func:`get_operator` wraps them so a wrong return value is a clear
:class:`~evoprune.errors.EvopruneError` naming the operator instead of a confusing failure later.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.registry import OPERATORS, accepted_kwargs  # noqa: F401  (accepted_kwargs: used here, re-exported)

KINDS = ("init", "crossover", "mutation", "repair", "selection")

# What each kind must return, for error messages.
_CONTRACT = {
    "crossover": "a 2-tuple (child1, child2) of 1-D boolean genomes of length n (modify the parents in place and "
    "`return a, b`)",
    "mutation": "a 1-tuple (individual,) holding a 1-D boolean genome of length n (modify it in place and "
    "`return individual,`)",
    "init": "a boolean array of shape (size, n)",
    "repair": "a boolean array of the input's shape",
    "selection": "a 1-D integer array of n_select indices into the population",
}


def register_operator(kind: str, name: str, *, preserves_k: bool, batch: Optional[Callable] = None,
                      doc: Optional[str] = None) -> Callable[[Callable], Callable]:
    """Decorator: attach operator attributes and register under ``"<kind>.<name>"``."""
    if kind not in KINDS:
        raise ValueError(f"unknown operator kind {kind!r}")

    def deco(fn: Callable) -> Callable:
        fn.kind = kind  # type: ignore[attr-defined]
        fn.op_name = name  # type: ignore[attr-defined]
        fn.preserves_k = preserves_k  # type: ignore[attr-defined]
        fn._evoprune_builtin = True  # type: ignore[attr-defined]
        if batch is not None:
            fn.batch = batch  # type: ignore[attr-defined]
        OPERATORS.register(f"{kind}.{name}", doc=doc)(fn)
        return fn

    return deco


def names(kind: str) -> list:
    """Short names of the built-in operators of one kind."""
    prefix = kind + "."
    return sorted(k[len(prefix):] for k in OPERATORS if k.startswith(prefix))


def get_operator(kind: str, name: Any) -> Callable:
    """Resolve an operator of ``kind`` from a short name (``"swap"``), a prefixed name (``"mutation.swap"``), a
    ``"module:name"`` / ``"file.py:name"`` spec, or a callable.

    Built-ins are returned as they are; user operators come back wrapped so that their outputs are checked.
    """
    if kind not in KINDS:
        raise EvopruneError(f"unknown operator kind '{kind}'; use one of {', '.join(KINDS)}")
    if callable(name):
        fn, label = name, getattr(name, "__qualname__", getattr(name, "__name__", repr(name)))
    elif isinstance(name, str) and name:
        if ":" in name:
            fn, label = OPERATORS.get(name), name
        else:
            key = name if name.startswith(kind + ".") else f"{kind}.{name}"
            if key in OPERATORS:  # built-in, or registered by a user (then checked below like any user operator)
                return _finish(kind, OPERATORS[key], name)
            other = [k for k in KINDS if k != kind and (name.startswith(k + ".") or f"{k}.{name}" in OPERATORS)]
            if other:
                raise EvopruneError(
                    f"'{name}' is a {other[0]} operator, not a {kind}; {kind} operators: {', '.join(names(kind))}"
                )
            hint = difflib.get_close_matches(name.split(".")[-1], names(kind), n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise EvopruneError(
                f"unknown {kind} operator '{name}'{extra}; known: {', '.join(names(kind))}, "
                f"or give your own as 'module:name' / 'file.py:name'"
            )
    else:
        raise EvopruneError(f"{kind} operator must be a name or a callable, got {name!r}")
    return _finish(kind, fn, label)


def _finish(kind: str, fn: Any, label: str) -> Callable:
    if not callable(fn):
        raise EvopruneError(f"{kind} operator '{label}' is a {type(fn).__name__}, not a function; point to a function")
    declared = getattr(fn, "kind", kind)
    if declared != kind:
        raise EvopruneError(f"operator '{label}' is a {declared} operator, not a {kind}; pick a {kind} operator")
    if getattr(fn, "_evoprune_builtin", False) or getattr(fn, "_evoprune_checked", False):
        return fn
    return checked(kind, fn, label)


def filter_kwargs(allowed: Optional[set], kw: Dict[str, Any]) -> Dict[str, Any]:
    # DEAP's own operators (tools.mutFlipBit...) take no ``rng``: pass only what a function accepts.
    return dict(kw) if allowed is None else {k: v for k, v in kw.items() if k in allowed}


def as_genome(label: str, kind: str, x: Any, n: int) -> np.ndarray:
    """Validate one genome returned by a user operator and return it as a bool array (a view when possible)."""
    a = np.asarray(x)
    if a.shape != (n,):
        raise EvopruneError(
            f"{kind} operator '{label}' returned a genome of shape {a.shape}, expected ({n},); it must return "
            f"{_CONTRACT[kind]}"
        )
    return _as_bool(label, kind, a)


def _as_bool(label: str, kind: str, a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        return a
    if a.dtype.kind in "iu" and (a.size == 0 or (a.min() >= 0 and a.max() <= 1)):
        return a.astype(bool)
    raise EvopruneError(
        f"{kind} operator '{label}' returned values of dtype {a.dtype}; genomes are boolean (0/1 integers are "
        f"accepted), so it must return {_CONTRACT[kind]}"
    )


def check_variation(label: str, kind: str, out: Any, n_out: int, n: int) -> tuple:
    """Validate the return value of a crossover (``n_out=2``) or mutation (``n_out=1``)."""
    if not isinstance(out, (tuple, list)) or len(out) != n_out:
        got = f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise EvopruneError(f"{kind} operator '{label}' returned {got}; it must return {_CONTRACT[kind]}")
    for x in out:
        as_genome(label, kind, x, n)
    return tuple(out)


def check_array(label: str, kind: str, out: Any, shape: Sequence[int]) -> np.ndarray:
    """Validate a 2-D (or repair-shaped) array returned by an init, repair or batched operator."""
    a = np.asarray(out)
    if a.shape != tuple(shape):
        raise EvopruneError(
            f"{kind} operator '{label}' returned an array of shape {a.shape}, expected {tuple(shape)}; it must return "
            f"{_CONTRACT[kind]}"
        )
    return _as_bool(label, kind, a)


def check_indices(label: str, out: Any, n_select: int, pop_size: int) -> np.ndarray:
    a = np.asarray(out)
    if a.shape != (n_select,) or a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= pop_size)):
        raise EvopruneError(
            f"selection operator '{label}' returned {a.shape} {a.dtype} values; it must return "
            f"{_CONTRACT['selection']} (0 <= index < {pop_size})"
        )
    return a.astype(np.intp, copy=False)


def checked(kind: str, fn: Callable, label: str) -> Callable:
    """Wrap a user operator: pass only the keywords it accepts and validate what it returns."""
    allowed = accepted_kwargs(fn)

    if kind in ("crossover", "mutation"):
        n_out = 2 if kind == "crossover" else 1

        @functools.wraps(fn)
        def wrapper(*inds: Any, **kw: Any) -> tuple:
            out = fn(*inds, **filter_kwargs(allowed, kw))
            return check_variation(label, kind, out, n_out, len(inds[0]))

    elif kind == "init":

        @functools.wraps(fn)
        def wrapper(size: int, n: int, k: Optional[int] = None, **kw: Any) -> np.ndarray:
            out = fn(size, n, k, **filter_kwargs(allowed, kw))
            return check_array(label, kind, out, (size, n))

    elif kind == "repair":

        @functools.wraps(fn)
        def wrapper(genomes: np.ndarray, **kw: Any) -> np.ndarray:
            out = fn(genomes, **filter_kwargs(allowed, kw))
            return check_array(label, kind, out, np.shape(genomes))

    else:

        @functools.wraps(fn)
        def wrapper(fitness: np.ndarray, n_select: int, **kw: Any) -> np.ndarray:
            out = fn(fitness, n_select, **filter_kwargs(allowed, kw))
            return check_indices(label, out, n_select, len(fitness))

    wrapper.kind = kind  # type: ignore[attr-defined]
    wrapper.op_name = label  # type: ignore[attr-defined]
    wrapper.preserves_k = bool(getattr(fn, "preserves_k", False))  # type: ignore[attr-defined]
    wrapper._evoprune_checked = True  # type: ignore[attr-defined]
    batch = getattr(fn, "batch", None)
    if callable(batch):
        wrapper.batch = _checked_batch(kind, batch, label)  # type: ignore[attr-defined]
    elif hasattr(wrapper, "batch"):  # functools.wraps copied nothing callable; keep the attribute honest
        del wrapper.batch
    return wrapper


def _checked_batch(kind: str, batch: Callable, label: str) -> Callable:
    allowed = accepted_kwargs(batch)

    if kind == "crossover":

        def wrapped(a: np.ndarray, b: np.ndarray, **kw: Any) -> tuple:
            out = batch(a, b, **filter_kwargs(allowed, kw))
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise EvopruneError(f"crossover operator '{label}'.batch must return two arrays (children1, children2)")
            return tuple(check_array(label, kind, o, a.shape) for o in out)

    else:

        def wrapped(pop: np.ndarray, **kw: Any) -> np.ndarray:
            return check_array(label, kind, batch(pop, **filter_kwargs(allowed, kw)), pop.shape)

    return wrapped


# --------------------------------------------------------------------------------------------- vectorised helpers
def as_2d_bool(genomes: Any) -> tuple:
    """``(array[P, n] bool copy, was_1d)`` for operators that accept one genome or a population."""
    a = np.array(genomes, dtype=bool, copy=True)
    if a.ndim == 1:
        return a[None, :], True
    if a.ndim != 2:
        raise EvopruneError(f"expected a genome (1-D) or a population (2-D), got an array of shape {a.shape}")
    return a, False


def pick_lowest(keys: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Boolean mask selecting, in each row, the ``count[i]`` entries with the lowest keys (ties: lower index first)."""
    m, n = keys.shape
    order = np.argsort(keys, axis=1, kind="stable")  # radix sort for uint16 keys
    sel = np.zeros(m * n, dtype=bool)
    sel[(order + (np.arange(m) * n)[:, None]).ravel()] = (np.arange(n)[None, :] < np.reshape(count, (m, 1))).ravel()
    return sel.reshape(m, n)


def random_pick(mask: np.ndarray, count: Any, rng: np.random.Generator) -> np.ndarray:
    """Per row, ``count[i]`` positions drawn uniformly without replacement among the True ones of ``mask``
    (``count[i]`` must not exceed the row's number of True entries).

    One radix argsort of 16-bit random keys per call: ~10x faster than sorting float keys. Equal keys (each pair
    with probability 1/65535) are ordered by position, a bias far below anything a GA can notice.
    """
    keys = rng.integers(0, 65535, size=mask.shape, dtype=np.uint16)
    keys[~mask] = 65535  # above every valid key, so invalid positions are never picked
    return pick_lowest(keys, np.broadcast_to(np.asarray(count), (mask.shape[0],)))
