"""The evaluator protocol, the explicit description of a unit's consumers, and registry helpers.

An *evaluator* scores candidate channel masks of one prunable unit:

* ``evaluate(masks: Tensor[P, n] bool) -> Tensor[P, n_obj]`` (float64, CPU), batched;
* ``name``, ``objectives`` (names) and ``weights`` (DEAP weights: -1 minimise, +1 maximise);
* ``n`` (the unit's channel count) and ``wants_torch = True`` (a :class:`~evoprune.problems.ChannelSelectionProblem`
  then passes torch bool tensors).

Evaluators never mutate the model: hooks are removed, BatchNorm statistics and train/eval modes are restored.

The core of every built-in evaluator takes an explicit, simple description of the unit's *consumers* -- the
modules whose input channels are the unit's channels -- as :class:`ConsumerSpec` (or plain tuples
``(module, input_indices, following_bn_or_None)``), so it works without the pruning engine; :func:`consumers_of`
builds that description from a :class:`~evoprune.pruning.space.PruningSpace` unit.

User evaluators plug in by name (``--fitness mymodule:MyEvaluator``): :func:`get_evaluator` resolves a registered
name or spec, :func:`build_evaluator` constructs it for one unit via ``cls.from_space(space, unit, calib, **kw)``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.pruning.masked import InputMasks, model_modes
from evoprune.registry import EVALUATORS

__all__ = ["ConsumerSpec", "Evaluator", "as_consumers", "consumers_of", "check_masks", "mask_consumers",
           "get_evaluator", "build_evaluator", "model_modes", "genome_key", "small_work"]


@dataclass(frozen=True, eq=False)
class ConsumerSpec:
    """A module reading the unit's channels.

    ``index[c]`` (shape ``[n, R]``) are the module's input channels (Conv2d) or input features (Linear) that carry
    unit channel ``c``: ``R`` is 1 except when a flatten maps one channel to several features. ``norm`` is the
    BatchNorm applied to the module's output (its scale ``gamma / sqrt(var + eps)`` weighs the stage-1 error), or
    ``None``.
    """

    module: nn.Module
    index: torch.Tensor
    norm: Optional[nn.Module] = None
    name: str = ""

    @property
    def n(self) -> int:
        return int(self.index.shape[0])


ConsumerLike = Union[ConsumerSpec, Tuple[Any, ...]]


def _module_name(model: Optional[nn.Module], module: nn.Module) -> str:
    if model is not None:
        for name, m in model.named_modules():
            if m is module:
                return name
    return type(module).__name__


def as_consumers(consumers: Sequence[ConsumerLike], n: Optional[int] = None,
                 model: Optional[nn.Module] = None) -> List[ConsumerSpec]:
    """Normalise ``ConsumerSpec`` objects or tuples ``(module, indices[, norm[, name]])`` to checked specs.

    ``indices`` is a length-``n`` sequence (unit channel c -> input channel ``indices[c]``) or an ``[n, R]`` array.
    """
    if isinstance(consumers, ConsumerSpec) or (isinstance(consumers, tuple) and consumers
                                               and isinstance(consumers[0], nn.Module)):
        consumers = [consumers]  # a single consumer given bare
    out: List[ConsumerSpec] = []
    for item in consumers:
        if isinstance(item, ConsumerSpec):
            spec = item
        elif isinstance(item, (tuple, list)) and 2 <= len(item) <= 4:
            module, idx = item[0], item[1]
            norm = item[2] if len(item) > 2 else None
            name = item[3] if len(item) > 3 else ""
            spec = ConsumerSpec(module, torch.as_tensor(np.asarray(idx), dtype=torch.long), norm, name)
        else:
            raise EvopruneError(f"a consumer must be a ConsumerSpec or a tuple (module, input_indices[, bn]), got "
                                f"{type(item).__name__}")
        mod = spec.module
        if not isinstance(mod, nn.Module):
            raise EvopruneError(f"consumer module must be a torch.nn.Module, got {type(mod).__name__}")
        idx = torch.as_tensor(spec.index, dtype=torch.long).cpu()
        if idx.ndim == 1:
            idx = idx[:, None]
        if idx.ndim != 2 or idx.shape[0] == 0:
            raise EvopruneError(f"consumer indices must be [n] or [n, R] integers, got shape {tuple(idx.shape)}")
        name = spec.name or _module_name(model, mod)
        if isinstance(mod, nn.Conv2d):
            if getattr(mod, "transposed", False):
                raise EvopruneError(f"consumer '{name}' is a transposed conv; stage 1 supports Conv2d and Linear")
            width = mod.in_channels
        elif isinstance(mod, nn.Linear):
            width = mod.in_features
        else:
            raise EvopruneError(f"consumer '{name}' is a {type(mod).__name__}; the two-step fitness supports "
                                f"nn.Conv2d (any groups) and nn.Linear consumers")
        if int(idx.min()) < 0 or int(idx.max()) >= width:
            raise EvopruneError(f"consumer '{name}' indices must lie in [0, {width - 1}], got "
                                f"{int(idx.min())}..{int(idx.max())}")
        if idx.unique().numel() != idx.numel():
            raise EvopruneError(f"consumer '{name}' indices contain duplicates; each input channel carries one unit "
                                "channel")
        norm = spec.norm
        out_ch = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
        if norm is not None:
            if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.num_features != out_ch:
                raise EvopruneError(f"consumer '{name}': its norm must be a BatchNorm with {out_ch} features, got "
                                    f"{type(norm).__name__}")
        out.append(ConsumerSpec(mod, idx, norm, name))
    if not out:
        raise EvopruneError("a unit needs at least one consumer (a conv/linear reading its channels)")
    sizes = {c.n for c in out}
    if len(sizes) != 1:
        raise EvopruneError(f"consumers disagree on the unit's channel count: {sorted(sizes)}")
    if n is not None and sizes != {int(n)}:
        raise EvopruneError(f"consumers describe {sizes.pop()} channels but the unit has n={n}")
    return out


def consumers_of(space: Any, unit: Any, model: Optional[nn.Module] = None) -> List[ConsumerSpec]:
    """The consumers of ``unit`` (a name or a ``Unit``) of a :class:`PruningSpace`, resolved in ``model``.

    ``model`` defaults to the space's model; another model must have the same architecture (e.g. a copy).
    """
    u = space.unit(unit) if isinstance(unit, str) else unit
    model = space.model if model is None else model
    modules = dict(model.named_modules())
    out: List[ConsumerSpec] = []
    for c in u.consumers:
        mod = modules.get(c.name)
        if mod is None:
            raise EvopruneError(f"model has no module '{c.name}' (a consumer of unit '{u.name}'); build the pruning "
                                "space from this model")
        width = getattr(mod, "in_channels", getattr(mod, "in_features", None))
        if width != c.in_channels:
            raise EvopruneError(f"module '{c.name}' has {width} inputs but the pruning space recorded "
                                f"{c.in_channels}; build the pruning space from this model")
        index = np.asarray(c.index, dtype=np.int64)
        channel = np.asarray(c.channel, dtype=np.int64)
        order = np.lexsort((index, channel))  # by channel, then index: row c of [n, R] is channel c
        per = np.bincount(channel, minlength=u.channels)
        if not (per == per[0]).all() or per[0] == 0:
            raise EvopruneError(f"consumer '{c.name}' of unit '{u.name}' reads its channels unevenly; "
                                "the two-step fitness cannot describe it")
        idx = torch.from_numpy(index[order].reshape(u.channels, per[0]).copy())
        norm = modules.get(c.norm) if c.norm else None
        out.append(ConsumerSpec(mod, idx, norm, c.name))
    return as_consumers(out, u.channels)


def check_masks(masks: Any, n: int, what: str = "unit") -> torch.Tensor:
    """Masks as a bool tensor ``[P, n]`` (a single mask ``[n]`` becomes ``[1, n]``); one-line error otherwise."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    elif not isinstance(masks, torch.Tensor):
        try:
            masks = torch.as_tensor(np.asarray(masks))
        except (TypeError, ValueError):
            raise EvopruneError(f"masks must be a bool array [P, {n}], got {type(masks).__name__}") from None
    if masks.ndim == 1:
        masks = masks[None]
    if masks.ndim != 2 or masks.shape[1] != n:
        raise EvopruneError(f"masks must have shape [P, {n}] (one bool per channel of the {what}), got "
                            f"{tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        if masks.is_complex() or not ((masks == 0) | (masks == 1)).all():
            raise EvopruneError("masks must be bool or 0/1 (1 = keep the channel), got other values")
        masks = masks != 0
    return masks.detach().cpu()


def genome_key(mask: torch.Tensor) -> bytes:
    """A hashable exact key of one bool mask (for caches)."""
    return np.packbits(mask.numpy().astype(np.uint8)).tobytes() + int(mask.numel()).to_bytes(4, "little")


@contextlib.contextmanager
def mask_consumers(consumers: Sequence[ConsumerSpec], keep: torch.Tensor) -> Iterator[None]:
    """Zero the unit's removed channels in every consumer's input (forward pre-hooks), for one bool mask ``[n]``.

    Zeroing a channel where the consumer reads it is exactly removing it: the consumer then computes what the
    physically pruned model computes, whatever nonlinearity (or residual identity path) lies between unit and
    consumer -- masking the producer's output instead would rely on f(0) = 0.
    """
    mults = {}
    for c in consumers:
        width = c.module.in_channels if isinstance(c.module, nn.Conv2d) else c.module.in_features
        w = c.module.weight
        mult = torch.ones(width, dtype=torch.float32, device=w.device)
        mult[c.index[~keep.cpu()].reshape(-1).to(w.device)] = 0
        mults[c.name or str(id(c.module))] = (c.module, mult)
    with InputMasks(((name, mod) for name, (mod, _) in mults.items()),
                    {name: m for name, (_, m) in mults.items()}):
        yield


@contextlib.contextmanager
def small_work(macs: int, limit: int = 1 << 27) -> Iterator[None]:
    """Run a small product single-threaded: on shared, busy cores a 2-thread OpenMP matmul of a population
    (100 x 512 x 512) was measured 25x slower than one thread (threads spin-wait on each other)."""
    if macs > limit or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Evaluator:
    """Base class of the built-in evaluators (subclassing is optional for user evaluators: duck typing)."""

    name: str = "evaluator"
    objectives: Tuple[str, ...] = ("objective",)
    weights: Tuple[float, ...] = (-1.0,)
    wants_torch: bool = True
    n: int = 0

    def evaluate(self, masks: Any) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, masks: Any) -> torch.Tensor:
        return self.evaluate(masks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={self.n}, objectives={self.objectives})"


