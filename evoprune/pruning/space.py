"""The pruning space of a model: its prunable units, built from Torch-Pruning dependency groups.

A *unit* is a set of channels that must be removed together: the output channels of one convolution, or of all the
convolutions coupled to it (a ResNet stage's residual channels form ONE unit covering every conv that feeds the
adds; a depthwise conv is coupled to the conv that produces its input). Each unit is one Torch-Pruning group rooted
at a conv's output channels (``DependencyGraph.get_pruning_group(conv, prune_conv_out_channels, idxs)``), recorded
as plain arrays so that the space pickles, needs no graph afterwards and works on any copy of the model:

* ``members``: every (module, pruned dimension) the group touches, with, for each module-local index, the unit
  channel it belongs to (the index mapping through concat/flatten/...);
* ``producers`` (convs whose output channels are the unit's channels, root first), ``norms`` (the BatchNorms right
  after them), ``depthwise`` (coupled depthwise convs);
* ``consumers``: the convs/linears whose *input* channels are the unit's channels, each with its index mapping and
  the BatchNorm that follows it (what stage 1 of the two-step fitness reconstructs).

A pruning decision ("masks") is a dict ``unit name -> bool mask`` (numpy or torch, length ``unit.channels``) or
``unit name -> kept channel indices`` (integers); units left out keep all their channels.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError

MaskLike = Union[np.ndarray, torch.Tensor, Sequence[int], Sequence[bool]]
Masks = Mapping[str, MaskLike]

# Kinds of pruned dimensions a unit may touch (what apply() does to each module).
CONV_OUT, CONV_IN, GCONV_IN, DWCONV = "conv_out", "conv_in", "gconv_in", "dwconv"
LINEAR_OUT, LINEAR_IN, BN = "linear_out", "linear_in", "bn"
OUT_KINDS = (CONV_OUT, LINEAR_OUT, DWCONV, BN)   # the module's output dim is (partly) the unit's channels
IN_KINDS = (CONV_IN, GCONV_IN, LINEAR_IN)        # consumers: the module's input dim is (partly) the unit's channels

# autograd ops that move or mix values across channels: TP treats unknown ops as element-wise (channel-preserving),
# which would silently prune the wrong channels (e.g. ShuffleNet's channel shuffle), so groups through them are skipped.
_CHANNEL_MIXING_OPS = ("Transpose", "Permute", "Index", "Gather", "Scatter", "Flip", "Roll", "Select", "PixelShuffle",
                       "PixelUnshuffle", "ChannelShuffle", "Sort", "Topk", "Softmax", "LogSoftmax", "Cumsum", "Bmm",
                       "Matmul", "Einsum", "Unfold", "Im2Col", "Col2Im", "NativeLayerNorm", "NativeGroupNorm")


@dataclass(frozen=True, eq=False)
class Member:
    """One module dimension a unit prunes: ``index[i]`` of module ``name`` carries unit channel ``channel[i]``."""

    name: str
    kind: str
    index: np.ndarray
    channel: np.ndarray


@dataclass(frozen=True, eq=False)
class Consumer:
    """A conv/linear reading the unit's channels: its input channel (feature) ``index[i]`` is unit channel
    ``channel[i]`` (a flatten into a linear maps one channel to several features). ``norm`` is the BatchNorm applied
    to the consumer's output, if any."""

    name: str
    kind: str  # "conv" or "linear"
    index: np.ndarray
    channel: np.ndarray
    in_channels: int
    groups: int = 1
    norm: Optional[str] = None


