"""What ``evoprune train`` and ``evoprune finetune`` do after parsing: one run-directory training loop for both.

Both set up the data and model, prepare the run directory (``--resume`` refuses other settings), train with
:func:`evoprune.train.fit` (resumable: ``train_state.pt``), evaluate, save ``model.pt`` with its metadata and write
``summary.json`` and ``report.md``. Under ``torchrun`` every rank calls these; rank 0 alone writes and speaks.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

from .errors import EvopruneError

Log = Callable[[str], None]
Progress = Union[bool, Callable[[], bool]]


def _run_dir(p: Mapping[str, Any], default_out: str, device: Any, world: int) -> Path:
    from .io import environment_info, prepare_run_dir, read_json, write_json

    out = prepare_run_dir(p["out"] or default_out, p["overwrite"], p["resume"])
    if p["resume"] and (out / "config.json").exists():
        old = read_json(out / "config.json", "run config")
        diff = [k for k in old if k not in ("resume", "overwrite", "out") and old.get(k) != p.get(k)]
        if diff:
            raise EvopruneError(f"cannot --resume '{out}': it was made with different settings ({', '.join(diff)})")
    write_json(out / "config.json", dict(p))
    write_json(out / "env.json", dict(environment_info(str(device), p["seed"]), world_size=world))
    return out


def _fit_run(p: Mapping[str, Any], cfg: Any, kind: str, *, width: float, model_name: Optional[str],
             make_loss: Optional[Callable[[Any, Any], Any]], evaluate_each_epoch: bool, log: Log,
             progress: Progress, on_rank: Optional[Callable[[int], None]], default_out: str,
             meta: Mapping[str, Any], extra: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The shared loop; ``meta`` goes into the checkpoint's metadata, ``extra`` into the summary."""
    from .device import resolve_device, seed_everything
    from .io import write_json
    from .models import count_params
    from .models.checkpoint import save_checkpoint
    from .report import draw_run_figures, write_report
    from .session import build_setup, count_macs, data_kwargs
    from .train import distributed, evaluate, fit, on_rank0

    cfg.validate()
    with distributed(resolve_device(p["device"])) as (device, rank, world):
        if on_rank is not None:
            on_rank(rank)
        show = progress() if callable(progress) else progress
        seed_everything(p["seed"])  # same seed on every rank: same initial weights (DDP also broadcasts rank 0's)
        s = build_setup(p["data"], p["data_dir"], model_name, width, p["checkpoint"], device,
                        batch_size=p["batch_size"], seed=p["seed"], calib_size=p["calib_size"],
                        channels_last=p.get("channels_last", False), **data_kwargs(p))
        loss_fn = make_loss(s, device) if make_loss else None
        out = on_rank0(lambda: _run_dir(p, default_out, device, world))
        procs = f" on {world} processes (DDP, {'nccl' if device.type == 'cuda' else 'gloo'})" if world > 1 else ""
        what = (f"training {model_name} (width {width})" if kind == "train"
                else f"fine-tuning {s.meta.get('arch', 'the checkpoint')} ({extra.get('loss')})")
        log(f"{what} on {s.data.name}: {s.loaders.train.n_images} train / "
            f"{s.loaders.calib.n_images} calib / {s.loaders.test.n_images} test images, {cfg.epochs} epochs{procs}"
            f" -> {out}")
        before = evaluate(s.model, s.loaders.test, device) if rank == 0 and kind == "finetune" else None
        t0 = time.perf_counter()

        def on_epoch(e: int, rec: Mapping[str, Any]) -> None:
            test = f"  test {rec['test_top1']:.3f}" if "test_top1" in rec else ""
            log(f"epoch {e:3d}  loss {rec['train_loss']:.3f}  train {rec['train_acc']:.3f}{test}  "
                f"({rec['time_s']:.0f}s)")

        hist = fit(s.model, s.loaders, cfg, device, loss_fn=loss_fn, state_path=str(out / "train_state.pt"),
                   log_path=str(out / "metrics.jsonl"), progress=show, evaluate_each_epoch=evaluate_each_epoch,
                   on_epoch=on_epoch)
        if rank != 0:
            return None
        test = evaluate(s.model, s.loaders.test, device)
        import torch

        s.model.to("cpu").to(memory_format=torch.contiguous_format)
        summary: Dict[str, Any] = {"out": str(out), "checkpoint": str(out / "model.pt"), "kind": kind}
        if before is not None:  # the finetune summary's names: before and after
            summary["test_top1_before"] = before["top1"]
            summary["test_top1_after"] = test["top1"]
        summary.update({"test_top1": test["top1"], "test_top5": test["top5"], "test_loss": test["loss"],
                        "params": count_params(s.model),
                        "macs": count_macs(s.model, s.data.in_channels, s.data.image_size),
                        "epochs": cfg.epochs, "world_size": world, "wall_time_s": time.perf_counter() - t0,
                        **extra})
        save_checkpoint(str(out / "model.pt"), s.model, dict(s.meta, accuracy=test["top1"], top5=test["top5"],
                                                             **meta))
        write_json(out / "summary.json", dict(summary, history=hist))
        draw_run_figures(out)
        write_report(out)  # last: it links the figure
        was = f"{summary['test_top1_before']:.4f} -> " if before is not None else ""
        log(f"test top-1 {was}{test['top1']:.4f}  top-5 {test['top5']:.4f}  params {summary['params']:,}  "
            f"MACs {summary['macs']:,}  -> {out / 'model.pt'}")
        return summary


