"""``evoprune demo``: the whole method on the bundled data in a few minutes on 2 CPU cores."""
from __future__ import annotations

import time

import click

from evoprune.commands.common import Ctx, echo, emit_json, handle_errors


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--train", is_flag=True, help="Train the VGG on the bundled subset first instead of using the "
              "bundled trained network.")
@click.option("--epochs", default=30, show_default=True, type=int, help="Training epochs with --train.")
@click.option("--budget", default=72, show_default=True, type=int, help="NSGA-II evaluations for the front.")
@click.option("--target-macs", default=0.33, show_default=True, type=float, help="Fraction of MACs to keep.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@handle_errors
def demo(out, overwrite, train, epochs, budget, target_macs, seed, device) -> None:
    """Prune the bundled trained VGG-16 on the bundled CIFAR-10 subset: an NSGA-II front of accuracy vs MACs next
    to the uniform-L1 sweep, and the paper's pipeline (GA + two-step fitness + KD) vs L1 channels."""
    from evoprune.demo import run_demo

    t0 = time.perf_counter()
    summary = run_demo(out=out, overwrite=overwrite, train=train, epochs=epochs, target_macs=target_macs,
                       budget=budget, seed=seed, device=device, progress=not (Ctx.quiet or Ctx.json), log=echo)
    summary["wall_time_s"] = time.perf_counter() - t0
    echo(f"done in {summary['wall_time_s']:.0f} s; results in {out}")
    emit_json(summary)
