"""CostModel: exact MACs (== FlopCounterMode / 2) and parameter counts of pruned models, scalar and vectorised;
plus the latency helper."""
import time

import numpy as np
import pytest
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.models import create_model
from evoprune.pruning import CostModel, PruningSpace, apply, flop_counter_macs, measure_latency, model_params



@pytest.fixture(scope="module")
def vgg16():
    m = create_model("vgg16").eval()  # full width: the paper's network
    sp = PruningSpace(m)
    return m, sp, CostModel(sp)


def _random_decision(space, rng):
    """Per-unit random keep counts (1..n), random channels."""
    masks = {}
    for u in space.units:
        k = int(rng.integers(1, u.channels + 1))
        masks[u.name] = np.zeros(u.channels, dtype=bool)
        masks[u.name][rng.choice(u.channels, k, replace=False)] = True
    return masks


def test_vgg16_base_cost_matches_flop_counter(vgg16):
    m, sp, cost = vgg16
    assert cost.base_macs == flop_counter_macs(m, sp.input_shape) == 313_201_664
    assert cost.base_params == model_params(m) == 14_724_042


def test_vgg16_random_decisions_are_exact(vgg16):
    m, sp, cost = vgg16
    rng = np.random.default_rng(0)
    decisions = [_random_decision(sp, rng) for _ in range(4)]
    decisions.append({u.name: np.arange(u.channels) < 1 for u in sp.units})  # one channel everywhere
    for masks in decisions:
        pruned = apply(m, masks, sp)
        assert cost.macs(masks) == flop_counter_macs(pruned, sp.input_shape)
        assert cost.params(masks) == model_params(pruned)


def test_batch_equals_scalar(vgg16):
    _, sp, cost = vgg16
    rng = np.random.default_rng(1)
    sizes = np.array(sp.sizes)
    K = rng.integers(1, sizes + 1, size=(500, len(sizes)))
    macs, params = cost.macs_batch(K), cost.params_batch(K)
    assert macs.dtype == np.int64 and macs.shape == (500,)
    for i in range(0, 500, 50):
        assert macs[i] == cost.macs_counts(K[i]) and params[i] == cost.params_counts(K[i])
    # the bilinear form: macs = k~^T M k~
    kt = np.hstack([np.ones((500, 1)), K])
    assert np.allclose(np.einsum("pi,ij,pj->p", kt, cost.macs_matrix, kt), macs, rtol=1e-12)
    assert np.allclose(np.einsum("pi,ij,pj->p", kt, cost.params_matrix, kt), params, rtol=1e-12)
    assert cost.macs_batch(sizes[None])[0] == cost.base_macs
    # the MAC count of VGG-16 is quadratic in a uniform width multiplier (but for the fixed input layer)
    half = cost.macs_counts(sizes // 2)
    assert 0.24 < half / cost.base_macs < 0.26


@pytest.mark.parametrize("arch,size", [("resnet56", 32), ("torchvision:mobilenet_v2", 64),
                                       ("torchvision:regnet_x_400mf", 64), ("torchvision:squeezenet1_0", 64)])
def test_extreme_decisions_are_exact(arch, size):
    """Every unit at its minimum, and a mix of minimum/full, through residual, depthwise, grouped, concat nets."""
    m = create_model(arch, num_classes=10, **({"width": 0.5} if arch == "resnet56" else {})).eval()
    sp = PruningSpace(m, (1, 3, size, size), warn=False)
    cost = CostModel(sp)
    rng = np.random.default_rng(5)
    smallest = {}
    mixed = {}
    for i, u in enumerate(sp.units):
        g, per = u.channel_groups, u.channels // u.channel_groups
        mask = np.zeros(u.channels, dtype=bool)
        for b in range(g):  # min_keep per group, random positions
            mask[b * per + rng.choice(per, max(1, u.min_keep // g), replace=False)] = True
        smallest[u.name] = mask
        mixed[u.name] = mask if i % 2 else np.ones(u.channels, dtype=bool)
    for masks in (smallest, mixed):
        pruned = apply(m, masks, sp)
        assert cost.macs(masks) == flop_counter_macs(pruned, sp.input_shape)
        assert cost.params(masks) == model_params(pruned)
        assert cost.macs_batch(sp.keep_counts(masks)[None])[0] == cost.macs(masks)


def test_cost_model_runs_no_forward(vgg16):
    m, sp, _ = vgg16

    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("the cost model must not run the network")

    cost = CostModel(sp)
    orig = m.features
    m.features = Boom()
    try:
        masks = sp.random_masks(0, 0.5)
        assert cost.macs(masks) < cost.base_macs and cost.params(masks) < cost.base_params
    finally:
        m.features = orig
    K = np.tile(np.array(sp.sizes), (10_000, 1))
    t = time.perf_counter()
    assert (cost.macs_batch(K) == cost.base_macs).all()
    assert time.perf_counter() - t < 2.0  # typically a few ms


def test_bad_counts_and_masks(vgg16):
    _, sp, cost = vgg16
    with pytest.raises(EvopruneError, match=r"keep counts must have shape \[P, 13\]"):
        cost.macs_batch(np.ones((4, 12), dtype=int))
    with pytest.raises(EvopruneError, match="keep counts must be integers"):
        cost.macs_batch(np.full((2, 13), 1.5))
    with pytest.raises(EvopruneError, match="unknown pruning unit"):
        cost.macs({"nope": [1]})
    with pytest.raises(EvopruneError, match="keeps no channel"):
        cost.params({"features.0": np.zeros(64, dtype=bool)})


def test_latency_measure_restores_state():
    m = create_model("resnet20", width=0.25).train()
    threads = torch.get_num_threads()
    r = measure_latency(m, (3, 32, 32), batch_size=2, repeats=3, warmup=1, threads=1)
    assert r["median_ms"] > 0 and r["repeats"] >= 3 and r["threads"] == 1 and r["batch_size"] == 2
    assert r["per_image_ms"] == pytest.approx(r["median_ms"] / 2)
    assert m.training and torch.get_num_threads() == threads
    with pytest.raises(EvopruneError, match="batch_size >= 1"):
        measure_latency(m, batch_size=0)
