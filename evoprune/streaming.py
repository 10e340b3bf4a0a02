"""Image folders read from disk batch by batch: torchvision-style decoding in DataLoader worker processes.

The in-memory path (:mod:`evoprune.data`) decodes a whole dataset once into uint8 tensors: the fastest for CIFAR-size
sets, impossible for ImageNet-size ones. Here nothing is decoded up front: a :class:`StreamLoader` decodes and
augments each image in a worker process and yields the same ``(x, y)`` float batches as a
:class:`~evoprune.data.BatchLoader`, with the same interface (``set_epoch``, ``with_options``, ``n_images``), so
calibration batches, adaptive BN, stage-1 statistics, sensitivity and fine-tuning run unchanged on either path.

Determinism: epoch ``e``'s order and every image's augmentation draw are functions of ``(seed, e)`` alone -- each
image carries its own seed into the worker -- so the batches do not depend on the number of workers, and a run
resumed mid-epoch (``start_batch``) sees exactly the batches an uninterrupted run would.

Transforms (what users of torchvision expect): images larger than :data:`SMALL_IMAGE` pixels get
``RandomResizedCrop(size)`` + horizontal flip for training and ``Resize(size / 0.875)`` + ``CenterCrop(size)`` for
evaluation (the ImageNet recipe); small images get the CIFAR recipe of the in-memory path (4-pixel padded random
crop + flip; evaluation resizes the shorter side and centre-crops).
"""
from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .data import EpochLoader
from .errors import EvopruneError

SMALL_IMAGE = 64  # up to this size the CIFAR recipe; above it the ImageNet one
EVAL_CROP = 0.875  # ImageNet evaluation: resize to size / 0.875, centre-crop size
STATS_SAMPLE = 512  # training images decoded to estimate the normalisation
IN_PROCESS_BELOW = 4  # iterations of fewer batches decode in this process


class DataLoaderError(EvopruneError):
    """A batch could not be produced (unreadable image, a worker process that died); the run can resume."""


@dataclass
class FolderData:
    """An image folder described, not decoded: file lists per split, classes and normalisation.

    Has the attributes commands read from an in-memory :class:`~evoprune.data.ImageData` (``name``, ``classes``,
    ``mean``, ``std``, ``in_channels``, ``image_size``, ``meta()``), but no ``x_train`` tensors.
    """

    name: str
    root: Path
    train_files: List[Tuple[str, int]]
    test_files: List[Tuple[str, int]]
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    in_channels: int
    image_size: int
    source: str = ""
    streaming: bool = field(default=True, init=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train(self) -> int:
        return len(self.train_files)

    @property
    def n_test(self) -> int:
        return len(self.test_files)

    def meta(self) -> Dict[str, object]:
        return {"dataset": self.name, "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std),
                "in_channels": self.in_channels, "image_size": self.image_size}


# ------------------------------------------------------------------------------------------------------ transforms
def open_image(path: str, mode: str):
    """Decode one image file to PIL in ``mode`` ('L' or 'RGB'); a one-line error naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataLoaderError(f"'{path}' is not a readable image ({type(exc).__name__}); remove it from the image "
                              "folder") from None


def resize_crop(img, size: int, resize_to: int):
    """Resize the shorter side to ``resize_to`` and centre-crop ``size`` x ``size`` (aspect ratio kept)."""
    from torchvision.transforms import functional as TF

    if img.size != (size, size):
        img = TF.center_crop(TF.resize(img, resize_to), [size, size])
    return img


def eval_transform(img, size: int):
    resize_to = size if size <= SMALL_IMAGE else int(round(size / EVAL_CROP))
    return resize_crop(img, size, resize_to)


def train_transform(img, size: int, g: torch.Generator):
    """Random crop + flip drawn from ``g`` only (never the global RNG: the batches are reproducible)."""
    from torchvision.transforms import functional as TF

    if size <= SMALL_IMAGE:
        img = resize_crop(img, size, size)
        pad = 4
        img = TF.pad(img, [pad, pad, pad, pad])
        top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
        img = TF.crop(img, top, left, size, size)
    else:
        img = TF.resized_crop(img, *_rrc_params(img.size, g), [size, size], antialias=True)
    if float(torch.rand((), generator=g)) < 0.5:
        img = TF.hflip(img)
    return img


def _rrc_params(wh: Tuple[int, int], g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params with an explicit generator."""
    import math

    width, height = wh
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
        aspect = math.exp(float(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=g)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,), generator=g))
            j = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_uint8(img) -> torch.Tensor:
    """PIL image -> uint8 ``[C, H, W]`` (what the in-memory path stores)."""
    import numpy as np

    a = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(a[None].copy() if a.ndim == 2 else a.transpose(2, 0, 1).copy())


class _Files(torch.utils.data.Dataset):
    """Map-style dataset over ``(path, label)``; an index is ``(position, sample seed)``."""

    def __init__(self, files: Sequence[Tuple[str, int]], size: int, mode: str, augment: bool) -> None:
        self.files, self.size, self.mode, self.augment = list(files), int(size), mode, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: Tuple[int, int]):
        i, sample_seed = key
        path, label = self.files[i]
        img = open_image(path, self.mode)
        if self.augment:
            img = train_transform(img, self.size, torch.Generator().manual_seed(int(sample_seed)))
        else:
            img = eval_transform(img, self.size)
        return to_uint8(img), label


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