def train_from_options(p: Mapping[str, Any], *, log: Log = print, progress: Progress = True,
                       on_rank: Optional[Callable[[int], None]] = None, default_out: str = "runs/train"
                       ) -> Optional[Dict[str, Any]]:
    """Everything ``evoprune train`` does after parsing; the JSON summary (None on ranks > 0)."""
    from .train import TrainConfig

    cfg = TrainConfig(epochs=p["epochs"], lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                      schedule=p["schedule"], label_smoothing=p["label_smoothing"])
    return _fit_run(p, cfg, "train", width=p["width"], model_name=p["model_name"], make_loss=None,
                    evaluate_each_epoch=True, log=log, progress=progress, on_rank=on_rank, default_out=default_out,
                    meta={"epochs": cfg.epochs, "seed": p["seed"]}, extra={})


def finetune_loss(p: Mapping[str, Any]) -> str:
    """``kd`` with a teacher, else ``ce``; ``--loss kd`` without a teacher is an error."""
    loss = p["loss"] or ("kd" if p["teacher"] else "ce")
    if loss == "kd" and not p["teacher"]:
        raise EvopruneError("--loss kd needs --teacher FILE (the unpruned model the student was pruned from)")
    if p.get("at_weight") and loss != "kd":
        raise EvopruneError("--at-weight is a term of the KD loss; use it with --teacher FILE (and --loss kd)")
    return loss


def finetune_from_options(p: Mapping[str, Any], *, log: Log = print, progress: Progress = True,
                          on_rank: Optional[Callable[[int], None]] = None, default_out: str = "runs/finetune"
                          ) -> Optional[Dict[str, Any]]:
    """Everything ``evoprune finetune`` does after parsing: KD from ``teacher`` or cross-entropy, cosine LR."""
    from .train import TrainConfig

    loss = finetune_loss(p)
    cfg = TrainConfig(epochs=p["epochs"], lr=p["lr"], schedule="cosine")

    def make_loss(s: Any, device: Any) -> Any:
        from .distill import ce_loss, kd_loss

        if loss != "kd":
            return ce_loss()
        from .models.checkpoint import load_model
        from .session import check_model_fits_data

        teacher, _ = load_model(p["teacher"])
        teacher.to(device)
        check_model_fits_data(teacher, s.data, f"teacher '{p['teacher']}'")
        return kd_loss(teacher, p["temperature"], p["alpha"], p.get("at_weight") or 0.0)

    return _fit_run(p, cfg, "finetune", width=1.0, model_name=p.get("model_name"), make_loss=make_loss,
                    evaluate_each_epoch=False, log=log, progress=progress, on_rank=on_rank, default_out=default_out,
                    meta={"finetune_loss": loss}, extra={"loss": loss, "at_weight": p.get("at_weight") or 0.0})
