"""Stage 1 (ReconstructionFitness) equals the naive masked forward pass; calibration bounds and bad input."""
import numpy as np
import pytest
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.fitness import (ConsumerSpec, NaiveReconstruction, ReconstructionFitness, as_consumers, consumers_of,
                              gram_matrix)
from evoprune.models import create_model
from evoprune.pruning.space import PruningSpace


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN scales (fresh BNs have gamma=1, var=1: the BN weighting would go untested)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.randn(m.num_features, generator=g)
            m.running_var.data = torch.rand(m.num_features, generator=g) * 2 + 0.2
            m.running_mean.data = torch.randn(m.num_features, generator=g) * 0.1
    return model.eval()


def _batches(n=2, b=4, seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, c, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


def _masks(p, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(p, n, generator=g) < 0.5
    m[0] = True  # keep all: error 0
    m[1] = False  # drop all: error 1 (normalised)
    return m


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    model = _randomize_bn(create_model("vgg11", width=0.25))
    return model, PruningSpace(model)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    model = _randomize_bn(create_model("resnet20", width=0.5), seed=1)
    return model, PruningSpace(model)


def _compare(model, space, unit, method="auto", batches=None):
    batches = batches or _batches()
    u = space.unit(unit)
    fast = ReconstructionFitness(model, consumers_of(space, u), batches, n=u.channels, max_positions=None,
                                 method=method, unit=unit)
    ref = NaiveReconstruction(model, consumers_of(space, u), batches, n=u.channels, unit=unit)
    masks = _masks(6, u.channels)
    e_fast, e_ref = fast.evaluate(masks)[:, 0], ref.evaluate(masks)[:, 0]
    assert e_fast[0].abs() < 1e-12 and abs(float(e_fast[1]) - 1.0) < 1e-10
    rel = ((e_fast - e_ref).abs() / e_ref.abs().clamp_min(1e-12))[1:]
    assert float(rel.max()) < 1e-4, (unit, method, e_fast, e_ref)
    return fast


@pytest.mark.parametrize("method", ["direct", "covariance"])
def test_vgg_unit_matches_naive(vgg, method):
    model, space = vgg
    fast = _compare(model, space, "features.4", method)
    assert fast.info.consumers[0]["method"] == method


def test_vgg_last_unit_linear_consumer_matches_naive(vgg):
    model, space = vgg
    u = space.units[-1]
    assert [c.name for c in u.consumers] == ["classifier"]
    _compare(model, space, u.name)


@pytest.mark.parametrize("method", ["direct", "covariance"])
def test_resnet_inner_unit_matches_naive(resnet, method):
    model, space = resnet
    _compare(model, space, "layer2.1.conv1", method)


def test_residual_coupled_unit_matches_naive(resnet):
    model, space = resnet
    u = next(u for u in space.units if "layer2.0.shortcut.0" in u.producers)
    names = [c.name for c in u.consumers]
    assert len(names) >= 3 and "layer3.0.shortcut.0" in names and "layer3.0.conv1" in names
    fast = _compare(model, space, u.name)
    assert len(fast.info.consumers) == len(names)


def test_grouped_and_strided_consumers_match_naive():
    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.g = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4, bias=True)
            self.bn = nn.BatchNorm2d(12)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect")

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.bn(self.g(h)).mean((2, 3)).sum(1) + self.dw(h).mean((1, 2, 3))

    net = _randomize_bn(Net())
    idx = list(range(8))
    cons = [(net.g, idx, net.bn), (net.dw, idx, None)]
    batches = [torch.randn(3, 3, 12, 12) for _ in range(2)]
    masks = _masks(5, 8)
    for method in ("direct", "covariance"):
        fast = ReconstructionFitness(net, cons, batches, max_positions=None, method=method)
        ref = NaiveReconstruction(net, cons, batches)
        e1, e2 = fast.evaluate(masks)[:, 0], ref.evaluate(masks)[:, 0]
        assert torch.allclose(e1, e2, rtol=1e-6, atol=1e-12)


def test_explicit_consumer_tuples_and_index_permutation(vgg):
    model, space = vgg
    f = model.features
    n = f[4].out_channels
    perm = torch.randperm(n)  # unit channel c is consumer input channel perm[c]
    batches = _batches()
    a = ReconstructionFitness(model, [(f[8], perm, f[9])], batches, max_positions=None)
    ref = NaiveReconstruction(model, [ConsumerSpec(f[8], perm[:, None], f[9])], batches)
    masks = _masks(4, n)
    assert torch.allclose(a.evaluate(masks), ref.evaluate(masks), rtol=1e-6, atol=1e-12)
    # the same Q as the space's identity mapping, permuted
    b = ReconstructionFitness(model, consumers_of(space, "features.4"), batches, max_positions=None)
    assert torch.allclose(a.Q, b.Q[perm][:, perm], rtol=1e-9, atol=1e-12)


def test_sampled_positions_bounded_and_close(vgg):
    model, space = vgg
    batches = _batches(2, 16)
    cons = consumers_of(space, "features.4")
    full = ReconstructionFitness(model, cons, batches, max_positions=None)
    samp = ReconstructionFitness(model, cons, batches, max_positions=1024)
    assert samp.info.consumers[0]["positions"] == 1024 < full.info.consumers[0]["positions"]
    masks = torch.rand(50, 32, generator=torch.Generator().manual_seed(0)) < 0.5
    a, b = full.evaluate(masks)[:, 0].numpy(), samp.evaluate(masks)[:, 0].numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.9  # an estimate of the same error


def test_gram_is_psd_and_population_scoring_is_batched(vgg):
    model, space = vgg
    s1 = ReconstructionFitness.from_space(space, "features.8", _batches(1))
    assert torch.allclose(s1.Q, s1.Q.T)
    assert float(torch.linalg.eigvalsh(s1.Q).min()) > -1e-9
    masks = torch.rand(100, 64) < 0.5
    one_by_one = torch.cat([s1.evaluate(m) for m in masks])
    assert torch.allclose(s1.evaluate(masks), one_by_one)
    assert s1.evaluate(np.ones(64, dtype=bool)).shape == (1, 1)  # numpy and a single mask work too


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in model.modules()])


