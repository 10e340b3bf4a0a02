"""Datasets of any size and image size: the streaming loader, --image-size, small images, pretrained state dicts."""
from __future__ import annotations

import os
import signal
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evoprune.cli import main
from evoprune.data import DataOptions, load_dataset, make_loaders
from evoprune.errors import EvopruneError
from evoprune.streaming import DataLoaderError, FolderData, StreamLoader


def make_folder(root: Path, size=(16, 16), n_train=12, n_test=4, classes=("a", "b"), mode="RGB", seed=0,
                mixed=False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (size[0] + 4 * (i % 3), size[1]) if mixed else size
                shape = (h, w) if mode == "L" else (h, w, 3)
                a = rng.integers(0, 128 + 127 * ci, shape, dtype=np.uint8)
                Image.fromarray(a, mode).save(d / f"{i:03d}.png")
    return root


def one_line_error(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.stderr
    return lines[0]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --------------------------------------------------------------------------------------------- the loaders agree
def test_stream_batches_equal_memory_batches(tmp_path):
    root = make_folder(tmp_path / "f")
    mem = load_dataset(f"imagefolder:{root}", mode="memory")
    st = load_dataset(f"imagefolder:{root}", mode="stream")
    assert isinstance(st, FolderData) and st.classes == mem.classes and st.image_size == mem.image_size
    assert st.n_train == mem.n_train and st.in_channels == 3
    # the same files in the same order, the same normalisation -> the same evaluation batches
    loader = StreamLoader(st.test_files, 5, mem.mean, mem.std, st.image_size, 3, workers=0)
    got = torch.cat([x for x, _ in loader])
    want = torch.cat([x for x, _ in make_loaders(mem, eval_batch_size=5).test])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(loader.labels, mem.y_test)


def test_stream_order_and_augmentation_do_not_depend_on_workers_and_resume(tmp_path):
    st = load_dataset(f"imagefolder:{make_folder(tmp_path / 'f')}", mode="stream")
    kw = dict(mean=st.mean, std=st.std, image_size=16, in_channels=3, shuffle=True, augment=True, seed=3)
    a = StreamLoader(st.train_files, 4, workers=0, **kw)
    b = StreamLoader(st.train_files, 4, workers=2, **kw)
    a.set_epoch(1)
    b.set_epoch(1)
    ba, bb = list(a), list(b)
    assert len(ba) == len(a) == 6
    for (xa, ya), (xb, yb) in zip(ba, bb):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.set_epoch(1, start_batch=4)  # a resumed epoch: exactly the batches still to do
    rest = list(a)
    assert len(rest) == 2 and all(torch.equal(x, y[0]) for (x, _), y in zip(rest, ba[4:]))
    a.set_epoch(2)
    assert not torch.equal(next(iter(a))[0], ba[0][0])  # another epoch, another order


def test_auto_mode_streams_above_the_memory_budget(tmp_path):
    root = make_folder(tmp_path / "f")
    assert isinstance(load_dataset(f"imagefolder:{root}", memory_budget="1KB"), FolderData)
    assert not getattr(load_dataset(f"imagefolder:{root}", memory_budget="1GB"), "streaming")


def test_stream_loaders_feed_calibration_and_training(tmp_path):
    from evoprune.fitness.calibration import CalibrationData
    from evoprune.models import create_model
    from evoprune.train import TrainConfig, fit

    st = load_dataset(f"imagefolder:{make_folder(tmp_path / 'f', n_train=20)}", mode="stream")
    loaders = make_loaders(st, batch_size=8, calib_size=8, workers=0)
    assert loaders.train.n_images == 32 and loaders.calib.n_images == 8
    assert [tuple(x.shape) for x, _ in loaders.calib_batches(2, batch_size=4)] == [(4, 3, 16, 16)] * 2
    assert len(loaders.train_batches(2, batch_size=4)) == 2
    cal = CalibrationData.from_loaders(loaders, 2, 1, batch_size=4)
    assert len(cal.train) == 2 and len(cal.held_out) == 1 and cal.held_out[0][0].shape == (4, 3, 16, 16)
    model = create_model("vgg11", num_classes=2, width=0.125, image_size=16)
    hist = fit(model, loaders, TrainConfig(epochs=1, lr=0.01), progress=False)
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"])


# ---------------------------------------------------------------------------------------------- faults mid-epoch
def test_corrupt_image_met_mid_epoch_is_one_line_naming_the_file(tmp_path):
    root = make_folder(tmp_path / "f")
    st = load_dataset(f"imagefolder:{root}", mode="stream")
    bad = Path(st.train_files[7][0])
    bad.write_bytes(b"not a png at all")
    loader = StreamLoader(st.train_files, 4, st.mean, st.std, 16, 3, workers=2)
    with pytest.raises(DataLoaderError) as e:
        list(loader)
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg and "not a readable image" in msg


def _tiny_training(tmp_path):
    from evoprune.models import create_model

    torch.manual_seed(0)
    st = load_dataset(f"imagefolder:{make_folder(tmp_path / 'f', n_train=24)}", mode="stream")
    loaders = make_loaders(st, batch_size=4, calib_size=4, workers=2)
    return create_model("vgg11", num_classes=2, width=0.125, image_size=16), loaders


def test_worker_killed_mid_epoch_stops_in_one_line_and_resumes_identically(tmp_path, monkeypatch):
    from evoprune import streaming
    from evoprune.train import TrainConfig, fit

    cfg = TrainConfig(epochs=2, lr=0.02)
    ref_model, ref_loaders = _tiny_training(tmp_path / "ref")
    fit(ref_model, ref_loaders, cfg, progress=False, evaluate_each_epoch=False)

    flag = tmp_path / "killed"
    real = streaming._Files.__getitem__

    def dying(self, key):  # the worker processes are forked: they run this copy
        if torch.utils.data.get_worker_info() is not None and key[0] == 5 and not flag.exists():
            flag.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, key)

    monkeypatch.setattr(streaming._Files, "__getitem__", dying)
    model, loaders = _tiny_training(tmp_path / "run")
    state = tmp_path / "state.pt"
    with pytest.raises(DataLoaderError, match="worker process died.*--resume"):
        fit(model, loaders, cfg, state_path=str(state), progress=False, evaluate_each_epoch=False)
    assert flag.exists() and state.exists()
    model2, loaders2 = _tiny_training(tmp_path / "run2")
    fit(model2, loaders2, cfg, state_path=str(state), progress=False, evaluate_each_epoch=False)
    for (k, a), b in zip(ref_model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("exc", [EOFError(), ConnectionResetError("reset by peer"),
                                 RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed.")])
def test_worker_dying_while_its_batch_is_fetched_is_the_same_one_line_error(tmp_path, monkeypatch, exc):
    """The race the kill test can hit under load: the dead worker's queued batch fails to arrive (EOFError or a
    reset connection from its shared fd) before torch reports the death; either way one DataLoaderError, and the
    loader's workers are shut down (unregistered), so torch's SIGCHLD handler raises nothing later."""
    from evoprune import streaming

    stopped = []

    class FakeIter:
        def __next__(self):
            raise exc

        def _shutdown_workers(self):
            stopped.append(True)

    class FakeLoader:
        def __init__(self, *a, **k):
            pass

        def __iter__(self):
            return FakeIter()

    _, loaders = _tiny_training(tmp_path)
    monkeypatch.setattr(streaming.torch.utils.data, "DataLoader", FakeLoader)
    with pytest.raises(DataLoaderError, match="worker process died.*--resume"):
        next(iter(loaders.train))
    assert stopped == [True]
    monkeypatch.setattr(FakeIter, "__next__", lambda self: (_ for _ in ()).throw(RuntimeError("CUDA out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):  # other errors are not called a dead worker
        next(iter(loaders.train))


# --------------------------------------------------------------------------------------------- any image size
def test_28px_grayscale_folder_trains_vgg11_and_resnet20_and_prunes(tmp_path):
    root = make_folder(tmp_path / "mnist", size=(28, 28), mode="L", n_train=16)
    for model in ("vgg11", "resnet20"):
        out = tmp_path / f"train-{model}"
        r = invoke("--quiet", "train", "--model", model, "--width", "0.125", "--epochs", "1", "--batch-size", "8",
                   "--data", f"imagefolder:{root}", "--out", out)
        assert r.exit_code == 0, r.output
        ck = torch.load(out / "model.pt", weights_only=True)
        assert ck["meta"]["in_channels"] == 1 and ck["meta"]["image_size"] == 28
    assert ck["meta"]["arch"] == "resnet20"
    vgg = torch.load(tmp_path / "train-vgg11" / "model.pt", weights_only=True)
    assert vgg["meta"]["model_kwargs"]["image_size"] == 28  # the skipped pooling is rebuilt from the record
    r = invoke("--quiet", "prune", "--checkpoint", tmp_path / "train-vgg11" / "model.pt", "--data",
               f"imagefolder:{root}", "--selector", "l1", "--finetune-steps", "1", "--finetune-epochs", "1",
               "--batch-size", "8", "--out", tmp_path / "prune")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "prune" / "model.pt").exists()
    # the same from disk: sensitivity, selection, adaptive BN and fine-tuning through the streaming loaders
    r = invoke("--quiet", "prune", "--checkpoint", tmp_path / "train-resnet20" / "model.pt", "--data",
               f"imagefolder:{root}", "--data-mode", "stream", "--data-workers", "2", "--selector", "l1",
               "--finetune-steps", "1", "--finetune-epochs", "1", "--batch-size", "8", "--out", tmp_path / "sprune")
    assert r.exit_code == 0, r.output
    assert torch.load(tmp_path / "sprune" / "model.pt", weights_only=True)["meta"]["pruned"]


def test_image_size_resizes_on_both_paths(tmp_path):
    root = make_folder(tmp_path / "f", size=(20, 20), mixed=True)
    with pytest.warns(UserWarning, match="sizes"):
        mem = load_dataset(f"imagefolder:{root}", mode="memory")
    assert tuple(mem.x_train.shape[-2:]) == (20, 20)  # shorter side, centre crop: no distortion
    mem = load_dataset(f"imagefolder:{root}", mode="memory", image_size=12)
    st = load_dataset(f"imagefolder:{root}", mode="stream", image_size=12)
    assert tuple(mem.x_train.shape[-2:]) == (12, 12) and st.image_size == 12
    x, _ = next(iter(make_loaders(st, batch_size=4, workers=0).train))
    assert tuple(x.shape) == (4, 3, 12, 12)
    small = load_dataset("mini-cifar10", image_size=16)
    assert tuple(small.x_train.shape[-2:]) == (16, 16)


def test_pretrained_torchvision_state_dict_with_num_classes(tmp_path):
    import torchvision

    root = make_folder(tmp_path / "f", size=(32, 32))
    sd = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), sd)
    r = invoke("evaluate", "--model", "torchvision:resnet18", "--checkpoint", sd, "--data", f"imagefolder:{root}")
    assert "--num-classes 2" in one_line_error(r)
    r = invoke("--json", "evaluate", "--model", "torchvision:resnet18", "--checkpoint", sd, "--data",
               f"imagefolder:{root}", "--num-classes", "2")
    assert r.exit_code == 0, r.output
    r = invoke("--quiet", "finetune", "--model", "torchvision:resnet18", "--checkpoint", sd, "--data",
               f"imagefolder:{root}", "--num-classes", "2", "--epochs", "1", "--batch-size", "8",
               "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    ck = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)
    assert ck["meta"]["model_kwargs"]["num_classes"] == 2 and ck["state_dict"]["fc.weight"].shape[0] == 2


# ------------------------------------------------------------------------------------------------ bad input
def train_cmd(tmp_path, *args):
    return invoke("train", "--model", "vgg11", "--width", "0.125", "--epochs", "1", "--out", tmp_path / "out", *args)


def test_bad_data_input_is_one_line(tmp_path):
    root = make_folder(tmp_path / "f")
    assert "at least 8" in one_line_error(train_cmd(tmp_path, "--data", f"imagefolder:{root}",
                                                  "--image-size", "0"))
    assert "--data-mode" in one_line_error(train_cmd(tmp_path, "--data-mode", "fast"))
    assert "--data-memory" in one_line_error(train_cmd(tmp_path, "--data", f"imagefolder:{root}",
                                                    "--data-memory", "lots"))
    assert "--data-memory" in one_line_error(train_cmd(tmp_path, "--data", f"imagefolder:{root}",
                                                    "--data-memory", "nan"))
    # class folders that differ between train/ and test/
    odd = make_folder(tmp_path / "odd")
    (odd / "test" / "b").rename(odd / "test" / "c")
    assert "differ" in one_line_error(train_cmd(tmp_path, "--data", f"imagefolder:{odd}"))
    # a corrupt image, in memory mode: the message names the file
    bad = make_folder(tmp_path / "bad")
    (bad / "train" / "a" / "003.png").write_bytes(b"\x89PNG broken")
    assert "003.png" in one_line_error(train_cmd(tmp_path, "--data", f"imagefolder:{bad}",
                                              "--data-mode", "memory"))
    assert not (tmp_path / "out").exists()  # nothing written for a refused command


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_truncated_archive_is_one_line_and_leaves_nothing(tmp_path, mode, monkeypatch):
    monkeypatch.setenv("EVOPRUNE_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "f", n_train=30)
    arc = tmp_path / "data.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        t.add(root / "train", "train")
        t.add(root / "test", "test")
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    msg = one_line_error(train_cmd(tmp_path, "--data", f"imagefolder:{arc}", "--data-mode", mode))
    assert "cannot be read" in msg and str(arc) in msg
    extracted = tmp_path / "cache" / "extracted"  # no half-extracted copy is left to be used later
    assert not extracted.exists() or not list(extracted.iterdir())


def test_tar_archive_streams_after_one_extraction(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOPRUNE_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "f")
    arc = tmp_path / "data.tar"
    with tarfile.open(arc, "w") as t:
        t.add(root, "wrapped")  # one wrapper folder, as archives often have
    st = load_dataset(f"imagefolder:{arc}", mode="stream")
    assert st.n_train == 24 and Path(st.train_files[0][0]).exists()
    assert len(list((tmp_path / "cache" / "extracted").iterdir())) == 1


def test_state_dict_that_does_not_fit_the_model_is_one_line(tmp_path):
    from evoprune.models import create_model

    sd = tmp_path / "w.pth"
    torch.save(create_model("vgg11", width=0.25).state_dict(), sd)
    msg = one_line_error(invoke("evaluate", "--model", "vgg13", "--checkpoint", sd))
    assert "does not fit" in msg


def test_stream_mode_refuses_non_folder_datasets():
    with pytest.raises(EvopruneError, match="image folders"):
        load_dataset("mini-cifar10", mode="stream")
    assert DataOptions().mode == "auto"
