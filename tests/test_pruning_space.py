"""PruningSpace: units from Torch-Pruning groups, naming, coupling, exclusion, skipping, mask validation."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.models import create_model
from evoprune.pruning import PruningSpace


@pytest.fixture(scope="module")
def vgg():
    m = create_model("vgg16", width=0.25)
    return m, PruningSpace(m)


@pytest.fixture(scope="module")
def resnet():
    m = create_model("resnet20", width=0.5)
    return m, PruningSpace(m)


def test_vgg_units_in_forward_order(vgg):
    m, sp = vgg
    convs = [n for n, x in m.named_modules() if isinstance(x, nn.Conv2d)]
    assert sp.names == convs and len(sp) == 13
    assert sp.sizes == [m.get_submodule(n).out_channels for n in convs]
    u = sp.unit("features.0")
    assert u.producers == ("features.0",) and u.norms == ("features.1",) and u.depthwise == ()
    (c,) = u.consumers
    assert (c.name, c.kind, c.norm, c.in_channels) == ("features.3", "conv", "features.4", 16)
    assert np.array_equal(c.index, np.arange(16)) and np.array_equal(c.channel, np.arange(16))
    last = sp.units[-1]
    (fc,) = last.consumers
    assert (fc.name, fc.kind, fc.norm) == ("classifier", "linear", None)
    assert set(u.modules) == {"features.0", "features.1", "features.3"}
    assert sp.unit(u.name) is u and u.name in sp and sp.index("features.3") == 1


def test_resnet_residual_stage_is_one_unit(resnet):
    m, sp = resnet
    # 1 residual unit per stage + one unit per block's first conv
    assert len(sp) == 3 + 9
    stem = sp.unit("conv1")
    assert stem.producers == ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    assert stem.norms == ("bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2")
    assert [c.name for c in stem.consumers] == ["layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1",
                                                "layer2.0.conv1", "layer2.0.shortcut.0"]
    assert [c.norm for c in stem.consumers][-1] == "layer2.0.shortcut.1"
    s2 = sp.unit("layer2.0.conv2")  # the first conv of the coupled set in forward order names it
    assert "layer2.0.shortcut.0" in s2.producers
    s3 = sp.unit("layer3.0.conv2")
    assert s3.consumers[-1].name == "fc" and s3.consumers[-1].kind == "linear"
    assert np.array_equal(s3.consumers[-1].index, np.arange(32))
    block = sp.unit("layer2.1.conv1")
    assert block.producers == ("layer2.1.conv1",) and [c.name for c in block.consumers] == ["layer2.1.conv2"]
    # no conv appears as a producer of two units
    prods = [p for u in sp for p in u.producers]
    assert len(prods) == len(set(prods)) == sum(isinstance(x, nn.Conv2d) for x in m.modules())


def test_names_are_stable_and_model_untouched(resnet):
    m, sp = resnet
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sp2 = PruningSpace(m)
    assert m.training  # mode restored
    assert sp2.names == sp.names and sp2.sizes == sp.sizes
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_exclude_patterns():
    m = create_model("resnet20", width=0.25)
    sp = PruningSpace(m, exclude=["layer1.*"])
    assert "conv1" not in sp  # the stage-1 residual unit prunes layer1.*.conv2 outputs
    assert not any(n.startswith("layer1.") for n in sp.names)
    assert ("conv1", "excluded by 'layer1.*'") in sp.skipped
    sp = PruningSpace(create_model("vgg11", width=0.25), exclude="features.0")
    assert "features.0" not in sp and len(sp) == 7
    with pytest.raises(EvopruneError, match="no prunable convolution"):
        PruningSpace(create_model("vgg11", width=0.25), exclude=["*"])


def test_output_layer_is_not_a_unit():
    m = create_model("torchvision:squeezenet1_0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an output layer is expected: no warning
        sp = PruningSpace(m, (1, 3, 64, 64))
    assert "classifier.1" not in sp
    assert sp.skipped == [("classifier.1", "output layer (its channels reach the model output)")]
    # fire modules: the two expand convs are concatenated; the next squeeze reads both through index offsets
    e1, e3 = sp.unit("features.3.expand1x1"), sp.unit("features.3.expand3x3")
    (c1,), (c3,) = e1.consumers, e3.consumers
    assert c1.name == c3.name == "features.4.squeeze"
    assert np.array_equal(c1.index, np.arange(64)) and np.array_equal(c3.index, 64 + np.arange(64))


def test_depthwise_coupled_to_producer():
    sp = PruningSpace(create_model("torchvision:mobilenet_v2"), (1, 3, 64, 64))
    u = sp.unit("features.2.conv.0.0")  # expand 1x1 -> depthwise 3x3 -> project 1x1
    assert u.depthwise == ("features.2.conv.1.0",)
    assert u.norms == ("features.2.conv.0.1", "features.2.conv.1.1")
    assert [c.name for c in u.consumers] == ["features.2.conv.2"]
    assert not any(n.endswith("conv.1.0") for n in sp.names)  # depthwise convs are never roots


def test_grouped_conv_units_need_equal_blocks():
    sp = PruningSpace(create_model("torchvision:regnet_x_400mf"), (1, 3, 64, 64))
    u = next(u for u in sp if u.channel_groups > 1)
    g, n = u.channel_groups, u.channels
    assert u.min_keep == g
    good = np.zeros(n, dtype=bool)
    good[np.arange(g) * (n // g)] = True  # one per block
    assert sp.mask_for(u, good).sum() == g
    bad = np.zeros(n, dtype=bool)
    bad[:g] = True
    with pytest.raises(EvopruneError, match=f"same number of channels in each of its {g} blocks"):
        sp.validate({u.name: bad})


class _Mixer(nn.Module):
    """conv -> LayerNorm over channels (TP would prune it, evoprune does not) and a channel transpose."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 8, 1)
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = self.gn(self.b(x))
        x = self.c(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        x = self.d(x)
        return self.fc(x.mean((2, 3)))


def test_unsupported_groups_are_skipped_with_a_warning():
    with pytest.warns(UserWarning, match=r"cannot be pruned and are skipped: .*b \(touches GroupNorm"):
        sp = PruningSpace(_Mixer(), (1, 3, 8, 8))
    assert sp.names == ["a", "d"]
    reasons = dict(sp.skipped)
    assert "mixes channels" in reasons["c"] and "GroupNorm" in reasons["b"]


def test_shufflenet_never_crashes():
    m = create_model("torchvision:shufflenet_v2_x0_5")
    with pytest.warns(UserWarning, match="cannot be pruned"):
        sp = PruningSpace(m, (1, 3, 64, 64))
    assert len(sp) >= 10 and "conv1.0" in sp


def test_no_conv_model_is_an_error():
    with pytest.raises(EvopruneError, match="no prunable convolution"):
        PruningSpace(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (1, 3, 2, 2))
    with pytest.raises(EvopruneError, match="expected a torch.nn.Module"):
        PruningSpace("vgg16")
    with pytest.raises(EvopruneError, match="min_keep must be an integer >= 1"):
        PruningSpace(create_model("vgg11", width=0.25), min_keep=0)
    with pytest.raises(EvopruneError, match="fails on an input of shape"):
        PruningSpace(create_model("vgg11", width=0.25), (1, 5, 32, 32))


# ------------------------------------------------------------------------------------------------ masks
def test_mask_forms_are_equivalent(vgg):
    _, sp = vgg
    u = sp.units[0]
    idx = [0, 3, 5]
    ref = np.zeros(u.channels, dtype=bool)
    ref[idx] = True
    for form in (ref, torch.from_numpy(ref), idx, np.array(idx), torch.tensor(idx), ref.tolist()):
        full = sp.validate({u.name: form})
        assert np.array_equal(full[u.name], ref)
        assert all(full[v.name].all() for v in sp.units[1:])  # left-out units keep everything
    assert sp.keep_counts({u.name: idx}).tolist() == [3] + sp.sizes[1:]
    assert sp.keep_counts({u.name: idx}, validate=False).tolist() == [3] + sp.sizes[1:]


@pytest.mark.parametrize("value,match", [
    (np.ones(5, dtype=bool), "has length 5, expected 16"),
    (np.zeros(16, dtype=bool), "keeps no channel; keep at least 1 .an empty layer is invalid"),
    ([], "keeps no channel"),
    ([0, 16], r"must lie in \[0, 15\]"),
    ([1, 1, 2], "duplicates"),
    (np.ones(16), "boolean mask of length 16 or a list of kept channel indices, got dtype float64"),
    (np.ones((4, 4), dtype=bool), "must be 1-D"),
])
def test_bad_masks(vgg, value, match):
    _, sp = vgg
    with pytest.raises(EvopruneError, match=match):
        sp.validate({"features.0": value})


def test_unknown_unit_lists_valid_names(vgg):
    _, sp = vgg
    with pytest.raises(EvopruneError) as e:
        sp.validate({"features.1": [0]})
    msg = str(e.value)
    assert "unknown pruning unit 'features.1'" in msg and "features.0, features.3" in msg and "\n" not in msg
    with pytest.raises(EvopruneError, match="masks must be a dict"):
        sp.validate([np.ones(16, dtype=bool)])


def test_min_keep(vgg):
    m, _ = vgg
    sp = PruningSpace(m, min_keep=4)
    assert all(u.min_keep == 4 for u in sp)
    with pytest.raises(EvopruneError, match="keeps only 3 channel.s.; keep at least 4"):
        sp.validate({"features.0": [0, 1, 2]})
    r = sp.random_masks(0, keep_ratio=0.01)
    assert all(v.sum() == 4 for v in r.values())


def test_space_pickles(resnet):
    import pickle

    _, sp = resnet
    sp2 = pickle.loads(pickle.dumps(sp))
    assert sp2.names == sp.names and np.array_equal(sp2.units[0].consumers[0].index, sp.units[0].consumers[0].index)
