"""Options shared by the commands: config files under the flags, data, workers, run directories, checks."""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Optional

import click

from evoprune.commands.output import Ctx, echo, emit_json, handle_errors, one_voice  # noqa: F401  (every command uses them)
from evoprune.errors import EvopruneError


def apply_config(ctx: click.Context, params: Dict[str, Any], config: Optional[str]) -> Dict[str, Any]:
    """Merge a config file under the CLI flags: a flag given on the command line always wins."""
    if not config:
        return params
    from evoprune.io import read_options_file

    values = read_options_file(config)
    known = {p.name: p for p in ctx.command.params}
    out = dict(params)
    for key, value in values.items():
        if key not in known or key == "config":
            raise EvopruneError(
                f"config file '{config}': unknown key '{key}' for '{ctx.command.name}'; "
                f"allowed: {', '.join(sorted(k for k in known if k != 'config'))}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise EvopruneError(f"config file '{config}': key '{key}' is {value}, expected a finite number")
        src = ctx.get_parameter_source(key)
        if src is not None and src.name == "COMMANDLINE":
            continue
        param = known[key]
        try:
            out[key] = param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise EvopruneError(f"config file '{config}': key '{key}': {exc.message}") from None
        for cb in [param.callback] if param.callback else []:
            try:
                out[key] = cb(ctx, param, out[key])
            except click.BadParameter as exc:
                raise EvopruneError(f"config file '{config}': key '{key}': {exc.message}") from None
    return out


def positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return finite(ctx, param, value)  # nan and inf pass the comparison


def non_negative(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}")
    return finite(ctx, param, value)


def zero_one(ctx, param, value):
    if value is not None and not (0.0 <= value <= 1.0):
        raise click.BadParameter(f"must be in [0, 1], got {value}")
    return value


# one text for the KD options that prune and finetune share
TEMPERATURE_HELP = "KD softmax temperature T (the soft term is scaled by T^2, Hinton et al.)."
ALPHA_HELP = "Weight of the KD term: alpha * KD + (1 - alpha) * cross-entropy on the labels."
CALIB_SIZE_HELP = "Training images held out for calibration (default: as at training time)."


def unit_interval(ctx, param, value):
    if value is not None and not (0.0 < value <= 1.0):
        raise click.BadParameter(f"must be a fraction in (0, 1], got {value}")
    return value


def finite(ctx, param, value):
    if value is not None and isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


def data_options(f: Callable) -> Callable:
    """--data, --data-dir and how the images are read (--image-size, --data-mode, --data-memory, --data-workers),
    plus --num-classes; :func:`data_kwargs` turns them into ``build_setup`` arguments."""
    from evoprune.data import DATA_MODES, DEFAULT_DATA_MEMORY_TEXT, DataOptions

    d = DataOptions()
    f = click.option("--num-classes", default=None, type=int, callback=positive,
                     help="Replace the model's classifier by a fresh one with this many outputs (e.g. a "
                          "1000-class torchvision state dict on a 10-class folder).")(f)
    f = click.option("--data-workers", default=d.workers, show_default=True, type=int, callback=non_negative,
                     help="Worker processes decoding images in stream mode (0: in this process).")(f)
    f = click.option("--data-memory", default=DEFAULT_DATA_MEMORY_TEXT, show_default=True,
                     help="With --data-mode auto, image folders whose decoded images exceed this are streamed.")(f)
    f = click.option("--data-mode", default=d.mode, show_default=True,
                     type=click.Choice(list(DATA_MODES)),
                     help="memory: decode everything once into RAM (fast, small sets); stream: read from disk "
                          "batch by batch (any size, ImageNet-style transforms above 64 px).")(f)
    f = click.option("--image-size", default=None, type=int, callback=_image_size,
                     help="Resize (shorter side) and centre-crop every image to this many pixels (>= 8).")(f)
    f = click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                     help="Folder holding the dataset files (torchvision on-disk layout).")(f)
    f = click.option("--data", "data", default="mini-cifar10", show_default=True,
                     help="Dataset: cifar10, cifar100, svhn, mini-cifar10 (bundled) or imagefolder:PATH "
                          "(a folder or .tar.gz with train/ and test/ or val/).")(f)
    return f


def _image_size(ctx, param, value):
    from evoprune.data import check_image_size

    try:
        check_image_size(value)
    except EvopruneError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def data_kwargs(p: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`evoprune.session.data_kwargs` (imported late: ``--help`` must not import torch)."""
    from evoprune.session import data_kwargs as kwargs

    return kwargs(p)


def worker_options(f: Callable) -> Callable:
    """--workers/--scheduler: where network-level evaluations run (see :mod:`evoprune.parallel`)."""
    f = click.option("--scheduler", default=None,
                     help="Dask scheduler address tcp://host:port or scheduler .json file (with --workers dask).")(f)
    f = click.option("--workers", default="serial", show_default=True,
                     help="Where populations are evaluated: serial, processes:N, dask:N (local cluster) or dask "
                          "(with --scheduler).")(f)
    return f


def run_options(f: Callable) -> Callable:
    """--out/--overwrite/--resume/--seed/--device/--config shared by commands that write a run directory."""
    f = click.option("--config", default=None, type=click.Path(dir_okay=False),
                     help="TOML/JSON file of option values; flags on the command line override it.")(f)
    f = click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                     help="Where to run; auto picks CUDA when present.")(f)
    f = click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")(f)
    f = click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")(f)
    f = click.option("--overwrite", is_flag=True, help="Replace an existing --out.")(f)
    f = click.option("--out", default=None, type=click.Path(), help="Run directory (default runs/<command>-<time>).")(f)
    return f


def default_out(command: str) -> str:
    import datetime as dt

    return os.path.join("runs", f"{command}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")


