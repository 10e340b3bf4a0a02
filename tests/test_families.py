"""torchvision families through the whole pipeline at 64x64 (GA + two-step fitness on every unit, a KD step): the
pruned model runs, meets the MACs target within 5 %, reloads to the same outputs and exports to ONNX.

The cheap families run here; ``benchmarks/families.py`` runs every family (the README's table) with the same code."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from families import prune_family  # noqa: E402

CHEAP = ["torchvision:resnet18", "torchvision:shufflenet_v2_x0_5", "torchvision:squeezenet1_1",
         "torchvision:mobilenet_v3_small"]


@pytest.mark.parametrize("arch", CHEAP, ids=[a.split(":")[1] for a in CHEAP])
def test_family_prunes_reloads_and_exports(arch, tmp_path):
    r = prune_family(arch, size=64, target=0.5, workdir=str(tmp_path))
    assert abs(r["macs_ratio"] / 0.5 - 1) <= 0.05, r
    assert r["units_pruned"] >= 1 and r["params_ratio"] < 1
    assert abs(r["flop_counter_macs"] / r["cost_model_macs"] - 1) <= 0.01, r  # the cost model is what runs
    assert r["reload_max_abs_diff"] <= 1e-4
    assert r["onnx_checked_with"] is None or r["onnx_max_abs_diff"] <= 1e-3
