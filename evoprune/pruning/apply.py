"""Masks -> a physically smaller model (``apply``), the same effect without surgery (``soft_apply``), and the
rebuild of a pruned architecture from a checkpoint's record (``shrink_to``).

Both views remove a channel by the same rule: every consumer (conv/linear reading the unit's channels) no longer
sees it. ``apply`` deletes the channel from every module of the Torch-Pruning group (producer filters, BatchNorm
entries, depthwise filters, consumer input slices); ``soft_apply`` multiplies the consumers' inputs by a 0/1 channel
mask in forward pre-hooks. Zeroing a consumer's input channel is exactly what removing it does (the removed weights
would multiply it), so the two agree to float rounding in eval *and* train mode, also where a channel passes through
a depthwise conv and a BatchNorm (whose shift would survive a mask placed right after the unit's own BN).
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError

from .masked import InputMasks, drop_input_masks
from .space import (BN, CONV_IN, CONV_OUT, DWCONV, GCONV_IN, LINEAR_IN, LINEAR_OUT, Masks, PruningSpace, Unit)


# ------------------------------------------------------------------------------------------------ physical pruning
def _prune_grouped_conv_in(conv: nn.Module, idxs: Sequence[int]) -> None:
    """Remove input channels of a grouped conv; each group keeps its own channels (counts must be equal).

    TP's ``prune_conv_in_channels`` assumes the same positions are removed in every group; gathering per group
    also handles masks that keep different channels in different groups.
    """
    g = conv.groups
    per = conv.in_channels // g
    keep = np.setdiff1d(np.arange(conv.in_channels), np.asarray(idxs, dtype=np.int64))
    kept = [keep[(keep >= b * per) & (keep < (b + 1) * per)] - b * per for b in range(g)]
    if len({k.size for k in kept}) != 1:
        raise EvopruneError(f"grouped conv needs the same number of kept input channels per group, got "
                            f"{[k.size for k in kept]}")
    rows = conv.out_channels // g
    w = conv.weight
    parts = [w[b * rows:(b + 1) * rows].index_select(1, torch.as_tensor(kept[b], device=w.device))
             for b in range(g)]
    conv.weight = nn.Parameter(torch.cat(parts, 0).contiguous(), requires_grad=w.requires_grad)
    conv.in_channels = int(keep.size)


def _pruners():
    import torch_pruning as tp

    return {
        CONV_OUT: tp.prune_conv_out_channels,
        CONV_IN: tp.prune_conv_in_channels,
        GCONV_IN: _prune_grouped_conv_in,
        DWCONV: tp.prune_depthwise_conv_out_channels,
        LINEAR_OUT: tp.prune_linear_out_channels,
        LINEAR_IN: tp.prune_linear_in_channels,
        BN: tp.prune_batchnorm_out_channels,
    }


def _get_space(model: nn.Module, space: Optional[PruningSpace], example_input: Any) -> PruningSpace:
    return space if space is not None else PruningSpace(model, example_input)


def apply(model: nn.Module, masks: Masks, space: Optional[PruningSpace] = None, *, example_input: Any = None,
          inplace: bool = False) -> nn.Module:
    """Return a physically smaller copy of ``model`` keeping the masked channels (``model`` is untouched).

    ``space`` is the :class:`PruningSpace` of the *unpruned* model (built here from ``example_input`` when omitted:
    pass it in loops, building one traces the model). All units are pruned at once, with module-local indices
    taken in the original coordinates, so units sharing a module (a concat feeding one conv) stay consistent.
    """
    space = _get_space(model, space, example_input)
    full = space.validate(masks)
    space.check_model(model)
    new = model if inplace else copy.deepcopy(model)
    drop_input_masks(new)
    removals: Dict[Tuple[str, str], List[np.ndarray]] = defaultdict(list)
    for u in space.units:
        drop = ~full[u.name]
        if not drop.any():
            continue
        for mem in u.members:
            sel = drop[mem.channel]
            if sel.any():
                removals[(mem.name, mem.kind)].append(mem.index[sel])
    if not removals:
        return new
    pruners = _pruners()
    modules = dict(new.named_modules())
    for (name, kind), parts in removals.items():
        mod = modules[name]
        grads = {k: p.requires_grad for k, p in mod.named_parameters(recurse=False)}
        idxs = np.unique(np.concatenate(parts)).tolist()
        pruners[kind](mod, idxs)
        for k, p in mod.named_parameters(recurse=False):  # TP re-creates Parameters: keep frozen layers frozen
            p.requires_grad_(grads.get(k, True))
    return new


# ------------------------------------------------------------------------------------------------ soft masking
class SoftMask(InputMasks):
    """Handle of active soft masks (:class:`~evoprune.pruning.masked.InputMasks` on the affected consumers):
    ``.remove()`` restores the model; also a context manager. ``multipliers``: consumer -> 0/1 input vector."""

    def __init__(self, model_modules: Dict[str, nn.Module], multipliers: Dict[str, np.ndarray]) -> None:
        super().__init__(((name, model_modules[name]) for name in multipliers), multipliers)
        self.multipliers = multipliers

    def __enter__(self) -> "SoftMask":
        return self


def consumer_multipliers(space: PruningSpace, masks: Masks) -> Dict[str, np.ndarray]:
    """For each consumer affected by ``masks``: a 0/1 float vector over its input channels (0 = removed)."""
    full = space.validate(masks)
    mults: Dict[str, np.ndarray] = {}
    for u in space.units:
        drop = ~full[u.name]
        if not drop.any():
            continue
        for c in u.consumers:
            sel = drop[c.channel]
            if sel.any():
                v = mults.setdefault(c.name, np.ones(c.in_channels, dtype=np.float32))
                v[c.index[sel]] = 0.0
    return mults


def soft_apply(model: nn.Module, masks: Masks, space: Optional[PruningSpace] = None, *,
               example_input: Any = None) -> SoftMask:
    """Make ``model`` behave like ``apply(model, masks)`` without surgery, via forward pre-hooks.

    Returns a :class:`SoftMask`; call ``.remove()`` or use ``with soft_apply(...):``. The hooks cost one multiply
    per consumer input; BatchNorm statistics of kept channels (and everything downstream) match the pruned model.
    """
    space = _get_space(model, space, example_input)
    mults = consumer_multipliers(space, masks)
    return SoftMask(space.check_model(model), mults)


# ------------------------------------------------------------------------------------------------ checkpoints
def masks_to_pruned(masks: Masks, space: Optional[PruningSpace] = None) -> Dict[str, List[int]]:
    """JSON-friendly record of a decision: unit name -> sorted kept channel indices."""
    if space is not None:
        return {k: np.flatnonzero(v).tolist() for k, v in space.validate(masks).items() if k in masks}
    out: Dict[str, List[int]] = {}
    for k, v in masks.items():
        a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
        if a.dtype == bool:
            out[str(k)] = np.flatnonzero(a).tolist()
        elif a.size == 0 or np.issubdtype(a.dtype, np.integer):
            out[str(k)] = sorted(int(i) for i in a.ravel())
        else:
            raise EvopruneError(f"mask for unit '{k}' must be a bool mask or kept indices, got dtype {a.dtype}")
    return out


def shrink_to(model: nn.Module, pruned: Mapping[str, Sequence[int]], image_size: int = 32,
              in_channels: int = 3) -> nn.Module:
    """Shrink a freshly built zoo model to the architecture recorded in a checkpoint (``pruned``: unit name ->
    kept indices, names of the *unpruned* model). Weights are placeholders, overwritten by the state dict."""
    if not isinstance(pruned, Mapping):
        raise EvopruneError(f"checkpoint 'pruned' record must map unit names to kept indices, got {type(pruned).__name__}")
    space = PruningSpace(model, (1, int(in_channels), int(image_size), int(image_size)), warn=False)
    missing = [k for k in pruned if k not in space]
    if missing:
        raise EvopruneError(f"checkpoint records pruned unit '{missing[0]}' that this {type(model).__name__} does "
                            f"not have; the checkpoint was made from a different architecture")
    masks = {k: np.asarray(list(v), dtype=np.int64) for k, v in pruned.items()}
    return apply(model, masks, space, inplace=True)


def unit_of(space: PruningSpace, unit: Any) -> Unit:
    """Accept a :class:`Unit` or its name."""
    return unit if isinstance(unit, Unit) else space.unit(unit)
