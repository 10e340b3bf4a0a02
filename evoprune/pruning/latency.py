"""Measured inference latency: median of repeated timed forwards after a warm-up, fixed thread count, eval mode,
no autograd. MACs say little about speed on a CPU (memory traffic, kernel choice), so ``evaluate`` reports both."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Dict, Iterator, Optional, Sequence

import torch
from torch import nn

from evoprune.errors import EvopruneError


@contextlib.contextmanager
def _threads(n: Optional[int]) -> Iterator[int]:
    old = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise EvopruneError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def measure_latency(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32), batch_size: int = 1, *,
                    repeats: int = 30, warmup: int = 5, threads: Optional[int] = None, device: Any = "cpu",
                    min_seconds: float = 0.0) -> Dict[str, Any]:
    """Time ``model`` on a random batch of ``batch_size`` inputs of shape ``input_shape`` (C, H, W).

    Runs ``warmup`` untimed forwards, then at least ``repeats`` timed ones (more until ``min_seconds`` of timing
    have passed). ``threads`` fixes ``torch.set_num_threads`` during the measurement (restored afterwards; default:
    the current setting). Returns milliseconds per batch: ``median_ms`` (the figure to report), ``mean_ms``,
    ``min_ms``, ``p90_ms``, ``std_ms``, plus ``per_image_ms``, ``batch_size``, ``threads``, ``repeats``, ``device``.
    The model's train/eval mode and device are restored.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise EvopruneError(f"latency needs batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, "
                            f"{repeats}, {warmup}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:  # a full shape was given: drop its batch dim
        shape = shape[1:]
    dev = torch.device(device)
    p = next(iter(model.parameters()), None)
    old_dev = p.device if p is not None else dev
    was_training = model.training
    x = torch.randn((batch_size,) + shape, generator=torch.Generator().manual_seed(0)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    try:
        model.to(dev).eval()
        with _threads(threads) as nthreads, torch.inference_mode():
            for _ in range(warmup):
                model(x)
            sync()
            start = time.perf_counter()
            while len(times) < repeats or (time.perf_counter() - start) < min_seconds:
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.to(old_dev).train(was_training)
    times.sort()
    med = statistics.median(times)
    return {
        "median_ms": med,
        "mean_ms": statistics.fmean(times),
        "min_ms": times[0],
        "p90_ms": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))],
        "std_ms": statistics.pstdev(times),
        "per_image_ms": med / batch_size,
        "batch_size": batch_size,
        "input_shape": list(shape),
        "threads": nthreads,
        "repeats": len(times),
        "warmup": warmup,
        "device": str(dev),
    }
