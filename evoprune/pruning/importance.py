"""Channel importance criteria and the top-k selectors built on them.

Importance functions share one signature and return one score per unit channel (higher = more important)::

    importance(model, space, unit, data=None, rng=None) -> ndarray[n]

* ``l1``: L1 norm of each filter (Li et al. 2017), summed over the unit's producer convs (a residual unit sums the
  filters of every conv that feeds the adds);
* ``bn``: |gamma| of the BatchNorm after each producer (network slimming, Liu et al. 2017), summed likewise;
* ``taylor``: first-order Taylor (Molchanov et al. 2017): |sum over positions of activation x gradient| per sample,
  averaged over the samples of ``data``. The activation is what the consumers read, gated by a per-sample, per-channel
  gate whose gradient is exactly that sum, so coupled units count every consumer. Needs ``data``: an iterable of
  ``(inputs, labels)`` batches or bare input tensors (then the model's own predictions serve as labels). The model
  runs in eval mode (BatchNorm running statistics), and parameter gradients are left untouched;
* ``random``: uniform scores from ``rng`` (a baseline).

Selectors, registered in :data:`evoprune.registry.SELECTORS` under the same names, are what the pipeline calls::

    SELECTORS.get(name)(model, space, unit_name, k, batches=None, rng=None) -> bool ndarray[n]

with exactly ``k`` True: the top-``k`` channels by score (ties to the lower index). ``model`` must be the model the
space describes (unpruned at that unit). For a unit with ``channel_groups`` g > 1, ``k`` must be a multiple of g and
the top ``k / g`` are kept in each block. ``batches`` is ``data`` above (only ``taylor`` needs it); ``rng`` is a
``numpy.random.Generator`` or seed (only ``random`` uses it).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.registry import SELECTORS

from .space import BN, CONV_OUT, LINEAR_OUT, PruningSpace, Unit

UnitLike = Union[str, Unit]
Importance = Callable[..., np.ndarray]


def _unit(space: PruningSpace, unit: UnitLike) -> Unit:
    return unit if isinstance(unit, Unit) else space.unit(unit)


def _modules(model: nn.Module) -> Dict[str, nn.Module]:
    return dict(model.named_modules())


def _scatter(n: int, parts) -> np.ndarray:
    scores = np.zeros(n, dtype=np.float64)
    for channel, values in parts:
        np.add.at(scores, channel, values)
    return scores


def _module(mods: Dict[str, nn.Module], name: str, unit: Unit, size: int, attr: str) -> torch.Tensor:
    m = mods.get(name)
    t = getattr(m, attr, None) if m is not None else None
    if t is None or t.shape[0] != size:
        raise EvopruneError(f"model does not match the pruning space at '{name}' (unit '{unit.name}'); "
                            f"build the space from this model")
    return t.detach()


# --------------------------------------------------------------------------------------------------- criteria
def l1_importance(model: nn.Module, space: PruningSpace, unit: UnitLike, data: Any = None, rng: Any = None
                  ) -> np.ndarray:
    """Sum of |weights| of each channel's filters over the unit's producer convs."""
    u = _unit(space, unit)
    mods = _modules(model)
    parts = []
    for mem in u.members:
        if mem.kind in (CONV_OUT, LINEAR_OUT):
            w = _module(mods, mem.name, u, space.layers[mem.name].out_channels, "weight")
            per = w.abs().flatten(1).sum(1).double().cpu().numpy()
            parts.append((mem.channel, per[mem.index]))
    return _scatter(u.channels, parts)


def bn_importance(model: nn.Module, space: PruningSpace, unit: UnitLike, data: Any = None, rng: Any = None
                  ) -> np.ndarray:
    """|gamma| of the BatchNorm(s) right after the unit's producers (network slimming)."""
    u = _unit(space, unit)
    mods = _modules(model)
    parts = []
    for mem in u.members:
        if mem.kind == BN and mem.name in u.norms and space.layers[mem.name].affine:
            g = _module(mods, mem.name, u, space.layers[mem.name].out_channels, "weight")
            parts.append((mem.channel, g.abs().double().cpu().numpy()[mem.index]))
    if not parts:
        raise EvopruneError(f"unit '{u.name}' has no BatchNorm with a scale after its convs; use the 'l1' criterion")
    return _scatter(u.channels, parts)


def random_importance(model: nn.Module, space: PruningSpace, unit: UnitLike, data: Any = None, rng: Any = None
                      ) -> np.ndarray:
    """Uniform random scores (a baseline)."""
    u = _unit(space, unit)
    return np.random.default_rng(rng).random(u.channels)


def _split_batch(batch: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], y
    if isinstance(batch, dict) and isinstance(batch.get("input", batch.get("x")), torch.Tensor):
        return batch.get("input", batch.get("x")), batch.get("target", batch.get("y"))
    raise EvopruneError(f"calibration batches must be tensors or (inputs, labels) pairs, got {type(batch).__name__}")


