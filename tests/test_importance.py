"""Importance criteria (L1, BN, Taylor, random), keep_mask, and the registered selectors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import evoprune.pruning  # noqa: F401  (registers the selectors)
from evoprune.errors import EvopruneError
from evoprune.models import create_model
from evoprune.pruning import IMPORTANCE, PruningSpace, keep_mask
from evoprune.registry import SELECTORS



@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    m = create_model("resnet20", width=0.5).eval()
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                b.weight.uniform_(-1, 1)
    return m, PruningSpace(m)


def _batches(n=2, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, 32, 32, generator=g), torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


def test_l1_sums_coupled_producers(resnet):
    m, sp = resnet
    single = sp.unit("layer1.0.conv1")
    assert np.allclose(IMPORTANCE["l1"](m, sp, single), m.layer1[0].conv1.weight.abs().sum((1, 2, 3)).detach().numpy())
    res = sp.unit("conv1")  # stem + every block's conv2 of stage 1
    want = sum(m.get_submodule(p).weight.abs().sum((1, 2, 3)) for p in res.producers)
    assert np.allclose(IMPORTANCE["l1"](m, sp, "conv1"), want.detach().double().numpy())


def test_bn_is_abs_gamma(resnet):
    m, sp = resnet
    assert np.allclose(IMPORTANCE["bn"](m, sp, "layer2.1.conv1"), m.layer2[1].bn1.weight.abs().detach().numpy())
    res = sp.unit("conv1")
    want = sum(m.get_submodule(b).weight.abs() for b in res.norms)
    assert np.allclose(IMPORTANCE["bn"](m, sp, res), want.detach().double().numpy())


def test_bn_without_batchnorm_is_an_error():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 2))
    sp = PruningSpace(m, (1, 3, 8, 8))
    with pytest.raises(EvopruneError, match="no BatchNorm.*use the 'l1' criterion"):
        IMPORTANCE["bn"](m, sp, "0")


def test_taylor_equals_activation_times_gradient(resnet):
    m, sp = resnet
    unit = sp.unit("layer2.1.conv1")  # consumer: layer2.1.conv2
    data = _batches()
    got = IMPORTANCE["taylor"](m, sp, unit, data=data)
    # reference: capture the consumer's input, its gradient, per sample sum over positions, |.|, mean over samples
    store = {}
    conv2 = m.layer2[1].conv2

    def hook(mod, args):
        x = args[0].detach().requires_grad_(True)
        store["x"] = x
        return (x,)

    h = conv2.register_forward_pre_hook(hook)
    total, n = 0, 0
    try:
        for x, y in data:
            loss = F.cross_entropy(m(x), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, store["x"])
            total = total + (store["x"] * g).sum((2, 3)).abs().sum(0)
            n += x.shape[0]
    finally:
        h.remove()
    assert np.allclose(got, (total / n).detach().double().numpy(), rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in m.parameters())  # parameter gradients untouched
    # labels are optional: the model's own predictions stand in
    assert IMPORTANCE["taylor"](m, sp, unit, data=[x for x, _ in data]).shape == (unit.channels,)
    with pytest.raises(EvopruneError, match="needs calibration batches"):
        IMPORTANCE["taylor"](m, sp, unit)


def test_taylor_on_coupled_unit_counts_all_consumers(resnet):
    m, sp = resnet
    s = IMPORTANCE["taylor"](m, sp, "conv1", data=_batches(1))
    assert s.shape == (sp.unit("conv1").channels,) and (s > 0).all()


def test_random_is_seeded(resnet):
    m, sp = resnet
    a = IMPORTANCE["random"](m, sp, "conv1", rng=3)
    assert np.array_equal(a, IMPORTANCE["random"](m, sp, "conv1", rng=np.random.default_rng(3)))
    assert not np.array_equal(a, IMPORTANCE["random"](m, sp, "conv1", rng=4))


def test_keep_mask():
    s = np.array([0.5, 3.0, 1.0, 3.0, 0.1, 2.0])
    assert keep_mask(s, 2).tolist() == [False, True, False, True, False, False]  # ties -> lower index first
    assert keep_mask(s, 0.5).sum() == 3 and keep_mask(s, 0.01).sum() == 1
    assert keep_mask(s, 0.01, min_keep=2).sum() == 2
    assert keep_mask(s, 1.0).all()
    g = keep_mask(s, 2, groups=2)  # one per block of 3
    assert g.tolist() == [False, True, False, True, False, False]
    assert keep_mask(s, 0.3, groups=2).sum() == 2
    assert keep_mask(np.array([np.nan, 1.0, 0.0]), 1).tolist() == [False, True, False]
    for bad, match in [(0, "between 1 and 6"), (7, "between 1 and 6"), (3.5, r"ratio must be in \(0, 1\]"),
                       (0.0, "ratio"), (True, "count or a ratio")]:
        with pytest.raises(EvopruneError, match=match):
            keep_mask(s, bad)
    with pytest.raises(EvopruneError, match="multiple of the unit's 2 channel groups"):
        keep_mask(s, 3, groups=2)
    with pytest.raises(EvopruneError, match="between 2 and 6"):
        keep_mask(s, 1, min_keep=2)


@pytest.mark.parametrize("name", ["l1", "bn", "taylor", "random", "thinet"])
def test_selectors_return_exactly_k(resnet, name):
    m, sp = resnet
    fn = SELECTORS.get(name)
    for unit in ("conv1", "layer3.2.conv1"):
        n = sp.unit(unit).channels
        for k in (1, n // 3, n):
            mask = fn(m, sp, unit, k, batches=_batches(1), rng=np.random.default_rng(0))
            assert mask.dtype == bool and mask.shape == (n,) and int(mask.sum()) == k
    with pytest.raises(EvopruneError, match="integer channel count"):
        fn(m, sp, "conv1", 0.5, batches=_batches(1))
    with pytest.raises(EvopruneError, match="cannot keep 0"):
        fn(m, sp, "conv1", 0, batches=_batches(1))


def test_selector_keeps_the_top_scores(resnet):
    m, sp = resnet
    scores = IMPORTANCE["l1"](m, sp, "layer1.1.conv1")
    mask = SELECTORS.get("l1")(m, sp, "layer1.1.conv1", 3)
    assert set(np.flatnonzero(mask)) == set(np.argsort(-scores)[:3])


def test_selectors_on_grouped_units():
    m = create_model("torchvision:regnet_x_400mf").eval()
    sp = PruningSpace(m, (1, 3, 64, 64))
    u = next(u for u in sp if u.channel_groups > 1)
    g = u.channel_groups
    mask = SELECTORS.get("l1")(m, sp, u.name, 2 * g)
    assert (mask.reshape(g, -1).sum(1) == 2).all()
    sp.validate({u.name: mask})
    with pytest.raises(EvopruneError, match="multiple of the unit's"):
        SELECTORS.get("random")(m, sp, u.name, g + 1, rng=0)


def test_selectors_are_registered_with_docs():
    for name in ("l1", "bn", "taylor", "random", "thinet"):
        assert name in SELECTORS.names() and SELECTORS.docs[name]
