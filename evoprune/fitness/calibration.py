"""Calibration: the few batches every evaluator learns from, and stage 1's Gram matrix Q of one unit.

Batches come from the training set, never the test set: ``CalibrationData.train`` holds un-augmented training
batches (stage-1 statistics, BatchNorm re-estimation), ``CalibrationData.held_out`` the calibration split carved
out of the training set (stage-2 loss/accuracy).

:func:`gram_matrix` computes ``Q_cd = <Z_c, Z_d>`` where ``Z_c`` is unit channel c's contribution to the consumers'
BN-scaled pre-activation outputs over (sampled) output positions. A consumer's input is captured by a forward
pre-hook and folded into running sums at once, so no activations are stored; positions are sampled per batch and
processed in chunks of at most ``chunk_bytes``. Two exact ways to reduce, picked per consumer by flop count:

* ``direct``: ``Z[c, p, o] = patch[p, c, :] . W[o, c, :]`` as one batched matmul, then ``Q += Z Z^T``;
  cost ``N n O (F + n)`` (N positions, n channels, O outputs, F = kernel taps per channel).
* ``covariance``: ``Q_cd = sum_{k,k'} A[ck, dk'] B[ck, dk']`` with the patch covariance ``A = P^T P`` (accumulated
  over positions) and the weight Gram ``B = W^T diag(s^2) W`` (formed block by block at the end); cost
  ``(nF)^2 (N + O)``, memory ``(nF)^2`` floats. Wins for wide 3x3 layers and always for Linear/1x1 consumers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from evoprune.errors import EvopruneError

from .base import ConsumerSpec, model_modes

__all__ = ["CalibrationData", "check_batches", "inputs_of", "run_model", "stream_consumer_inputs", "gram_matrix",
           "GramInfo", "bn_scale"]

Batch = Any  # a tensor x or a pair (x, y)


@dataclass
class CalibrationData:
    """Batches for one search: ``train`` (un-augmented training batches: stage-1 statistics and BN
    re-estimation) and ``held_out`` (the calibration split of the training set: stage-2 loss/accuracy)."""

    train: List[Tuple[torch.Tensor, torch.Tensor]]
    held_out: List[Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def from_loaders(cls, loaders: Any, train_batches: int = 4, held_out_batches: int = 4,
                     batch_size: Optional[int] = 128, seed: int = 0) -> "CalibrationData":
        """From :func:`evoprune.data.make_loaders`: un-augmented shuffled training batches, and seeded random
        batches of the held-out calibration split.

        The calibration split is stored in dataset order -- class-sorted for image folders -- so its *first*
        batches (``loaders.calib_batches``) would cover a few classes only: measured on CIFAR-10, two such
        held-out sets ranked the same 60 masks with Spearman -0.73. Shuffling fixes that.
        """
        if train_batches < 1:
            raise EvopruneError(f"calibration needs at least 1 training batch, got {train_batches}")
        train = loaders.train_batches(train_batches, batch_size=batch_size, seed=seed)
        held = []
        if held_out_batches:
            c = loaders.calib
            shuffled = c.with_options(batch_size=batch_size or c.batch_size, shuffle=True, augment=False,
                                      seed=seed + 31, drop_last=False, channels_last=False,
                                      **({"max_batches": held_out_batches} if hasattr(c, "max_batches") else {}))
            for i, b in enumerate(shuffled):
                if i >= held_out_batches:
                    break
                held.append(b)
        if not train:
            raise EvopruneError("the training split gave no calibration batch; use a larger dataset")
        return cls(list(train), list(held))


def _split(b: Batch) -> Tuple[Any, Any]:
    if isinstance(b, (tuple, list)):
        if len(b) != 2:
            raise EvopruneError(f"a calibration batch must be a tensor x or a pair (x, y), got a sequence of {len(b)}")
        return b[0], b[1]
    return b, None


def check_batches(batches: Any, what: str = "calibration", labels: bool = False
                  ) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Validate batches (tensors or ``(x, y)`` pairs): non-empty, float inputs of one shape, labels if asked."""
    if isinstance(batches, (torch.Tensor, tuple)) and not isinstance(batches, list):
        batches = [batches]
    try:
        items = list(batches)
    except TypeError:
        raise EvopruneError(f"{what} batches must be a list of tensors or (x, y) pairs, got "
                            f"{type(batches).__name__}") from None
    if not items:
        raise EvopruneError(f"no {what} batches given; pass at least one (x, y) batch from the training split")
    out = []
    shape = None
    for i, b in enumerate(items):
        x, y = _split(b)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise EvopruneError(f"{what} batch {i}: inputs must be a float tensor, got "
                                f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise EvopruneError(f"{what} batch {i} has shape {tuple(x.shape)}; expected [batch, channels, ...] "
                                "with at least one sample")
        if shape is None:
            shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != shape:
            raise EvopruneError(f"{what} batch {i} has shape {tuple(x.shape)} but batch 0 has [*, "
                                f"{', '.join(map(str, shape))}]; all batches need the same sample shape")
        if labels:
            if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x) or y.is_floating_point():
                raise EvopruneError(f"{what} batch {i} needs integer labels y of shape [{len(x)}] as (x, y)")
        out.append((x, y))
    return out


