"""Glue shared by commands and the Python API: data + model + checkpoint resolved into one consistent setup."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from .data import DataOptions, Loaders, load_dataset, make_loaders
from .errors import EvopruneError
from .models import create_model, replace_classifier, size_kwargs
from .models.checkpoint import load_model


@dataclass
class Setup:
    data: Any  # ImageData (in memory) or FolderData (streamed)
    loaders: Loaders
    model: nn.Module
    meta: Dict[str, Any]
    device: torch.device


def check_model_fits_data(model: nn.Module, data: Any, source: str) -> None:
    """Run one tiny batch to catch wrong input channels / class counts / sizes with a one-line error."""
    x = torch.zeros(2, data.in_channels, data.image_size, data.image_size)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(next(model.parameters()).device))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        hint = ""
        if "too small" in first:
            hint = (f"; the images are {data.image_size} px: give --image-size N to resize them to what the model "
                    "takes, or train a zoo model at this size (zoo VGGs drop the poolings a small image cannot take)")
        raise EvopruneError(
            f"{source} cannot run on {data.name} images ({data.in_channels}x{data.image_size}x{data.image_size}): "
            f"{first}{hint}"
        ) from None
    finally:
        model.train(was)
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise EvopruneError(
            f"{source} has {out.shape[-1]} outputs but {data.name} has {data.num_classes} classes; "
            f"use a checkpoint trained on this dataset, or --num-classes {data.num_classes} to replace its classifier"
        )


def build_setup(data_name: str, data_dir: Optional[str], model_name: Optional[str], width: float,
                checkpoint: Optional[str], device: torch.device, batch_size: int = 128, seed: int = 0,
                calib_size: Optional[int] = None, channels_last: bool = False,
                data_opts: Optional[DataOptions] = None, num_classes: Optional[int] = None) -> Setup:
    """Load the dataset, then either a checkpoint (its metadata gives the architecture) or a fresh zoo model.

    ``num_classes`` replaces the classifier by a fresh one with that many outputs (a pretrained torchvision
    state dict with 1000 classes, fine-tuned on a 10-class folder).
    """
    opts = data_opts or DataOptions()
    data = load_dataset(data_name, data_dir, image_size=opts.image_size, mode=opts.mode, memory_budget=opts.memory)
    if checkpoint:
        kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "width": width}
        if model_name:
            kwargs.update(size_kwargs(model_name, data.image_size))
        model, meta = load_model(checkpoint, arch=model_name, model_kwargs=kwargs)
        source = f"checkpoint '{checkpoint}'"
    else:
        if not model_name:
            raise EvopruneError("give --model NAME or --checkpoint FILE")
        kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "width": width,
                  **size_kwargs(model_name, data.image_size)}
        model = create_model(model_name, **kwargs)
        meta = {"arch": model_name, "model_kwargs": kwargs}
        source = f"model '{model_name}'"
    if num_classes is not None and int(meta.get("model_kwargs", {}).get("num_classes", -1)) != int(num_classes):
        if meta.get("pruned"):
            raise EvopruneError("--num-classes cannot change the classifier of a pruned checkpoint; use it before pruning")
        replace_classifier(model, int(num_classes))
        meta["model_kwargs"] = dict(meta.get("model_kwargs") or {}, num_classes=int(num_classes))
    meta.update({k: v for k, v in data.meta().items() if k not in meta or k in ("dataset",)})
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    check_model_fits_data(model, data, source)
    loaders = make_loaders(data, batch_size=batch_size, seed=seed, calib_size=calib_size, device=device,
                           channels_last=channels_last, workers=opts.workers)
    return Setup(data, loaders, model, meta, device)


def count_macs(model: nn.Module, in_channels: int, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (FlopCounterMode FLOPs / 2)."""
    from .pruning.cost import flop_counter_macs

    return int(flop_counter_macs(model, (1, int(in_channels), int(image_size), int(image_size))))


def data_kwargs(p: Dict[str, Any]) -> Dict[str, Any]:
    """The ``build_setup`` keywords of parsed data options (``image_size``, ``data_mode``, ``data_memory``,
    ``data_workers``, ``num_classes``; absent ones take their defaults)."""
    from .data import DEFAULT_DATA_MEMORY_TEXT, DataOptions, parse_memory

    return {"data_opts": DataOptions(image_size=p.get("image_size"), mode=p.get("data_mode", "auto"),
                                     memory=parse_memory(p.get("data_memory", DEFAULT_DATA_MEMORY_TEXT)),
                                     workers=p.get("data_workers", 2)),
            "num_classes": p.get("num_classes")}
