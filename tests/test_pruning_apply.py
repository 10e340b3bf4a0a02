"""apply / soft_apply / shrink_to on every zoo model and seven torchvision families.

For each model: the all-ones mask is the identity; a random mask keeping ~50 % of each unit gives a model that runs,
whose MACs (FlopCounterMode) and parameter count equal the cost model's, which soft_apply reproduces, and whose
checkpoint reloads (through ``shrink_to``) to identical outputs.
"""
import contextlib
import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from families import calibrate  # noqa: E402  (one implementation, shared with the benchmark)

from evoprune.errors import EvopruneError  # noqa: E402
from evoprune.models import create_model
from evoprune.models.checkpoint import load_model, save_checkpoint
from evoprune.pruning import (CostModel, PruningSpace, apply, flop_counter_macs, masks_to_pruned, model_params,
                              shrink_to, soft_apply)


@contextlib.contextmanager
def skip_weight_init():
    """Reloading a checkpoint overwrites every weight: skip the random init of the rebuilt zoo model (torchvision's
    VGG-11 spends seconds initialising its 100M-weight classifier)."""
    names = ["kaiming_uniform_", "kaiming_normal_", "normal_", "uniform_", "constant_", "zeros_", "ones_",
             "xavier_uniform_", "trunc_normal_"]
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, lambda t, *a, **k: t)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(nn.init, n, f)


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> None:
    scale = max(1.0, float(b.abs().max()))
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= rtol * scale, float((a - b).abs().max())


CASES = [
    ("vgg11", {"width": 0.25}, 32), ("vgg13", {"width": 0.25}, 32), ("vgg16", {"width": 0.25}, 32),
    ("vgg19", {"width": 0.125}, 32), ("resnet20", {"width": 0.5}, 32), ("resnet32", {"width": 0.5}, 32),
    ("resnet56", {"width": 0.5}, 32), ("resnet110", {"width": 0.25}, 32),
    ("torchvision:resnet18", {}, 32), ("torchvision:vgg11_bn", {}, 32),
    ("torchvision:mobilenet_v2", {}, 64),        # depthwise + inverted residuals
    ("torchvision:regnet_x_400mf", {}, 64),      # grouped convs
    ("torchvision:densenet121", {}, 64),         # concatenation
    ("torchvision:efficientnet_b0", {}, 64),     # depthwise + squeeze-excitation gating
    ("torchvision:squeezenet1_0", {}, 64),       # concatenation, conv classifier
    ("torchvision:shufflenet_v2_x0_5", {}, 64),  # split + channel shuffle: only some units prunable
]


@pytest.mark.parametrize("arch,kw,size", CASES, ids=[c[0].replace("torchvision:", "tv-") for c in CASES])
def test_model_matrix(arch, kw, size, tmp_path):
    torch.manual_seed(0)
    model = calibrate(create_model(arch, num_classes=10, **kw), size)
    space = PruningSpace(model, (1, 3, size, size), warn=False)
    cost = CostModel(space)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y = model(x)

        # the all-ones mask is the identity, physically and softly
        full = space.full_masks()
        assert torch.equal(apply(model, full, space)(x), y)
        with soft_apply(model, full, space):
            assert torch.equal(model(x), y)
        assert cost.macs(full) == cost.base_macs == flop_counter_macs(model, space.input_shape)
        assert cost.params(full) == cost.base_params == model_params(model)

        # ~50 % of every unit
        masks = space.random_masks(np.random.default_rng(2), keep_ratio=0.5)
        pruned = apply(model, masks, space)
        yp = pruned(x)
        assert torch.isfinite(yp).all() and not torch.allclose(yp, y)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
        assert model_params(pruned) < model_params(model)

        with soft_apply(model, masks, space) as handle:
            ys = model(x)
        assert not handle.active and torch.equal(model(x), y)  # hooks removed
        assert_close(ys, yp)

        # exact cost model
        assert cost.macs(masks) == flop_counter_macs(pruned, space.input_shape)
        assert cost.params(masks) == model_params(pruned)
        assert cost.macs_batch(space.keep_counts(masks)[None])[0] == cost.macs(masks)

        # checkpoint: saved pruned model reloads (zoo model + shrink_to) to identical outputs
        path = tmp_path / "pruned.pt"
        save_checkpoint(str(path), pruned, meta={"arch": arch, "model_kwargs": {"num_classes": 10, **kw},
                                                 "pruned": masks_to_pruned(masks), "image_size": size})
        with skip_weight_init():
            loaded, meta = load_model(str(path))
        assert torch.equal(loaded.eval()(x), yp)


