import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.models import count_params, create_model
from evoprune.registry import MODELS
from evoprune.session import count_macs

ZOO = ["vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet32", "resnet56", "resnet110"]


@pytest.mark.parametrize("name", ZOO + ["torchvision:resnet18", "torchvision:mobilenet_v2"])
@pytest.mark.parametrize("size,chans", [(32, 3), (64, 1)])
def test_zoo_forward(name, size, chans):
    width = 0.25 if name.startswith(("vgg", "resnet1")) else 1.0
    m = create_model(name, num_classes=7, in_channels=chans, width=width).eval()
    with torch.no_grad():
        out = m(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7)


def test_vgg16_size_matches_literature():
    m = create_model("vgg16")
    assert abs(count_params(m) / 1e6 - 14.73) <= 0.05
    assert abs(count_macs(m, 3, 32) / 1e6 - 313) <= 2


def test_resnet56_size_matches_literature():
    assert abs(count_params(create_model("resnet56")) / 1e6 - 0.85) <= 0.01


def test_registry_lists_zoo():
    for name in ZOO:
        assert name in MODELS


def test_unknown_model_is_clear_error():
    with pytest.raises(EvopruneError, match="unknown model 'vgg17'.*did you mean"):
        create_model("vgg17")


def test_user_factory_from_file(tmp_path):
    f = tmp_path / "mymodel.py"
    f.write_text("import torch.nn as nn\n"
                 "def make(num_classes=10, in_channels=3):\n"
                 "    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
                 " nn.Linear(4, num_classes))\n"
                 "def broken(num_classes=10, in_channels=3):\n    raise ValueError('nope')\n")
    m = create_model(f"{f}:make", num_classes=3)
    assert m(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(EvopruneError, match="raised ValueError: nope"):
        create_model(f"{f}:broken")
    with pytest.raises(EvopruneError, match="does not exist"):
        create_model(f"{tmp_path}/missing.py:make")
    with pytest.raises(EvopruneError, match="not found"):
        create_model(f"{f}:absent")


def test_checkpoint_of_a_module_that_reads_its_format_version_reloads(tmp_path):
    """torchvision's MNASNet checks the state dict's version metadata on load; our files keep tensors only."""
    import torch

    from evoprune.models import create_model
    from evoprune.models.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    m = create_model("torchvision:mnasnet0_5", num_classes=10).eval()
    save_checkpoint(str(tmp_path / "m.pt"), m, {"arch": "torchvision:mnasnet0_5", "model_kwargs": {"num_classes": 10}})
    again, _ = load_model(str(tmp_path / "m.pt"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), m(x))