def taylor_importance(model: nn.Module, space: PruningSpace, unit: UnitLike, data: Optional[Iterable] = None,
                      rng: Any = None, *, max_batches: Optional[int] = None) -> np.ndarray:
    """First-order Taylor importance: mean over samples of |sum_positions activation * gradient| per channel."""
    import torch.nn.functional as F

    u = _unit(space, unit)
    if data is None:
        raise EvopruneError("the 'taylor' criterion needs calibration batches (pass batches=/data=); "
                            "or use 'l1' or 'bn'")
    mods = space.check_model(model)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    total = torch.zeros(u.channels, dtype=torch.float64, device=device)
    seen = 0
    state: Dict[str, torch.Tensor] = {}

    def make_hook(c):
        idx = torch.as_tensor(c.index, device=device)
        ch = torch.as_tensor(c.channel, device=device)

        def hook(module, args):
            x = args[0]
            gate = state["gate"]
            mult = torch.ones(x.shape[0], c.in_channels, device=x.device, dtype=x.dtype)
            mult = mult.index_copy(1, idx, gate[:, ch].to(x.dtype))
            shape = (x.shape[0], -1) + (1,) * (x.dim() - 2) if c.kind == "conv" else \
                (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
            return (x * mult.view(shape),) + tuple(args[1:])
        return hook

    was_training = model.training
    handles = [mods[c.name].register_forward_pre_hook(make_hook(c)) for c in u.consumers]
    try:
        model.eval()
        with torch.enable_grad():
            for i, batch in enumerate(data):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = _split_batch(batch)
                x = x.to(device)
                gate = torch.ones(x.shape[0], u.channels, device=device, requires_grad=True)
                state["gate"] = gate
                out = model(x)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                target = out.detach().argmax(1) if y is None else y.to(device)
                loss = F.cross_entropy(out, target, reduction="sum")  # sum: per-sample gradients stay unscaled
                (g,) = torch.autograd.grad(loss, gate)
                total += g.abs().sum(0).double()
                seen += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise EvopruneError("the 'taylor' criterion got no calibration batches; pass at least one batch")
    return (total / seen).cpu().numpy()


IMPORTANCE: Dict[str, Importance] = {
    "l1": l1_importance,
    "bn": bn_importance,
    "taylor": taylor_importance,
    "random": random_importance,
}


# --------------------------------------------------------------------------------------------------- top-k
def keep_mask(scores: np.ndarray, amount: Union[int, float], min_keep: int = 1, groups: int = 1) -> np.ndarray:
    """Bool mask keeping the highest scores: ``amount`` is a count k (int) or a keep ratio (float in (0, 1]).

    A ratio is rounded to a count, raised to ``min_keep`` and (with ``groups`` > 1) to a multiple of ``groups``;
    a count must already be valid. With ``groups`` > 1 the top ``k / groups`` of each contiguous block are kept.
    Ties go to the lower index.
    """
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64).ravel(), nan=-np.inf)
    n = s.size
    if n == 0:
        raise EvopruneError("cannot select channels of an empty unit")
    if groups < 1 or n % groups:
        raise EvopruneError(f"groups={groups} does not divide the {n} channels")
    if isinstance(amount, (bool, np.bool_)):
        raise EvopruneError(f"keep amount must be a count or a ratio, got {amount!r}")
    if isinstance(amount, (int, np.integer)):
        k = int(amount)
        lo = max(1, min_keep)
        if not lo <= k <= n:
            raise EvopruneError(f"cannot keep {k} of {n} channels; keep between {lo} and {n}")
        if k % groups:
            raise EvopruneError(f"keep count {k} must be a multiple of the unit's {groups} channel groups")
    else:
        r = float(amount)
        if not 0.0 < r <= 1.0:
            raise EvopruneError(f"keep ratio must be in (0, 1], got {amount}")
        k = max(int(round(r * n)), min_keep, 1)
        k = min(n, -(-k // groups) * groups)
    mask = np.zeros(n, dtype=bool)
    per, kk = n // groups, k // groups
    for b in range(groups):
        block = s[b * per:(b + 1) * per]
        top = np.argsort(-block, kind="stable")[:kk]
        mask[b * per + top] = True
    return mask


def check_count(k: Any, selector: str) -> None:
    """A selector's ``k`` must be an integer channel count (a ratio is resolved by the caller)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise EvopruneError(f"selector '{selector}' needs an integer channel count k, got {k!r}")


def make_selector(importance: Importance, name: str) -> Callable[..., np.ndarray]:
    """Wrap an importance function as a selector ``(model, space, unit_name, k, batches, rng) -> mask``."""

    def select(model: nn.Module, space: PruningSpace, unit_name: UnitLike, k: int, batches: Optional[Iterable] = None,
               rng: Any = None) -> np.ndarray:
        u = _unit(space, unit_name)
        check_count(k, name)
        scores = importance(model, space, u, data=batches, rng=rng)
        return keep_mask(scores, int(k), min_keep=u.min_keep, groups=u.channel_groups)

    select.__name__ = f"select_{name}"
    select.__doc__ = f"keep the top-k channels by {name} importance"
    return select


select_l1 = SELECTORS.register("l1", doc="L1 norm of filters (Li et al. 2017), summed over coupled convs")(
    make_selector(l1_importance, "l1"))
select_bn = SELECTORS.register("bn", doc="BatchNorm |gamma| (network slimming)")(make_selector(bn_importance, "bn"))
select_taylor = SELECTORS.register("taylor", doc="first-order Taylor |activation x gradient| (Molchanov et al.)")(
    make_selector(taylor_importance, "taylor"))
select_random = SELECTORS.register("random", doc="uniformly random channels (baseline)")(
    make_selector(random_importance, "random"))
