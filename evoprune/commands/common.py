"""Options and behaviour shared by every command: config files, run directories, errors, --json, --quiet."""
from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import click

from evoprune.errors import EvopruneError
from evoprune.io import to_jsonable

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published as tomli before it joined the standard library
    import tomli as tomllib


class Ctx:
    """Per-invocation settings every command sees (set by the group's global flags)."""

    debug = False
    quiet = False
    json = False


def echo(msg: str = "") -> None:
    """Human-readable progress/output; silent with --quiet or --json."""
    if not (Ctx.quiet or Ctx.json):
        click.echo(msg)


def emit_json(summary: Dict[str, Any]) -> None:
    """With --json, print the machine-readable summary as the last line of stdout."""
    if Ctx.json:
        click.echo(json.dumps(to_jsonable(summary), sort_keys=True))


def load_config_file(path: str) -> Dict[str, Any]:
    """Read a TOML or JSON config into a flat dict of option names (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise EvopruneError(f"config file '{path}' does not exist")
    text = p.read_bytes()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text.decode("utf-8"))
        elif p.suffix.lower() in (".toml", ".tml"):
            data = tomllib.loads(text.decode("utf-8"))
        elif p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore
            except ImportError:
                raise EvopruneError("YAML config needs PyYAML (pip install pyyaml); or use TOML/JSON") from None
            data = yaml.safe_load(text)
        else:
            raise EvopruneError(f"config file '{path}' must end in .toml, .json or .yaml")
    except EvopruneError:
        raise
    except Exception as exc:
        raise EvopruneError(f"config file '{path}' cannot be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EvopruneError(f"config file '{path}' must hold a table/object of option = value")
    flat: Dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):  # allow [section] tables: options of one command grouped
            flat.update({kk.replace("-", "_"): vv for kk, vv in v.items()})
        else:
            flat[k.replace("-", "_")] = v
    return flat


def apply_config(ctx: click.Context, params: Dict[str, Any], config: Optional[str]) -> Dict[str, Any]:
    """Merge a config file under the CLI flags: a flag given on the command line always wins."""
    if not config:
        return params
    values = load_config_file(config)
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
    return value


def non_negative(ctx, param, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}")
    return value


def unit_interval(ctx, param, value):
    if value is not None and not (0.0 < value <= 1.0):
        raise click.BadParameter(f"must be in (0, 1], got {value}")
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


def handle_errors(fn: Callable) -> Callable:
    """Turn :class:`EvopruneError` (and a few well-known OS errors) into one stderr line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EvopruneError as exc:
            if Ctx.debug:
                raise
            # one line, whatever the message holds (library errors sometimes quote multi-line messages)
            text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
            click.echo(f"error: {text}", err=True)
            sys.exit(2)
        except OSError as exc:
            # the environment, not a bug: full disk, quota, read-only filesystem, no permission
            if Ctx.debug or exc.errno not in _USER_OS_ERRORS:
                raise
            where = f" '{exc.filename}'" if exc.filename else ""
            click.echo(f"error: cannot write or read{where}: {exc.strerror or exc}; free space or choose another "
                       "path", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; run again with --resume to continue", err=True)
            sys.exit(130)
        finally:
            from evoprune.io import release_run_locks

            release_run_locks()

    return wrapper


_USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
