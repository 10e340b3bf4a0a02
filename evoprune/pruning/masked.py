"""The masked-network engine: run a network as if channels were removed, without surgery, and re-estimate BatchNorm.

One implementation under every command that scores a candidate on the network (stage 2 of the two-step fitness,
``soft_apply``, the pipeline's adaptive BN after each unit, and the whole-network problem):

* :class:`InputMask` / :class:`InputMasks`: forward pre-hooks multiplying a consumer's input channels by a 0/1
  vector (swappable per candidate). Zeroing a channel where its consumer reads it is exactly what removing it
  does, whatever lies between producer and consumer (ReLU, a residual identity, a depthwise conv + BN);
* :class:`AdaptiveBN`: re-estimation-ready BatchNorms (reset statistics, ``momentum=None`` for a cumulative
  average, train mode; EagleEye's adaptive BN), restoring statistics, momenta and modes on exit;
  :func:`reestimate_bn` keeps the new statistics (the pipeline, after pruning a unit);
* :class:`MaskedNetwork`: whole-network decisions (every unit's mask at once) scored by top-1 accuracy after
  adaptive BN, by a *sliced* forward (:func:`torch.func.functional_call` with every pruned tensor cut to the kept
  channels: a pruned model runs at roughly its own size) or a *soft* one (input masks, full size); BN statistics
  live in fresh per-candidate buffers, so the model's own are never touched.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError

__all__ = ["InputMask", "InputMasks", "AdaptiveBN", "reestimate_bn", "batchnorms", "model_modes", "MaskedNetwork"]

_BN = nn.modules.batchnorm._BatchNorm
# member kinds the sliced forward handles (see evoprune.pruning.space); others fall back to soft masks
_SLICE_DIM = {"conv_out": 0, "linear_out": 0, "bn": 0, "conv_in": 1, "linear_in": 1}


@contextlib.contextmanager
def model_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag on exit (evaluators switch modes)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


# ------------------------------------------------------------------------------------------------ input masks
class InputMask:
    """Forward pre-hook multiplying a consumer's input channels (dim 1 of a conv input, the last dim of a linear
    input) by a 0/1 vector; ``set(None)`` makes it a no-op."""

    def __init__(self, mult: Any = None, linear: bool = False, name: str = "") -> None:
        self.name = name
        self.linear = linear
        self.set(mult)

    def set(self, mult: Any) -> None:
        self.mult = None if mult is None else torch.as_tensor(mult, dtype=torch.float32)
        self._cache: Dict[Tuple[Any, Any, int], torch.Tensor] = {}

    def __call__(self, module: nn.Module, args: Tuple[Any, ...]) -> Any:
        if self.mult is None:
            return None
        x = args[0]
        c = x.shape[-1] if self.linear else x.shape[1]
        if c != self.mult.numel():
            raise EvopruneError(f"input mask for '{self.name}' expects {self.mult.numel()} input channels, got {c}; "
                                f"the model changed after its pruning space was built")
        key = (x.device, x.dtype, x.dim())
        m = self._cache.get(key)
        if m is None:
            m = self.mult.to(device=x.device, dtype=x.dtype)
            if not self.linear:
                m = m.view((1, -1) + (1,) * (x.dim() - 2))
            self._cache[key] = m
        return (x * m,) + tuple(args[1:])


class InputMasks:
    """One :class:`InputMask` hook on each of some consumers; ``set({name: mult})`` per candidate (a consumer not
    named reads all its inputs); ``remove()`` (or leaving the ``with`` block) takes the hooks off."""

    def __init__(self, consumers: Iterable[Tuple[str, nn.Module]], mults: Optional[Mapping[str, Any]] = None) -> None:
        self.hooks: Dict[str, InputMask] = {}
        self._handles: List[Any] = []
        for name, mod in consumers:
            hook = InputMask(None, isinstance(mod, nn.Linear), name)
            self.hooks[name] = hook
            self._handles.append(mod.register_forward_pre_hook(hook))
        if mults:
            self.set(mults)

    def set(self, mults: Mapping[str, Any]) -> None:
        for name, hook in self.hooks.items():
            hook.set(mults.get(name))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "InputMasks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def drop_input_masks(model: nn.Module) -> None:
    """Remove every :class:`InputMask` hook (a deepcopy copies active hooks; they must not outlive surgery)."""
    for m in model.modules():
        for k in [k for k, h in m._forward_pre_hooks.items() if isinstance(h, InputMask)]:
            del m._forward_pre_hooks[k]


# ------------------------------------------------------------------------------------------------ adaptive BN
def batchnorms(model: nn.Module) -> List[nn.Module]:
    """The model's BatchNorms that keep running statistics (the ones adaptive BN re-estimates)."""
    return [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None]


