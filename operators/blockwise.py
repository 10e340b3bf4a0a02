"""Per-block cardinality: any operator applied within the ``groups`` equal blocks of a genome.

A unit that feeds a grouped convolution (RegNet, ResNeXt; a depthwise conv is coupled instead) must keep the same
number of channels in each of its ``g`` contiguous blocks: exactly ``k / g`` of every ``n / g``. :func:`blockwise`
turns an init, crossover, mutation or repair operator for plain k-subsets into one that keeps that structure:
init, crossover and repair run on every block (``k / g`` of ``n / g`` each); mutation picks one block per
individual and mutates inside it, so one swap stays one swap. Blocks are independent, so a cardinality-preserving
operator stays cardinality-preserving per block, and the GA, its seeding and the repair need nothing else.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from evoprune.errors import EvopruneError


def check_blocks(n: int, k: Optional[int], groups: int) -> None:
    if groups < 1 or n % groups or (k is not None and k % groups):
        raise EvopruneError(f"cannot keep {k} of {n} channels in {groups} equal blocks: k and n must be multiples "
                            f"of the number of blocks")


def _blocks(pop: np.ndarray, groups: int) -> np.ndarray:
    """``[P, n]`` -> ``[P * g, n / g]`` (row ``i * g + j`` is block ``j`` of individual ``i``)."""
    p, n = pop.shape
    return pop.reshape(p * groups, n // groups)


def blockwise(op: Callable, kind: str, groups: int) -> Callable:
    """``op`` (a built-in or user operator of ``kind``) applied per block of ``groups`` blocks."""
    if groups == 1:
        return op
    batch = getattr(op, "batch", None)

    if kind == "init":
        def fn(size: int, n: int, k: Optional[int], *, rng: np.random.Generator, importance: Any = None,
               **kw: Any) -> np.ndarray:
            check_blocks(n, k, groups)
            per = n // groups
            imp = None if importance is None else np.asarray(importance, dtype=float).reshape(groups, per)
            parts = [np.asarray(op(int(size), per, None if k is None else k // groups, rng=rng,
                                   importance=None if imp is None else imp[j], **kw), dtype=bool)
                     for j in range(groups)]
            return np.concatenate(parts, axis=1)

    elif kind == "repair":
        def fn(genomes: Any, *, rng: Optional[np.random.Generator] = None, k: Optional[int] = None,
               min_keep: int = 1, importance: Any = None, **kw: Any) -> np.ndarray:
            g = np.atleast_2d(np.asarray(genomes, dtype=bool))
            n = g.shape[1]
            check_blocks(n, k, groups)
            per = n // groups
            imp = None if importance is None else np.asarray(importance, dtype=float).reshape(groups, per)
            parts = [np.asarray(op(g[:, j * per:(j + 1) * per], rng=rng, k=None if k is None else k // groups,
                                   min_keep=max(1, min_keep // groups), importance=None if imp is None else imp[j],
                                   **kw), dtype=bool).reshape(len(g), per) for j in range(groups)]
            return np.concatenate(parts, axis=1)

    elif kind == "crossover":
        def fn_batch(a: np.ndarray, b: np.ndarray, *, rng: np.random.Generator, **kw: Any):
            a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
            if batch is not None:
                c, d = batch(_blocks(a, groups), _blocks(b, groups), rng=rng, **kw)
            else:
                ab, bb = _blocks(a.copy(), groups), _blocks(b.copy(), groups)
                pairs = [op(ab[i].copy(), bb[i].copy(), rng=rng, **kw) for i in range(len(ab))]
                c = np.stack([np.asarray(x, dtype=bool) for x, _ in pairs])
                d = np.stack([np.asarray(y, dtype=bool) for _, y in pairs])
            return np.asarray(c, bool).reshape(a.shape), np.asarray(d, bool).reshape(b.shape)

        def fn(a: Any, b: Any, *, rng: np.random.Generator, **kw: Any):
            c, d = fn_batch(np.asarray(a, bool)[None], np.asarray(b, bool)[None], rng=rng, **kw)
            a[:], b[:] = c[0], d[0]
            return a, b

        fn.batch = fn_batch  # type: ignore[attr-defined]

    elif kind == "mutation":
        def fn_batch(pop: np.ndarray, *, rng: np.random.Generator, **kw: Any) -> np.ndarray:
            pop = np.asarray(pop, dtype=bool).copy()
            p, n = pop.shape
            per = n // groups
            which = rng.integers(0, groups, size=p)  # one block per individual
            cols = which[:, None] * per + np.arange(per)[None]
            rows = np.arange(p)[:, None]
            sub = pop[rows, cols]
            if batch is not None:
                sub = np.asarray(batch(sub, rng=rng, **kw), dtype=bool)
            else:
                sub = np.stack([np.asarray(op(s.copy(), rng=rng, **kw)[0], dtype=bool) for s in sub])
            pop[rows, cols] = sub
            return pop

        def fn(ind: Any, *, rng: np.random.Generator, **kw: Any):
            ind[:] = fn_batch(np.asarray(ind, bool)[None], rng=rng, **kw)[0]
            return (ind,)

        fn.batch = fn_batch  # type: ignore[attr-defined]
    else:
        return op  # selection works on fitness values, not genomes
    fn.kind = kind  # type: ignore[attr-defined]
    fn.op_name = f"{getattr(op, 'op_name', getattr(op, '__name__', 'op'))}/blocks{groups}"  # type: ignore[attr-defined]
    fn.preserves_k = getattr(op, "preserves_k", False)  # type: ignore[attr-defined]
    fn._evoprune_builtin = getattr(op, "_evoprune_builtin", False)  # type: ignore[attr-defined]
    return fn
