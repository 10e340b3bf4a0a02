"""The ``evoprune`` command line: a click group; each command lives in :mod:`evoprune.commands`."""
from __future__ import annotations

import importlib
import sys

import click

from evoprune import __version__
from evoprune.commands.common import Ctx

# (module, command attribute). A module that fails to import is a bug to report, never a command to hide.
_COMMANDS = [
    ("evoprune.commands.listing", "list_cmd"),
    ("evoprune.commands.train", "train"),
    ("evoprune.commands.evaluate", "evaluate"),
    ("evoprune.commands.demo", "demo"),
    ("evoprune.commands.prune", "sensitivity"),
    ("evoprune.commands.prune", "prune"),
    ("evoprune.commands.finetune", "finetune"),
    ("evoprune.commands.search", "search"),
    ("evoprune.commands.compare", "compare"),
    ("evoprune.commands.plot", "plot"),
    ("evoprune.commands.export", "export"),
    ("evoprune.commands.suite", "suite"),
]


class _Group(click.Group):
    def main(self, *args, **kwargs):
        """Click's usage errors (unknown option, bad value) as one line on stderr and exit code 2, like ours."""
        kwargs["standalone_mode"] = False
        kwargs["prog_name"] = "evoprune"  # also under 'python -m evoprune': usage lines and hints name the command
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path if exc.ctx else 'evoprune'} --help')"
            click.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        if isinstance(rv, int) and rv:  # pragma: no cover
            sys.exit(rv)
        return rv


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="evoprune")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary as the last stdout line.")
def main(debug: bool, quiet: bool, as_json: bool) -> None:
    """Evolutionary channel pruning of convolutional networks.

    Typical flow: train -> sensitivity -> prune (GA + two-step fitness + KD fine-tune) -> evaluate/export.
    Names of models, operators, problems, strategies and evaluators also accept 'module:name' or 'file.py:name'.
    """
    Ctx.debug, Ctx.quiet, Ctx.json = debug, quiet, as_json
    if not debug:  # a warning is one line that says what happened, not a source location
        import warnings

        warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    from evoprune.signals import install_cli_handler

    install_cli_handler()


for _mod, _attr in _COMMANDS:
    main.add_command(getattr(importlib.import_module(_mod), _attr))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
