"""``evoprune demo``: the whole method on the bundled data in a few minutes on 2 CPU cores."""
from __future__ import annotations

import time

import click

from evoprune.commands.common import Ctx, echo, emit_json, handle_errors


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--epochs", default=30, show_default=True, type=int, help="Baseline training epochs.")
@click.option("--target-macs", default=0.33, show_default=True, type=float, help="Fraction of MACs to keep.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@handle_errors
def demo(out, overwrite, epochs, target_macs, seed, device) -> None:
    """Train a small VGG on the bundled mini CIFAR-10, prune it with the GA, fine-tune by KD, print a table."""
    from evoprune.demo import run_demo

    t0 = time.perf_counter()
    summary = run_demo(out=out, overwrite=overwrite, epochs=epochs, target_macs=target_macs, seed=seed,
                       device=device, progress=not (Ctx.quiet or Ctx.json), log=echo)
    summary["wall_time_s"] = time.perf_counter() - t0
    echo(f"done in {summary['wall_time_s']:.0f} s; results in {out}")
    emit_json(summary)
