"""Stage 2: network-level check of candidate masks -- adaptive-BN loss and accuracy on held-out batches.

For each mask the unit's removed channels are zeroed where its consumers read them (exactly what the physically
pruned network computes), BatchNorm statistics after the unit are re-estimated on a few training batches (adaptive
BN, as in EagleEye: reset running stats, ``momentum=None`` for a cumulative average, forward in train mode without
gradients, back to eval) and the cross-entropy loss and top-1 accuracy are measured on held-out calibration
batches. Results are cached by genome; BN statistics, momenta and modes are restored afterwards.

Speed (a CPU spends its time here): the network before the unit's first consumer does not change while one unit is
searched, so its output is computed once and cached, and only the rest runs per candidate. The model is split with
``torch.fx``: the cut is the latest point before the first consumer where a single tensor carries everything the
rest of the network needs (for a VGG: the consumer's input; for a ResNet block conv: the block's input). Only
BatchNorms downstream of a consumer are re-estimated. The split is verified on a batch (same logits as the model);
models that ``torch.fx`` cannot trace (data-dependent control flow) or that fail the check fall back to a full
forward per candidate, with BNs after the first consumer (in execution order) re-estimated -- see ``split_info``.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.pruning.masked import AdaptiveBN
from evoprune.registry import EVALUATORS

from .base import ConsumerLike, Evaluator, as_consumers, check_masks, consumers_of, genome_key, mask_consumers, \
    model_modes
from .calibration import check_batches, run_model

__all__ = ["NetworkFitness", "split_model", "ModelSplit"]

_BN = nn.modules.batchnorm._BatchNorm


class ModelSplit:
    """``suffix(prefix(x)) == model(x)``; ``bns``: the BatchNorms whose inputs depend on the consumers."""

    def __init__(self, prefix: Optional[nn.Module], suffix: nn.Module, bns: List[nn.Module], info: str):
        self.prefix, self.suffix, self.bns, self.info = prefix, suffix, bns, info

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.prefix is None else run_model(self.prefix, x)

    def tail(self, cut: torch.Tensor) -> Any:
        return run_model(self.suffix, cut.clone())  # clone: an in-place op in the suffix must not alter the cache


def _bns_after_first_call(model: nn.Module, consumers: Sequence[nn.Module], x: torch.Tensor) -> List[nn.Module]:
    """BNs first called after the first consumer in one eval forward (the fallback's re-estimation set)."""
    order: List[nn.Module] = []
    watched = set(map(id, consumers))
    handles = [m.register_forward_pre_hook(lambda mod, a: order.append(mod))
               for m in model.modules() if isinstance(m, _BN) or id(m) in watched]
    try:
        with model_modes(model), torch.no_grad():
            model.eval()
            run_model(model, x)
    finally:
        for h in handles:
            h.remove()
    first = next((i for i, m in enumerate(order) if id(m) in watched), len(order))
    out: List[nn.Module] = []
    for m in order[first:]:
        if isinstance(m, _BN) and all(m is not o for o in out) and all(m is not o for o in order[:first]):
            out.append(m)
    return out


def split_model(model: nn.Module, consumers: Sequence[nn.Module], x: torch.Tensor, mode: str = "auto") -> ModelSplit:
    """Split ``model`` before its first consumer (see the module docstring); ``mode="full"`` skips the split."""
    if mode not in ("auto", "full"):
        raise EvopruneError(f"split must be 'auto' or 'full', got '{mode}'")
    fallback = "full forward"
    if mode == "auto":
        try:
            res = _fx_split(model, consumers)
        except EvopruneError:
            raise
        except Exception as exc:  # untraceable model: documented fallback
            res = None
            why = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else ""
            fallback = f"full forward (torch.fx: {type(exc).__name__}: {why})"
        if isinstance(res, str):
            fallback, res = f"full forward ({res})", None
        if res is not None:
            split = res
            with model_modes(model), torch.no_grad():
                model.eval()
                ref = run_model(model, x)
                head = split.head(x)
                try:  # the cut must carry one tensor (a chunk/split node carries a tuple)
                    got = split.tail(head) if isinstance(head, torch.Tensor) else None
                except EvopruneError:
                    got = None
            if isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == ref.shape \
                    and torch.allclose(got, ref, rtol=1e-4, atol=1e-5):
                return split
            fallback = "full forward (split check failed)" if isinstance(head, torch.Tensor) else \
                "full forward (the cut carries a tuple, not a tensor)"
    return ModelSplit(None, model, _bns_after_first_call(model, consumers, x), fallback)


def _fx_split(model: nn.Module, consumers: Sequence[nn.Module]):
    import torch.fx as fx

    names = {m: n for n, m in model.named_modules()}
    wanted = {names.get(c) for c in consumers}
    if None in wanted:
        return "a consumer is not a submodule of the model"
    with model_modes(model):
        model.eval()  # functional code reading self.training is traced as eval
        gm = fx.symbolic_trace(model)
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    cnodes = [n for n in nodes if n.op == "call_module" and n.target in wanted]
    if {n.target for n in cnodes} != wanted:
        return "a consumer is not called as a leaf module"
    first = min(pos[n] for n in cnodes)
    last_use = {n: max((pos[u] for u in n.users), default=-1) for n in nodes}
    live: set = set()
    cut = None
    for i in range(first):
        node = nodes[i]
        if node.op != "get_attr" and last_use[node] > i:
            live.add(node)
        live = {m for m in live if last_use[m] > i}
        if len(live) == 1:
            cut, cut_node = i, next(iter(live))
    if cut is None:
        return "no single tensor separates the network before its first consumer from the rest"
    # prefix: everything up to the cut, returning the cut tensor
    g1 = fx.Graph()
    env: Dict[Any, Any] = {}
    for node in nodes[:cut + 1]:
        env[node] = g1.node_copy(node, lambda a: env[a])
    g1.output(env[cut_node])
    # suffix: a placeholder for the cut, the constants it reads, then the rest
    g2 = fx.Graph()
    env2: Dict[Any, Any] = {cut_node: g2.placeholder("cut")}
    for node in nodes[:cut + 1]:
        if node.op == "get_attr" and last_use[node] > cut:
            env2[node] = g2.node_copy(node)
    for node in nodes[cut + 1:]:
        env2[node] = g2.node_copy(node, lambda a: env2[a])
    prefix = fx.GraphModule(model, g1)  # shares the model's leaf modules: hooks and BN stats are the model's
    prefix.graph.eliminate_dead_code()
    prefix.recompile()
    suffix = fx.GraphModule(model, g2)
    # BNs downstream of any consumer
    seen, stack = set(), list(cnodes)
    while stack:
        n = stack.pop()
        for u in n.users:
            if u not in seen:
                seen.add(u)
                stack.append(u)
    mods = dict(model.named_modules())
    bns: List[nn.Module] = []
    for n in nodes:
        if n in seen and n.op == "call_module" and isinstance(mods.get(n.target), _BN) \
                and all(mods[n.target] is not b for b in bns):
            bns.append(mods[n.target])
    return ModelSplit(prefix, suffix, bns, f"cached input of '{cut_node.name}', suffix of "
                                           f"{len(nodes) - cut - 2} graph nodes")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA's, or the CPU allocator's)."""
    for holder in (torch, getattr(torch, "cuda", None)):
        oom = getattr(holder, "OutOfMemoryError", None)
        if oom is not None and isinstance(exc, oom):
            return True
    msg = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in msg or "can't allocate memory" in msg
        or "not enough memory" in msg)


def _halves(batches: List[Any]) -> List[Any]:
    """Each batch (a cut tensor, or ``(cut, labels)``) split into two halves (batches of 1 stay)."""
    out: List[Any] = []
    for b in batches:
        t = b[0] if isinstance(b, tuple) else b
        if t.shape[0] < 2:
            out.append(b)
            continue
        h = (t.shape[0] + 1) // 2
        out += [tuple(v[:h] for v in b), tuple(v[h:] for v in b)] if isinstance(b, tuple) else [b[:h], b[h:]]
    return out


@EVALUATORS.register("network")
class NetworkFitness(Evaluator):
    """Stage 2: held-out loss (minimise) and top-1 accuracy (maximise) of the masked network after adaptive BN.

    Cached by genome; ``budget()`` reports evaluations and time.

    Args:
        model: the network (not modified).
        consumers: the unit's consumers (see :func:`consumers_of`).
        train_batches: ``(x, y)`` training batches for BN re-estimation (labels unused).
        eval_batches: ``(x, y)`` held-out calibration batches (from the training set, never test).
        adapt_bn: re-estimate BNs after the unit (False: keep the model's statistics).
        bn_batches: how many of ``train_batches`` to use for re-estimation (default all).
        split: ``auto`` (cache the network before the first consumer, see module docstring) or ``full``.
    """

    name = "network"
    objectives = ("loss", "accuracy")
    weights = (-1.0, 1.0)

    def __init__(self, model: nn.Module, consumers: Sequence[ConsumerLike], train_batches: Any, eval_batches: Any,
                 *, n: Optional[int] = None, adapt_bn: bool = True, bn_batches: Optional[int] = None,
                 split: str = "auto", unit: str = "") -> None:
        t0 = time.perf_counter()
        self.model = model
        self.consumers = as_consumers(consumers, n, model)
        self.n = self.consumers[0].n
        self.unit = unit
        self.adapt_bn = bool(adapt_bn)
        ev = check_batches(eval_batches, "held-out calibration", labels=True)
        tr = check_batches(train_batches, "training calibration") if self.adapt_bn else []
        if bn_batches is not None:
            if bn_batches < 1:
                raise EvopruneError(f"bn_batches must be >= 1, got {bn_batches}")
            tr = tr[:bn_batches]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if tr and tuple(tr[0][0].shape[1:]) != tuple(ev[0][0].shape[1:]):
            raise EvopruneError(f"training and held-out calibration batches differ in sample shape "
                                f"({tuple(tr[0][0].shape[1:])} vs {tuple(ev[0][0].shape[1:])})")
        self.split = split_model(model, [c.module for c in self.consumers], ev[0][0].to(device), split)
        self.split_info = self.split.info
        with model_modes(model), torch.no_grad():
            model.eval()
            self._train_cut = [self.split.head(x.to(device)) for x, _ in tr]
            self._eval_cut = [(self.split.head(x.to(device)), y.to(device)) for x, y in ev]
        self.cache: Dict[bytes, Tuple[float, float]] = {}
        self.details: Dict[bytes, torch.Tensor] = {}  # genome -> [held-out batches, (loss sum, correct, count)]
        self.evaluations = 0  # stage-2 evaluations actually run (cache misses)
        self.cache_hits = 0
        self.oom_retries = 0  # times the batches were halved after running out of memory
        self.seconds = 0.0
        self.setup_seconds = time.perf_counter() - t0

    @classmethod
    def from_space(cls, space: Any, unit: Any, calib: Any, model: Optional[nn.Module] = None,
                   **options: Any) -> "NetworkFitness":
        """Stage 2 for ``unit`` of a pruning space; ``calib`` is a :class:`CalibrationData`."""
        u = space.unit(unit) if isinstance(unit, str) else unit
        model = space.model if model is None else model
        if not getattr(calib, "held_out", None):
            raise EvopruneError("stage 2 needs held-out calibration batches (CalibrationData.held_out); "
                                "use a calibration split of at least one batch")
        return cls(model, consumers_of(space, u, model), calib.train, calib.held_out, n=u.channels, unit=u.name,
                   **options)

    def budget(self) -> Dict[str, Any]:
        """Stage-2 spending: evaluations run, cache hits, seconds (and per evaluation), setup seconds."""
        return {"evaluations": self.evaluations, "cache_hits": self.cache_hits, "seconds": self.seconds,
                "seconds_per_evaluation": self.seconds / self.evaluations if self.evaluations else None,
                "setup_seconds": self.setup_seconds, "split": self.split_info,
                "oom_retries": self.oom_retries, "batch_size": self.batch_size,
                "bn_reestimated": len(self.split.bns) if self.adapt_bn else 0}

    def per_batch(self, masks: Any) -> torch.Tensor:
        """``[P, B, 3]``: per held-out batch (summed loss, correct, count) of each mask (evaluated if needed);
        e.g. split-half agreement of stage 2 with itself, a ceiling for any proxy's rank correlation."""
        m = check_masks(masks, self.n, f"unit '{self.unit}'" if self.unit else "unit")
        self.evaluate(m)
        return torch.stack([self.details[genome_key(r)] for r in m])

    @property
    def batch_size(self) -> int:
        """Largest batch stage 2 runs now (BN re-estimation or held-out; halved after an out-of-memory error)."""
        return max([int(y.shape[0]) for _, y in self._eval_cut] + [int(t.shape[0]) for t in self._train_cut],
                   default=0)

    def _measure_or_shrink(self, keep: torch.Tensor, abn: Optional[AdaptiveBN]) -> Tuple[float, float]:
        """:meth:`_measure`; on out-of-memory, halve every cached batch and try again (and say so), down to 1."""
        while True:
            try:
                return self._measure(keep, abn)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_oom(exc):
                    raise
                before = self.batch_size
                if before <= 1:
                    raise EvopruneError(f"stage 2 of unit '{self.unit}' runs out of memory even with batches of one "
                                        "image; use a smaller --batch-size with fewer --eval-batches, or a device "
                                        "with more memory") from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._train_cut, self._eval_cut = _halves(self._train_cut), _halves(self._eval_cut)
                self.oom_retries += 1
                warnings.warn(f"stage 2 of unit '{self.unit}' ran out of memory with batches of {before}; retrying "
                              f"with batches of {self.batch_size} (same images, more forward passes)",
                              RuntimeWarning, stacklevel=2)

    def _measure(self, keep: torch.Tensor, abn: Optional[AdaptiveBN]) -> Tuple[float, float]:
        with mask_consumers(self.consumers, keep):
            if abn is not None:
                abn.reset()
                for cut in self._train_cut:
                    self.split.tail(cut)
                abn.freeze()
            loss, correct, count = 0.0, 0, 0
            rows = []
            for cut, y in self._eval_cut:
                out = self.split.tail(cut)
                if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(y):
                    raise EvopruneError(f"stage 2 needs logits [batch, classes]; the model returned "
                                        f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
                if int(y.max()) >= out.shape[1]:
                    raise EvopruneError(f"model has {out.shape[1]} outputs but the calibration data has label "
                                        f"{int(y.max())}; use a model built for this dataset's classes")
                bl, bc = float(F.cross_entropy(out.float(), y, reduction="sum")), int((out.argmax(1) == y).sum())
                rows.append((bl, bc, len(y)))
                loss, correct, count = loss + bl, correct + bc, count + len(y)
        self.details[genome_key(keep)] = torch.tensor(rows, dtype=torch.float64)
        return loss / count, correct / count

    def evaluate(self, masks: Any) -> torch.Tensor:
        """``[P, 2]``: held-out loss and accuracy of each mask (cached by genome)."""
        m = check_masks(masks, self.n, f"unit '{self.unit}'" if self.unit else "unit")
        out = torch.empty(m.shape[0], 2, dtype=torch.float64)
        keys = [genome_key(row) for row in m]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        self.cache_hits += len(keys) - len(todo)
        if todo:
            t0 = time.perf_counter()
            with model_modes(self.model), torch.no_grad():
                self.model.eval()
                abn = AdaptiveBN(self.split.bns) if self.adapt_bn and self._train_cut else None
                if abn is not None:
                    abn.__enter__()
                try:
                    for i in todo:
                        if keys[i] not in self.cache:  # duplicates within one call run once
                            self.cache[keys[i]] = self._measure_or_shrink(m[i], abn)
                            self.evaluations += 1
                finally:
                    if abn is not None:
                        abn.__exit__(None, None, None)
            self.seconds += time.perf_counter() - t0
        for i, k in enumerate(keys):
            out[i, 0], out[i, 1] = self.cache[k]
        return out
