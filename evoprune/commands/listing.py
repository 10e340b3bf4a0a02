"""``evoprune list KIND``: what the registries hold, plugins included."""
from __future__ import annotations

import click

from evoprune.commands.common import emit_json, handle_errors
from evoprune.registry import ALL


def _import_all() -> None:
    import importlib

    for mod in ("evoprune.models", "evoprune.data", "evoprune.operators", "evoprune.problems", "evoprune.strategies",
                "evoprune.fitness", "evoprune.pruning", "evoprune.problems.benchmarks", "evoprune.checkpoint_problems"):
        importlib.import_module(mod)


@click.command("list")
@click.argument("kind", type=click.Choice(sorted(ALL)))
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import a module (or file.py) first, so what it registers is listed too.")
@handle_errors
def list_cmd(kind: str, plugins) -> None:
    """List registered models, datasets, operators, problems, strategies, evaluators or selectors."""
    import importlib
    import runpy

    _import_all()
    from evoprune.errors import EvopruneError

    for p in plugins:
        try:
            if p.endswith(".py"):
                runpy.run_path(p)
            else:
                importlib.import_module(p)
        except (ImportError, OSError) as exc:
            raise EvopruneError(f"--plugin '{p}' cannot be imported ({exc}); give an importable module or .py file") from None
        except Exception as exc:
            raise EvopruneError(f"--plugin '{p}' failed while importing: {type(exc).__name__}: {exc}") from None
    reg = ALL[kind]
    rows = reg.describe()
    width = max((len(k) for k, _ in rows), default=0)
    for name, doc in rows:
        click.echo(f"{name:<{width}}  {doc}")
    emit_json({kind: [k for k, _ in rows]})
