"""Stage 2 (NetworkFitness): unpruned accuracy, caching, the cached-prefix split, adaptive BN, no mutation."""
import copy

import pytest
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.fitness import CalibrationData, NetworkFitness, consumers_of, split_model
from evoprune.fitness.base import mask_consumers
from evoprune.models import create_model
from evoprune.pruning.space import PruningSpace
from evoprune.train import evaluate


def _batches(n, b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 32, 32, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


def _settle_bn(model, batches):
    """Give the BNs real statistics (random init has mean 0 / var 1), so adaptive BN changes little."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    return model.eval()


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    train = _batches(2, 16, seed=1)
    model = _settle_bn(create_model("vgg11", width=0.25), train)
    return model, PruningSpace(model), CalibrationData(train, _batches(2, 8, seed=2))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    train = _batches(2, 16, seed=3)
    model = _settle_bn(create_model("resnet20", width=0.5), train)
    return model, PruningSpace(model), CalibrationData(train, _batches(2, 8, seed=4))


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training, getattr(m, "momentum", None))
             for m in model.modules()])


def _assert_unchanged(model, snap):
    sd, rest = snap
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in sd.items())
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks), m.training, getattr(m, "momentum", None))
            for m in model.modules()] == rest


@pytest.mark.parametrize("unit", ["features.4", "features.22"])
def test_all_ones_equals_unpruned_accuracy(vgg, unit):
    model, space, calib = vgg
    ref = evaluate(model, calib.held_out)
    ones = torch.ones(1, space.unit(unit).channels, dtype=torch.bool)
    off = NetworkFitness.from_space(space, unit, calib, adapt_bn=False).evaluate(ones)[0]
    assert off[1] == ref["top1"] and abs(float(off[0]) - ref["loss"]) < 1e-5
    on = NetworkFitness.from_space(space, unit, calib).evaluate(ones)[0]  # BN stats re-estimated on the same data
    assert abs(float(on[1]) - ref["top1"]) <= 1 / 16 + 1e-9 and abs(float(on[0]) - ref["loss"]) < 0.05


def test_resnet_all_ones_and_split(resnet):
    model, space, calib = resnet
    ref = evaluate(model, calib.held_out)
    for unit in ("layer2.1.conv1", space.units[0].name):
        s2 = NetworkFitness.from_space(space, unit, calib, adapt_bn=False)
        assert s2.split_info.startswith("cached input")
        out = s2.evaluate(torch.ones(1, space.unit(unit).channels, dtype=torch.bool))[0]
        assert out[1] == ref["top1"] and abs(float(out[0]) - ref["loss"]) < 1e-5


def test_split_equals_full_forward_with_masks(resnet):
    model, space, calib = resnet
    unit = "layer2.1.conv1"
    auto = NetworkFitness.from_space(space, unit, calib)
    full = NetworkFitness.from_space(space, unit, calib, split="full")
    assert full.split_info.startswith("full forward") and auto.split_info.startswith("cached input")
    # only BNs downstream of the consumer are re-estimated, in both modes
    names = {m: n for n, m in model.named_modules()}
    got = [names[b] for b in auto.split.bns]
    assert got[0] == "layer2.1.bn2" and "layer2.1.bn1" not in got and "bn1" not in got
    assert set(got) == {names[b] for b in full.split.bns}
    masks = torch.rand(4, space.unit(unit).channels, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.allclose(auto.evaluate(masks), full.evaluate(masks), rtol=1e-4, atol=1e-5)


def test_soft_mask_equals_physical_pruning(vgg):
    """Masking the consumers' inputs computes what the pruned network computes (adaptive BN off)."""
    model, space, calib = vgg
    unit = "features.8"
    keep = torch.rand(space.unit(unit).channels, generator=torch.Generator().manual_seed(5)) < 0.5
    pruned = space.apply({unit: keep.numpy()}, model=copy.deepcopy(model)).eval()
    x = calib.held_out[0][0]
    with torch.no_grad(), mask_consumers(consumers_of(space, unit), keep):
        soft = model(x)
    with torch.no_grad():
        assert torch.allclose(soft, pruned(x), rtol=1e-4, atol=1e-5)


def test_cache_and_budget(vgg):
    model, space, calib = vgg
    s2 = NetworkFitness.from_space(space, "features.8", calib)
    n = space.unit("features.8").channels
    masks = torch.rand(3, n, generator=torch.Generator().manual_seed(1)) < 0.5
    a = s2.evaluate(masks)
    assert s2.evaluations == 3 and s2.cache_hits == 0
    b = s2.evaluate(torch.cat([masks, masks[:1]]))
    assert torch.equal(a, b[:3]) and torch.equal(b[3], a[0])
    assert s2.evaluations == 3 and s2.cache_hits == 4
    budget = s2.budget()
    assert budget["evaluations"] == 3 and budget["seconds"] > 0 and budget["bn_reestimated"] == 5


def test_adaptive_bn_matters_and_is_undone(vgg):
    model, space, calib = vgg
    unit = "features.4"
    keep = torch.zeros(1, space.unit(unit).channels, dtype=torch.bool)
    keep[0, :4] = True
    snap = _snapshot(model)
    on = NetworkFitness.from_space(space, unit, calib).evaluate(keep)
    off = NetworkFitness.from_space(space, unit, calib, adapt_bn=False).evaluate(keep)
    assert not torch.allclose(on, off)  # heavy pruning shifts downstream statistics
    _assert_unchanged(model, snap)


def test_stage2_never_mutates_the_model(resnet):
    model, space, calib = resnet
    model.train()  # also restores a training-mode model
    snap = _snapshot(model)
    for unit in ("layer1.0.conv1", space.units[0].name):
        s2 = NetworkFitness.from_space(space, unit, calib)
        s2.evaluate(torch.rand(3, space.unit(unit).channels) < 0.5)
    _assert_unchanged(model, snap)
    model.eval()


def test_untraceable_model_falls_back_to_full_forward():
    class Dyn(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.b, self.bn_b = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            h = torch.relu(self.bn_a(self.a(x)))
            if h.sum() > -1e9:  # data-dependent control flow: torch.fx cannot trace it
                h = torch.relu(self.bn_b(self.b(h)))
            return self.fc(h.mean((2, 3)))

    net = Dyn().eval()
    s = split_model(net, [net.b], torch.randn(2, 3, 32, 32))
    assert s.info.startswith("full forward (torch.fx") and s.bns == [net.bn_b]
    s2 = NetworkFitness(net, [(net.b, list(range(8)), net.bn_b)], _batches(1), _batches(1, seed=9))
    assert s2.evaluate(torch.ones(2, 8, dtype=torch.bool)).shape == (2, 2)


def test_stage2_bad_input(vgg):
    model, space, calib = vgg
    with pytest.raises(EvopruneError) as e:
        NetworkFitness.from_space(space, "features.4", CalibrationData(calib.train, []))
    assert "held-out" in str(e.value)
    cons = consumers_of(space, "features.4")
    with pytest.raises(EvopruneError) as e:  # labels missing
        NetworkFitness(model, cons, calib.train, [x for x, _ in calib.held_out])
    assert "labels" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(EvopruneError) as e:  # wrong sample shape
        NetworkFitness(model, cons, calib.train, [(torch.randn(4, 3, 16, 16), torch.zeros(4, dtype=torch.long))])
    assert "sample shape" in str(e.value)
    s2 = NetworkFitness(model, cons, calib.train, calib.held_out)
    with pytest.raises(EvopruneError) as e:
        s2.evaluate(torch.ones(2, 33, dtype=torch.bool))
    assert "[P, 32]" in str(e.value)
    bad = [(x, torch.full_like(y, 12)) for x, y in calib.held_out]
    with pytest.raises(EvopruneError) as e:
        NetworkFitness(model, cons, calib.train, bad).evaluate(torch.ones(1, 32, dtype=torch.bool))
    assert "label 12" in str(e.value)


def test_calibration_data_comes_from_the_training_split():
    from evoprune.data import load_dataset, make_loaders

    data = load_dataset("mini-cifar10")
    loaders = make_loaders(data, batch_size=32, seed=0)
    calib = CalibrationData.from_loaders(loaders, train_batches=2, held_out_batches=1, batch_size=32)
    assert len(calib.train) == 2 and len(calib.held_out) == 1
    assert calib.train[0][0].shape == (32, 3, 32, 32) and calib.held_out[0][1].dtype == torch.long
    # held-out images: a random (not dataset-ordered) sample of the calibration split, never the test set
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    pool = ((data.x_train[loaders.calib_idx].float().div(255) - mean) / std).flatten(1)
    x, y = calib.held_out[0]
    dist = torch.cdist(x.flatten(1), pool, compute_mode="donot_use_mm_for_euclid_dist")
    assert float(dist.min(1).values.max()) < 1e-3
    assert torch.equal(y, data.y_train[loaders.calib_idx][dist.argmin(1)])
    assert not torch.equal(dist.argmin(1), torch.arange(32))
    with pytest.raises(EvopruneError):
        CalibrationData.from_loaders(loaders, train_batches=0)


def test_per_batch_details_add_up(vgg):
    model, space, calib = vgg
    s2 = NetworkFitness.from_space(space, "features.8", calib)
    masks = torch.rand(3, 64, generator=torch.Generator().manual_seed(2)) < 0.5
    per = s2.per_batch(masks)
    assert per.shape == (3, len(calib.held_out), 3)
    tot = per.sum(1)
    assert torch.allclose(s2.evaluate(masks), torch.stack([tot[:, 0] / tot[:, 2], tot[:, 1] / tot[:, 2]], 1))


def test_out_of_memory_halves_the_batches_and_says_so(vgg):
    model, space, calib = vgg
    masks = torch.rand(3, space.unit("features.4").channels, generator=torch.Generator().manual_seed(0)) < 0.6
    ref = NetworkFitness.from_space(space, "features.4", calib).evaluate(masks)
    ev = NetworkFitness.from_space(space, "features.4", calib)
    tail = ev.split.tail
    calls = {"oom": 0}

    def tight(x):  # a device that cannot hold more than 4 images at a time
        if x.shape[0] > 4:
            calls["oom"] += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return tail(x)

    ev.split.tail = tight
    with pytest.warns(RuntimeWarning, match="ran out of memory with batches of 16; retrying with batches of 8"):
        got = ev.evaluate(masks)
    assert ev.oom_retries >= 1 and ev.batch_size == 4 and ev.budget()["oom_retries"] == ev.oom_retries
    # the same held-out images: accuracy identical, loss equal up to the BN statistics of smaller batches
    assert torch.equal(got[:, 1], ref[:, 1]) or torch.allclose(got[:, 1], ref[:, 1], atol=1 / 16)
    assert torch.allclose(got[:, 0], ref[:, 0], rtol=0.05, atol=0.05)

    def never(x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    ev2 = NetworkFitness.from_space(space, "features.4", calib)
    ev2.split.tail = never
    with pytest.warns(RuntimeWarning), pytest.raises(EvopruneError, match="even with batches of one image"):
        ev2.evaluate(masks[:1])
    ev3 = NetworkFitness.from_space(space, "features.4", calib)
    ev3.split.tail = lambda x: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not swallowed
        ev3.evaluate(masks[:1])
