"""Exact analytic MACs and parameter counts of a pruning decision, without building the pruned model.

What is counted (per input sample, i.e. batch 1, at the space's input size):

* MACs: multiply-accumulates of every ``Conv`` and ``Linear`` module call, ``out_positions * prod(kernel) *
  (in_channels / groups) * out_channels`` (linear: ``in * out`` per position). Biases, BatchNorm, activations,
  pooling and additions are not counted -- the same convention as ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matmuls only), so ``macs == FlopCounterMode FLOPs / 2`` for models whose convs and matmuls all
  live in ``nn.Conv*`` / ``nn.Linear`` modules. Functional matmuls outside modules are not seen.
* params: ``sum(p.numel() for p in model.parameters())`` of the physically pruned model, exactly (conv/linear
  weights and biases, BatchNorm affine weights; untouched modules contribute their full count).

Each layer's channel counts are affine in the per-unit kept counts ``k`` (a layer's input is the concatenation of
what its units keep), so every cost is a sum of terms ``a * (P.k~ // div) * (Q.k~)`` with ``k~ = [1, k]``:
evaluated in int64 (exact) in O(terms) per decision, and for a whole population with two matrix products
(:meth:`CostModel.macs_batch`).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from evoprune.errors import EvopruneError

from .space import BN, DWCONV, IN_KINDS, Masks, PruningSpace


class _Form:
    """A sum of terms ``a * ((P @ k~) // div) * (Q @ k~)`` over ``k~ = [1, k_1..k_U]`` (int64, exact)."""

    def __init__(self, n_units: int) -> None:
        self.n = n_units
        self.a: List[int] = []
        self.P: List[np.ndarray] = []
        self.Q: List[np.ndarray] = []
        self.div: List[int] = []
        self.const = 0

    def add(self, a: int, p: np.ndarray, q: np.ndarray, div: int = 1) -> None:
        if a:
            self.a.append(int(a))
            self.P.append(p)
            self.Q.append(q)
            self.div.append(int(div))

    def freeze(self) -> None:
        w = self.n + 1
        self.a_ = np.asarray(self.a, dtype=np.int64)
        self.P_ = np.asarray(self.P, dtype=np.int64).reshape(-1, w)
        self.Q_ = np.asarray(self.Q, dtype=np.int64).reshape(-1, w)
        self.div_ = np.asarray(self.div, dtype=np.int64)
        self.PT = np.ascontiguousarray(self.P_.T)
        self.QT = np.ascontiguousarray(self.Q_.T)
        self._plain = bool((self.div_ == 1).all())

    def value(self, kt: np.ndarray) -> np.ndarray:
        """``kt``: int64 [B, U+1] (first column ones) -> int64 [B]."""
        x = kt @ self.PT
        if not self._plain:
            x //= self.div_
        return (x * (kt @ self.QT)) @ self.a_ + self.const

    def matrix(self) -> np.ndarray:
        """The bilinear form as a float matrix ``M`` with ``cost = k~^T M k~`` (fractions where groups divide)."""
        if not len(self.a_):
            m = np.zeros((self.n + 1, self.n + 1))
        else:
            m = (self.P_.T * (self.a_ / self.div_)) @ self.Q_
        m = m.astype(np.float64)
        m[0, 0] += self.const
        return m


class CostModel:
    """MACs and parameter counts of any decision on ``space``, computed from per-layer shapes recorded when the
    space was built (one hooked forward at batch 1); no forward pass, no copy per call.

    ``macs(masks)``/``params(masks)`` take a decision (validated); ``macs_counts(k)``/``params_counts(k)`` and the
    vectorised ``macs_batch(K)``/``params_batch(K)`` take kept counts per unit (``K``: int array [P, n_units] in
    unit order; counts must be valid: >= min_keep and multiples of the unit's channel_groups).
    """

    def __init__(self, space: PruningSpace) -> None:
        self.space = space
        n = len(space.units)
        self.n_units = n
        # affine channel forms per touched module: dim -> vector over [1, k]
        outs: Dict[str, np.ndarray] = {}
        ins: Dict[str, np.ndarray] = {}
        touched: Dict[str, bool] = {}
        for ui, u in enumerate(space.units):
            for mem in u.members:
                info = space.layers[mem.name]
                s = mem.index.size // u.channels  # local indices per unit channel (uniform, checked by the space)
                targets = []
                if mem.kind in IN_KINDS:
                    targets.append((ins, info.in_channels))
                else:
                    targets.append((outs, info.out_channels))
                    if mem.kind in (DWCONV, BN):  # input and output are the same channels
                        targets.append((ins, info.in_channels))
                for forms, base in targets:
                    f = forms.get(mem.name)
                    if f is None:
                        f = forms[mem.name] = np.zeros(n + 1, dtype=np.int64)
                        f[0] = base
                    f[0] -= s * u.channels
                    f[1 + ui] += s
                touched[mem.name] = True
                if mem.kind == DWCONV:
                    touched[mem.name + "#dw"] = True

        e0 = np.zeros(n + 1, dtype=np.int64)
        e0[0] = 1
        self._macs = _Form(n)
        self._params = _Form(n)
        base_macs = 0
        for name, info in space.layers.items():
            if info.type in ("conv", "linear"):
                base_macs += info.positions * info.kernel * (info.in_channels // info.groups) * info.out_channels
            if name not in touched:
                continue
            out_f = outs.get(name, e0 * info.out_channels)
            in_f = ins.get(name, e0 * info.in_channels)
            if info.type == "bn":
                if info.affine:
                    self._params.add(2, e0, out_f)
                continue
            if touched.get(name + "#dw"):
                per_group, div = e0, 1  # depthwise: one input channel per filter, groups follow the channels
            else:
                per_group, div = in_f, info.groups
            self._macs.add(info.positions * info.kernel, per_group, out_f, div)
            self._params.add(info.kernel, per_group, out_f, div)
            if info.bias:
                self._params.add(1, e0, out_f)
        self.base_macs = int(base_macs)
        self.base_params = int(space.total_params)
        for form, base in ((self._macs, self.base_macs), (self._params, self.base_params)):
            form.freeze()
            full = np.concatenate([[1], space.sizes]).astype(np.int64)[None]
            form.const = base - int(form.value(full)[0])  # untouched layers: constant
        self.sizes = np.asarray(space.sizes, dtype=np.int64)

    # ------------------------------------------------------------------------------------------------ per decision
    def counts(self, masks: Masks) -> np.ndarray:
        """Kept channels per unit (validated)."""
        return self.space.keep_counts(masks)

    def macs(self, masks: Masks) -> int:
        """MACs per sample of the model pruned by ``masks`` (== FlopCounterMode FLOPs / 2)."""
        return self.macs_counts(self.counts(masks))

    def params(self, masks: Masks) -> int:
        """Parameters of the model pruned by ``masks`` (== sum of p.numel() of the pruned model)."""
        return self.params_counts(self.counts(masks))

    def macs_params(self, masks: Masks) -> Tuple[int, int]:
        """``(macs(masks), params(masks))`` with one validation."""
        kt = self._kt(self.counts(masks))
        return int(self._macs.value(kt)[0]), int(self._params.value(kt)[0])

    def macs_counts(self, counts: np.ndarray) -> int:
        return int(self._macs.value(self._kt(counts))[0])

    def params_counts(self, counts: np.ndarray) -> int:
        return int(self._params.value(self._kt(counts))[0])

    # ------------------------------------------------------------------------------------------------ vectorised
    def macs_batch(self, keep_counts: np.ndarray) -> np.ndarray:
        """MACs of P decisions given as kept counts, int array [P, n_units] -> int64 [P]."""
        return self._macs.value(self._kt(keep_counts))

    def params_batch(self, keep_counts: np.ndarray) -> np.ndarray:
        """Parameters of P decisions given as kept counts, int array [P, n_units] -> int64 [P]."""
        return self._params.value(self._kt(keep_counts))

    @property
    def macs_matrix(self) -> np.ndarray:
        """``M`` with ``macs = k~^T M k~``, ``k~ = [1, counts]`` (float; exact up to group-conv fractions)."""
        return self._macs.matrix()

    @property
    def params_matrix(self) -> np.ndarray:
        return self._params.matrix()

    def _kt(self, counts: np.ndarray) -> np.ndarray:
        k = np.asarray(counts)
        if k.ndim == 1:
            k = k[None]
        if k.ndim != 2 or k.shape[1] != self.n_units:
            raise EvopruneError(f"keep counts must have shape [P, {self.n_units}] (one column per unit), "
                                f"got {np.shape(counts)}")
        if not np.issubdtype(k.dtype, np.integer):
            if not np.all(np.mod(k, 1) == 0):
                raise EvopruneError("keep counts must be integers")
        kt = np.empty((k.shape[0], self.n_units + 1), dtype=np.int64)
        kt[:, 0] = 1
        kt[:, 1:] = k
        return kt

    def __repr__(self) -> str:
        return f"CostModel({self.n_units} units, base_macs={self.base_macs:,}, base_params={self.base_params:,})"


def flop_counter_macs(model, input_shape: Tuple[int, ...]) -> int:
    """MACs of one sample of shape ``input_shape[1:]`` as counted by ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), batch 1, eval mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shape = (1,) + tuple(int(s) for s in input_shape[1:])  # input_shape includes a batch dim, e.g. space.input_shape
    p = next(iter(model.parameters()), None)
    x = torch.zeros(shape, device=p.device if p is not None else "cpu")
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        model.train(was)
    return fc.get_total_flops() // 2


def model_params(model) -> int:
    """``sum(p.numel())`` over the model's parameters (one implementation: :func:`evoprune.models.count_params`)."""
    from evoprune.models import count_params

    return count_params(model)