def _unchanged(model, snap):
    sd, hooks = snap
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in sd.items())
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training) for m in model.modules()] == hooks


def test_stage1_and_naive_never_mutate_the_model(resnet):
    model, space = resnet
    model.train()  # a mode the evaluators must restore
    snap = _snapshot(model)
    u = space.unit("layer1.0.conv1")
    s1 = ReconstructionFitness.from_space(space, u, _batches(1))
    nv = NaiveReconstruction.from_space(space, u, _batches(1))
    s1.evaluate(_masks(3, u.channels))
    nv.evaluate(_masks(2, u.channels))
    _unchanged(model, snap)
    model.eval()


# ------------------------------------------------------------------------------------------------ bad input
def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) > 20
    return msg


def test_wrong_calibration_shape(vgg):
    model, space = vgg
    cons = consumers_of(space, "features.4")
    with pytest.raises(EvopruneError) as e:
        ReconstructionFitness(model, cons, [torch.randn(4, 1, 32, 32)])
    assert "expects 3 input channels" in _one_line(e)
    with pytest.raises(EvopruneError) as e:
        ReconstructionFitness(model, cons, [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 16, 16)])
    assert "same sample shape" in _one_line(e)
    with pytest.raises(EvopruneError) as e:
        ReconstructionFitness(model, cons, [torch.randint(0, 255, (4, 3, 32, 32))])
    assert "float" in _one_line(e)
    with pytest.raises(EvopruneError) as e:
        ReconstructionFitness(model, cons, [])
    _one_line(e)


def test_mask_length_must_match_unit(vgg):
    model, space = vgg
    s1 = ReconstructionFitness.from_space(space, "features.4", _batches(1))
    with pytest.raises(EvopruneError) as e:
        s1.evaluate(torch.ones(3, 31, dtype=torch.bool))
    assert "[P, 32]" in _one_line(e)
    with pytest.raises(EvopruneError) as e:
        s1.evaluate(torch.full((2, 32), 0.5))
    _one_line(e)


def test_model_that_cannot_run():
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25, in_channels=4).eval()  # expects 4 channels, data has 3
    f = model.features
    with pytest.raises(EvopruneError) as e:
        ReconstructionFitness(model, [(f[8], list(range(32)), f[9])], _batches(1))
    msg = _one_line(e)
    assert "cannot run" in msg and "4 input channels" in msg


def test_bad_consumers():
    model = create_model("vgg11", width=0.25).eval()
    f = model.features
    with pytest.raises(EvopruneError) as e:
        as_consumers([(f[9], list(range(32)))])  # a BN is not a consumer
    assert "Conv2d" in _one_line(e)
    with pytest.raises(EvopruneError) as e:
        as_consumers([(f[8], list(range(40)))])  # index beyond the conv's inputs
    _one_line(e)
    with pytest.raises(EvopruneError) as e:
        as_consumers([(f[8], list(range(32)))], n=16)
    _one_line(e)
    with pytest.raises(EvopruneError) as e:  # a consumer from another model is never called
        ReconstructionFitness(model, [(create_model("vgg11", width=0.25).features[8], list(range(32)))], _batches(1))
    _one_line(e)


def test_memory_is_bounded_for_a_wide_unit():
    """Calibration of a 512-channel unit keeps its working set small: Q plus chunked patches (not activations)."""
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    net = nn.Sequential(nn.Conv2d(3, 512, 1), nn.ReLU(), conv).eval()
    q, info = gram_matrix(net, as_consumers([(conv, list(range(512)))]), [torch.randn(2, 3, 4, 4)],
                          method="covariance", chunk_bytes=8 << 20)
    assert q.shape == (512, 512) and info.consumers[0]["positions"] == 32


@pytest.mark.parametrize("unit", ["features.4", "features.25"])
def test_centred_error_matches_naive(vgg, unit):
    """center=True removes the per-output mean of the error where a BN follows (the classifier has none)."""
    model, space = vgg
    batches = _batches()
    cons = consumers_of(space, unit)
    plain = ReconstructionFitness(model, cons, batches, max_positions=None)
    fast = plain.with_center(True)
    ref = NaiveReconstruction(model, cons, batches, center=True)
    masks = _masks(5, space.unit(unit).channels)
    e1, e2 = fast.evaluate(masks)[:, 0], ref.evaluate(masks)[:, 0]
    assert torch.allclose(e1, e2, rtol=1e-6, atol=1e-12)
    same = torch.allclose(e1, plain.evaluate(masks)[:, 0])
    assert same == (cons[0].norm is None)
