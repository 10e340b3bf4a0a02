"""Glue shared by commands and the Python API: data + model + checkpoint resolved into one consistent setup."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from .data import ImageData, Loaders, load_dataset, make_loaders
from .errors import EvopruneError
from .models import create_model
from .models.checkpoint import load_model


@dataclass
class Setup:
    data: ImageData
    loaders: Loaders
    model: nn.Module
    meta: Dict[str, Any]
    device: torch.device


def check_model_fits_data(model: nn.Module, data: ImageData, source: str) -> None:
    """Run one tiny batch to catch wrong input channels / class counts with a one-line error."""
    x = torch.zeros(2, data.in_channels, data.image_size, data.image_size)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(next(model.parameters()).device))
    except RuntimeError as exc:
        raise EvopruneError(
            f"{source} cannot run on {data.name} images ({data.in_channels}x{data.image_size}x{data.image_size}): "
            f"{str(exc).splitlines()[0][:160]}"
        ) from None
    finally:
        model.train(was)
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise EvopruneError(
            f"{source} has {out.shape[-1]} outputs but {data.name} has {data.num_classes} classes; "
            "use a checkpoint trained on this dataset"
        )


def build_setup(data_name: str, data_dir: Optional[str], model_name: Optional[str], width: float,
                checkpoint: Optional[str], device: torch.device, batch_size: int = 128, seed: int = 0,
                calib_size: Optional[int] = None, channels_last: bool = False) -> Setup:
    """Load the dataset, then either a checkpoint (its metadata gives the architecture) or a fresh zoo model."""
    data = load_dataset(data_name, data_dir)
    if checkpoint:
        model, meta = load_model(checkpoint, arch=model_name,
                                 model_kwargs={"num_classes": data.num_classes, "in_channels": data.in_channels,
                                               "width": width})
        source = f"checkpoint '{checkpoint}'"
    else:
        if not model_name:
            raise EvopruneError("give --model NAME or --checkpoint FILE")
        kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "width": width}
        model = create_model(model_name, **kwargs)
        meta = {"arch": model_name, "model_kwargs": kwargs}
        source = f"model '{model_name}'"
    meta.update({k: v for k, v in data.meta().items() if k not in meta or k in ("dataset",)})
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    check_model_fits_data(model, data, source)
    loaders = make_loaders(data, batch_size=batch_size, seed=seed, calib_size=calib_size, device=device,
                           channels_last=channels_last)
    return Setup(data, loaders, model, meta, device)


def count_macs(model: nn.Module, in_channels: int, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (FlopCounterMode FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, in_channels, image_size, image_size, device=dev))
    model.train(was)
    return int(fc.get_total_flops() // 2)