@pytest.mark.parametrize("arch,size", [("resnet20", 32), ("torchvision:mobilenet_v2", 64)])
def test_soft_equals_apply_in_train_mode(arch, size):
    """BatchNorm batch statistics (adaptive BN, stage 2) also agree: kept channels see the same values."""
    model = calibrate(create_model(arch, num_classes=10, **({"width": 0.5} if arch == "resnet20" else {})), size)
    space = PruningSpace(model, (1, 3, size, size))
    masks = space.random_masks(3, 0.4)
    hard = apply(model, masks, space).train()
    soft = copy.deepcopy(model).train()
    for m in (hard, soft):
        for d in m.modules():
            if isinstance(d, nn.Dropout):
                d.eval()  # random masks would differ
    x = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), soft_apply(soft, masks, space):
        ys = soft(x)
        yh = hard(x)
    assert_close(ys, yh)
    # every BatchNorm's running statistics moved identically on the channels that remain
    hard_mods = dict(hard.named_modules())
    checked = 0
    for name, bn in soft.named_modules():
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        keep = np.ones(bn.num_features, dtype=bool)
        for u in space.units:
            for mem in u.members:
                if mem.name == name:
                    keep[mem.index[~masks[u.name][mem.channel]]] = False
        assert torch.allclose(bn.running_mean[torch.from_numpy(keep)], hard_mods[name].running_mean, atol=1e-5)
        assert torch.allclose(bn.running_var[torch.from_numpy(keep)], hard_mods[name].running_var, rtol=1e-4)
        checked += 1
    assert checked > 10


def test_apply_options_and_errors():
    model = calibrate(create_model("vgg11", width=0.25), 32)
    model.features[0].weight.requires_grad_(False)
    space = PruningSpace(model)
    masks = {"features.0": [0, 1, 2], "features.4": np.arange(32) % 2 == 0}
    # the space is built on the fly when not given
    auto = apply(model, masks)
    assert auto.features[0].out_channels == 3 and auto.features[4].in_channels == 3
    assert auto.features[4].out_channels == 16 and auto.features[8].in_channels == 16
    assert not auto.features[0].weight.requires_grad and auto.features[4].weight.requires_grad  # frozen stays frozen
    with pytest.raises(EvopruneError, match="model does not match the pruning space: unit 'features.0' expects"):
        apply(auto, masks, space)  # a pruned model with the unpruned model's space
    with pytest.raises(EvopruneError, match="keeps no channel"):
        apply(model, {"features.0": np.zeros(16, dtype=bool)}, space)
    with pytest.raises(EvopruneError, match="unknown pruning unit 'features.2'"):
        soft_apply(model, {"features.2": [0]}, space)
    # in place
    same = copy.deepcopy(model)
    assert apply(same, masks, space, inplace=True) is same and same.features[0].out_channels == 3


def test_deepcopy_with_active_soft_masks_is_pruned_cleanly():
    model = calibrate(create_model("resnet20", width=0.25), 32)
    space = PruningSpace(model)
    masks = space.random_masks(0, 0.5)
    x = torch.randn(2, 3, 32, 32)
    with soft_apply(model, masks, space), torch.no_grad():
        pruned = apply(model, masks, space)  # deepcopy copies the hooks: apply must drop them
        ys = model(x)
    with torch.no_grad():
        assert_close(pruned(x), ys)


def test_masks_to_pruned_and_shrink_to():
    model = create_model("resnet20", width=0.25)
    space = PruningSpace(model)
    u = space.units[0]
    mask = np.zeros(u.channels, dtype=bool)
    mask[[1, 3]] = True
    assert masks_to_pruned({u.name: mask}) == {u.name: [1, 3]}
    assert masks_to_pruned({u.name: torch.from_numpy(mask)}) == {u.name: [1, 3]}
    assert masks_to_pruned({u.name: np.array([3, 1])}) == {u.name: [1, 3]}
    assert masks_to_pruned({u.name: [3, 1]}, space) == {u.name: [1, 3]}
    with pytest.raises(EvopruneError, match="bool mask or kept indices"):
        masks_to_pruned({u.name: [0.5]})
    small = shrink_to(create_model("resnet20", width=0.25), {u.name: [1, 3]})
    assert small.conv1.out_channels == 2 and small.layer1[0].conv1.in_channels == 2
    with pytest.raises(EvopruneError, match="checkpoint records pruned unit 'nope'"):
        shrink_to(create_model("resnet20", width=0.25), {"nope": [0]})
