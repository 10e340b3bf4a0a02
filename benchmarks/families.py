"""Every torchvision classification family through the paper's pipeline: does it prune, to what, and does it export?

For one representative per family (residual, depthwise, grouped, concatenating, squeeze-excitation, split/shuffle,
inception, plain; ConvNeXt for layer norm) with random weights and calibrated BatchNorms, at 64x64 on the bundled
mini set: ``evoprune.prune`` with the GA and the two-step fitness on every unit (tiny budget: pop 4, 1 generation),
one KD fine-tune step per unit, uniform keep ratio for ``--target-macs``; then the pruned model must run, its MACs
be within 5 % of the target, its checkpoint reload to the same outputs and its ONNX export match onnxruntime.
Accuracy is meaningless here (random weights): this is about coverage. ``tests/test_families.py`` runs the cheap
families of this list on every test run.

    python benchmarks/families.py                     # all families, ~15 min on 1 thread
    python benchmarks/families.py --models torchvision:resnet18
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from evoprune.textable import markdown_table

FAMILIES = [  # (model, what makes it a family)
    ("torchvision:resnet18", "residual"),
    ("torchvision:vgg11_bn", "plain"),
    ("torchvision:mobilenet_v2", "depthwise, inverted residual"),
    ("torchvision:mobilenet_v3_small", "depthwise, squeeze-excitation, hardswish"),
    ("torchvision:efficientnet_b0", "depthwise, squeeze-excitation"),
    ("torchvision:mnasnet0_5", "depthwise, inverted residual"),
    ("torchvision:regnet_x_400mf", "grouped convolutions"),
    ("torchvision:shufflenet_v2_x0_5", "channel split + shuffle"),
    ("torchvision:squeezenet1_0", "concatenation (fire modules), conv classifier"),
    ("torchvision:densenet121", "dense concatenation"),
    ("torchvision:googlenet", "inception branches"),
    ("torchvision:convnext_tiny", "layer norm, permutes"),
]


def calibrate(model, size: int, seed: int = 0):
    """Random BN affine parameters and running statistics from one train-mode batch, so that eval-mode outputs are
    O(1) (torchvision's init makes deep nets' logits ~1e-10) and every channel matters."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    bns = [b for b in model.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for b in bns:
            b.weight.copy_(torch.rand(b.weight.shape, generator=g) + 0.5)
            b.bias.copy_(torch.randn(b.bias.shape, generator=g) * 0.2)
            b.momentum = 1.0
        model.train()
        model(torch.randn(8, 3, size, size, generator=g))
        for b in bns:
            b.momentum = 0.1
    return model.eval()


def prune_family(arch: str, size: int = 64, target: float = 0.5, workdir: str | None = None) -> dict:
    """Prune one family end to end (see the module docstring); returns what happened, or raises."""
    import torch

    import evoprune
    from evoprune.data import load_dataset, make_loaders
    from evoprune.export import export_model
    from evoprune.models import create_model
    from evoprune.models.checkpoint import load_model, save_checkpoint
    from evoprune.pruning import flop_counter_macs

    t0 = time.perf_counter()
    loaders = make_loaders(load_dataset("mini-cifar10", image_size=size), batch_size=16, seed=0, limit_train=64)
    torch.manual_seed(0)
    model = calibrate(create_model(arch, num_classes=10), size)
    small, report = evoprune.prune(model, loaders, target_macs=target, selector="ga", uniform=True, order="forward",
                                   pop_size=4, generations=1, finalists=1, stage2_top_k=1, stage2_every=1,
                                   bn_batches=1, eval_batches=1, calib_batches=1, finetune_steps=1,
                                   finetune_epochs=0, batch_size=16)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    small.eval()
    with torch.no_grad():
        ref = small(x)
    macs = flop_counter_macs(small, (1, 3, size, size))
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        path = str(Path(d) / "model.pt")
        save_checkpoint(path, small, {"arch": arch, "num_classes": 10, "in_channels": 3, "image_size": size,
                                      "pruned": report.pruned, "model_kwargs": {"num_classes": 10}})
        again, _ = load_model(path)
        with torch.no_grad():
            reload_diff = float((again.eval()(x) - ref).abs().max())
        onnx = export_model(small, "onnx", str(Path(d) / "model.onnx"), (3, size, size))
    return {"model": arch, "units": len(report.units), "units_pruned": len(report.pruned),
            "macs_ratio": report.final["macs_ratio"], "params_ratio": report.final["params_ratio"],
            "flop_counter_macs": int(macs), "cost_model_macs": int(report.final["macs"]),
            "reload_max_abs_diff": reload_diff, "onnx_max_abs_diff": onnx["max_abs_diff"],
            "onnx_checked_with": onnx["verified_with"], "seconds": time.perf_counter() - t0}


def markdown(rows: list) -> list:
    """The families table: per model its units, what pruning kept, the reload/ONNX check and its status."""
    body = []
    for r in rows:
        if r["status"] == "not prunable":
            body.append([r["model"], r["family"], "", "", "", "", "", f"not prunable: {r['reason'][:140]}"])
        else:
            body.append([r["model"], r["family"], f"{r['units']} ({r['units_pruned']})", f"{r['macs_ratio']:.3f}",
                         f"{r['params_ratio']:.3f}",
                         f"{r['reload_max_abs_diff']:.1e} / {r['onnx_max_abs_diff']:.1e}", f"{r['seconds']:.0f} s",
                         r["status"]])
    return markdown_table(["model", "family", "units (pruned)", "MACs kept", "params kept", "reload / ONNX max diff",
                           "time", "status"], body)


def main() -> None:
    import torch

    from _common import machine, save

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(m for m, _ in FAMILIES))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--target-macs", type=float, default=0.5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    kinds = dict(FAMILIES)
    rows = []
    for arch in a.models.split(","):
        try:
            r = prune_family(arch, a.size, a.target_macs)
            r["status"] = "ok" if abs(r["macs_ratio"] / a.target_macs - 1) <= 0.05 else "missed the MACs target"
        except Exception as exc:  # a family that cannot be pruned is a result, reported with its reason
            r = {"model": arch, "status": "not prunable", "reason": " ".join(str(exc).split())[:300]}
        r["family"] = kinds.get(arch, "")
        rows.append(r)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    from _common import RESULTS

    prev = RESULTS / "families.json"
    if prev.exists():  # a partial rerun (--models) replaces its rows and keeps the others, in FAMILIES order
        import json

        old = json.loads(prev.read_text())
        if (old.get("size"), old.get("target_macs")) == (a.size, a.target_macs):
            mine = {r["model"] for r in rows}
            rows = [r for r in old["rows"] if r["model"] not in mine] + rows
            order = {m: i for i, (m, _) in enumerate(FAMILIES)}
            rows.sort(key=lambda r: order.get(r["model"], len(order)))
    save("families.json", {"size": a.size, "target_macs": a.target_macs, "rows": rows, "machine": machine()})
    lines = markdown(rows)
    (RESULTS / "families.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
