"""How every command talks: --quiet/--json output and one-line errors with exit code 2."""
from __future__ import annotations

import errno
import functools
import json
import sys
from typing import Any, Callable, Dict

import click

from evoprune.errors import EvopruneError
from evoprune.io import to_jsonable


class Ctx:
    """Per-invocation settings every command sees (set by the group's global flags)."""

    debug = False
    quiet = False
    json = False


def echo(msg: str = "") -> None:
    """Human-readable progress/output; silent with --quiet or --json."""
    if not (Ctx.quiet or Ctx.json):
        click.echo(msg)


def one_voice(rank: int) -> None:
    """Under torchrun the ranks above 0 print nothing but errors (pass as ``on_rank``)."""
    if rank != 0:
        Ctx.quiet, Ctx.json = True, False


def emit_json(summary: Dict[str, Any]) -> None:
    """With --json, print the machine-readable summary as the last line of stdout."""
    if Ctx.json:
        click.echo(json.dumps(to_jsonable(summary), sort_keys=True))


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
