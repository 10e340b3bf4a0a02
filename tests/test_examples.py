"""Every seam's example in examples/ runs from the CLI: a user model is trained and pruned, with a user selector
and with a user fitness, and a user problem is compared across strategies (tiny settings, seconds each)."""
import json
from pathlib import Path

import pytest
from prune_helpers import FAST, cli

EX = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("user-model") / "run"
    r = cli("--quiet", "train", "--model", f"{EX / 'custom_model.py'}:tiny_cnn", "--width", "0.5", "--epochs", "1",
            "--data", "mini-cifar10", "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr
    return out / "model.pt"


@pytest.mark.parametrize("flag,spec", [("--selector", "custom_selector.py:l2_norm"),
                                       ("--fitness", "custom_evaluator.py:LostWeight")])
def test_user_model_pruned_with_a_user_seam(user_model, tmp_path, flag, spec):
    out = tmp_path / "prune"
    r = cli("--quiet", "prune", "--checkpoint", user_model, "--target-macs", "0.5", *FAST, flag, str(EX / spec),
            "--stage2-top-k", "0", "--finalists", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert 0.4 < res["final"]["macs_ratio"] <= 0.55 and len(res["pruned"]) >= 2


def test_user_selector_keeps_the_largest_l2_filters(user_model):
    import numpy as np
    import torch

    from evoprune.models.checkpoint import load_model
    from evoprune.pruning import PruningSpace
    from evoprune.registry import SELECTORS

    model, _ = load_model(str(user_model))
    space = PruningSpace(model, torch.zeros(1, 3, 32, 32))
    unit = space.units[0]
    mask = SELECTORS.get(f"{EX / 'custom_selector.py'}:l2_norm")(model, space, unit.name, 4)
    conv = dict(model.named_modules())[unit.members[0].name]
    norms = conv.weight.detach().flatten(1).norm(dim=1).numpy()
    assert mask.sum() == 4 and set(np.flatnonzero(mask)) == set(np.argsort(-norms)[:4])


def test_user_problem_compared_across_strategies(tmp_path):
    r = cli("--quiet", "compare", "--problem", f"{EX / 'custom_problem.py'}:coverage", "--param", "n=40",
            "--param", "k=6", "--strategies", "ga,cmaes,random", "--budget", 200, "--seeds", 2,
            "--out", tmp_path / "cmp")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert set(summary["strategies"]) == {"ga", "cmaes", "random"}
