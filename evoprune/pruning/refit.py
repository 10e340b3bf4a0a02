"""Least-squares refit of the consumers' weights on the kept channels (ThiNet; He et al. 2017).

After a unit's channels are chosen, each consumer (a convolution or linear layer reading them) has lost the
contribution of the removed inputs. With the consumer's input patches ``X`` (``[N, D]``, ``D = C_in kh kw``;
unfolded on calibration batches of the training split) and its current weights ``W`` (``[C_out, D]``), the refit
solves, for the kept columns ``S``,

    W'_S = argmin ||X W^T - X_S W_S'^T||^2 + lam ||W_S'||^2  =  (G_SS + lam I)^-1 G_S: W^T      (G = X^T X)

in float64, so the consumer reproduces its original pre-activation outputs from the kept channels as well as a
linear map can; ``lam`` is ``ridge`` times the mean diagonal of ``G_SS`` (scale-free). Only ``G`` is accumulated,
batch by batch (``D x D`` memory). The refit changes the kept columns only; physical pruning removes the rest.
No intercept is fitted: a following BatchNorm (re-estimated by adaptive BN) absorbs the mean shift.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError

DEFAULT_RIDGE = 1e-4
MAX_POSITIONS = 8192  # input positions sampled per consumer and batch (all of them for small maps)
# prune's default refits a unit only when each consumer's float64 Gram stays under 512 MiB (8192^2 x 8 bytes):
# every CIFAR/ImageNet convolution (512 x 3 x 3 = 4608), not an ImageNet VGG's first classifier layer (25088)
MAX_AUTO_INPUTS = 8192
CHUNK_BYTES = 256 << 20  # unfolded patches of the images processed at once


def _patches(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(mod, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    # the padding the convolution itself applies (also padding='same', possibly asymmetric), then a plain unfold
    x = torch.nn.functional.pad(x, mod._reversed_padding_repeated_twice)
    cols = torch.nn.functional.unfold(x, mod.kernel_size, dilation=mod.dilation, stride=mod.stride)  # [B, D, L]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _patch_bytes(mod: nn.Module, x: torch.Tensor) -> int:
    """Bytes one image's float32 patches take (unfolded and the transposed copy)."""
    if isinstance(mod, nn.Linear):
        return 4 * x[0].numel()
    left, right, top, bottom = mod._reversed_padding_repeated_twice
    dims = [(x.shape[-2] + top + bottom - mod.dilation[0] * (mod.kernel_size[0] - 1) - 1) // mod.stride[0] + 1,
            (x.shape[-1] + left + right - mod.dilation[1] * (mod.kernel_size[1] - 1) - 1) // mod.stride[1] + 1]
    return 2 * 4 * mod.weight[0].numel() * max(1, dims[0]) * max(1, dims[1])


def refit_blocker(model: nn.Module, space: Any, unit: str, max_inputs: Optional[int] = None) -> Optional[str]:
    """Why ``unit``'s consumers cannot be refit, in one line (``None``: they can). ``max_inputs``: also refuse a
    consumer whose input patches have more than this many values (its float64 Gram is their square)."""
    from evoprune.fitness.base import consumers_of

    return _blocker(consumers_of(space, unit, model), unit, max_inputs)


def _blocker(consumers: List[Any], unit: str, max_inputs: Optional[int]) -> Optional[str]:
    from torch.nn.utils import parametrize

    for c in consumers:
        m = c.module
        if parametrize.is_parametrized(m, "weight") or hasattr(m, "weight_g") or hasattr(m, "weight_orig"):
            return (f"consumer '{c.name}' of unit '{unit}' computes its weight (a parametrization, weight norm or "
                    "a pruning mask); the refit writes weights directly")
        if isinstance(m, nn.Conv2d):
            if m.groups != 1:
                return (f"consumer '{c.name}' of unit '{unit}' is a grouped/depthwise convolution; refit needs plain "
                        "convolutions or linear layers")
            if m.padding_mode != "zeros":
                return f"consumer '{c.name}' pads with '{m.padding_mode}'; only zero padding is supported"
        elif not isinstance(m, nn.Linear):
            return (f"consumer '{c.name}' of unit '{unit}' is a {type(m).__name__}, not a convolution or linear "
                    "layer")
        d = m.weight[0].numel()
        if max_inputs is not None and d > max_inputs:
            return (f"consumer '{c.name}' of unit '{unit}' has {d:,} inputs per output; its Gram matrix would take "
                    f"{d * d * 8 / 2 ** 30:.1f} GiB")
    return None


def check_refittable(model: nn.Module, space: Any, unit: str) -> List[Any]:
    """The unit's consumers; a one-line error when one is not a plain convolution or linear layer."""
    from evoprune.fitness.base import consumers_of

    cons = consumers_of(space, unit, model)
    why = _blocker(cons, unit, None)
    if why is not None:
        raise EvopruneError(f"--refit: {why} (drop --refit)")
    return cons


def refit_units(model: nn.Module, space: Any, refit: Optional[bool]) -> Tuple[List[str], Dict[str, str]]:
    """The units whose consumers get the refit, and why the others do not.

    ``True``: every unit (a one-line error, before any work, when one cannot be refit); ``False``: none; ``None``
    (prune's default): every unit whose consumers are ungrouped zero-padded convolutions or linear layers with
    plain weight tensors and at most :data:`MAX_AUTO_INPUTS` inputs per output, the others skipped with their
    reason."""
    if refit is False:
        return [], {}
    if refit is True:
        for u in space.names:
            check_refittable(model, space, u)
        return list(space.names), {}
    why = {}
    for u in space.names:
        try:
            why[u] = refit_blocker(model, space, u, MAX_AUTO_INPUTS)
        except EvopruneError as e:  # a unit whose consumers cannot even be listed is not refit, not a failed run
            why[u] = str(e)
    return [u for u, w in why.items() if w is None], {u: w for u, w in why.items() if w is not None}


@torch.no_grad()
def input_grams(model: nn.Module, modules: List[nn.Module], batches: Iterable[Any], seed: int = 0,
                max_positions: Optional[int] = MAX_POSITIONS) -> List[torch.Tensor]:
    """``G = X^T X`` (float64) of every module's input patches over ``batches``."""
    grams: List[Optional[torch.Tensor]] = [None] * len(modules)
    gen = torch.Generator().manual_seed(seed)

    def hook(i):
        def fn(mod, inputs):
            x = inputs[0].detach()
            # a few images at a time, so the unfolded patches stay under CHUNK_BYTES (ImageNet-sized maps); each
            # chunk contributes its share of the batch's max_positions, sampled before the float64 cast
            step = max(1, CHUNK_BYTES // max(1, _patch_bytes(mod, x)))
            chunks = [x] if step >= x.shape[0] else list(x.split(step))
            for c in chunks:
                p = _patches(mod, c)
                if max_positions is not None:
                    m = max_positions if len(chunks) == 1 else -(-max_positions * c.shape[0] // x.shape[0])
                    if p.shape[0] > m:
                        p = p[torch.randperm(p.shape[0], generator=gen)[:m].to(p.device)]
                p = p.to(torch.float64)
                g = p.T @ p
                grams[i] = g if grams[i] is None else grams[i] + g
        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    was = model.training
    model.eval()
    try:
        for b in batches:
            x = b[0] if isinstance(b, (tuple, list)) else b
            model(x.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    if any(g is None for g in grams):
        raise EvopruneError("refit: a consumer saw no calibration input; the calibration batches are empty")
    return [g.cpu() for g in grams]


def _kept_columns(mod: nn.Module, removed_inputs: np.ndarray) -> np.ndarray:
    d_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
    per = 1 if isinstance(mod, nn.Linear) else int(np.prod(mod.kernel_size))
    keep_in = np.setdiff1d(np.arange(d_in), removed_inputs)
    return (keep_in[:, None] * per + np.arange(per)[None]).reshape(-1)


def solve_refit(gram: torch.Tensor, weight: torch.Tensor, kept_cols: np.ndarray, ridge: float = DEFAULT_RIDGE
                ) -> torch.Tensor:
    """Refit weights ``[C_out, |S|]`` of the kept columns: ``(G_SS + lam I)^-1 G_S: W^T`` in float64."""
    g = gram.to(torch.float64)
    w = weight.reshape(weight.shape[0], -1).to(torch.float64).cpu()
    s = torch.as_tensor(kept_cols, dtype=torch.long)
    gss = g[s][:, s]
    lam = float(ridge) * float(gss.diagonal().mean().clamp_min(1e-300))
    rhs = g[s] @ w.T  # [|S|, C_out]
    sol = torch.linalg.solve(gss + lam * torch.eye(len(s), dtype=torch.float64), rhs)
    return sol.T.contiguous()


@torch.no_grad()
def refit_unit(model: nn.Module, space: Any, unit: str, mask: np.ndarray, batches: Iterable[Any],
               ridge: float = DEFAULT_RIDGE, seed: int = 0) -> Dict[str, Any]:
    """Refit every consumer of ``unit`` in place for the kept channels ``mask``; returns the relative output error
    of each consumer before and after (on the same calibration batches)."""
    cons = check_refittable(model, space, unit)
    mask = np.asarray(mask, dtype=bool)
    batches = list(batches)
    grams = input_grams(model, [c.module for c in cons], batches, seed=seed)
    info: Dict[str, Any] = {}
    for c, g in zip(cons, grams):
        mod = c.module
        removed = np.asarray(c.index.numpy()[~mask].reshape(-1), dtype=np.int64)
        cols = _kept_columns(mod, removed)
        w = mod.weight.reshape(mod.weight.shape[0], -1).to(torch.float64).cpu()
        g64 = g.to(torch.float64)
        total = float(torch.einsum("od,de,oe->", w, g64, w))  # ||X W^T||^2

        def err(wk: torch.Tensor) -> float:  # ||X W^T - X_S Wk^T||^2 from G alone
            s = torch.as_tensor(cols, dtype=torch.long)
            cross = torch.einsum("od,ds,os->", w, g64[:, s], wk)
            own = torch.einsum("os,st,ot->", wk, g64[s][:, s], wk)
            return float(total - 2 * cross + own)

        before = err(w[:, cols])
        new = solve_refit(g64, mod.weight, cols, ridge)
        after = err(new)
        flat = mod.weight.data.reshape(mod.weight.shape[0], -1)
        flat[:, torch.as_tensor(cols, dtype=torch.long)] = new.to(flat.dtype).to(flat.device)
        mod.weight.data.copy_(flat.reshape(mod.weight.shape))
        info[c.name] = {"rel_error_before": before / max(total, 1e-300), "rel_error_after": after / max(total, 1e-300)}
    return info
