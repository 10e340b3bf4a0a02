"""Initialisation operators: ``init(size, n, k=None, *, rng, **kw) -> ndarray[size, n] bool``.

They draw whole populations at once (one numpy call instead of one DEAP individual at a time). ``k`` is the number
of channels to keep; ``None`` means the problem has no fixed cardinality.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from evoprune.errors import EvopruneError

from .core import register_operator


def _check(size: int, n: int, k: Optional[int]) -> None:
    if int(size) < 0 or int(n) < 1:
        raise EvopruneError(f"init needs size >= 0 and n >= 1, got size={size}, n={n}")
    if k is not None and not 0 <= int(k) <= int(n):
        raise EvopruneError(f"init needs 0 <= k <= n (n={n}), got k={k}")


def _top_k(keys: np.ndarray, k: int) -> np.ndarray:
    size, n = keys.shape
    out = np.zeros((size, n), dtype=bool)
    if k == 0 or size == 0:
        return out
    idx = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), (size, n))
    np.put_along_axis(out, idx, True, axis=1)
    return out


@register_operator("init", "random-k", preserves_k=True,
                   doc="k channels uniformly at random (exactly k ones); Bernoulli(1/2) when k is None")
def random_k(size: int, n: int, k: Optional[int] = None, *, rng: np.random.Generator, **_: Any) -> np.ndarray:
    """Uniformly random k-subsets: exactly ``k`` ones per genome (``k=None``: each bit 1 with probability 1/2)."""
    _check(size, n, k)
    if k is None:
        return rng.random((int(size), int(n))) < 0.5
    return _top_k(rng.random((int(size), int(n))), int(k))


@register_operator("init", "bernoulli", preserves_k=False,
                   doc="each bit kept with probability p (default k/n), as in the paper; cardinality varies")
def bernoulli(size: int, n: int, k: Optional[int] = None, *, rng: np.random.Generator, p: Optional[float] = None,
              **_: Any) -> np.ndarray:
    """The paper's initialisation: i.i.d. Bernoulli(p) bits, ``p = k/n`` by default (0.5 when ``k`` is None).

    Cardinality varies around ``k``; problems with a fixed ``k`` repair afterwards.
    """
    _check(size, n, k)
    if p is None:
        p = 0.5 if k is None else int(k) / int(n)
    if not 0.0 <= float(p) <= 1.0:
        raise EvopruneError(f"init 'bernoulli' needs 0 <= p <= 1, got p={p}")
    return rng.random((int(size), int(n))) < float(p)


@register_operator("init", "importance", preserves_k=True,
                   doc="k channels sampled with a bias towards high importance (Gumbel top-k); exactly k ones")
def importance(size: int, n: int, k: Optional[int] = None, *, rng: np.random.Generator,
               importance: Optional[np.ndarray] = None, temperature: float = 1.0, **_: Any) -> np.ndarray:
    """Importance-biased sampling: keys ``z_i / temperature + Gumbel noise`` where ``z`` is the standardised importance;
    the ``k`` largest keys are kept (``k=None``: bit i kept with probability ``sigmoid(z_i / temperature)``).

    Low temperatures approach "keep the k most important channels"; high ones approach uniform random k-subsets.
    """
    _check(size, n, k)
    if importance is None:
        raise EvopruneError("init 'importance' needs per-channel importance scores; pass importance=... to the problem")
    imp = np.asarray(importance, dtype=float)
    if imp.shape != (int(n),) or not np.all(np.isfinite(imp)):
        raise EvopruneError(f"importance must be {n} finite numbers, got shape {imp.shape}")
    if not float(temperature) > 0:
        raise EvopruneError(f"init 'importance' needs temperature > 0, got {temperature}")
    z = (imp - imp.mean()) / (imp.std() + 1e-12) / float(temperature)
    if k is None:
        return rng.random((int(size), int(n))) < 1.0 / (1.0 + np.exp(-z))
    gumbel = -np.log(-np.log(np.maximum(rng.random((int(size), int(n))), 1e-300)))
    return _top_k(z[None, :] + gumbel, int(k))
