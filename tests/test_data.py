import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from evoprune.data import BatchLoader, load_dataset, make_loaders, split_calibration
from evoprune.errors import EvopruneError


def _make_tree(root, mode="L", size=(20, 20), n=4, classes=("a", "b")):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                shape = size[::-1] if mode == "L" else size[::-1] + (3,)
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(d / f"{i}.png")


def test_bundled_mini_cifar10():
    d = load_dataset("mini-cifar10")
    assert d.x_train.shape == (2000, 3, 32, 32) and d.x_test.shape == (1000, 3, 32, 32)
    assert d.x_train.dtype == torch.uint8
    assert torch.bincount(d.y_train).tolist() == [200] * 10


def test_imagefolder_grayscale_png(tmp_path):
    _make_tree(tmp_path, mode="L", size=(20, 24))
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert d.x_train.shape == (8, 1, 20, 20)  # square: shorter side kept, centre-cropped (never stretched)
    assert d.in_channels == 1 and d.classes == ["a", "b"]


def test_imagefolder_from_tar_with_val(tmp_path):
    src = tmp_path / "src"
    _make_tree(src, mode="RGB", size=(16, 16))
    (src / "test").rename(src / "val")
    tar = tmp_path / "set.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(src, arcname="myset")
    d = load_dataset(f"imagefolder:{tar}")
    assert d.x_test.shape == (8, 3, 16, 16)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(EvopruneError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvopruneError, match="needs train"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    bad = tmp_path / "bad"
    _make_tree(bad)
    (bad / "train" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(EvopruneError, match="not an image file"):
        load_dataset(f"imagefolder:{bad}")


def test_missing_torchvision_format_names_path(tmp_path):
    with pytest.raises(EvopruneError, match="cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(EvopruneError, match="needs --data-dir"):
        load_dataset("cifar100", None)
    with pytest.raises(EvopruneError, match="unknown dataset"):
        load_dataset("imagenet-22k")


def test_calibration_split_disjoint_and_fixed():
    tr, ca = split_calibration(100, 10, seed=0)
    assert len(set(tr.tolist()) & set(ca.tolist())) == 0 and len(tr) + len(ca) == 100
    tr2, ca2 = split_calibration(100, 10, seed=0)
    assert torch.equal(ca, ca2)


def test_loader_deterministic_and_resumable():
    d = load_dataset("mini-cifar10")
    mk = lambda: BatchLoader(d.x_train[:300], d.y_train[:300], 64, d.mean, d.std, shuffle=True, augment=True, seed=3)
    a, b = mk(), mk()
    a.set_epoch(2)
    full = list(a)
    b.set_epoch(2, start_batch=2)
    part = list(b)
    assert len(part) == len(full) - 2
    for (x1, y1), (x2, y2) in zip(full[2:], part):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_make_loaders_holds_out_calibration():
    d = load_dataset("mini-cifar10")
    L = make_loaders(d, batch_size=50, calib_size=200)
    assert len(L.train.x) == 1800 and len(L.calib.x) == 200
    x, y = next(iter(L.train))
    assert x.dtype == torch.float32 and x.shape == (50, 3, 32, 32)
