"""The one training loop (baseline training, per-unit fine-tune steps, final KD fine-tune) and evaluation.

Resumable: with ``state_path`` the loop saves model, optimizer, scheduler, epoch, batch and RNG states at every
epoch end (and on SIGINT/SIGTERM), atomically; a rerun with the same arguments continues from there and produces
the same weights as an uninterrupted run (data order and augmentation are functions of seed and epoch).
Under ``torchrun`` the model is wrapped in DistributedDataParallel, each rank trains on its shard of the data
(:func:`shard_loader`) and only rank 0 logs, evaluates and writes; commands set up the process group with
:func:`distributed` and run their own writes through :func:`on_rank0` / :func:`is_main_process`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import signals
from .data import BatchLoader, Loaders
from .device import rng_states, set_rng_states
from .distill import LossFn, ce_loss
from .errors import EvopruneError
from .io import append_jsonl, load_torch, save_torch


@dataclass
class TrainConfig:
    """Optimiser and schedule. SGD + momentum with a per-step cosine (or step, or constant) schedule."""

    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    max_steps: Optional[int] = None  # cap on optimizer steps (fine-tune steps); epochs still bound the data
    warmup_steps: int = 0

    def validate(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise EvopruneError(f"--epochs must be a positive integer, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EvopruneError(f"--lr must be a positive finite number, got {self.lr}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise EvopruneError(f"--schedule must be cosine, step or constant, got '{self.schedule}'")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise EvopruneError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_steps is not None and self.max_steps < 1:
            raise EvopruneError(f"max steps must be >= 1, got {self.max_steps}")


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = min(step, total) / max(1, total)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if cfg.schedule == "step":  # /10 at 50 % and 75 % of training, the classic CIFAR schedule
            return 0.1 ** (int(t >= 0.5) + int(t >= 0.75))
        return 1.0

    return f


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def is_main_process() -> bool:
    d = _dist()
    return d is None or d.get_rank() == 0


# ------------------------------------------------------------------------------------------- torchrun / DDP helpers
def torchrun_env() -> Optional[Tuple[int, int, int]]:
    """``(rank, world_size, local_rank)`` when launched by ``torchrun`` with more than one process, else ``None``."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise EvopruneError("WORLD_SIZE/RANK/LOCAL_RANK must be integers (they are set by torchrun)") from None
    return (rank, world, local) if world > 1 else None


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[Tuple[torch.device, int, int]]:
    """Yield ``(device, rank, world_size)``; under ``torchrun`` set up the process group for the block.

    Without torchrun (or with one process) this does nothing and yields ``(device, 0, 1)``: the single-process path
    is unchanged. Under torchrun: NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), Gloo on CPU; the group is
    destroyed when the block ends. :func:`fit` then wraps the model in DistributedDataParallel by itself.
    """
    env = torchrun_env()
    d = _dist()
    if env is None or d is not None:  # nothing to do, or a caller already owns the process group
        yield device, (d.get_rank() if d else 0), (d.get_world_size() if d else 1)
        return
    import torch.distributed as tdist

    rank, world, local = env
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise EvopruneError(f"torchrun started local rank {local} but this node has {torch.cuda.device_count()} "
                                "GPU(s); use --nproc_per_node <= the GPU count, or --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    finished = False
    try:
        yield device, rank, world
        finished = True
    finally:
        if finished:
            _leave_together(tdist, device)
        tdist.destroy_process_group()


def _leave_together(tdist: Any, device: torch.device) -> None:
    """Wait for every rank before tearing the group down: rank 0 alone evaluates and writes at the end, and a Gloo
    rank that destroys its group while a peer is still connected can abort (SIGABRT) on a loaded machine."""
    import datetime

    try:
        if device.type == "cuda":
            tdist.barrier()
        else:  # a bounded wait: a peer that died must not hang this rank
            tdist.monitored_barrier(timeout=datetime.timedelta(minutes=30))
    except RuntimeError:
        pass  # a peer failed; its own error is what the user sees


def on_rank0(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (run-directory setup, writes) on rank 0 only and give its result to every rank.

    A failure on rank 0 is raised on every rank (an :class:`EvopruneError` with the same message), so no rank is
    left waiting for a collective that never comes. Without a process group: just ``fn()``.
    """
    d = _dist()
    if d is None:
        return fn()
    box: List[Any] = [None]
    err: Optional[BaseException] = None
    if d.get_rank() == 0:
        try:
            box = [("ok", fn())]
        except Exception as exc:  # noqa: BLE001 - tell the other ranks, then raise it here
            err = exc
            box = [("error", str(exc) if isinstance(exc, EvopruneError) else f"rank 0 failed: {type(exc).__name__}: {exc}")]
    d.broadcast_object_list(box, src=0)
    if err is not None:
        raise err
    kind, value = box[0]
    if kind == "error":
        raise EvopruneError(value)
    return value


def shard_loader(loader: BatchLoader, rank: int, world: int) -> BatchLoader:
    """This rank's share of a training loader: ``1/world`` of every epoch's shuffled order, ``batch_size // world``
    images a step, so ``--batch-size`` stays the global batch and the recipe (steps, LR) matches one process."""
    if world <= 1:
        return loader
    per_rank = loader.batch_size // world
    if per_rank < 1:
        raise EvopruneError(f"--batch-size {loader.batch_size} is smaller than the {world} processes; "
                            f"use a batch size of at least {world} (it is the global batch, split across processes)")
    return loader.with_options(batch_size=per_rank, shard=(rank, world))


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device | str = "cpu", max_batches: Optional[int] = None) -> Dict[str, float]:
    """Top-1/top-5 accuracy (fractions) and mean cross-entropy over ``loader`` (any iterable of (x, y))."""
    was_training = model.training
    model.eval()
    n = correct1 = correct5 = 0
    loss = 0.0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        try:
            out = model(x)
        except RuntimeError as exc:
            raise EvopruneError(f"model cannot run on inputs of shape {tuple(x.shape)}: {str(exc).splitlines()[0]}") from None
        if out.ndim != 2 or out.shape[0] != len(y):
            raise EvopruneError(f"model output has shape {tuple(out.shape)}, expected [batch, classes]")
        if int(y.max()) >= out.shape[1]:
            raise EvopruneError(f"model has {out.shape[1]} outputs but the data has label {int(y.max())}; "
                                "use a model built for this dataset's classes")
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        k = min(5, out.shape[1])
        top = out.topk(k, 1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(1).sum())
        n += len(y)
    model.train(was_training)
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "n": 0}
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss / n, "n": n}


def _guarded(loader, on_failure: Callable[[], None]):
    """Iterate ``loader``; when a batch cannot be made (a streaming worker died, an unreadable image), save the
    progress so far with ``on_failure`` before the error stops the run: ``--resume`` continues at that batch."""
    from .streaming import DataLoaderError

    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DataLoaderError:
            on_failure()
            raise
        yield batch


def fit(model: nn.Module, loaders: Loaders, cfg: TrainConfig, device: torch.device | str = "cpu",
        loss_fn: Optional[LossFn] = None, state_path: Optional[str] = None, log_path: Optional[str] = None,
        progress: bool = True, desc: str = "train", evaluate_each_epoch: bool = True,
        on_epoch: Optional[Callable[[int, Dict[str, float]], None]] = None) -> List[Dict[str, float]]:
    """Train ``model`` in place; return per-epoch metrics. Resumes from ``state_path`` when it exists."""
    cfg.validate()
    device = torch.device(device)
    model.to(device)
    loss_fn = loss_fn or ce_loss(cfg.label_smoothing)
    dist = _dist()
    net: nn.Module = model
    if dist is not None:
        if loaders.train.world == 1:  # each rank trains on its own share of every epoch (global batch kept)
            loaders = dataclasses.replace(loaders, train=shard_loader(loaders.train, dist.get_rank(),
                                                                      dist.get_world_size()))
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN affine and biases
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    steps_per_epoch = len(loaders.train)
    if steps_per_epoch == 0:
        raise EvopruneError("the training split is empty; use a larger dataset or a smaller --calib-size")
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    epoch, batch, step = 0, 0, 0
    history: List[Dict[str, float]] = []
    partial = None  # (seen, correct, loss sum) of an epoch interrupted by SIGINT/SIGTERM, to log it as a whole
    if state_path is not None:
        import os

        if os.path.exists(state_path):
            st = load_torch(state_path, "training state")
            if st.get("config") != asdict(cfg):
                raise EvopruneError(f"training state '{state_path}' was made with other settings; use --overwrite to start over")
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            epoch, batch, step, history = st["epoch"], st["batch"], st["step"], list(st["history"])
            partial = st.get("partial") if batch else None
            set_rng_states(st["rng"])
        if log_path is not None and is_main_process() and (history or os.path.exists(log_path)):
            # the log holds exactly the epochs the state holds: a line appended just before a kill -9, whose
            # epoch's state was never saved, would otherwise appear twice after the resume
            from .io import atomic_write_text, to_jsonable

            atomic_write_text(log_path, "".join(json.dumps(to_jsonable(r)) + "\n" for r in history))

    def save_state(partial_epoch=None) -> None:
        if state_path is not None and is_main_process():
            save_torch(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "scheduler": sched.state_dict(), "epoch": epoch, "batch": batch, "step": step,
                                    "history": history, "rng": rng_states(), "config": asdict(cfg),
                                    "partial": partial_epoch})

    show = progress and is_main_process()
    with signals.stop_on_signals():  # SIGINT/SIGTERM: save a checkpoint at the next step, then stop
        while epoch < cfg.epochs and step < total:
            loaders.train.set_epoch(epoch, batch)
            net.train()
            t0 = time.perf_counter()
            seen = correct = 0
            run_loss = 0.0
            if partial is not None:  # the interrupted epoch's first part
                seen, correct, run_loss = int(partial[0]), int(partial[1]), float(partial[2])
                partial = None
            bar = None
            if show:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps_per_epoch, initial=batch, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
                           dynamic_ncols=True, disable=None)  # None: off when stderr is not a TTY
            batches = _guarded(loaders.train, lambda: save_state((seen, correct, run_loss)))
            for x, y in batches:
                loss, logits = loss_fn(net, x, y)
                if not torch.isfinite(loss):
                    raise EvopruneError(f"training diverged (loss {float(loss)}) at step {step}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                batch += 1
                seen += len(y)
                run_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{run_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
                if signals.requested():
                    save_state((seen, correct, run_loss))
                    if bar is not None:
                        bar.close()
                    raise KeyboardInterrupt
                if step >= total:
                    break
            if bar is not None:
                bar.close()
            if dist is not None:  # log the epoch over all shards, not rank 0's share
                tot = torch.tensor([run_loss, float(correct), float(seen)], dtype=torch.float64, device=device)
                dist.all_reduce(tot)
                run_loss, correct, seen = float(tot[0]), int(tot[1]), int(tot[2])
            rec: Dict[str, float] = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
                                     "train_loss": run_loss / max(1, seen), "train_acc": correct / max(1, seen),
                                     "time_s": time.perf_counter() - t0}
            if (evaluate_each_epoch or epoch + 1 == cfg.epochs or step >= total) and is_main_process():
                ev = evaluate(model, loaders.test, device)  # rank 0 only: the others would repeat the same work
                rec.update({"test_top1": ev["top1"], "test_top5": ev["top5"], "test_loss": ev["loss"]})
            history.append(rec)
            epoch += 1
            batch = 0
            if log_path is not None and is_main_process():
                append_jsonl(log_path, rec)
            if on_epoch is not None and is_main_process():
                on_epoch(epoch, rec)
            save_state()
    return history