class AdaptiveBN:
    """Context: BNs ready for re-estimation; on exit restores momenta and modes, and statistics unless
    ``keep_stats``. Inside, :meth:`reset` before each candidate (or :meth:`prepare` when the statistics live in
    buffers of the caller's, as with ``functional_call``), run forwards, then :meth:`freeze` to switch to eval."""

    def __init__(self, bns: Sequence[nn.Module], keep_stats: bool = False) -> None:
        self.bns = [b for b in bns if getattr(b, "track_running_stats", False) and b.running_mean is not None]
        self.keep_stats = keep_stats

    def __enter__(self) -> "AdaptiveBN":
        self.saved = [(b, None if self.keep_stats else b.running_mean.clone(),
                       None if self.keep_stats else b.running_var.clone(),
                       None if self.keep_stats or b.num_batches_tracked is None else b.num_batches_tracked.clone(),
                       b.momentum, b.training) for b in self.bns]
        return self

    def prepare(self) -> None:
        for b in self.bns:
            b.momentum = None  # cumulative average over the re-estimation batches
            b.train()

    def reset(self) -> None:
        for b in self.bns:
            b.reset_running_stats()
        self.prepare()

    def freeze(self) -> None:
        for b in self.bns:
            b.eval()

    def __exit__(self, *exc: Any) -> None:
        for b, mean, var, nbt, mom, training in self.saved:
            if mean is not None:
                b.running_mean.copy_(mean)  # in place: state-dict tensors keep their identity
                b.running_var.copy_(var)
            if nbt is not None:
                b.num_batches_tracked.copy_(nbt)
            b.momentum = mom
            b.training = training


def reestimate_bn(model: nn.Module, batches: Sequence[Any]) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (``(x, y)`` or bare inputs; cumulative
    average), in place; every module's train/eval flag is as before."""
    bns = batchnorms(model)
    if not bns or not batches:
        return
    with model_modes(model), AdaptiveBN(bns, keep_stats=True) as abn, torch.no_grad():
        model.eval()
        abn.reset()
        for b in batches:
            model(b[0] if isinstance(b, (tuple, list)) else b)


