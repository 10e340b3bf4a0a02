"""``evoprune export``: a (pruned) checkpoint to ONNX or TorchScript, checked against PyTorch's own outputs."""
from __future__ import annotations

from typing import Optional

import click

from evoprune.commands.common import echo, emit_json, handle_errors, positive


@click.command("export")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="Model checkpoint written by evoprune (train/prune/finetune), pruned or not.")
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx", "torchscript"]),
              help="onnx (torch.onnx.export, checked with onnxruntime when installed) or torchscript (trace).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--input-size", default=None, type=int, callback=positive,
              help="Input image height/width [default: the checkpoint's image size, else 32].")
@handle_errors
def export(checkpoint: str, fmt: str, out: str, overwrite: bool, input_size: Optional[int]) -> None:
    """Export a checkpoint to ONNX or TorchScript (batch axis dynamic in ONNX) and check its outputs."""
    from evoprune.export import export_checkpoint

    summary = export_checkpoint(checkpoint, fmt, out, overwrite, input_size)
    _, channels, height, width = summary["input_shape"]
    check = (f"; {summary['verified_with']} max |diff| {summary['max_abs_diff']:.2g}"
             if summary["verified_with"] else "; not verified (onnxruntime not installed)")
    echo(f"exported {summary['arch']} ({summary['params']:,} params) to {out} as {fmt}, input "
         f"1x{channels}x{height}x{width}{check}")
    emit_json(summary)
