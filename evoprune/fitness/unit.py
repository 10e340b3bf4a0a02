"""The per-unit fitness: one construction for what ``prune``'s GA optimises and what ``search --problem channels``
hands a researcher's strategy, so a strategy measured with ``compare`` sees the objective ``prune`` uses."""
from __future__ import annotations

from typing import Any, Tuple

from .base import build_evaluator
from .reconstruction import ReconstructionFitness
from .twostage import TwoStage


def unit_fitness(space: Any, unit: Any, calib: Any, model: Any, fitness: str = "twostage", *, bn_batches: int = 4,
                 top_k: int = 3, every: int = 10, backend: Any = None) -> Tuple[ReconstructionFitness, Any]:
    """``(stage1, evaluator)`` for one unit: ``reconstruction`` (stage 1 alone), ``network`` (stage 2 alone),
    ``twostage`` (stage 1 for all, stage 2 for the ``top_k`` best every ``every`` calls; its checks on
    ``backend``) or any registered evaluator name / ``module:Class``. Stage 1 comes back too: the GA seeds from
    its quadratic and reports it for the chosen mask."""
    s1 = ReconstructionFitness.from_space(space, unit, calib, model=model)
    if fitness == "reconstruction":
        return s1, s1
    if fitness in ("network", "twostage"):
        s2 = build_evaluator("network", space, unit, calib, model=model, bn_batches=bn_batches)
        return s1, s2 if fitness == "network" else TwoStage(s1, s2, top_k=top_k, verify_every=every, backend=backend)
    return s1, build_evaluator(fitness, space, unit, calib, model=model)