class StreamLoader(EpochLoader):
    """``(x, y)`` float batches decoded from files by ``workers`` processes; the interface of ``BatchLoader``."""

    def __init__(self, files: Sequence[Tuple[str, int]], batch_size: int, mean: Sequence[float],
                 std: Sequence[float], image_size: int, in_channels: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0, drop_last: bool = False, device: torch.device | str = "cpu",
                 channels_last: bool = False, shard: Tuple[int, int] = (0, 1), workers: int = 2,
                 max_batches: Optional[int] = None) -> None:
        if batch_size < 1:
            raise EvopruneError(f"batch size must be >= 1, got {batch_size}")
        self.files = list(files)
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.workers = max(0, int(workers))
        self.mean_values, self.std_values = list(mean), list(std)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, in_channels, 1, 1).to(self.device)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, in_channels, 1, 1).to(self.device)
        self.epoch = 0
        self.start_batch = 0
        self.rank, self.world = shard
        self.max_batches = max_batches  # a few batches (calibration): only those are decoded

    @property
    def n_images(self) -> int:
        return len(self.files)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([y for _, y in self.files], dtype=torch.long)

    def with_options(self, **changes) -> "StreamLoader":
        """A loader over the same images with some settings changed (batch_size, shuffle, augment, seed, ...)."""
        kw = dict(batch_size=self.batch_size, mean=self.mean_values, std=self.std_values,
                  image_size=self.image_size, in_channels=self.in_channels, shuffle=self.shuffle,
                  augment=self.augment, seed=self.seed, drop_last=self.drop_last, device=self.device,
                  channels_last=self.channels_last, shard=(self.rank, self.world), workers=self.workers,
                  max_batches=self.max_batches)
        files = changes.pop("indices", None)
        kw.update(changes)
        return StreamLoader(self.files if files is None else [self.files[int(i)] for i in files], **kw)

    def _size(self) -> int:
        return len(self.files)

    def _batches(self) -> List[List[Tuple[int, int]]]:
        order = self._order()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7_777 + 104_729 * self.rank)
        seeds = torch.randint(0, 2 ** 62, (len(order),), generator=g)  # drawn for all: resume-stable
        nb = len(self) if self.max_batches is None else min(len(self), self.start_batch + int(self.max_batches))
        return [[(int(order[j]), int(seeds[j])) for j in range(b * self.batch_size,
                                                                min(len(order), (b + 1) * self.batch_size))]
                for b in range(self.start_batch, nb)]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        batches = self._batches()
        self.start_batch = 0
        if not batches:
            return
        mode = "L" if self.in_channels == 1 else "RGB"
        ds = _Files(self.files, self.image_size, mode, self.augment)
        # a few batches (calibration, adaptive BN, a stage-2 check) decode faster here than worker processes start
        workers = 0 if len(batches) < IN_PROCESS_BELOW else min(self.workers, len(batches))
        dl = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                                         pin_memory=self.device.type == "cuda",
                                         prefetch_factor=4 if workers else None)
        it = iter(dl)
        while True:
            try:
                xb, yb = next(it)
            except StopIteration:
                return
            except EvopruneError as exc:  # raised in a worker: the wrapper adds the worker's traceback
                raise DataLoaderError(_last_line(str(exc))) from None
            except (RuntimeError, EOFError, ConnectionError) as exc:
                # a worker killed while the batch it had queued was being fetched: EOFError or a reset connection
                # from the fd it shared, before torch's own "worker is killed" RuntimeError
                if isinstance(exc, RuntimeError) and "DataLoader worker" not in str(exc):
                    raise
                _stop_workers(it)
                what = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                raise DataLoaderError(f"a data-loading worker process died ({what}); "
                                      "rerun with --resume to continue from the last checkpoint") from None
            xb = xb.to(self.device, non_blocking=True).float().div_(255.0)
            xb = (xb - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb.to(self.device, non_blocking=True)


def _stop_workers(it: Any) -> None:
    """Shut a failed loader's workers down and unregister them, so that torch's SIGCHLD handler does not raise a
    second error later from wherever the program then is."""
    for _ in range(3):
        try:
            getattr(it, "_shutdown_workers", lambda: None)()
            return
        except RuntimeError:  # the handler fired during the shutdown: the workers are still registered, again
            continue


def _last_line(msg: str) -> str:
    line = [l for l in msg.strip().splitlines() if l.strip()][-1]
    for prefix in ("evoprune.streaming.DataLoaderError: ", "evoprune.errors.EvopruneError: ", "DataLoaderError: ",
                   "EvopruneError: "):
        if line.startswith(prefix):
            return line[len(prefix):]
    return line


# --------------------------------------------------------------------------------------------------- the dataset
def extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack a ``.tar``/``.tar.gz`` once into ``dest`` (atomic: a half-written copy is never used)."""
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(str(archive), "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            for m in members:  # no absolute paths or '..': nothing lands outside dest
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise EvopruneError(f"archive '{archive}' has an unsafe member path '{m.name}'")
            tar.extractall(str(tmp), members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        why = str(exc).splitlines()[0].rstrip(": ") if str(exc).strip() else type(exc).__name__
        raise EvopruneError(f"image folder archive '{archive}' cannot be read ({why}); it may be truncated: "
                            "copy it again, or give the extracted folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text("ok\n")
    if (dest / ".complete").exists():  # another process finished first and may be reading it: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def estimate_stats(files: Sequence[Tuple[str, int]], size: int, mode: str, n: int = STATS_SAMPLE,
                   seed: int = 0) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of ``n`` evenly spread training images after the evaluation transform."""
    step = max(1, len(files) // n)
    sample = files[::step][:n]
    s = s2 = None
    count = 0
    for path, _ in sample:
        x = to_uint8(eval_transform(open_image(path, mode), size)).double().div_(255.0)
        flat = x.flatten(1)
        s = flat.sum(1) if s is None else s + flat.sum(1)
        s2 = (flat ** 2).sum(1) if s2 is None else s2 + (flat ** 2).sum(1)
        count += flat.shape[1]
    mean = s / count
    std = (s2 / count - mean ** 2).clamp_min(1e-6).sqrt()
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-3) for v in std)
