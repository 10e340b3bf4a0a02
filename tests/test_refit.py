"""Least-squares refit of the consumers on the kept channels, and the refit-aware stage 1."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.pruning import PruningSpace
from evoprune.pruning.refit import refit_unit


class Two(nn.Module):
    def __init__(self, consumer: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = consumer
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("padding", [1, "same"])
def test_refit_reaches_the_least_squares_optimum(padding):
    torch.manual_seed(0)
    model = Two(nn.Conv2d(8, 6, 3, padding=padding, bias=False)).eval()
    x = torch.randn(4, 3, 8, 8)
    space = PruningSpace(model, (1, 3, 8, 8), warn=False)
    mask = np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=bool)
    # the closed form from explicit patches: min ||X W^T - X_S B^T||
    with torch.no_grad():
        h = torch.relu(model.bn1(model.conv1(x))).double()
        cols = torch.nn.functional.unfold(h, 3, padding=1).transpose(1, 2).reshape(-1, 72).numpy()
        w = model.conv2.weight.detach().double().reshape(6, -1).numpy()
    keep_cols = (np.flatnonzero(mask)[:, None] * 9 + np.arange(9)).reshape(-1)
    target = cols @ w.T
    best, *_ = np.linalg.lstsq(cols[:, keep_cols], target, rcond=None)
    info = refit_unit(model, space, "conv1", mask, [x], ridge=1e-12)
    got = model.conv2.weight.detach().double().reshape(6, -1).numpy()[:, keep_cols]
    assert np.allclose(got, best.T, rtol=1e-5, atol=1e-7)
    opt = np.linalg.norm(target - cols[:, keep_cols] @ best) ** 2 / np.linalg.norm(target) ** 2
    r = info["conv2"]
    assert r["rel_error_after"] == pytest.approx(opt, rel=1e-5) and r["rel_error_after"] < r["rel_error_before"]


def test_input_grams_in_chunks_equal_the_whole_batch(monkeypatch):
    from evoprune.pruning import refit as refit_mod

    torch.manual_seed(0)
    model = Two(nn.Conv2d(8, 6, 3, padding=1)).eval()
    batches = [torch.randn(5, 3, 8, 8)]
    whole = refit_mod.input_grams(model, [model.conv2, model.head], batches, max_positions=None)
    monkeypatch.setattr(refit_mod, "CHUNK_BYTES", 1)  # one image at a time
    chunked = refit_mod.input_grams(model, [model.conv2, model.head], batches, max_positions=None)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-9) for a, b in zip(whole, chunked))
    sampled = refit_mod.input_grams(model, [model.conv2], batches, max_positions=50)[0]
    assert sampled.shape == whole[0].shape and float(sampled.trace()) < float(whole[0].trace())


def test_refit_skips_a_consumer_with_a_computed_weight():
    from torch.nn.utils import parametrize

    from evoprune.pruning.refit import refit_units

    class Scaled(nn.Module):
        def forward(self, w):
            return 2 * w

    model = Two(nn.Conv2d(8, 6, 3, padding=1)).eval()
    parametrize.register_parametrization(model.conv2, "weight", Scaled())
    space = PruningSpace(model, (1, 3, 8, 8), warn=False)
    units, skipped = refit_units(model, space, None)
    assert "conv1" not in units and "computes its weight" in skipped["conv1"]


def test_refit_refuses_grouped_consumers():
    model = Two(nn.Conv2d(8, 6, 3, padding=1, groups=2)).eval()
    space = PruningSpace(model, (1, 3, 8, 8), warn=False)
    mask = np.array([1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    with pytest.raises(EvopruneError, match="grouped/depthwise"):
        refit_unit(model, space, "conv1", mask, [torch.randn(2, 3, 8, 8)])


def test_default_refit_skips_the_units_it_cannot_refit_and_refit_insists(monkeypatch):
    from evoprune.pruning import refit as refit_mod
    from evoprune.pruning.refit import refit_units

    model = Two(nn.Conv2d(8, 6, 3, padding=1, groups=2)).eval()
    space = PruningSpace(model, (1, 3, 8, 8), warn=False)
    units, skipped = refit_units(model, space, None)
    assert set(space.names) == {"conv1", "conv2"}
    assert units == ["conv2"] and list(skipped) == ["conv1"] and "grouped/depthwise" in skipped["conv1"]
    assert refit_units(model, space, False) == ([], {})
    with pytest.raises(EvopruneError, match=r"^--refit: consumer 'conv2' .*grouped.*\(drop --refit\)$"):
        refit_units(model, space, True)
    plain = Two(nn.Conv2d(8, 6, 3, padding=1)).eval()
    ps = PruningSpace(plain, (1, 3, 8, 8), warn=False)
    assert refit_units(plain, ps, None) == (ps.names, {})
    monkeypatch.setattr(refit_mod, "MAX_AUTO_INPUTS", 8 * 9 - 1)  # conv2 reads 8 x 3 x 3 inputs per output
    units, skipped = refit_units(plain, ps, None)
    assert units == ["conv2"] and "72 inputs per output" in skipped["conv1"]
    assert refit_units(plain, ps, True) == (ps.names, {})  # asked for explicitly: no size limit


def test_refit_aware_stage1_equals_a_brute_force_refit_per_candidate():
    from evoprune.fitness.refit_aware import RefitReconstructionFitness

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 10))  # contributions Z_c as columns
    q = torch.from_numpy(z.T @ z)
    ev = RefitReconstructionFitness.__new__(RefitReconstructionFitness)
    ev.Q, ev.n, ev.unit, ev.evaluations = q, 10, "u", 0
    masks = np.zeros((6, 10), dtype=bool)
    for i in range(6):
        masks[i, rng.choice(10, 4, replace=False)] = True
    got = ev.error(torch.from_numpy(masks)).numpy()
    for m, g in zip(masks, got):
        target = z[:, ~m].sum(1)
        a, *_ = np.linalg.lstsq(z[:, m], target, rcond=None)
        assert g == pytest.approx(np.linalg.norm(target - z[:, m] @ a) ** 2, rel=1e-6)
        plain = float((~m).astype(float) @ (z.T @ z) @ (~m).astype(float))
        assert g <= plain + 1e-9  # a refit never leaves more error than no refit


def test_attention_transfer_term_is_zero_for_the_teacher_itself_and_trains_the_student():
    import copy

    from evoprune.distill import kd_loss
    from evoprune.models import create_model

    torch.manual_seed(0)
    teacher = create_model("vgg11", width=0.125).eval()
    twin = copy.deepcopy(teacher)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    plain, _ = kd_loss(teacher, alpha=1.0)(twin.eval(), x, y)
    with_at, _ = kd_loss(teacher, alpha=1.0, at_weight=100.0)(twin.eval(), x, y)
    assert with_at.item() == pytest.approx(plain.item(), abs=1e-6)  # identical maps: no AT loss
    student = create_model("vgg11", width=0.125)  # another network with the same module names
    fn = kd_loss(teacher, at_weight=10.0)
    loss, _ = fn(student, x, y)
    loss.backward()
    assert loss.item() > kd_loss(teacher)(student, x, y)[0].item() and student.features[0].weight.grad is not None
    with pytest.raises(EvopruneError, match="at-weight"):
        kd_loss(teacher, at_weight=-1.0)


def test_prune_with_refit_and_attention_transfer(tiny_checkpoint, tmp_path):
    import json

    from prune_helpers import FAST, cli

    out = tmp_path / "refit"
    r = cli("prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", "--selector", "l1",
            "--at-weight", "50", "--fitness", "reconstruction-refit", *FAST, "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["refit"] is None and res["config"]["at_weight"] == 50.0  # the default: where it applies
    for u in res["units"]:  # every unit refit; each consumer's output error after it at most the error before
        assert u["refit"] and all(v["rel_error_after"] <= v["rel_error_before"] + 1e-9 for v in u["refit"].values())
    r = cli("prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", "--selector", "l1", "--no-refit",
            *FAST, "--out", tmp_path / "paper")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "paper" / "results.json").read_text())
    assert res["config"]["refit"] is False and not any("refit" in u for u in res["units"])
    bad = cli("prune", "--checkpoint", tiny_checkpoint, "--target-macs", "0.5", "--at-weight", "1", "--loss", "ce",
              *FAST, "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "--at-weight" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_fingerprint_of_a_config_without_the_later_options_is_unchanged():
    from evoprune.config import PruneConfig

    old = PruneConfig(refit=False, at_weight=0.0)  # what a run made before the refit existed did
    assert old.fingerprint() == PruneConfig(refit=False).fingerprint()
    # the default (refit where it applies) is not the old behaviour: an old default run does not resume under it
    assert len({PruneConfig(refit=r).fingerprint() for r in (None, True, False)}) == 3


def test_pipeline_refits_where_it_can_and_says_where_not():
    import evoprune

    torch.manual_seed(0)
    model = Two(nn.Conv2d(8, 6, 3, padding=1, groups=2))
    model.head = nn.Linear(6, 10)
    opts = dict(target_macs=0.7, selector="l1", uniform=True, order="forward", finetune_steps=0, finetune_epochs=0,
                batch_size=32, bn_batches=1, eval_batches=1, calib_batches=1, sensitivity_ratios=(0.5,))
    logs: list = []
    _, rep = evoprune.prune(model, "mini-cifar10", log=logs.append, **opts)
    assert [line for line in logs if line.startswith("refit:")] == [
        "refit: 1 of 2 units; not conv1 (consumer 'conv2' of unit 'conv1' is a grouped/depthwise convolution; "
        "refit needs plain convolutions or linear layers)"]
    assert {u["unit"]: "refit" in u for u in rep.units} == {"conv1": False, "conv2": True}
    with pytest.raises(EvopruneError, match="grouped"):
        evoprune.prune(model, "mini-cifar10", refit=True, **opts)


def test_unit_fitness_builds_every_kind_prune_and_search_use():
    from evoprune.data import load_dataset, make_loaders
    from evoprune.fitness import CalibrationData, ReconstructionFitness, TwoStage
    from evoprune.fitness.refit_aware import RefitReconstructionFitness
    from evoprune.fitness.unit import unit_fitness
    from evoprune.models import create_model

    torch.manual_seed(0)
    net = create_model("vgg11", width=0.125).eval()
    space = PruningSpace(net, (1, 3, 32, 32), warn=False)
    loaders = make_loaders(load_dataset("mini-cifar10"), batch_size=16, calib_size=32)
    calib = CalibrationData.from_loaders(loaders, train_batches=1, held_out_batches=1, batch_size=16, seed=0)
    u = space.units[0]
    kinds = {}
    for name in ("reconstruction", "network", "twostage", "reconstruction-refit"):
        s1, ev = unit_fitness(space, u, calib, net, name, bn_batches=1, top_k=2, every=3)
        assert isinstance(s1, ReconstructionFitness)
        kinds[name] = ev
    assert kinds["reconstruction"].__class__ is ReconstructionFitness
    assert isinstance(kinds["twostage"], TwoStage) and kinds["twostage"].top_k == 2
    assert isinstance(kinds["reconstruction-refit"], RefitReconstructionFitness)
    with pytest.raises(EvopruneError):
        unit_fitness(space, u, calib, net, "no-such-fitness")
