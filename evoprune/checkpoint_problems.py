"""Problems built from a trained checkpoint and a dataset, for ``evoprune search|compare --problem NAME``.

The problem classes (``problems/``) take a model and batches and know nothing about files; these factories load
``--checkpoint`` and ``--data`` (:func:`evoprune.session.build_setup`) and hand them over:

* ``network`` -> :class:`~evoprune.problems.NetworkPruningProblem` (every unit at once; error vs MACs);
* ``channels`` -> :class:`~evoprune.problems.ChannelSelectionProblem`, the paper's per-layer problem (below).

``channels`` loads ``--checkpoint`` and ``--data``, takes one unit (``--param unit=NAME``, default: the first) and
a keep ratio (``--param keep=0.5``), and builds :class:`~evoprune.problems.ChannelSelectionProblem` with the
fitness the pipeline uses: ``fitness=reconstruction`` (stage 1, milliseconds a population), ``twostage`` (stage 1
for everyone, the network-level stage 2 for the best few, lexicographic) or ``network`` (held-out loss after
adaptive BN for every genome). It is built from the same calibration and fitness classes the pipeline's selector
uses; ``prune`` differs in its per-unit seeds, its budget (``pop_size x (generations + 1)``), no channel
importances on the problem, and a final stage-2 check of the finalists.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from .errors import EvopruneError
from .registry import PROBLEMS

FITNESSES = ("reconstruction", "twostage", "network")


@PROBLEMS.register("channels", doc="the paper's per-layer problem: keep k of one unit's channels of --checkpoint "
                                   "(unit=NAME, keep=0.5, fitness=reconstruction|twostage|network)")
def channel_problem(checkpoint: Optional[str] = None, data: str = "mini-cifar10", data_dir: Optional[str] = None,
                    model: Optional[str] = None, unit: Optional[str] = None, keep: float = 0.5,
                    fitness: str = "reconstruction", calib_batches: int = 4, bn_batches: int = 4,
                    eval_batches: int = 4, batch_size: int = 128, stage2_top_k: int = 3, stage2_every: int = 10,
                    min_keep: int = 1, seed: int = 0, device: str = "cpu"):
    """Build the per-unit problem (see the module docstring); every bad value is a one-line error."""
    import numpy as np
    import torch

    from .device import resolve_device
    from .fitness import CalibrationData
    from .fitness.unit import unit_fitness
    from .problems.channel_selection import ChannelSelectionProblem
    from .pruning import PruningSpace
    from .pruning.importance import l1_importance
    from .sensitivity import keep_count
    from .session import build_setup

    if not checkpoint:
        raise EvopruneError("problem 'channels' needs --checkpoint FILE (train one with 'evoprune train')")
    if fitness not in FITNESSES:
        raise EvopruneError(f"fitness must be one of {', '.join(FITNESSES)}, got {fitness!r}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < float(keep) < 1.0:
        raise EvopruneError(f"keep must be a fraction in (0, 1), got {keep!r}")
    for name, v in (("calib_batches", calib_batches), ("bn_batches", bn_batches), ("eval_batches", eval_batches),
                    ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise EvopruneError(f"{name} must be a positive integer, got {v!r}")
    s = build_setup(data, data_dir, model, 1.0, checkpoint, resolve_device(device), batch_size=int(batch_size),
                    seed=0)
    net = s.model.eval()
    space = PruningSpace(net, (1, s.data.in_channels, s.data.image_size, s.data.image_size), warn=False)
    names = [u.name for u in space.units]
    if unit is None:
        unit = names[0]
    if unit not in names:
        raise EvopruneError(f"unknown unit '{unit}'; the units of this model: {', '.join(names[:12])}"
                            f"{' ...' if len(names) > 12 else ''}")
    u = space.unit(unit)
    k = keep_count(float(keep), u.channels, int(min_keep), u.channel_groups)
    if k >= u.channels:
        raise EvopruneError(f"keep={keep} keeps all {u.channels} channels of '{unit}'; give a smaller fraction")
    calib = CalibrationData.from_loaders(s.loaders, train_batches=max(calib_batches, bn_batches),
                                         held_out_batches=eval_batches, batch_size=int(batch_size), seed=int(seed))
    _, ev = unit_fitness(space, u, calib, net, fitness, bn_batches=bn_batches, top_k=stage2_top_k,
                         every=stage2_every)
    with torch.no_grad():
        importance = np.asarray(l1_importance(net, space, unit), dtype=float)
    return ChannelSelectionProblem(u.channels, k, ev, min_keep=u.min_keep, importance=importance,
                                   name=f"channels[{unit}@{keep:g}:{fitness}]", groups=u.channel_groups)


@PROBLEMS.register("network", doc="whole-network pruning of --checkpoint: per-unit keep ratios (or masks); "
                                  "minimise held-out error (adaptive BN) and MACs fraction")
def network_problem(model: Optional[str] = None, checkpoint: Optional[str] = None, data: str = "mini-cifar10",
                    data_dir: Optional[str] = None, representation: str = "ratios", seed: int = 0, bn_batches: int = 2,
                    eval_batches: int = 2, batch_size: int = 128, objective2: str = "macs", device: str = "cpu",
                    width: float = 1.0, objectives: Optional[Union[str, Sequence[str]]] = None,
                    **kw: Any) -> Any:
    """Load ``checkpoint`` and ``data`` (:func:`evoprune.session.build_setup`) and build the problem.

    ``objectives`` defaults to ``("error", objective2)``; ``--param objectives=error --param max_macs=0.33`` gives
    the single-objective form for ``ga`` / ``cmaes`` (``--param constraint=project``: every genome scaled to the
    budget boundary). Other keywords (``min_ratio``, ``importance``, ``max_macs``, ``max_params``, ``constraint``,
    ``forward``) go to :class:`NetworkPruningProblem`.
    """
    from .device import resolve_device
    from .problems.network_pruning import NetworkPruningProblem, _count
    from .session import build_setup

    if not checkpoint:
        raise EvopruneError("network problem needs --checkpoint FILE (train one with 'evoprune train')")
    if objective2 not in ("macs", "params"):
        raise EvopruneError(f"objective2 must be 'macs' or 'params', got {objective2!r}")
    for key in ("bn_batches", "eval_batches", "batch_size", "seed"):
        _count(key, locals()[key], 1 if key in ("batch_size", "eval_batches") else 0)
    known = {"encoding", "min_ratio", "importance", "max_macs", "max_params", "spread", "forward", "threads", "name",
             "constraint"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise EvopruneError(f"problem 'network' does not take parameter(s) {', '.join(unknown)}; it takes: "
                            "representation, objectives, objective2, min_ratio, bn_batches, eval_batches, batch_size, "
                            "importance, max_macs, max_params, constraint, spread, forward, threads, width")
    setup = build_setup(data, data_dir, model, float(width), checkpoint, resolve_device(device),
                        batch_size=int(batch_size), seed=0)
    meta = setup.meta or {}
    arch = str(meta.get("arch") or type(setup.model).__name__)
    w = (meta.get("model_kwargs") or {}).get("width")
    if w is not None:
        arch += f" w{w:g}"
    if meta.get("pruned"):
        arch += " (pruned)"
    return NetworkPruningProblem(setup.model, None, setup.loaders, representation=representation,
                                 objectives=objectives if objectives is not None else ("error", objective2),
                                 bn_batches=bn_batches, eval_batches=eval_batches, batch_size=int(batch_size),
                                 seed=int(seed), arch=arch, **kw)