@dataclass(frozen=True, eq=False)
class Unit:
    """A set of channels pruned together. ``name`` is the module path of its root conv (in the unpruned model).

    ``channel_groups`` > 1 when the channels feed (or come out of) a grouped convolution: the mask must then keep
    the same number of channels in each of the ``channel_groups`` contiguous blocks (and ``min_keep`` is at least one
    per block)."""

    name: str
    channels: int
    producers: Tuple[str, ...]
    norms: Tuple[str, ...]
    depthwise: Tuple[str, ...]
    consumers: Tuple[Consumer, ...]
    members: Tuple[Member, ...]
    min_keep: int = 1
    channel_groups: int = 1

    @property
    def modules(self) -> Tuple[str, ...]:
        """Every module the unit touches (unique, in group order)."""
        return tuple(dict.fromkeys(m.name for m in self.members))

    def __repr__(self) -> str:
        return (f"Unit({self.name!r}, channels={self.channels}, producers={len(self.producers)}, "
                f"consumers={[c.name for c in self.consumers]})")


@dataclass
class LayerInfo:
    """Static shape facts about one conv/linear/BN (recorded at space construction, batch-independent)."""

    name: str
    type: str  # "conv" | "linear" | "bn"
    in_channels: int
    out_channels: int
    groups: int = 1
    kernel: int = 1          # product of kernel sizes
    bias: bool = False
    affine: bool = False     # BN has weight and bias
    positions: int = 0       # output positions per sample, summed over calls (MAC multiplier)
    calls: int = 0
    numel: int = 0           # parameters directly owned by the module