# ------------------------------------------------------------------------------------------ whole network
class MaskedNetwork:
    """Top-1 accuracy of whole-network decisions (a bool row over every unit's channels, concatenated in
    ``space.units`` order) after adaptive BN; the model is never modified.

    Args:
        model, space: the network and its :class:`~evoprune.pruning.PruningSpace`.
        bn_x: input batches for adaptive BN (empty: keep the model's statistics).
        held_out: ``(x, y)`` batches accuracy is measured on.
        forward: ``auto`` (sliced when it reproduces the soft forward on ``probe``), ``sliced`` or ``soft``.
        probe: a decision row for the sliced-vs-soft check.
        threads: torch intra-op threads while running (restored afterwards; ``None``: leave torch's setting).
    """

    def __init__(self, model: nn.Module, space: Any, bn_x: Sequence[torch.Tensor],
                 held_out: Sequence[Tuple[torch.Tensor, torch.Tensor]], *, forward: str = "auto",
                 probe: Optional[np.ndarray] = None, threads: Optional[int] = None) -> None:
        if forward not in ("auto", "sliced", "soft"):
            raise EvopruneError(f"forward must be 'auto', 'sliced' or 'soft', got {forward!r}")
        self.model, self.space, self.threads = model, space, threads
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.bn_x, self.held_out = list(bn_x), list(held_out)
        sizes = np.asarray([u.channels for u in space.units], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._masks: Optional[InputMasks] = None
        self._setup(forward, probe)

    # ---------------------------------------------------------------------------------------------- setup
    def _setup(self, forward: str, probe: Optional[np.ndarray]) -> None:
        """Index maps for the sliced and soft forwards; pick one (``auto``: sliced if it checks out)."""
        mods = dict(self.model.named_modules())
        self._modules = mods
        self._bns = [(n, m) for n, m in mods.items() if isinstance(m, _BN) and m.track_running_stats
                     and m.running_mean is not None]
        soft: Dict[str, List[Tuple[np.ndarray, np.ndarray]]] = {}  # consumer -> (local inputs, global positions)
        sliced: Dict[Tuple[str, int], List[Tuple[np.ndarray, np.ndarray]]] = {}  # (module, dim) -> the same
        why_not = None
        for ui, u in enumerate(self.space.units):
            off = int(self.offsets[ui])
            for c in u.consumers:
                soft.setdefault(c.name, []).append((np.asarray(c.index), np.asarray(c.channel) + off))
            for mem in u.members:
                dim = _SLICE_DIM.get(mem.kind)
                m = mods.get(mem.name)
                if dim is None:
                    why_not = why_not or f"'{mem.name}' is a {mem.kind} member"
                    continue
                if isinstance(m, nn.modules.conv._ConvNd) and m.groups != 1:
                    why_not = why_not or f"'{mem.name}' is a grouped conv"
                sliced.setdefault((mem.name, dim), []).append((np.asarray(mem.index), np.asarray(mem.channel) + off))
        cat = lambda parts: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))  # noqa
        self._soft = {n: cat(parts) for n, parts in soft.items()}
        self._sliced = {k: cat(parts) for k, parts in sliced.items()}
        self._tensors = self._sliceable_tensors()
        self.mode, self.info = "soft", ""
        if forward == "soft":
            self.info = "soft masks (asked for)"
            return
        if why_not is None:
            why_not = self._check_sliced(probe) if probe is not None else "no probe decision to check it on"
        if why_not is None:
            self.mode = "sliced"
            self.info = "sliced parameters (checked against soft masks on a probe genome)"
        elif forward == "sliced":
            raise EvopruneError(f"forward='sliced' cannot run this model ({why_not}); use forward='auto' or 'soft'")
        else:
            self.info = f"soft masks ({why_not})"

    def _sliceable_tensors(self) -> Dict[Tuple[str, int], List[Tuple[str, Any]]]:
        """For each sliced (module, dim): the ``(state name, tensor)`` pairs cut along that dim."""
        out: Dict[Tuple[str, int], List[Tuple[str, Any]]] = {}
        for (name, dim) in self._sliced:
            m = self._modules[name]
            attrs = ("weight", "bias", "running_mean", "running_var") if isinstance(m, _BN) else \
                tuple(a for a in ("weight", "bias") if a == "weight" or dim == 0)
            items = [(a, getattr(m, a, None)) for a in attrs]
            out[(name, dim)] = [(f"{name}.{a}" if name else a, t.detach()) for a, t in items if t is not None]
        return out

    def _bn_state(self, state: Dict[str, Any], adapt: bool) -> None:
        """Fresh BN buffers for one decision (adaptive BN starts from scratch in buffers of our own)."""
        for name, bn in self._bns:
            prefix = f"{name}." if name else ""
            c = state[prefix + "running_mean"].shape[0] if prefix + "running_mean" in state else bn.num_features
            if adapt:
                state[prefix + "running_mean"] = torch.zeros(c, device=self.device)
                state[prefix + "running_var"] = torch.ones(c, device=self.device)
            elif prefix + "running_mean" not in state:
                state[prefix + "running_mean"] = bn.running_mean.detach().clone()
                state[prefix + "running_var"] = bn.running_var.detach().clone()
            if bn.num_batches_tracked is not None:
                state[prefix + "num_batches_tracked"] = torch.zeros((), dtype=torch.long, device=self.device)

    def _sliced_state(self, row: np.ndarray, adapt: bool) -> Dict[str, Any]:
        """Every pruned tensor cut to the kept channels of one decision, plus fresh BN buffers."""
        state: Dict[str, Any] = {}
        keep_idx: Dict[Tuple[str, int], Any] = {}
        for key, (loc, glob) in self._sliced.items():
            name, dim = key
            keep = np.ones(self._modules[name].weight.shape[dim], dtype=bool)
            keep[loc] = row[glob]
            keep_idx[key] = torch.from_numpy(np.flatnonzero(keep)).to(self.device)
        for key, items in self._tensors.items():
            idx = keep_idx[key]
            for full, t in items:
                src = state.get(full, t)
                if key[1] < src.dim():
                    state[full] = src.index_select(key[1], idx)
        self._bn_state(state, adapt)
        return state

    def _soft_state(self, row: np.ndarray, adapt: bool) -> Dict[str, Any]:
        """Fresh BN buffers; the consumers' input masks get this decision's 0/1 multipliers."""
        state: Dict[str, Any] = {}
        self._bn_state(state, adapt)
        mults = {}
        for name, (loc, glob) in self._soft.items():
            m = self._modules[name]
            width = m.in_channels if isinstance(m, nn.modules.conv._ConvNd) else m.in_features
            mult = np.ones(width, dtype=np.float32)
            mult[loc] = row[glob]
            mults[name] = torch.from_numpy(mult).to(self.device)
        self._masks.set(mults)
        return state

    # ------------------------------------------------------------------------------------------- running
    @contextlib.contextmanager
    def context(self, mode: Optional[str] = None, adapt: Optional[bool] = None
                ) -> Iterator[Callable[[np.ndarray], float]]:
        """Yields ``run(row) -> accuracy``; restores modes, BN momenta, hooks, grad mode and threads."""
        mode = mode or self.mode
        adapt = bool(self.bn_x) if adapt is None else adapt
        grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
        try:
            with model_modes(self.model), AdaptiveBN([bn for _, bn in self._bns], keep_stats=True) as abn:
                torch.set_grad_enabled(False)
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                self.model.eval()
                if mode == "soft":
                    self._masks = InputMasks((name, self._modules[name]) for name in self._soft)
                try:
                    yield lambda row: self._accuracy(row, mode, adapt, abn)
                finally:
                    if self._masks is not None:
                        self._masks.remove()
                        self._masks = None
        finally:
            torch.set_grad_enabled(grad)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    def state(self, row: np.ndarray, mode: str, adapt: bool) -> Dict[str, Any]:
        return self._sliced_state(row, adapt) if mode == "sliced" else self._soft_state(row, adapt)

    def _accuracy(self, row: np.ndarray, mode: str, adapt: bool, abn: AdaptiveBN) -> float:
        from torch.func import functional_call

        state = self.state(row, mode, adapt)
        if adapt:
            abn.prepare()
            for x in self.bn_x:
                functional_call(self.model, state, (x,))
            abn.freeze()
        correct, count = 0, 0
        for x, y in self.held_out:
            out = functional_call(self.model, state, (x,))
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(y):
                raise EvopruneError("network problem needs a model returning logits [batch, classes]")
            correct += int((out.argmax(1) == y).sum())
            count += len(y)
        return correct / count

    def _check_sliced(self, row: np.ndarray) -> Optional[str]:
        """Sliced and soft forwards must give the same logits on a probe decision; else the reason why not."""
        from torch.func import functional_call

        x = self.held_out[0][0][:8]
        outs = []
        try:
            for mode in ("soft", "sliced"):
                with self.context(mode, adapt=False):
                    outs.append(functional_call(self.model, self.state(row, mode, False), (x,)))
        except Exception as exc:  # a forward that reads channel counts, an op Torch-Pruning did not map, ...
            return f"sliced forward failed: {type(exc).__name__}"
        a, b = outs
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape):
            return "sliced forward gave differently shaped outputs"
        scale = float(a.abs().max()) + 1e-6
        if not torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
            return "sliced forward disagreed with soft masks"
        return None

    def __getstate__(self) -> Dict[str, Any]:
        st = dict(self.__dict__)
        st["_masks"] = None  # hooks are installed per context, never pickled
        return st
