"""Export a (pruned) checkpoint to ONNX or TorchScript, checked against PyTorch's own outputs."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.io import check_output_file

# Exported graphs must reproduce PyTorch's logits to float rounding: relative to the logits' scale.
RTOL = 1e-3


def in_channels(model: nn.Module, meta: Dict[str, Any]) -> int:
    """Input channels of ``model``: its first convolution's, else the checkpoint metadata's (default 3)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return int(meta.get("in_channels") or (meta.get("model_kwargs") or {}).get("in_channels", 3))


def _check_close(ref: np.ndarray, got: np.ndarray, what: str) -> float:
    if ref.shape != got.shape:
        raise EvopruneError(f"{what} output has shape {got.shape}, PyTorch gives {ref.shape}; the export is wrong")
    diff = float(np.abs(ref - got).max()) if ref.size else 0.0
    if not np.isfinite(diff) or diff > RTOL * max(1.0, float(np.abs(ref).max())):
        raise EvopruneError(f"{what} output differs from PyTorch by {diff:.3g}; the export is not faithful "
                            f"(try the other --format)")
    return diff


def _export_onnx(model: nn.Module, x: torch.Tensor, path: str) -> None:
    """TorchScript-based exporter first (fast, mature for CNNs), the dynamo exporter if that one is unavailable."""
    try:
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        return
    except Exception as first:  # e.g. a torch without the legacy exporter
        legacy_error = first
    try:
        torch.onnx.export(model, (x,), path, dynamo=True, external_data=False, input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        raise EvopruneError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:150]}; "
                            f"legacy exporter: {type(legacy_error).__name__}); try --format torchscript") from None


def _verify_onnx(path: str, x: torch.Tensor, ref: np.ndarray) -> Optional[float]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None  # validation is optional: onnxruntime not installed
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = sess.run(None, {name: x.cpu().numpy()})[0]
    return _check_close(ref, got, "onnxruntime")


def export_model(model: nn.Module, fmt: str, out: str, input_shape: tuple) -> Dict[str, Any]:
    """Export ``model`` (eval mode) to ``out`` atomically and verify it; returns a summary dict."""
    model = model.eval().cpu()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2,) + tuple(input_shape), generator=gen)  # batch 2: checks the dynamic batch axis too
    try:
        with torch.no_grad():
            ref = model(x).numpy()
    except Exception as exc:
        raise EvopruneError(f"the model fails on inputs of shape {tuple(x.shape[1:])} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]}); check --input-size") from None
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=str(out_path.parent))
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation/tracer chatter is not the user's business
            if fmt == "onnx":
                _export_onnx(model, x[:1], tmp)
                diff = _verify_onnx(tmp, x, ref)
                checker = "onnxruntime" if diff is not None else None
            else:
                try:
                    with torch.no_grad():
                        traced = torch.jit.trace(model, x[:1], check_trace=False)
                    traced.save(tmp)
                    loaded = torch.jit.load(tmp)
                except Exception as exc:
                    raise EvopruneError(f"TorchScript export failed ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:150]}); try --format onnx") from None
                with torch.no_grad():
                    diff = _check_close(ref, loaded(x).numpy(), "TorchScript")
                checker = "torch.jit.load"
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"out": str(out_path), "format": fmt, "input_shape": [1] + list(input_shape), "verified_with": checker,
            "max_abs_diff": diff, "bytes": out_path.stat().st_size}


def export_checkpoint(checkpoint: str, fmt: str, out: str, overwrite: bool = False,
                      input_size: Optional[int] = None) -> Dict[str, Any]:
    """Load an evoprune checkpoint (pruned or not), export it with :func:`export_model` and return the summary
    (plus the checkpoint, architecture, parameter count and whether it is pruned).

    ``input_size``: input height/width (default: the checkpoint's image size, else 32).
    """
    from evoprune.models import count_params
    from evoprune.models.checkpoint import load_model

    if Path(out).is_dir():
        raise EvopruneError(f"--out '{out}' is a directory; give a file name such as model.{fmt}")
    check_output_file(out, overwrite)
    model, meta = load_model(checkpoint)
    size = int(input_size or meta.get("image_size") or 32)
    shape = (in_channels(model, meta), size, size)
    summary = export_model(model, fmt, out, shape)
    summary.update({"checkpoint": checkpoint, "arch": meta.get("arch"), "params": count_params(model),
                    "pruned": bool(meta.get("pruned"))})
    return summary
