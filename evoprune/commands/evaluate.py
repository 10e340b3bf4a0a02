"""``evoprune evaluate``: accuracy, loss, parameters, MACs and CPU latency of a checkpoint."""
from __future__ import annotations

import click

from evoprune.commands.common import apply_config, data_kwargs, data_options, echo, emit_json, handle_errors, positive


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Model file (evoprune checkpoint).")
@click.option("--model", "model_name", default=None, help="Architecture, only for plain state-dict files.")
@click.option("--width", default=1.0, show_default=True, type=float, callback=positive)
@data_options
@click.option("--batch-size", default=256, show_default=True, type=int, callback=positive)
@click.option("--latency/--no-latency", default=True, show_default=True, help="Measure CPU latency (batch 1 and 64).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--config", default=None, type=click.Path(dir_okay=False))
@click.pass_context
@handle_errors
def evaluate(ctx, **params) -> None:
    """Evaluate a checkpoint on the test split."""
    p = apply_config(ctx, params, params.pop("config", None))
    from evoprune.device import resolve_device
    from evoprune.models import count_params
    from evoprune.session import build_setup, count_macs
    from evoprune.train import evaluate as run_eval

    device = resolve_device(p["device"])
    s = build_setup(p["data"], p["data_dir"], p["model_name"], p["width"], p["checkpoint"], device,
                    batch_size=p["batch_size"], **data_kwargs(p))
    s.loaders.test.batch_size = p["batch_size"]
    ev = run_eval(s.model, s.loaders.test, device)
    res = {"checkpoint": p["checkpoint"], "arch": s.meta.get("arch"), "dataset": s.data.name, "test_top1": ev["top1"],
           "test_top5": ev["top5"], "test_loss": ev["loss"], "n": ev["n"], "params": count_params(s.model),
           "macs": count_macs(s.model, s.data.in_channels, s.data.image_size),
           "pruned": bool(s.meta.get("pruned"))}
    if p["latency"]:
        from evoprune.pruning.latency import measure_latency

        for bs in (1, 64):
            res[f"latency_ms_b{bs}"] = measure_latency(s.model.to("cpu"), (bs, s.data.in_channels, s.data.image_size,
                                                                            s.data.image_size))["median_ms"]
    for k, v in res.items():
        echo(f"{k:>16}: {v:.4f}" if isinstance(v, float) else f"{k:>16}: {v}")
    emit_json(res)
