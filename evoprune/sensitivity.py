"""Per-unit sensitivity curves and the allocation of per-unit keep ratios from them.

Sensitivity of a unit: prune it alone at keep ratios 0.9 .. 0.1 (channels chosen by L1 norm, or by the GA on the
stage-1 reconstruction error), re-estimate BatchNorm statistics (adaptive BN), and measure accuracy on held-out
calibration batches. The accuracy *drop* curves drive two decisions of the paper's pipeline:

* the order of pruning (least sensitive unit first: smallest mean drop over the ratios), and
* the per-unit keep ratios for a global target: for a tolerated drop ``t`` every unit keeps the smallest ratio
  whose drop is <= t (curves made monotone, linearly interpolated); ``t`` is found by bisection so that the whole
  network keeps ``target_macs`` (or ``target_params``) of its cost. Less sensitive units are thus pruned harder.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .errors import EvopruneError

DEFAULT_RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


@dataclass
class Sensitivity:
    """Accuracy of the network with one unit pruned at each keep ratio: ``acc[u, r]``."""

    units: List[str]
    sizes: List[int]
    ratios: List[float]
    acc: np.ndarray  # [U, R]
    base_acc: float
    method: str = "l1"
    loss: Optional[np.ndarray] = None
    extra: Dict[str, object] = field(default_factory=dict)

    def drops(self) -> np.ndarray:
        """Monotone accuracy drop: keeping more channels never counts as worse (running max from high ratios)."""
        order = np.argsort(self.ratios)[::-1]  # high ratio -> low ratio
        d = self.base_acc - self.acc[:, order]
        d = np.maximum.accumulate(np.maximum(d, 0.0), axis=1)
        out = np.empty_like(d)
        out[:, order] = d
        return out

    def score(self) -> np.ndarray:
        """One sensitivity number per unit: mean drop over the ratio grid."""
        return self.drops().mean(1)

    def order(self) -> List[str]:
        """Units from least to most sensitive (ties keep network order)."""
        s = self.score()
        return [self.units[i] for i in np.argsort(s, kind="stable")]

    def to_json(self) -> Dict[str, object]:
        return {"units": self.units, "sizes": self.sizes, "ratios": self.ratios, "acc": self.acc.tolist(),
                "loss": None if self.loss is None else self.loss.tolist(), "base_acc": self.base_acc,
                "method": self.method, "score": self.score().tolist(), "order": self.order(), **self.extra}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "Sensitivity":
        try:
            return cls(list(d["units"]), list(d["sizes"]), [float(r) for r in d["ratios"]], np.asarray(d["acc"], float),
                       float(d["base_acc"]), str(d.get("method", "l1")),
                       None if d.get("loss") is None else np.asarray(d["loss"], float))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvopruneError(f"sensitivity file is malformed ({exc}); rerun 'evoprune sensitivity'") from None

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["unit", "channels", "keep_ratio", "accuracy", "drop"])
            drops = self.drops()
            for i, u in enumerate(self.units):
                for j, r in enumerate(self.ratios):
                    w.writerow([u, self.sizes[i], r, f"{self.acc[i, j]:.6f}", f"{drops[i, j]:.6f}"])


def keep_count(ratio: float, n: int, min_keep: int = 1, groups: int = 1) -> int:
    """Channels kept by a keep ratio: rounded, at least ``min_keep``, at most ``n``; a multiple of ``groups`` (a unit
    feeding a grouped conv keeps the same number of channels in each of its ``groups`` blocks)."""
    per = n // groups
    k = int(round(ratio * per))
    k = max(k, -(-min_keep // groups), 1)
    return int(min(per, k) * groups)


def ratios_for_drop(sens: Sensitivity, t: float, floor: float = 0.0) -> Dict[str, float]:
    """Per-unit smallest keep ratio whose (monotone, interpolated) drop is <= ``t``, and at least ``floor``."""
    drops = sens.drops()
    grid = np.asarray(sens.ratios)
    order = np.argsort(grid)
    g = np.concatenate([grid[order], [1.0]])
    out = {}
    for i, u in enumerate(sens.units):
        d = np.concatenate([drops[i, order], [0.0]])  # non-increasing along g
        if d[0] <= t:
            out[u] = float(g[0])
            continue
        j = int(np.argmax(d <= t))  # first grid point (from low ratio) within tolerance
        # interpolate between g[j-1] (drop > t) and g[j] (drop <= t)
        d0, d1 = d[j - 1], d[j]
        frac = 0.0 if d0 == d1 else (d0 - t) / (d0 - d1)
        out[u] = float(g[j - 1] + frac * (g[j] - g[j - 1]))
    return {u: max(r, floor) for u, r in out.items()}


def allocate(sens: Sensitivity, cost_fn: Callable[[Dict[str, float]], float], target: float,
             min_keep: int = 1, what: str = "MACs", tol: float = 0.005, floor: float = 0.0) -> Dict[str, float]:
    """Per-unit keep ratios so that ``cost_fn(ratios)`` (fraction of the unpruned cost) is about ``target``; no unit
    below keep ratio ``floor`` (``--min-keep-ratio``).

    Raises a clear error when the target is below what pruning every unit to its smallest ratio can reach.
    """
    if not 0.0 < target <= 1.0:
        raise EvopruneError(f"target {what} fraction must be in (0, 1], got {target}")
    floored = floor > min(sens.ratios)  # the floor, not the sensitivity grid, bounds how far a unit is cut
    lowest = floor if floored else min(sens.ratios)
    least = cost_fn({u: lowest for u in sens.units})
    if target < least - 1e-9:
        why = f"--min-keep-ratio {floor:g}" if floored else f"keep ratio {lowest}"
        raise EvopruneError(
            f"target {what} {target:.3f} cannot be met: pruning every unit to {why} "
            f"(min_keep={min_keep}) still keeps {least:.3f} of the {what}; raise the target"
            + (" or lower --min-keep-ratio" if floored else "")
        )
    if cost_fn({u: 1.0 for u in sens.units}) <= target:
        return {u: 1.0 for u in sens.units}
    lo, hi = 0.0, float(max(1e-9, sens.drops().max()))  # drop tolerance: lo -> cost too high, hi -> meets target
    best = ratios_for_drop(sens, hi, floor)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        r = ratios_for_drop(sens, mid, floor)
        c = cost_fn(r)
        if c <= target:
            hi, best = mid, r
        else:
            lo = mid
        if hi - lo < 1e-7:
            break
    # the discrete grid can leave the cost well under target: shrink uniformly towards 1.0 to land on it
    c = cost_fn(best)
    if c < target - tol:
        a, b = 0.0, 1.0  # blend factor towards keep-all
        for _ in range(40):
            m = 0.5 * (a + b)
            blended = {u: best[u] + m * (1.0 - best[u]) for u in best}
            if cost_fn(blended) <= target:
                a = m
            else:
                b = m
        best = {u: best[u] + a * (1.0 - best[u]) for u in best}
    return best


def uniform_ratio(cost_fn: Callable[[Dict[str, float]], float], units: Sequence[str], target: float) -> Dict[str, float]:
    """One keep ratio for every unit, chosen by bisection to meet ``target`` (the classic uniform baseline)."""
    a, b = 0.0, 1.0
    for _ in range(50):
        m = 0.5 * (a + b)
        if cost_fn({u: m for u in units}) <= target:
            a = m
        else:
            b = m
    return {u: a for u in units}
