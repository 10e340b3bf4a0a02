"""Whole-network pruning as a (multi-objective) problem: one genome decides every unit's channels at once.

Objectives (all minimised, all in [0, 1] for a feasible genome, so the hypervolume reference is ``(1, 1)``):

* ``error``: 1 - top-1 accuracy on held-out calibration batches (carved from the training set, never test) of the
  model with the decoded masks applied, after adaptive BatchNorm (every BN's statistics re-estimated on
  ``bn_batches`` training batches: reset, cumulative average, train mode; as EagleEye does);
* ``macs`` / ``params``: MACs / parameters of the pruned model as a fraction of the unpruned one, from the analytic
  :class:`~evoprune.pruning.CostModel` -- exact, and for the whole population in one vectorised call.

Representations (``representation=``; ``encoding=`` is its old spelling):

* ``ratios`` (default, real-valued; what NSGA-II's SBX/polynomial operators and CMA-ES search): one keep ratio per
  unit in ``[min_ratio, 1]``; unit ``u`` keeps ``k = round(r * n_u)`` channels (at least ``ceil(min_ratio * n_u)``
  and the unit's ``min_keep``; a multiple of its channel groups), chosen as its top-k by an importance criterion
  (``importance="l1"``: filter L1 norms, ranked once at construction). Genomes that decode to the same counts share
  one cache entry.
* ``masks`` (binary): the units' masks concatenated (``n_var`` = total channels); ``repair`` brings every unit to at
  least ``ceil(min_ratio * n_u)`` channels by adding its most important missing ones. ``sample`` draws ratio genomes
  and decodes them, so searches start from importance-ranked decisions and refine which channels are kept.

``sample`` draws, per genome, a level ``s ~ U(min_ratio, 1)`` and per-unit ratios ``U(s - spread, s + spread)``
clipped to the bounds: populations (and random search) cover the whole cost range instead of bunching around one
value, near the uniform-ratio decisions that are a strong baseline. ``spread=0.1`` measured better than 0.25 for
NSGA-II (a partly trained CIFAR-10 VGG-16 w0.25, budget 200, one seed: hypervolume 0.565 vs 0.526; uniform
L1 sweep 0.461).

Constraints: ``max_macs`` / ``max_params`` (fractions). A genome over a limit is not run through the network at all
(its cost is analytic); its ``error`` is ``1 + violation`` (the summed excess fractions), worse than any feasible
genome and still graded towards feasibility. With ``objectives=("error",)`` and ``max_macs=1/3`` this is the
single-objective form that ``ga`` / ``cmaes`` optimise ("the most accurate model within a third of the MACs").

How the error is measured cheaply (the only expensive part):

* calibration batches are materialised once on the model's device;
* ``forward="sliced"`` (chosen by ``"auto"`` when it reproduces the masked model on a probe genome): the forward
  runs the model's own modules through :func:`torch.func.functional_call` with every pruned parameter sliced to the
  kept channels, so a pruned model runs at (roughly) its own size -- about half the time of a full forward at a
  quarter of the MACs (small convolutions do not shrink linearly) -- with no copy of the model and no surgery
  (``apply`` deep-copies the model: ~80 ms for a VGG-16 w0.25); BatchNorm statistics live in fresh
  per-genome buffers handed to ``functional_call``, so the model's own statistics are never touched;
* ``forward="soft"`` (fallback: grouped/depthwise convs, or a model whose forward reads channel counts): the removed
  channels are zeroed where their consumers read them (forward pre-hooks, removed after each call), with the same
  fresh BN buffers -- exact as well, but every forward costs a full forward;
* ``torch.no_grad``, only ``bn_batches`` + ``eval_batches`` batches per genome, results cached by genome.

Measured cost per evaluation (cache misses; VGG-16 width 0.25: 13 units, 1,056 channels, 20 MMACs; 2 BN batches
of 128 + 200 held-out images; 1 torch thread on a 2-core CPU shared with other jobs, load ~8): ``sliced``
0.42-0.51 s for genomes at a mean MACs fraction of 0.37 and 0.72 s for the unpruned model; ``soft`` 0.89-0.94 s and
0.80 s. :meth:`NetworkPruningProblem.cost` reports the live figure; ``benchmarks/compare_strategies.py`` measures
it on CIFAR-10 (``benchmarks/results/compare_strategies.json``). Torch threads matter more than anything else on a
shared machine: the same evaluation took 4-12x longer with 2 threads (``threads=1`` pins it while evaluating).

The model is never modified: parameters, statistics, train/eval flags and BN momenta are as before every call.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from evoprune.config import operator_defaults
from evoprune.errors import EvopruneError

from .base import check_population, make_toolbox, wrap

__all__ = ["NetworkPruningProblem", "METRICS"]

METRICS = ("error", "macs", "params")
UNIFORM_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ----------------------------------------------------------------------------------------------------- helpers
# torch is imported inside functions: importing evoprune.problems (which registers this factory) stays cheap.
def _representation(representation: str, encoding: Optional[str]) -> str:
    if encoding is not None:
        import warnings

        warnings.warn("the network problem's encoding= is now representation= (encoding names the genome type, "
                      "real or binary)", FutureWarning, stacklevel=3)
        representation = encoding
    if representation not in ("ratios", "masks"):
        raise EvopruneError(f"representation must be 'ratios' or 'masks', got {representation!r}")
    return representation


def _as_objectives(objectives: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    objs = tuple(s.strip() for s in objectives.split(",")) if isinstance(objectives, str) else tuple(objectives)
    objs = tuple(o for o in objs if o)
    bad = [o for o in objs if o not in METRICS]
    if not objs or bad or len(set(objs)) != len(objs) or "error" not in objs:
        raise EvopruneError(f"objectives must name 'error' and optionally 'macs' and/or 'params', each once "
                            f"(e.g. error,macs), got {','.join(objs) or 'nothing'}")
    return objs


def _fraction(name: str, value: Any, low: float = 0.0) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low < float(value) <= 1.0:
        raise EvopruneError(f"{name} must be a fraction in ({low:g}, 1], got {value!r}")
    return float(value)


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EvopruneError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _batches(data: Any, bn_batches: int, eval_batches: int, batch_size: int, seed: int
             ) -> Tuple[List[Any], List[Any]]:
    """``(bn inputs, held-out (x, y) batches)`` from Loaders, CalibrationData or a ``(bn, held_out)`` pair."""
    if hasattr(data, "train_batches") and hasattr(data, "calib_batches"):  # evoprune.data.Loaders
        bn = data.train_batches(bn_batches, batch_size=batch_size, seed=seed) if bn_batches else []
        held = data.calib_batches(eval_batches, batch_size=batch_size)
    elif hasattr(data, "train") and hasattr(data, "held_out"):  # evoprune.fitness.CalibrationData
        bn, held = list(data.train)[:bn_batches], list(data.held_out)[:eval_batches]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        bn, held = list(data[0] or [])[:bn_batches], list(data[1] or [])[:eval_batches]
    else:
        raise EvopruneError("network problem data must be evoprune Loaders, CalibrationData, or a pair "
                            f"(bn_batches, held_out_batches) of (x, y) lists; got {type(data).__name__}")
    import torch

    if not held:
        raise EvopruneError("network problem needs at least one held-out calibration batch (x, y); "
                            "use a larger calibration split or eval_batches >= 1")
    if bn_batches and not bn:
        raise EvopruneError("network problem found no training batch for BatchNorm re-estimation; "
                            "use a larger dataset or bn_batches=0")
    xs = []
    for b in bn:  # BN re-estimation needs inputs only: bare tensors or (x, anything) pairs
        x = b[0] if isinstance(b, (tuple, list)) and b else b
        if not isinstance(x, torch.Tensor):
            raise EvopruneError("BN batches must be input tensors or (x, y) pairs")
        xs.append(x)
    for b in held:
        if not (isinstance(b, (tuple, list)) and len(b) == 2 and isinstance(b[0], torch.Tensor)
                and isinstance(b[1], torch.Tensor)):
            raise EvopruneError("held-out batches must be (x, y) tensor pairs (the error needs labels)")
    return xs, list(held)


class _MasksInit:
    """Init operator of the masks encoding for the GA (``default_operators["init"]``): decoded ratio samples."""

    __name__ = __qualname__ = "network-masks-init"  # a stable label in run parameters and checkpoints

    def __init__(self, problem: "NetworkPruningProblem") -> None:
        self.problem = problem

    def __repr__(self) -> str:
        return "network-masks-init"

    def __call__(self, size: int, n: int, k: Any = None, *, rng: np.random.Generator, **_: Any) -> np.ndarray:
        return self.problem.sample(rng, size)


# ------------------------------------------------------------------------------------------------------ problem
CONSTRAINTS = ("penalty", "project")


class NetworkPruningProblem:
    """Prune a whole network: genomes decide every unit's channels; objectives error and MACs (or params).

    Args:
        model: the trained network (never modified).
        space: its :class:`~evoprune.pruning.PruningSpace` (``None``: built from ``model`` and the data's shape).
        data: evoprune ``Loaders``, a ``CalibrationData``, or a pair ``(bn_batches, held_out_batches)``.
        representation: ``"ratios"`` (one keep ratio per unit) or ``"masks"`` (every channel); the attribute
            ``encoding`` holds the protocol's genome type it implies (``"real"`` / ``"binary"``).
        encoding: the old name of ``representation`` (accepted with a warning).
        objectives: names among ``error``, ``macs``, ``params`` (``error`` required), or a comma-separated string.
        min_ratio: smallest keep ratio of any unit (the lower bound of the ratio genome).
        bn_batches: training batches for adaptive BN (0: keep the model's statistics).
        eval_batches: held-out batches the error is measured on.
        importance: criterion ranking each unit's channels (``evoprune.pruning.IMPORTANCE``), for ``ratios``
            decoding, ``masks`` repair and sampling.
        batch_size: batch size when batches are drawn from ``Loaders``.
        seed: picks the BN batches (and seeds ``importance="random"``); fixed per problem instance.
        max_macs, max_params: optional cost limits (fractions), see the module docstring.
        spread: half-width of the per-unit ratio jitter of ``sample`` around each genome's level (0: uniform
            decisions only).
        forward: ``"auto"``, ``"sliced"`` or ``"soft"`` (how masked models are run; see the module docstring).
        constraint: how ``ratios`` genomes meet ``max_macs``/``max_params``: ``"penalty"`` (over-budget genomes
            score ``1 + violation``, unevaluated) or ``"project"`` (every genome is scaled, ``t x ratios``, to the
            largest allocation within the budget: the genome chooses the *shape* of the allocation, the budget its
            size, and no evaluation is spent on an infeasible or an under-using one).
        threads: torch intra-op threads while evaluating (restored afterwards; ``None``: leave torch's setting).
            One forward of a pruned small CNN on 128 images is too small to split: on a 2-core machine shared with
            other jobs, 2 threads measured 4-12x *slower* than 1 here.
        arch: a label for the model in the problem name (default: its class name).
        name: problem name (default ``network(<arch>, <encoding>, <objectives>)``).
    """

    def __init__(self, model: Any, space: Any = None, data: Any = None, *, representation: str = "ratios",
                 objectives: Union[str, Sequence[str]] = ("error", "macs"), min_ratio: float = 0.05,
                 bn_batches: int = 2, eval_batches: int = 2, importance: str = "l1", batch_size: int = 128,
                 seed: int = 0, max_macs: Optional[float] = None, max_params: Optional[float] = None,
                 spread: float = 0.1, forward: str = "auto", threads: Optional[int] = None,
                 constraint: str = "penalty", name: Optional[str] = None,
                 arch: Optional[str] = None, encoding: Optional[str] = None) -> None:
        import torch
        from torch import nn

        from evoprune.pruning import CostModel, IMPORTANCE, PruningSpace
        from evoprune.pruning.masked import MaskedNetwork

        if not isinstance(model, nn.Module):
            raise EvopruneError(f"network problem needs a torch.nn.Module, got {type(model).__name__}")
        representation = _representation(representation, encoding)
        if forward not in ("auto", "sliced", "soft"):
            raise EvopruneError(f"forward must be 'auto', 'sliced' or 'soft', got {forward!r}")
        if importance not in IMPORTANCE:
            raise EvopruneError(f"unknown importance '{importance}'; use one of {', '.join(sorted(IMPORTANCE))}")
        self.objectives: Tuple[str, ...] = _as_objectives(objectives)
        self.weights: Tuple[float, ...] = (-1.0,) * len(self.objectives)
        self.min_ratio = _fraction("min_ratio", min_ratio)
        if self.min_ratio >= 1.0:
            raise EvopruneError(f"min_ratio must be below 1 (1 leaves nothing to prune), got {min_ratio}")
        if constraint not in CONSTRAINTS:
            raise EvopruneError(f"constraint={constraint!r}: use one of {', '.join(CONSTRAINTS)}")
        if constraint == "project" and representation != "ratios":
            raise EvopruneError("constraint='project' scales ratio genomes: use it with representation='ratios'")
        self.constraint = constraint
        self.max_macs = _fraction("max_macs", max_macs)
        self.max_params = _fraction("max_params", max_params)
        if len(self.objectives) == 1 and self.max_macs is None and self.max_params is None:
            raise EvopruneError("objectives=error alone is minimised by the unpruned model; add a cost limit "
                                "(--param max_macs=0.33) or a cost objective (objectives=error,macs)")
        self.options = {"representation": representation, "objectives": objectives, "min_ratio": min_ratio,
                        "importance": importance, "seed": seed, "max_macs": max_macs, "max_params": max_params,
                        "constraint": constraint,
                        "spread": spread, "forward": forward, "threads": threads, "arch": arch}
        if isinstance(spread, bool) or not isinstance(spread, (int, float, np.number)) or not 0 <= spread <= 1:
            raise EvopruneError(f"spread must be a number in [0, 1], got {spread!r}")
        self.spread = float(spread)
        self.threads = None if threads is None else _count("threads", threads, 1)
        self.bn_batches = _count("bn_batches", bn_batches, 0)
        self.eval_batches = _count("eval_batches", eval_batches, 1)
        self.representation = representation  # "ratios" | "masks" (what the user picks)
        self.encoding = "real" if representation == "ratios" else "binary"  # the protocol's genome type
        self.model = model
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        bn, held = _batches(data, self.bn_batches, self.eval_batches, int(batch_size), int(seed))
        # the Loaders, when given: more calibration batches for re-scoring (see variant)
        self.loaders = data if hasattr(data, "calib_batches") else None
        # materialised once on the model's device: every evaluation reuses the same tensors
        self._bn_x = [x.to(self.device).contiguous() for x in bn]
        self._ev = [(x.to(self.device).contiguous(), y.to(self.device)) for x, y in held]
        if space is None:
            space = PruningSpace(model, (1,) + tuple(self._ev[0][0].shape[1:]), warn=False)
        self.space = space
        space.check_model(model)
        self.cost_model = CostModel(space)
        units = space.units
        self.unit_names: List[str] = [u.name for u in units]
        self.sizes = np.asarray([u.channels for u in units], dtype=np.int64)
        self.groups = np.asarray([u.channel_groups for u in units], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        per = self.sizes // self.groups
        # fewest channels per block: min_ratio of the unit and the space's own minimum
        lo = np.maximum(np.ceil(self.min_ratio * self.sizes - 1e-9).astype(np.int64),
                        np.asarray([u.min_keep for u in units], dtype=np.int64))
        self._per = per
        self._lo_block = np.minimum(-(-lo // self.groups), per).clip(min=1)
        self.min_keep = self._lo_block * self.groups  # per unit, in channels
        # importance rank of every channel inside its block (0 = most important), concatenated over units
        rng = np.random.default_rng(seed)
        self.importance_name = importance
        ranks, scores_all = [], []
        for u, g, p in zip(units, self.groups, per):
            s = np.asarray(IMPORTANCE[importance](model, space, u, data=bn or held, rng=rng), dtype=np.float64)
            s = np.nan_to_num(s, nan=-np.inf)
            order = np.argsort(-s.reshape(g, p), axis=1, kind="stable")
            rank = np.empty((g, p), dtype=np.int64)
            np.put_along_axis(rank, order, np.arange(p)[None, :].repeat(g, 0), axis=1)
            ranks.append(rank.ravel())
            scores_all.append(s)
        self._rank = np.concatenate(ranks)
        self.importance = np.concatenate(scores_all)
        self._unit_of = np.repeat(np.arange(len(units)), self.sizes)
        self.n_units = len(units)
        if representation == "ratios":
            self.n_var = self.n_units
            self.lower = np.full(self.n_units, self.min_ratio)
            self.upper = np.ones(self.n_units)
        else:
            self.n_var = int(self.sizes.sum())
            self.default_operators = dict(operator_defaults(fixed_k=False), init=_MasksInit(self))
        self.hv_ref: Optional[Tuple[float, ...]] = (1.0,) * len(self.objectives) if len(self.objectives) > 1 \
            else None
        self.k = None
        self.arch = arch or type(model).__name__
        tag = "+".join(self.objectives)
        if self.max_macs is not None:
            tag += f", macs<={self.max_macs:g}"
        if self.max_params is not None:
            tag += f", params<={self.max_params:g}"
        self.name = name or f"network({self.arch}, {representation}, {tag})"
        # the same probe decision as before the engine moved out (the sliced-vs-soft check depends on it)
        probe = self.masks_of_counts(self.counts_of_ratios(
            np.random.default_rng(12345).uniform(0.3, 0.8, size=(1, self.n_units))))[0]
        self.engine = MaskedNetwork(model, space, self._bn_x, self._ev, forward=forward, probe=probe,
                                    threads=self.threads)
        self.forward_mode, self.forward_info = self.engine.mode, self.engine.info
        self.cache: Dict[bytes, float] = {}
        self.evaluations = 0  # forward evaluations actually run (cache misses of feasible genomes)
        self.cache_hits = 0
        self.infeasible = 0
        self.seconds = 0.0

    # -------------------------------------------------------------------------------------------- protocol
    @property
    def n_obj(self) -> int:
        return len(self.objectives)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` genomes spread over the whole cost range (see the module docstring)."""
        size = int(size)
        s = rng.uniform(self.min_ratio, 1.0, size=(size, 1))
        r = np.clip(s + rng.uniform(-self.spread, self.spread, size=(size, self.n_units)), self.min_ratio, 1.0)
        return r if self.representation == "ratios" else self.masks_of_counts(self.counts_of_ratios(r))

    def repair(self, genomes: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """Valid genomes (a new array): ratios clipped to ``[min_ratio, 1]``; masks brought to ``min_keep``."""
        g = np.array(genomes, copy=True)
        one = g.ndim == 1
        g = np.atleast_2d(g)
        if self.representation == "ratios":
            g = np.clip(np.nan_to_num(g.astype(float), nan=1.0), self.min_ratio, 1.0)
        else:
            g = self._repair_masks(g.astype(bool))
        return g[0] if one else g

    def evaluate(self, population: np.ndarray) -> np.ndarray:
        """``[P, n_obj]`` objective values of a population (one vectorised cost call; error per genome, cached)."""
        pop = check_population(self, population)
        if len(pop) == 0:
            return np.zeros((0, self.n_obj))
        masks, counts = self._decode(pop)
        fr = self._fractions(counts)
        err = np.empty(len(pop))
        viol = self._violation(fr)
        feasible = viol <= 0
        err[~feasible] = 1.0 + viol[~feasible]
        self.infeasible += int((~feasible).sum())
        keys = [self._key(masks[i], counts[i]) for i in range(len(pop))]
        todo = [i for i in np.flatnonzero(feasible) if keys[i] not in self.cache]
        self.cache_hits += int(feasible.sum()) - len(todo)
        if todo:
            t0 = time.perf_counter()
            with self.engine.context() as run:
                for i in todo:
                    if keys[i] not in self.cache:  # duplicates inside one call run once
                        self.cache[keys[i]] = 1.0 - run(masks[i])
                        self.evaluations += 1
            self.seconds += time.perf_counter() - t0
        for i in np.flatnonzero(feasible):
            err[i] = self.cache[keys[i]]
        cols = {"error": err, "macs": fr["macs"], "params": fr["params"]}
        return np.stack([cols[o] for o in self.objectives], axis=1)

    def toolbox(self, **kw: Any) -> Any:
        """A DEAP ``Toolbox``: binary operators for ``masks`` (see ``make_toolbox``); bounded SBX + polynomial
        mutation (``eta_cx``, ``eta_mut``, ``indpb``) and NSGA-II/tournament selection for ``ratios``."""
        if self.representation == "masks":
            return make_toolbox(self, **kw)
        from deap import base, tools

        rng = kw.pop("rng", None) or np.random.default_rng(kw.pop("seed", None))
        eta_cx, eta_mut = float(kw.pop("eta_cx", 15.0)), float(kw.pop("eta_mut", 20.0))
        indpb = float(kw.pop("indpb", 1.0 / self.n_var))
        if kw:
            raise EvopruneError(f"the ratios toolbox takes rng, seed, eta_cx, eta_mut, indpb; got {sorted(kw)}")
        lo, hi = self.lower.tolist(), self.upper.tolist()
        tb = base.Toolbox()
        tb.register("individual", lambda: wrap(self.sample(rng, 1)[0], self.weights))
        tb.register("population", lambda n: [wrap(g, self.weights) for g in self.sample(rng, n)])  # population(n=...)
        tb.register("mate", tools.cxSimulatedBinaryBounded, eta=eta_cx, low=lo, up=hi)
        tb.register("mutate", tools.mutPolynomialBounded, eta=eta_mut, low=lo, up=hi, indpb=indpb)
        if self.n_obj > 1:
            tb.register("select", tools.selNSGA2)
        else:
            tb.register("select", tools.selTournament, tournsize=3)
        tb.register("evaluate", lambda ind: tuple(float(v) for v in self.evaluate(np.asarray(ind)[None])[0]))
        tb.register("map", map)
        tb.register("repair", lambda genomes: self.repair(genomes, rng))
        tb.rng = rng
        return tb

    # ------------------------------------------------------------------------------------------- decoding
    def counts_of_ratios(self, ratios: np.ndarray) -> np.ndarray:
        """Kept channels per unit ``[P, U]`` of ratio genomes (rounded, bounded, multiples of channel groups)."""
        R = np.atleast_2d(np.asarray(ratios, dtype=float))
        if not np.all(np.isfinite(R)):
            raise EvopruneError("ratio genomes must be finite numbers")
        kb = np.floor(R * self._per + 0.5).astype(np.int64)
        return np.clip(kb, self._lo_block, self._per) * self.groups

    def masks_of_counts(self, counts: np.ndarray) -> np.ndarray:
        """Concatenated masks ``[P, n_channels]`` keeping each unit's top-``k`` channels by importance."""
        K = np.atleast_2d(np.asarray(counts, dtype=np.int64))
        kb = K // self.groups
        return self._rank[None, :] < kb[:, self._unit_of]

    def counts_of_masks(self, masks: np.ndarray) -> np.ndarray:
        M = np.atleast_2d(np.asarray(masks, dtype=bool))
        return np.add.reduceat(M.astype(np.int64), self.offsets[:-1], axis=1)

    def cost_fractions(self, genomes: np.ndarray) -> Dict[str, np.ndarray]:
        """``{"macs": [P], "params": [P]}`` fractions of the unpruned model (analytic; no forward pass)."""
        _, counts = self._decode(check_population(self, genomes))
        return self._fractions(counts)

    def decode(self, genome: np.ndarray) -> Dict[str, np.ndarray]:
        """``{unit name: bool mask}`` of one genome (what ``evoprune.pruning.apply`` takes)."""
        g = np.asarray(genome)
        if g.ndim != 1 or g.shape[0] != self.n_var:
            raise EvopruneError(f"problem '{self.name}' expects one genome of length {self.n_var}, got shape {g.shape}")
        M, _ = self._decode(g[None])
        return {n: M[0, a:b].copy() for n, a, b in zip(self.unit_names, self.offsets[:-1], self.offsets[1:])}

    def uniform_genomes(self, ratios: Sequence[float]) -> np.ndarray:
        """Genomes keeping the same ratio of every unit (importance-ranked channels), in this encoding."""
        r = np.repeat(np.asarray(ratios, dtype=float)[:, None], self.n_units, axis=1)
        r = np.clip(r, self.min_ratio, 1.0)
        return r if self.representation == "ratios" else self.masks_of_counts(self.counts_of_ratios(r))

    def full_genome(self) -> np.ndarray:
        """The genome of the unpruned model."""
        return np.ones(self.n_var, dtype=float if self.representation == "ratios" else bool)

    def counts(self, genomes: np.ndarray) -> np.ndarray:
        """Kept channels per unit ``[P, U]`` that genomes decode to (budget projection included)."""
        return self._decode(check_population(self, genomes))[1]

    def project(self, ratios: np.ndarray, iterations: int = 40) -> np.ndarray:
        """``t x ratios`` (clipped to ``[min_ratio, 1]``) with the largest ``t`` whose decoded allocation meets
        ``max_macs``/``max_params``: one vectorised bisection over the population on the analytic cost. A genome
        that is over budget even at ``min_ratio`` everywhere is returned at that floor (and scored as over budget)."""
        R = np.clip(np.atleast_2d(np.asarray(ratios, dtype=float)), self.min_ratio, 1.0)
        if self.max_macs is None and self.max_params is None:
            return R

        def ok(t: np.ndarray) -> np.ndarray:
            return self._violation(self._fractions(self.counts_of_ratios(np.clip(R * t[:, None], self.min_ratio,
                                                                                 1.0)))) <= 0

        lo = np.zeros(len(R))
        hi = 1.0 / R.min(1)  # every unit at 1: the unpruned model
        full = ok(hi)
        lo[full] = hi[full]
        for _ in range(iterations):
            mid = np.where(full, hi, 0.5 * (lo + hi))
            good = ok(mid)
            lo = np.where(good, mid, lo)
            hi = np.where(good, hi, mid)
        return np.clip(R * lo[:, None], self.min_ratio, 1.0)

    def _decode(self, pop: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.representation == "ratios":
            counts = self.counts_of_ratios(self.project(pop) if self.constraint == "project" else pop)
            return self.masks_of_counts(counts), counts
        M = np.asarray(pop).astype(bool)
        counts = self.counts_of_masks(M)
        if np.any(counts < self.min_keep) or np.any(self._block_counts_uneven(M)):
            raise EvopruneError(f"problem '{self.name}': a mask genome keeps fewer than min_keep channels in a unit "
                                "(or uneven channel groups); pass it through problem.repair first")
        return M, counts

    def _block_counts_uneven(self, M: np.ndarray) -> np.ndarray:
        bad = np.zeros(len(M), dtype=bool)
        for u in np.flatnonzero(self.groups > 1):
            c = M[:, self.offsets[u]:self.offsets[u + 1]].reshape(len(M), self.groups[u], -1).sum(2)
            bad |= (c != c[:, :1]).any(1)
        return bad

    def _repair_masks(self, M: np.ndarray) -> np.ndarray:
        """Per unit (per block): below ``lo`` add the most important missing channels; grouped units get the
        same count in every block (the rounded mean), dropping the least important ones where needed."""
        out = M.copy()
        for u in range(self.n_units):
            a, b = self.offsets[u], self.offsets[u + 1]
            g, p = int(self.groups[u]), int(self._per[u])
            blk = out[:, a:b].reshape(len(out), g, p)
            rank = self._rank[a:b].reshape(g, p)
            cnt = blk.sum(2)
            if g == 1:
                target = np.maximum(cnt, self._lo_block[u])
            else:
                target = np.clip(np.floor(cnt.mean(1, keepdims=True) + 0.5), self._lo_block[u], p).astype(np.int64)
                target = np.broadcast_to(target, cnt.shape)
            if np.array_equal(target, cnt):
                continue
            order = np.argsort(rank, axis=1)  # columns by importance, most important first
            sorted_blk = np.take_along_axis(blk, order[None], axis=2)
            add_need = np.maximum(target - cnt, 0)[..., None]
            missing = ~sorted_blk
            sorted_blk |= missing & (np.cumsum(missing, axis=2) <= add_need)
            drop_need = np.maximum(cnt - target, 0)[..., None]
            kept_rev = sorted_blk[..., ::-1]
            drop = kept_rev & (np.cumsum(kept_rev, axis=2) <= drop_need)
            sorted_blk &= ~drop[..., ::-1]
            fixed = np.empty_like(sorted_blk)
            np.put_along_axis(fixed, np.broadcast_to(order[None], sorted_blk.shape), sorted_blk, axis=2)
            out[:, a:b] = fixed.reshape(len(out), -1)
        return out

    # ---------------------------------------------------------------------------------------- costs, keys
    def _fractions(self, counts: np.ndarray) -> Dict[str, np.ndarray]:
        cm = self.cost_model
        return {"macs": cm.macs_batch(counts) / float(cm.base_macs),
                "params": cm.params_batch(counts) / float(cm.base_params)}

    def _violation(self, fr: Mapping[str, np.ndarray]) -> np.ndarray:
        v = np.zeros(len(fr["macs"]))
        if self.max_macs is not None:
            v += np.maximum(fr["macs"] - self.max_macs, 0.0)
        if self.max_params is not None:
            v += np.maximum(fr["params"] - self.max_params, 0.0)
        return v

    def _key(self, mask: np.ndarray, counts: np.ndarray) -> bytes:
        # ratio genomes decode through counts alone: equal counts = equal masks, one cache entry
        if self.representation == "ratios":
            return counts.astype(np.int32).tobytes()
        return np.packbits(mask).tobytes()

    # ------------------------------------------------------------------------------------------- reporting
    def measure(self, genomes: np.ndarray) -> Dict[str, np.ndarray]:
        """Raw ``error`` (always run, ignoring cost limits), ``macs`` and ``params`` fractions of genomes."""
        pop = check_population(self, genomes)
        if self.constraint == "project":  # the allocation evaluate() scores: projected under the limits
            pop = self.project(pop)
        saved = self.max_macs, self.max_params, self.objectives
        self.max_macs = self.max_params = None
        self.objectives = METRICS
        try:
            F = self.evaluate(pop)
        finally:
            self.max_macs, self.max_params, self.objectives = saved
        return {m: F[:, j] for j, m in enumerate(METRICS)}

    def reference_points(self, ratios: Sequence[float] = UNIFORM_RATIOS,
                         objectives: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """Named reference points in raw objective units, for plots (``plot_fronts(reference=...)``):
        ``unpruned`` (the full model, same objective: adaptive BN included) and ``uniform L1`` (every unit keeps
        the same ratio of its most important channels, for each of ``ratios``)."""
        objs = tuple(objectives) if objectives is not None else (
            self.objectives if len(self.objectives) > 1 else ("error", "macs"))
        G = np.concatenate([self.full_genome()[None], self.uniform_genomes(ratios)])
        m = self.measure(G)
        F = np.stack([m[o] for o in objs], axis=1)
        label = "uniform " + (self.importance_name.upper() if self.importance_name == "l1" else self.importance_name)
        return {"unpruned": F[:1], label: F[1:]}

    def save_reference_points(self, path: Any, ratios: Sequence[float] = UNIFORM_RATIOS) -> Dict[str, np.ndarray]:
        """Write :meth:`reference_points` as JSON for ``evoprune plot RUN --reference PATH``; returns them."""
        import json
        from pathlib import Path

        objs = self.objectives if len(self.objectives) > 1 else ("error", "macs")
        refs = self.reference_points(ratios, objs)
        data = {k: [dict(zip(objs, map(float, row))) for row in v] for k, v in refs.items()}
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return refs

    def cost(self) -> Dict[str, Any]:
        """Evaluation spending: forwards run, cache hits, infeasible (skipped) genomes, seconds per evaluation."""
        return {"evaluations": self.evaluations, "cache_hits": self.cache_hits, "infeasible_skipped": self.infeasible,
                "seconds": self.seconds,
                "seconds_per_evaluation": self.seconds / self.evaluations if self.evaluations else None,
                "forward": self.forward_info, "bn_batches": len(self._bn_x),
                "eval_images": int(sum(len(y) for _, y in self._ev))}

    def variant(self, held_out: Optional[Sequence[Any]] = None, **options: Any) -> "NetworkPruningProblem":
        """The same model, space and BN batches with other options (``representation``, ``objectives``, ``max_macs``,
        ...), e.g. the scalarised single-objective form for ``ga`` / ``cmaes``; nothing is reloaded. ``held_out``:
        other ``(x, y)`` batches to measure the error on (e.g. to re-score a front on images the search did not
        select on: a front is the best of many noisy evaluations, so its errors are optimistic)."""
        kw = {**self.options, **options}
        if "encoding" in options:  # the old spelling given here overrides the stored representation
            kw.pop("representation")
        held = self._ev if held_out is None else list(held_out)
        return NetworkPruningProblem(self.model, self.space, (self._bn_x, held), bn_batches=len(self._bn_x),
                                     eval_batches=max(len(held), 1), **kw)

    def clear_cache(self) -> None:
        """Forget cached errors and counters (e.g. between timed runs)."""
        self.cache.clear()
        self.evaluations = self.cache_hits = self.infeasible = 0
        self.seconds = 0.0

    def __getstate__(self) -> Dict[str, Any]:
        st = dict(self.__dict__)
        st["loaders"] = None  # the whole dataset: workers need only the materialised batches
        return st

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n_var={self.n_var}, units={self.n_units}, "
                f"objectives={self.objectives}, forward={self.forward_mode})")