def inputs_of(batches: Any, what: str = "calibration") -> List[torch.Tensor]:
    """The inputs ``x`` of checked batches."""
    return [x for x, _ in check_batches(batches, what)]


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _first_conv(model: nn.Module) -> Optional[Tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return name, m
    return None


class _HookFailure(Exception):
    """Carries an exception raised by our own hook through the model's forward (never reported as a model error)."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


class _Stop(Exception):
    """Ends a forward once every hooked module has seen this batch (the rest of the network is not needed)."""


def model_error(model: nn.Module, x: torch.Tensor, exc: BaseException, what: str = "calibration") -> EvopruneError:
    """A one-line error for a model that cannot run on a batch (wrong input shape, broken surgery, ...)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    fc = _first_conv(model)
    if fc is not None and x.ndim >= 2 and fc[1].in_channels != x.shape[1]:
        hint = f" (its first conv '{fc[0]}' expects {fc[1].in_channels} input channels, the batch has {x.shape[1]})"
    return EvopruneError(f"model cannot run on {what} batch of shape {tuple(x.shape)}{hint}: {first[:200]}; "
                         "check the data and that the model is unbroken")


def run_model(model: nn.Module, x: torch.Tensor, what: str = "calibration") -> Any:
    """``model(x)`` with model failures turned into one-line :class:`EvopruneError` (our hooks' errors pass)."""
    try:
        return model(x)
    except (_Stop, _HookFailure, EvopruneError):
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise model_error(model, x, exc, what) from None


def stream_consumer_inputs(model: nn.Module, modules: Sequence[nn.Module], xs: Sequence[torch.Tensor],
                           fn: Callable[[int, torch.Tensor], None], what: str = "calibration") -> None:
    """Run ``model`` (eval mode, no grad) on every batch, calling ``fn(i, input)`` whenever ``modules[i]`` is
    called; the forward stops once every module has had its calls of the batch (learned on the first batch)."""
    counts = [0] * len(modules)
    expected: Optional[List[int]] = None
    device = _device(model)

    def make(i: int):
        def pre(mod: nn.Module, args: tuple) -> None:
            try:
                fn(i, args[0])
            except Exception as exc:  # ours, not the model's
                raise _HookFailure(exc) from exc
            counts[i] += 1
            if expected is not None and all(c >= e for c, e in zip(counts, expected)):
                raise _Stop()
        return pre

    handles = [m.register_forward_pre_hook(make(i)) for i, m in enumerate(modules)]
    try:
        with model_modes(model), torch.no_grad():
            model.eval()
            for x in xs:
                counts[:] = [0] * len(modules)
                try:
                    run_model(model, x.to(device), what)
                except _Stop:
                    pass
                if expected is None:
                    if not all(counts):
                        missing = [i for i, c in enumerate(counts) if c == 0]
                        raise EvopruneError(f"consumer module #{missing[0]} was never called in a forward pass; "
                                            "the consumers must belong to this model")
                    expected = list(counts)
    except _HookFailure as hf:
        raise hf.exc from None
    finally:
        for h in handles:
            h.remove()


def bn_scale(norm: Optional[nn.Module], out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Per-output scale of the BN after a consumer: ``gamma / sqrt(running_var + eps)`` (1 without a BN).

    A BN without running statistics normalises by batch statistics, which no fixed scale describes: scale 1."""
    if norm is None or getattr(norm, "running_var", None) is None:
        return torch.ones(out, dtype=dtype, device=device)
    s = 1.0 / torch.sqrt(norm.running_var.detach().to(device, dtype) + norm.eps)
    if norm.weight is not None:
        s = s * norm.weight.detach().to(device, dtype)
    return s


def consumer_weights(spec: ConsumerSpec, dtype: torch.dtype) -> torch.Tensor:
    """The consumer's weights restricted to the unit's channels, BN-scaled: ``[O, n, F]``.

    Grouped convs are expanded to dense weights (zeros across groups), which keeps every formula exact."""
    mod = spec.module
    w = mod.weight.detach().to(dtype=dtype)
    idx = spec.index.reshape(-1).to(w.device)
    n, r = spec.index.shape
    if isinstance(mod, nn.Conv2d):
        o, cg = w.shape[0], w.shape[1]
        g = mod.groups
        if g > 1:
            dense = w.new_zeros(o, mod.in_channels, *w.shape[2:])
            og = o // g
            for j in range(g):
                dense[j * og:(j + 1) * og, j * cg:(j + 1) * cg] = w[j * og:(j + 1) * og]
            w = dense
        wu = w[:, idx].reshape(o, n, r * w.shape[2] * w.shape[3])
    else:
        o = w.shape[0]
        wu = w[:, idx].reshape(o, n, r)
    return wu * bn_scale(spec.norm, o, dtype, w.device).view(o, 1, 1)


class _Patches:
    """Sampled input patches of one consumer: ``[N, n, F]`` rows in chunks, with positions drawn per batch."""

    def __init__(self, spec: ConsumerSpec, per_batch: Optional[int], gen: torch.Generator, dtype: torch.dtype):
        self.spec, self.per_batch, self.gen, self.dtype = spec, per_batch, gen, dtype
        self.idx = spec.index.reshape(-1)
        self.n, self.r = spec.index.shape
        mod = spec.module
        if isinstance(mod, nn.Conv2d):
            self.k = (int(mod.kernel_size[0]), int(mod.kernel_size[1]))
            self.f = self.r * self.k[0] * self.k[1]
        else:
            self.f = self.r

    def positions(self, x: torch.Tensor) -> int:
        """Output positions of one batch (before sampling)."""
        mod = self.spec.module
        if isinstance(mod, nn.Conv2d):
            h, w = self._out_hw(x)
            return x.shape[0] * h * w
        return x.numel() // x.shape[-1]

    def _out_hw(self, x: torch.Tensor) -> Tuple[int, int]:
        mod = self.spec.module
        pad = mod._reversed_padding_repeated_twice  # (left, right, top, bottom), also for padding='same'
        hp, wp = x.shape[-2] + pad[2] + pad[3], x.shape[-1] + pad[0] + pad[1]
        (sh, sw), (dh, dw), (kh, kw) = mod.stride, mod.dilation, self.k
        return (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1

    def chunks(self, x: torch.Tensor, chunk_rows: int):
        """Yield ``[q, n, F]`` patch chunks (dtype ``self.dtype``) for the sampled positions of batch ``x``."""
        mod = self.spec.module
        total = self.positions(x)
        m = total if self.per_batch is None else min(total, self.per_batch)
        ids = None if m == total else torch.randperm(total, generator=self.gen)[:m].sort().values
        if isinstance(mod, nn.Conv2d):
            if x.ndim != 4 or x.shape[1] != mod.in_channels:
                raise EvopruneError(f"consumer '{self.spec.name}' got input of shape {tuple(x.shape)}, expected "
                                    f"[batch, {mod.in_channels}, H, W]")
            xu = x[:, self.idx.to(x.device)]
            pad = mod._reversed_padding_repeated_twice
            if any(pad):
                mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
                xu = F.pad(xu, pad, mode=mode)
            ho, wo = self._out_hw(x)
            (sh, sw), (dh, dw), (kh, kw) = mod.stride, mod.dilation, self.k
            ky = torch.arange(kh, device=x.device) * dh
            kx = torch.arange(kw, device=x.device) * dw
            for s in range(0, m, chunk_rows):
                flat = torch.arange(s, min(m, s + chunk_rows), device=x.device) if ids is None else \
                    ids[s:s + chunk_rows].to(x.device)
                b, rem = flat // (ho * wo), flat % (ho * wo)
                oy, ox = rem // wo, rem % wo
                rows = oy[:, None] * sh + ky  # [q, kh]
                cols = ox[:, None] * sw + kx  # [q, kw]
                p = xu[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [q, kh, kw, n*R]
                yield p.permute(0, 3, 1, 2).reshape(len(flat), self.n, self.f).to(self.dtype)
        else:
            if x.shape[-1] != mod.in_features:
                raise EvopruneError(f"consumer '{self.spec.name}' got input of shape {tuple(x.shape)}, expected "
                                    f"[..., {mod.in_features}]")
            x2 = x.reshape(-1, x.shape[-1])
            if ids is not None:
                x2 = x2[ids.to(x.device)]
            for s in range(0, m, chunk_rows):
                yield x2[s:s + chunk_rows][:, self.idx.to(x.device)].reshape(-1, self.n, self.f).to(self.dtype)


@dataclass
class GramInfo:
    """How Q was computed, per consumer: method, positions used, flops estimate. ``mean_outer`` (``[n, n]``) is
    ``sum_o N mu_co mu_do`` over consumers followed by a BatchNorm (``mu_co``: mean of ``Z_c`` at output o over
    the N positions): ``Q - mean_outer`` is the Gram of the per-output-channel centred contributions."""

    consumers: List[Dict[str, Any]] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0
    mean_outer: Optional[torch.Tensor] = None


class _Accumulator:
    def __init__(self, spec: ConsumerSpec, n_batches: int, max_positions: Optional[int], method: str,
                 dtype: torch.dtype, chunk_bytes: int, cov_limit_bytes: int, gen: torch.Generator):
        self.spec = spec
        per_batch = None if max_positions is None else max(1, math.ceil(max_positions / n_batches))
        self.patches = _Patches(spec, per_batch, gen, dtype)
        self.n_batches, self.method_req, self.dtype = n_batches, method, dtype
        self.chunk_bytes, self.cov_limit = chunk_bytes, cov_limit_bytes
        self.method: Optional[str] = None
        self.acc: Optional[torch.Tensor] = None
        self.w: Optional[torch.Tensor] = None  # [O, n, F]
        self.positions = 0
        self.psum: Optional[torch.Tensor] = None  # [n, F]: sum of patches (for the per-output means)

    def _choose(self, x: torch.Tensor) -> None:
        n, f = self.patches.n, self.patches.f
        self.w = consumer_weights(self.spec, self.dtype).to(x.device)
        o = self.w.shape[0]
        per = self.patches.positions(x)
        if self.patches.per_batch is not None:
            per = min(per, self.patches.per_batch)
        est_n = per * self.n_batches
        self.flops = {"direct": est_n * n * o * (f + n), "covariance": (n * f) ** 2 * (est_n + o)}
        cov_bytes = (n * f) ** 2 * torch.finfo(self.dtype).bits // 8
        if self.method_req == "auto":
            ok = cov_bytes <= self.cov_limit
            self.method = "covariance" if ok and self.flops["covariance"] <= self.flops["direct"] else "direct"
        elif self.method_req in ("direct", "covariance"):
            self.method = self.method_req
        else:
            raise EvopruneError(f"gram method must be auto, direct or covariance, got '{self.method_req}'")
        side = n * f if self.method == "covariance" else n
        self.acc = torch.zeros(side, side, dtype=self.dtype, device=x.device)
        self.psum = torch.zeros(n, f, dtype=self.dtype, device=x.device)
        if self.method == "direct":
            self.wt = self.w.permute(1, 2, 0).contiguous()  # [n, F, O]

    def update(self, x: torch.Tensor) -> None:
        if self.method is None:
            self._choose(x)
        n, f = self.patches.n, self.patches.f
        item = torch.finfo(self.dtype).bits // 8
        o = self.w.shape[0]
        if self.method == "covariance":
            rows = max(1, self.chunk_bytes // (n * f * item))
            for p in self.patches.chunks(x, rows):
                p2 = p.reshape(p.shape[0], n * f)
                self.acc.addmm_(p2.T, p2)
                self.psum += p.sum(0)
                self.positions += p.shape[0]
        else:
            rows = max(1, self.chunk_bytes // (n * (f + o) * item))
            for p in self.patches.chunks(x, rows):
                z = torch.bmm(p.transpose(0, 1), self.wt)  # [n, q, O]: channel c's contribution per position
                z2 = z.reshape(n, -1)
                self.acc.addmm_(z2, z2.T)
                self.psum += p.sum(0)
                self.positions += p.shape[0]

    def mean_outer(self) -> torch.Tensor:
        """``S S^T / N`` with ``S[c, o] = sum_pos Z_c[o, pos]`` (zeros when no BN follows: nothing absorbs a shift)."""
        n = self.patches.n
        if self.spec.norm is None or self.positions == 0:
            return torch.zeros(n, n, dtype=self.dtype, device=self.psum.device)
        s = torch.einsum("cf,ocf->co", self.psum, self.w)
        return s @ s.T / self.positions

    def finish(self) -> torch.Tensor:
        n, f = self.patches.n, self.patches.f
        if self.method == "direct":
            return self.acc
        w2 = self.w.reshape(self.w.shape[0], n * f)
        q = self.acc.new_empty(n, n)
        item = torch.finfo(self.dtype).bits // 8
        step = max(1, self.chunk_bytes // (2 * f * n * f * item))  # rows of channels per block of B
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            b = w2[:, c0 * f:c1 * f].T @ w2  # [(c1-c0) F, nF]: a block of the weight Gram
            q[c0:c1] = (self.acc[c0 * f:c1 * f] * b).reshape(c1 - c0, f, n, f).sum((1, 3))
        self.acc = None
        return q


def gram_matrix(model: nn.Module, consumers: Sequence[ConsumerSpec], xs: Sequence[torch.Tensor], *,
                max_positions: Optional[int] = 8192, method: str = "auto", dtype: torch.dtype = torch.float64,
                chunk_bytes: int = 64 << 20, cov_limit_bytes: int = 512 << 20, seed: int = 0
                ) -> Tuple[torch.Tensor, GramInfo]:
    """Q (``[n, n]``, summed over consumers) from the consumers' inputs on ``xs``.

    ``max_positions`` bounds the output positions per consumer (sampled uniformly, ``None``: all); ``method`` is
    ``auto`` (fewest flops within ``cov_limit_bytes``), ``direct`` or ``covariance``.
    """
    import time

    if max_positions is not None and max_positions < 1:
        raise EvopruneError(f"max_positions must be >= 1 or None (all positions), got {max_positions}")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    accs = [_Accumulator(c, len(xs), max_positions, method, dtype, chunk_bytes, cov_limit_bytes, gen)
            for c in consumers]
    stream_consumer_inputs(model, [c.module for c in consumers], xs, lambda i, x: accs[i].update(x.detach()))
    q = None
    info = GramInfo(batches=len(xs))
    for a in accs:
        mo = a.mean_outer()
        info.mean_outer = mo if info.mean_outer is None else info.mean_outer + mo.to(info.mean_outer.device)
        qi = a.finish()
        q = qi if q is None else q + qi.to(q.device)
        info.consumers.append({"name": a.spec.name, "method": a.method, "positions": a.positions,
                               "flops": {k: int(v) for k, v in a.flops.items()}})
    q = 0.5 * (q + q.T)  # exact in theory; removes rounding asymmetry
    info.mean_outer = (0.5 * (info.mean_outer + info.mean_outer.T)).cpu()
    info.seconds = time.perf_counter() - t0
    return q.cpu(), info