class PruningSpace:
    """The prunable units of ``model`` (forward order), built by tracing it once on ``example_input``.

    Args:
        model: the network (not modified; its train/eval mode is restored).
        example_input: a tensor, or a shape such as ``(1, 3, 32, 32)``; default: one image of ``input_size``
            (32) with the first conv's input channels.
        exclude: fnmatch patterns on module names; a unit is left out when any conv whose output channels it
            prunes matches (so ``"layer1.*"`` leaves out ResNet stage 1's residual unit).
        min_keep: fewest channels a unit may keep (>= 1: an empty layer is invalid).
        warn: emit a warning listing the layers Torch-Pruning cannot handle.
    """

    def __init__(self, model: nn.Module, example_input: Any = None, *, exclude: Sequence[str] = (),
                 min_keep: int = 1, input_size: int = 32, warn: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise EvopruneError(f"expected a torch.nn.Module, got {type(model).__name__}")
        if not (isinstance(min_keep, (int, np.integer)) and min_keep >= 1):
            raise EvopruneError(f"min_keep must be an integer >= 1 (an empty layer is invalid), got {min_keep!r}")
        if isinstance(exclude, str):
            exclude = [exclude]
        self.model = model
        self.exclude: Tuple[str, ...] = tuple(exclude)
        self.min_keep = int(min_keep)
        self.example_input = _example_input(model, example_input, input_size)
        self.input_shape: Tuple[int, ...] = tuple(self.example_input.shape)
        self.units: List[Unit] = []
        self.skipped: List[Tuple[str, str]] = []  # (conv name, reason) of convs that are not units
        self.layers: Dict[str, LayerInfo] = {}
        self.total_params = sum(p.numel() for p in model.parameters())
        self._build(model)
        self._by_name = {u.name: u for u in self.units}
        self._positions = {u.name: i for i, u in enumerate(self.units)}
        if not self.units:
            why = "; ".join(f"{n}: {r}" for n, r in self.skipped[:3]) or "it has no Conv layer"
            raise EvopruneError(
                f"model {type(model).__name__} has no prunable convolution ({why}); check --exclude or the model")
        if warn:
            bad = [(n, r) for n, r in self.skipped if not r.startswith(("excluded", "output layer"))]
            if bad:
                listed = "; ".join(f"{n} ({r})" for n, r in bad[:6]) + (f"; ... {len(bad) - 6} more" if len(bad) > 6 else "")
                warnings.warn(f"evoprune: {len(bad)} conv layer(s) of {type(model).__name__} cannot be pruned and are "
                              f"skipped: {listed}", stacklevel=2)

    # ----------------------------------------------------------------------------------------------- container
    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"PruningSpace({type(self.model).__name__}, {len(self.units)} units, {sum(self.sizes)} channels)"

    @property
    def names(self) -> List[str]:
        return [u.name for u in self.units]

    @property
    def sizes(self) -> List[int]:
        """Channel count of each unit, in unit order."""
        return [u.channels for u in self.units]

    def unit(self, name: str) -> Unit:
        """The unit called ``name`` (module path of its root conv)."""
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise EvopruneError(self._unknown(name)) from None

    def index(self, name: str) -> int:
        """Position of unit ``name`` in :attr:`units` (and in keep-count vectors)."""
        self.unit(name)
        return self._positions[name]

    def _unknown(self, name: Any) -> str:
        close = difflib.get_close_matches(str(name), self.names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        few = ", ".join(self.names[:4]) + (", ..." if len(self.units) > 4 else "")
        return f"unknown pruning unit '{name}'{hint}; valid units ({len(self.units)}): {few}"

    # ----------------------------------------------------------------------------------------------- masks
    def full_masks(self) -> Dict[str, np.ndarray]:
        """All-ones masks (keep everything): the identity decision."""
        return {u.name: np.ones(u.channels, dtype=bool) for u in self.units}

    def random_masks(self, rng: Union[np.random.Generator, int, None] = None, keep_ratio: float = 0.5
                     ) -> Dict[str, np.ndarray]:
        """A valid random decision keeping ~``keep_ratio`` of each unit (respects min_keep and channel groups)."""
        rng = np.random.default_rng(rng)
        out = {}
        for u in self.units:
            g = u.channel_groups
            per = u.channels // g
            k = min(per, max(u.min_keep // g, int(round(keep_ratio * per)), 1))
            mask = np.zeros(u.channels, dtype=bool)
            for b in range(g):
                mask[b * per + rng.choice(per, size=k, replace=False)] = True
            out[u.name] = mask
        return out

    def mask_for(self, unit: Union[str, Unit], value: MaskLike) -> np.ndarray:
        """Validate one unit's decision (bool mask or kept indices) and return it as a bool mask."""
        u = unit if isinstance(unit, Unit) else self.unit(unit)
        n = u.channels
        if type(value) is np.ndarray and value.dtype == bool and value.shape == (n,) and u.channel_groups == 1:
            # fast path for the common case (search loops): a numpy bool mask of the right length
            if np.count_nonzero(value) >= u.min_keep:
                return value
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.ndim != 1:
            raise EvopruneError(f"mask for unit '{u.name}' must be 1-D (a bool mask of length {n} or kept channel "
                                f"indices), got shape {arr.shape}")
        if arr.dtype == bool:
            if arr.shape[0] != n:
                raise EvopruneError(f"mask for unit '{u.name}' has length {arr.shape[0]}, expected {n} "
                                    f"(the unit's channel count)")
            mask = arr
        elif arr.size == 0 or np.issubdtype(arr.dtype, np.integer):
            idx = arr.astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise EvopruneError(f"kept indices for unit '{u.name}' must lie in [0, {n - 1}], got "
                                    f"{int(idx.min())}..{int(idx.max())}")
            if np.unique(idx).size != idx.size:
                raise EvopruneError(f"kept indices for unit '{u.name}' contain duplicates; pass unique indices or a "
                                    f"boolean mask (dtype bool)")
            mask = np.zeros(n, dtype=bool)
            mask[idx] = True
        else:
            raise EvopruneError(f"mask for unit '{u.name}' must be a boolean mask of length {n} or a list of kept "
                                f"channel indices, got dtype {arr.dtype}")
        k = int(np.count_nonzero(mask))
        if k < u.min_keep:
            what = "no channel" if k == 0 else f"only {k} channel(s)"
            raise EvopruneError(f"mask for unit '{u.name}' keeps {what}; keep at least {u.min_keep} "
                                f"(an empty layer is invalid)")
        if u.channel_groups > 1:
            counts = mask.reshape(u.channel_groups, -1).sum(1)
            if not (counts == counts[0]).all():
                raise EvopruneError(
                    f"unit '{u.name}' feeds a grouped conv: keep the same number of channels in each of its "
                    f"{u.channel_groups} blocks of {n // u.channel_groups} (got {counts.tolist()})")
        return mask

    def validate(self, masks: Masks) -> Dict[str, np.ndarray]:
        """Check a decision and return complete bool masks for every unit (missing units keep everything)."""
        if not isinstance(masks, Mapping):
            raise EvopruneError(f"masks must be a dict unit-name -> bool mask or kept indices, got {type(masks).__name__}")
        for name in masks:
            if name not in self._by_name:
                raise EvopruneError(self._unknown(name))
        return {u.name: (self.mask_for(u, masks[u.name]) if u.name in masks else np.ones(u.channels, dtype=bool))
                for u in self.units}

    def keep_counts(self, masks: Masks, validate: bool = True) -> np.ndarray:
        """Kept channels per unit (int64 vector in unit order) -- all the cost model needs."""
        if not isinstance(masks, Mapping):
            raise EvopruneError(f"masks must be a dict unit-name -> bool mask or kept indices, got {type(masks).__name__}")
        pos = self._positions
        out = np.array(self.sizes, dtype=np.int64)
        for name, v in masks.items():
            i = pos.get(name)
            if i is None:
                raise EvopruneError(self._unknown(name))
            if validate:
                out[i] = np.count_nonzero(self.mask_for(self.units[i], v))
            else:
                a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                out[i] = np.count_nonzero(a) if a.dtype == bool else a.size
        return out

    # ----------------------------------------------------------------------------------------------- shortcuts
    def apply(self, masks: Masks, model: Optional[nn.Module] = None) -> nn.Module:
        """Physically pruned copy of ``model`` (default: the model the space was built from)."""
        from .apply import apply

        return apply(self.model if model is None else model, masks, space=self)

    def soft_apply(self, masks: Masks, model: Optional[nn.Module] = None):
        """Mask channels with hooks (no surgery); returns a handle with ``.remove()`` / a context manager."""
        from .apply import soft_apply

        return soft_apply(self.model if model is None else model, masks, space=self)

    def check_model(self, model: nn.Module) -> Dict[str, nn.Module]:
        """Return ``model``'s modules by name after checking that it has the unpruned shapes this space expects."""
        modules = dict(model.named_modules())
        for u in self.units:
            m = modules.get(u.name)
            n = None if m is None else getattr(m, "out_channels", None)
            if n != u.channels:
                got = "no such module" if m is None else f"{n} output channels"
                raise EvopruneError(
                    f"model does not match the pruning space: unit '{u.name}' expects a conv with {u.channels} output "
                    f"channels, found {got}; build the space from this (unpruned) model")
        return modules

    # ----------------------------------------------------------------------------------------------- construction
    def _build(self, model: nn.Module) -> None:
        import torch_pruning as tp
        from torch_pruning import ops

        names = {m: n for n, m in model.named_modules()}
        order = self._record_layers(model)
        was_training = model.training
        try:
            with _tp_patches() as patches, warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                x = self.example_input.detach().clone().requires_grad_(True)  # graph exists even if weights are frozen
                try:
                    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)
                except EvopruneError:
                    raise
                except Exception as exc:
                    raise EvopruneError(f"Torch-Pruning cannot trace {type(model).__name__} on an input of shape "
                                        f"{tuple(x.shape)} ({type(exc).__name__}: {str(exc)[:120]}); "
                                        f"check --input-size or the model") from None
                patches.frozen = True
                covered: set = set()
                modules = dict(model.named_modules())
                for name in order:
                    conv = modules[name]
                    if not isinstance(conv, ops.TORCH_CONV) or conv in covered or conv not in dg.module2node:
                        continue
                    if conv.transposed:
                        self.skipped.append((name, "transposed convolution"))
                        continue
                    if conv.groups > 1 and conv.groups == conv.out_channels:
                        continue  # depthwise: pruned with the conv producing its input, never a root
                    try:
                        # channel 0 alone first: cheap, and it already meets channel-mixing ops or the output, so
                        # huge unprunable groups (ShuffleNet's shuffles couple whole stages) are never expanded
                        probe = dg.get_pruning_group(conv, tp.prune_conv_out_channels, [0])
                        unit, reason, outs = self._parse_group(probe, name, conv.out_channels, names, dg, probe=True)
                        if not reason:
                            group = dg.get_pruning_group(conv, tp.prune_conv_out_channels,
                                                         list(range(conv.out_channels)))
                            unit, reason, outs = self._parse_group(group, name, conv.out_channels, names, dg)
                    except Exception as exc:  # TP cannot follow this group: report, never crash
                        covered.add(conv)
                        msg = str(exc).splitlines()[0][:60] if str(exc) else ""
                        self.skipped.append((name, f"Torch-Pruning cannot follow its channels ({type(exc).__name__}"
                                                   f"{': ' + msg if msg else ''})"))
                        continue
                    covered.update(outs)
                    covered.add(conv)
                    if unit is None:
                        self.skipped.append((name, reason))
                    else:
                        self.units.append(unit)
        finally:
            model.train(was_training)

    def _record_layers(self, model: nn.Module) -> List[str]:
        """One forward with hooks: forward order of convs, per-layer shapes and output positions (batch 1)."""
        order: List[str] = []
        infos = self.layers

        def hook(name):
            def fn(mod, inp, out):
                if not isinstance(out, torch.Tensor):
                    return
                info = infos[name]
                info.calls += 1
                if info.calls == 1:
                    order.append(name)
                batch = out.shape[0] if out.dim() > 1 else 1
                chans = info.out_channels
                info.positions += out.numel() // max(1, batch * chans)
            return fn

        handles = []
        for name, m in model.named_modules():
            info = None
            if isinstance(m, nn.modules.conv._ConvNd):
                info = LayerInfo(name, "conv", m.in_channels, m.out_channels, m.groups,
                                 int(np.prod(m.kernel_size)), m.bias is not None)
            elif isinstance(m, nn.Linear):
                info = LayerInfo(name, "linear", m.in_features, m.out_features, 1, 1, m.bias is not None)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                info = LayerInfo(name, "bn", m.num_features, m.num_features, affine=m.affine)
            if info is not None:
                info.numel = sum(p.numel() for p in m.parameters(recurse=False))
                infos[name] = info
                handles.append(m.register_forward_hook(hook(name)))
        was_training = model.training
        try:
            model.eval()  # BatchNorm with batch 1 and 1x1 maps fails in train mode
            with torch.no_grad():
                _forward(model, self.example_input)
        except Exception as exc:
            raise EvopruneError(f"model {type(model).__name__} fails on an input of shape {self.input_shape} "
                                f"({type(exc).__name__}: {str(exc)[:120]}); check --input-size / in_channels") from None
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        self._pos = {n: i for i, n in enumerate(order)}  # forward order of every conv/linear/BN
        return [n for n in order if infos[n].type == "conv"]

    def _parse_group(self, group, root: str, n: int, names: Dict[Any, str], dg, probe: bool = False
                     ) -> Tuple[Optional[Unit], str, set]:
        """Turn a TP group into a :class:`Unit`, or return the reason it cannot be one (``probe``: a one-channel
        group, only checked for reasons)."""
        from torch_pruning import ops

        outs = set()  # convs whose output channels the group prunes (never roots of another unit)
        raw: Dict[Tuple[str, str], Tuple[List[int], List[int]]] = {}
        reason = ""
        nodes_by_name: Dict[str, Any] = {}
        for item in group:
            dep, idxs = item.dep, list(item.idxs)
            roots = list(item.root_idxs) if item.root_idxs is not None else [None] * len(idxs)
            node = dep.target
            mod = node.module
            if isinstance(mod, nn.Module) and mod in names:
                mname = names[mod]
                nodes_by_name[mname] = node
                is_out = dep.handler.__name__ == "prune_out_channels"
                if isinstance(mod, ops.TORCH_CONV):
                    if mod.transposed:
                        reason = reason or f"touches transposed conv '{mname}'"
                        continue
                    if mod.groups > 1 and mod.groups == mod.out_channels:
                        outs.add(mod)
                        if mod.in_channels != mod.out_channels:
                            reason = reason or f"depthwise conv '{mname}' with a channel multiplier"
                        kind = DWCONV
                    elif is_out:
                        outs.add(mod)
                        kind = CONV_OUT
                    else:
                        kind = GCONV_IN if mod.groups > 1 else CONV_IN
                elif isinstance(mod, nn.Linear):
                    kind = LINEAR_OUT if is_out else LINEAR_IN
                elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    kind = BN
                else:
                    reason = reason or f"touches {type(mod).__name__} '{mname}', which evoprune does not prune"
                    continue
                if any(r is None for r in roots):
                    reason = reason or f"no channel mapping into '{mname}'"
                    continue
                ix, ch = raw.setdefault((mname, kind), ([], []))
                ix.extend(int(i) for i in idxs)
                ch.extend(int(r) for r in roots)
            else:
                t = node.type
                if t == ops.OPTYPE.OUTPUT:
                    return None, "output layer (its channels reach the model output)", outs
                if t == ops.OPTYPE.ELEMENTWISE:
                    fn = node.grad_fn.name() if node.grad_fn is not None and hasattr(node.grad_fn, "name") else ""
                    if fn.startswith(_CHANNEL_MIXING_OPS) or fn == "" or fn.startswith("Unknown"):
                        reason = reason or f"channels pass through {fn or 'an unknown op'}, which mixes channels"
                elif t in (ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT, ops.OPTYPE.RESHAPE, ops.OPTYPE.SLICE):
                    pass  # TP's index mapping handles these; the mapping is checked below
                elif t == ops.OPTYPE.PARAMETER:
                    reason = reason or "touches a bare nn.Parameter"
                else:
                    reason = reason or f"passes through an unsupported op ({t.name.lower()})"
        excl = [p for p in self.exclude for m in outs if fnmatch.fnmatchcase(names[m], p)]
        if excl:
            return None, f"excluded by '{excl[0]}'", outs
        if reason or probe:
            return None, reason, outs

        members: List[Member] = []
        groups_needed: List[int] = []
        for (mname, kind), (ix, ch) in raw.items():
            index, channel = np.asarray(ix, dtype=np.int64), np.asarray(ch, dtype=np.int64)
            info = self.layers.get(mname)
            if info is None or info.calls != 1:
                return None, f"module '{mname}' is called {0 if info is None else info.calls} times per forward", outs
            dim = info.in_channels if kind in IN_KINDS else info.out_channels
            if np.unique(index).size != index.size or index.min() < 0 or index.max() >= dim \
                    or channel.min() < 0 or channel.max() >= n:
                return None, f"inconsistent channel mapping into '{mname}'", outs
            counts = np.bincount(channel, minlength=n)
            if not (counts == counts[0]).all() or counts[0] == 0:
                return None, f"its channels are split between layers at '{mname}' (split/chunk/slice)", outs
            if kind in (CONV_OUT, LINEAR_OUT, DWCONV) and (counts[0] != 1 or index.size != dim):
                return None, f"'{mname}' output is only partly coupled to the unit", outs
            if kind == BN and counts[0] != 1:
                return None, f"inconsistent channel mapping into '{mname}'", outs
            order_ = np.argsort(index, kind="stable")
            index, channel = index[order_], channel[order_]
            g = info.groups
            if kind in (CONV_OUT, GCONV_IN) and g > 1:
                if index.size != dim or not np.array_equal(index, channel):
                    return None, f"grouped conv '{mname}' is reached through a concat/split", outs
                groups_needed.append(g)
            members.append(Member(mname, kind, index, channel))

        consumers: List[Consumer] = []
        for mem in members:
            if mem.kind not in IN_KINDS:
                continue
            info = self.layers[mem.name]
            norm = None
            node = nodes_by_name.get(mem.name)
            for o in (node.outputs if node is not None else []):
                if isinstance(o.module, nn.modules.batchnorm._BatchNorm) and o.module in names:
                    norm = names[o.module]
                    break
            consumers.append(Consumer(mem.name, "linear" if mem.kind == LINEAR_IN else "conv", mem.index,
                                      mem.channel, info.in_channels, info.groups, norm))
        if not consumers:
            return None, "no layer reads its channels", outs

        producers = [m.name for m in members if m.kind in (CONV_OUT, LINEAR_OUT)]
        producers.sort(key=lambda s: (s != root, self._fwd_pos(s)))
        dws = tuple(sorted((m.name for m in members if m.kind == DWCONV), key=self._fwd_pos))
        sources = set(producers) | set(dws)
        norms = []
        for m in members:
            if m.kind == BN:
                node = nodes_by_name.get(m.name)
                if node is not None and any(i.module in names and names[i.module] in sources for i in node.inputs):
                    norms.append(m.name)
        norms.sort(key=self._fwd_pos)
        consumers.sort(key=lambda c: self._fwd_pos(c.name))
        cg = 1
        for g in groups_needed:
            cg = cg * g // math.gcd(cg, g)
        if n % cg:
            return None, f"grouped convs with {groups_needed} groups do not divide its {n} channels", outs
        return Unit(root, n, tuple(producers), tuple(norms), dws, tuple(consumers), tuple(members),
                    min_keep=min(n, -(-self.min_keep // cg) * cg), channel_groups=cg), "", outs

    def _fwd_pos(self, name: str) -> int:
        return self._pos.get(name, 1 << 30)


# --------------------------------------------------------------------------------------------------- helpers
def _forward(model: nn.Module, x: torch.Tensor) -> Any:
    return model(x)


def _first_param(model: nn.Module) -> Optional[torch.Tensor]:
    for p in model.parameters():
        return p
    return None


def _example_input(model: nn.Module, example: Any, input_size: int) -> torch.Tensor:
    """A one-image input on the model's device: given tensor, shape, or inferred from the first conv."""
    p = _first_param(model)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    if isinstance(example, torch.Tensor):
        return example.detach().to(device)
    if example is None:
        first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if first is None:
            raise EvopruneError(f"model {type(model).__name__} has no prunable convolution (no Conv layer)")
        spatial = len(first.kernel_size)
        example = (1, first.in_channels) + (int(input_size),) * spatial
    try:
        shape = tuple(int(s) for s in example)
    except (TypeError, ValueError):
        raise EvopruneError(f"example input must be a tensor or a shape like (1, 3, 32, 32), got {example!r}") from None
    gen = torch.Generator().manual_seed(0)  # fixed input: the space is deterministic
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


class _Patches:
    frozen = False


@contextlib.contextmanager
def _tp_patches():
    """Two local patches of Torch-Pruning, undone on exit.

    * Its reshape index mapping fails soft: TP 1.6 divides by zero on some reshapes (ShuffleNet's channel shuffle)
      and aborts the whole graph; groups through such a reshape are then caught by our checks and skipped.
    * Once frozen, ``get_pruning_group`` stops recomputing every concat's index mapping on each call: nothing is
      pruned while the space is built, so the mappings cannot change (DenseNet-121: 4.5 s -> 0.1 s).
    """
    from torch_pruning.dependency import index_mapping

    orig_reshape = index_mapping.update_reshape_index_mapping
    orig_update = index_mapping.update_index_mapping
    state = _Patches()

    def safe(graph, node):
        try:
            orig_reshape(graph, node)
        except Exception:
            pass

    def update(graph):
        if not state.frozen:
            orig_update(graph)

    index_mapping.update_reshape_index_mapping = safe
    index_mapping.update_index_mapping = update
    try:
        yield state
    finally:
        index_mapping.update_reshape_index_mapping = orig_reshape
        index_mapping.update_index_mapping = orig_update