def get_evaluator(spec: Any) -> Any:
    """An evaluator class/factory by registered name (``reconstruction``, ``network``, ``twostage``, ``naive``) or
    ``module:Name`` / ``file.py:Name``; callables pass through."""
    import evoprune.fitness  # noqa: F401  (registers the built-ins)

    return spec if callable(spec) and not isinstance(spec, str) else EVALUATORS.get(spec)


def build_evaluator(spec: Any, space: Any, unit: Any, calib: Any, model: Optional[nn.Module] = None,
                    **options: Any) -> Any:
    """Construct an evaluator for one unit: ``cls.from_space(space, unit, calib, model=model, **options)``.

    A user class without ``from_space`` is called as ``cls(space=..., unit=..., calib=..., model=..., **options)``.
    The result must have ``evaluate``, ``objectives`` and ``weights``.
    """
    cls = get_evaluator(spec)
    try:
        if hasattr(cls, "from_space"):
            ev = cls.from_space(space, unit, calib, model=model, **options)
        else:
            ev = cls(space=space, unit=unit, calib=calib, model=model, **options)
    except TypeError as exc:
        where = getattr(unit, "name", unit)
        raise EvopruneError(f"evaluator '{spec}' cannot be built for unit '{where}': {exc}") from None
    if not (hasattr(ev, "evaluate") and callable(ev.evaluate)):
        raise EvopruneError(f"evaluator '{spec}' built a {type(ev).__name__} without an evaluate(masks) method")
    objs = tuple(getattr(ev, "objectives", ()))
    if not objs or len(tuple(getattr(ev, "weights", ()))) != len(objs):
        raise EvopruneError(f"evaluator '{spec}' must define objectives (names) and one DEAP weight per objective")
    return ev
