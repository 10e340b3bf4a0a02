"""The two-step fitness: a cheap stage-1 score for everyone, a network-level check for the best few.

The combined-fitness rule (quoted in the README)
------------------------------------------------
``TwoStage(first, second, top_k)`` scores a population in two steps:

1. every individual gets its stage-1 score ``e1`` (the normalised reconstruction error, >= 0);
2. in each call (one call = one generation in the built-in strategies; ``verify_every`` spaces them out), the
   ``top_k`` distinct individuals with the lowest ``e1`` that are not verified yet get stage 2 (held-out loss
   after adaptive BN, ``e2``). Verified genomes are remembered: when one reappears (an elite, a re-discovery) it
   keeps its ``e2`` at no cost.

Ranking is lexicographic, **a stage-1 score never outranks a verified stage-2 score**: verified individuals come
first, ranked among themselves by ``e2``; unverified ones follow, ranked by ``e1``. It is exposed as one scalar to
minimise, so any minimising strategy works unchanged::

    combined = e2 - BIG   if verified          (BIG = 1e6; e2 clipped to +-BIG/2)
    combined = e1         otherwise            (e1 clipped to +-BIG/2)
    combined = +BIG       if verified but e2 is NaN/inf (the network broke: worst of all)

Selections that use only the order (tournament, ranking, elitism, a hall of fame) see exactly the lexicographic
rule. Fitness-proportional (roulette) selection on these raw values would give verified individuals nearly all the
probability mass; rank-transform first. ``verify(masks)`` runs stage 2 on final candidates (e.g. the last
population or hall of fame) and returns the second evaluator's raw objectives.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch

from evoprune.errors import EvopruneError
from evoprune.registry import EVALUATORS

from .base import Evaluator, build_evaluator, check_masks, genome_key

__all__ = ["TwoStage", "BIG"]

BIG = 1.0e6


def _oriented(values: torch.Tensor, weight: float) -> torch.Tensor:
    """Smaller-is-better view of an objective column (DEAP weight < 0: as is; > 0: negated)."""
    return values if weight < 0 else -values


@EVALUATORS.register("twostage")
class TwoStage(Evaluator):
    """Stage 1 on every individual, stage 2 on the top-k per generation; one combined scalar to minimise.

    Args:
        first: stage-1 evaluator (``objectives[0]`` ranks; e.g. :class:`ReconstructionFitness`).
        second: stage-2 evaluator (``objectives[column]`` ranks verified ones; e.g. :class:`NetworkFitness`: loss).
        top_k: new genomes verified per generation (0: stage 1 only).
        verify_every: verify in every ``verify_every``-th call only.
        column: which objective of ``second`` ranks verified individuals (0: loss).
        backend: an :mod:`evoprune.parallel` backend (or a ``map_fn``) that runs the stage-2 checks in chunks on
            its workers (``second`` is sent once per worker); ``None`` runs them here. Stage 1 always runs here:
            one batched tensor operation for the whole population is faster than shipping it anywhere.
    """

    name = "twostage"
    objectives = ("combined",)
    weights = (-1.0,)
    BIG = BIG

    def __init__(self, first: Any, second: Any, top_k: int = 5, *, verify_every: int = 1, column: int = 0,
                 backend: Any = None) -> None:
        for label, ev in (("first", first), ("second", second)):
            if not (hasattr(ev, "evaluate") and callable(ev.evaluate)):
                raise EvopruneError(f"TwoStage {label} stage must have an evaluate(masks) method, got "
                                    f"{type(ev).__name__}")
        if not isinstance(top_k, int) or top_k < 0:
            raise EvopruneError(f"top_k must be an integer >= 0, got {top_k!r}")
        if not isinstance(verify_every, int) or verify_every < 1:
            raise EvopruneError(f"verify_every must be an integer >= 1, got {verify_every!r}")
        n1, n2 = getattr(first, "n", None), getattr(second, "n", None)
        if n1 and n2 and n1 != n2:
            raise EvopruneError(f"TwoStage stages disagree on the unit size: first has n={n1}, second n={n2}")
        w2 = tuple(getattr(second, "weights", (-1.0,)))
        if not 0 <= column < len(w2):
            raise EvopruneError(f"column {column} is out of range for the second stage's objectives "
                                f"{tuple(getattr(second, 'objectives', ()))}")
        self.first, self.second = first, second
        self.n = int(n1 or n2 or 0)
        self.top_k, self.verify_every, self.column = top_k, verify_every, column
        self._w1 = float(tuple(getattr(first, "weights", (-1.0,)))[0])
        self._w2 = float(w2[column])
        self.unit = getattr(first, "unit", "") or getattr(second, "unit", "")
        self.verified: Dict[bytes, torch.Tensor] = {}  # genome -> second stage's raw objectives
        self.backend = backend
        self.calls = 0
        self.stage1_evaluations = 0
        self.stage2_evaluations = 0  # genomes sent to stage 2 (here or on the backend's workers)
        self.last: Dict[str, torch.Tensor] = {}

    @classmethod
    def from_space(cls, space: Any, unit: Any, calib: Any, model: Any = None, top_k: int = 5,
                   first: Any = "reconstruction", second: Any = "network", first_options: Optional[dict] = None,
                   second_options: Optional[dict] = None, **options: Any) -> "TwoStage":
        """Both stages built by name (or ``module:Name``) for ``unit`` via :func:`build_evaluator`."""
        s1 = build_evaluator(first, space, unit, calib, model=model, **dict(first_options or {}))
        s2 = build_evaluator(second, space, unit, calib, model=model, **dict(second_options or {}))
        return cls(s1, s2, top_k, **options)

    @staticmethod
    def combine(stage1: torch.Tensor, stage2: torch.Tensor, verified: torch.Tensor) -> torch.Tensor:
        """The combined scalar (see the module docstring): smaller-is-better ``stage1``/``stage2`` [P], bool
        ``verified`` [P] -> [P] float64."""
        half = BIG / 2
        s1 = torch.nan_to_num(stage1.to(torch.float64), nan=half, posinf=half, neginf=-half).clamp(-half, half)
        s2 = stage2.to(torch.float64)
        ok = verified & torch.isfinite(s2)
        out = s1.clone()
        out[ok] = s2[ok].clamp(-half, half) - BIG
        out[verified & ~torch.isfinite(s2)] = BIG
        return out

    def _masks(self, masks: Any) -> torch.Tensor:
        import numpy as np

        n = self.n or int(np.shape(masks)[-1])
        return check_masks(masks, n, f"unit '{self.unit}'" if self.unit else "unit")

    def _scores(self, masks: torch.Tensor) -> torch.Tensor:
        self.stage2_evaluations += int(masks.shape[0])
        if self.backend is not None:
            from evoprune.parallel import chunked_evaluate

            out = torch.as_tensor(chunked_evaluate(self.backend, self.second.evaluate, masks.numpy()),
                                  dtype=torch.float64)
        else:
            out = torch.as_tensor(self.second.evaluate(masks), dtype=torch.float64)
        if out.ndim == 1:
            out = out[:, None]
        if out.shape[0] != masks.shape[0]:
            raise EvopruneError(f"second stage returned {out.shape[0]} rows for {masks.shape[0]} masks")
        return out

    def verify(self, masks: Any) -> torch.Tensor:
        """Stage 2 on ``masks`` (each distinct genome once, remembered): the second stage's raw ``[P, n_obj]``."""
        m = self._masks(masks)
        keys = [genome_key(r) for r in m]
        new: Dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self.verified and k not in new:
                new[k] = i
        if new:
            rows = list(new.values())
            res = self._scores(m[rows])
            for k, r in zip(new, res):
                self.verified[k] = r.clone()
        return torch.stack([self.verified[k] for k in keys])

    def evaluate(self, masks: Any) -> torch.Tensor:
        """``[P, 1]`` combined fitness (minimise); details of the call in ``self.last``."""
        m = self._masks(masks)
        e1 = torch.as_tensor(self.first.evaluate(m), dtype=torch.float64)
        e1 = _oriented(e1[:, 0] if e1.ndim == 2 else e1, self._w1)
        self.stage1_evaluations += m.shape[0]
        keys = [genome_key(r) for r in m]
        if self.top_k and self.calls % self.verify_every == 0:
            picked: Dict[bytes, int] = {}
            for i in torch.argsort(torch.nan_to_num(e1, nan=math.inf), stable=True).tolist():
                if len(picked) >= self.top_k:
                    break
                if keys[i] not in self.verified and keys[i] not in picked:
                    picked[keys[i]] = i
            if picked:
                self.verify(m[list(picked.values())])
        self.calls += 1
        verified = torch.tensor([k in self.verified for k in keys], dtype=torch.bool)
        e2 = torch.full((m.shape[0],), math.nan, dtype=torch.float64)
        for i, k in enumerate(keys):
            if verified[i]:
                e2[i] = _oriented(self.verified[k][self.column], self._w2)
        combined = self.combine(e1, e2, verified)
        self.last = {"stage1": e1, "stage2": e2, "verified": verified, "combined": combined}
        return combined[:, None]

    def budget(self) -> Dict[str, Any]:
        """Evaluations per stage (and the second stage's own budget report when it has one)."""
        out: Dict[str, Any] = {"calls": self.calls, "stage1_evaluations": self.stage1_evaluations,
                               "stage2_evaluations": self.stage2_evaluations, "verified_genomes": len(self.verified)}
        if self.backend is None and hasattr(self.second, "budget"):  # on workers, their copies hold the budget
            out["stage2"] = self.second.budget()
        return out
