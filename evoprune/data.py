"""Datasets by name, decoded once into uint8 tensors, and fast deterministic in-memory batch loaders.

Names:
  ``mini-cifar10``     bundled with the package (2,000 train / 1,000 test CIFAR-10 images); no files needed
  ``cifar10``          torchvision layout under ``--data-dir``: ``cifar-10-batches-py/``
  ``cifar100``         ``cifar-100-python/``
  ``svhn``             ``train_32x32.mat`` and ``test_32x32.mat`` (needs scipy)
  ``imagefolder:PATH`` a folder, ``.tar`` or ``.tar.gz`` holding ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``);
                       any image size (resized to the most common size, or ``image_size``) and 1 or 3 channels

Nothing is downloaded. Whole datasets live in memory as uint8 NCHW tensors (CIFAR-10: 184 MB); augmentation
(random crop with 4-pixel padding + horizontal flip, the standard CIFAR recipe) and normalisation run per batch
in torch, so an epoch never re-decodes images and needs no worker processes.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import EvopruneError
from .registry import DATASETS

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
ASSET = Path(__file__).with_name("assets") / "mini_cifar10.npz"


@dataclass
class ImageData:
    """A whole dataset in memory: uint8 images ``[N, C, H, W]`` and int64 labels, plus its normalisation."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def n_train(self) -> int:
        return int(len(self.x_train))

    @property
    def n_test(self) -> int:
        return int(len(self.x_test))

    streaming = False

    def meta(self) -> Dict[str, object]:
        """What a checkpoint records about its data."""
        return {"dataset": self.name, "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std),
                "in_channels": self.in_channels, "image_size": self.image_size}


# ------------------------------------------------------------------------------------------------------- caching
def cache_dir() -> Path:
    d = Path(os.environ.get("EVOPRUNE_CACHE", Path.home() / ".cache" / "evoprune"))
    return d


def _cached(key: str, build) -> Dict[str, torch.Tensor]:
    """Load decoded tensors from the cache, or build and store them (atomically; a cache failure is not fatal)."""
    from .io import save_torch

    path = cache_dir() / f"{key}.pt"
    if path.exists():
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "x_train" in obj:
                return obj
        except Exception:
            pass  # stale or torn cache file: rebuild it
    obj = build()
    try:
        save_torch(path, obj)
    except OSError as exc:
        warnings.warn(f"could not write dataset cache '{path}': {exc}")
    return obj


def _file_key(path: Path, tag: str) -> str:
    st = path.stat()
    h = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{tag}".encode()).hexdigest()[:16]
    return f"{path.name}-{h}"


# ------------------------------------------------------------------------------------------------------- loaders
@DATASETS.register("mini-cifar10")
def load_mini_cifar10(data_dir: Optional[str] = None, image_size: Optional[int] = None) -> ImageData:
    """Bundled CIFAR-10 subset: 2,000 train / 1,000 test images (balanced), for the demo and tests"""
    if not ASSET.exists():
        raise EvopruneError(f"bundled dataset '{ASSET}' is missing; reinstall evoprune")
    with np.load(ASSET, allow_pickle=False) as z:
        d = {k: torch.from_numpy(z[k]) for k in z.files}
    return ImageData("mini-cifar10", d["x_train"], d["y_train"].long(), d["x_test"], d["y_test"].long(),
                     list(CIFAR10_CLASSES), CIFAR10_MEAN, CIFAR10_STD, str(ASSET))


def _require_dir(data_dir: Optional[str], name: str, sub: str) -> Path:
    if not data_dir:
        raise EvopruneError(f"dataset '{name}' needs --data-dir DIR holding '{sub}' (torchvision layout; nothing is downloaded)")
    root = Path(data_dir)
    if not root.is_dir():
        raise EvopruneError(f"data directory '{root}' does not exist")
    if not (root / sub).exists():
        raise EvopruneError(
            f"dataset '{name}' not found: expected '{root / sub}' (get it with torchvision.datasets on a machine "
            "with internet, then copy it here)"
        )
    return root


def _torchvision_cifar(name: str, cls_name: str, sub: str, mean, std, data_dir: Optional[str]) -> ImageData:
    import torchvision

    root = _require_dir(data_dir, name, sub)

    def build():
        cls = getattr(torchvision.datasets, cls_name)
        try:
            tr, te = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
        except RuntimeError as exc:
            raise EvopruneError(f"dataset '{name}' under '{root}' is incomplete or corrupt ({exc})") from None
        return {"x_train": torch.from_numpy(tr.data).permute(0, 3, 1, 2).contiguous(),
                "y_train": torch.tensor(tr.targets, dtype=torch.long),
                "x_test": torch.from_numpy(te.data).permute(0, 3, 1, 2).contiguous(),
                "y_test": torch.tensor(te.targets, dtype=torch.long), "classes": list(tr.classes)}

    d = _cached(_file_key(root / sub, name), build)
    return ImageData(name, d["x_train"], d["y_train"], d["x_test"], d["y_test"], list(d["classes"]), mean, std, str(root))


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Optional[str] = None, image_size: Optional[int] = None) -> ImageData:
    """CIFAR-10 from torchvision's cifar-10-batches-py under --data-dir"""
    return _torchvision_cifar("cifar10", "CIFAR10", "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD, data_dir)


@DATASETS.register("cifar100")
def load_cifar100(data_dir: Optional[str] = None, image_size: Optional[int] = None) -> ImageData:
    """CIFAR-100 from torchvision's cifar-100-python under --data-dir"""
    return _torchvision_cifar("cifar100", "CIFAR100", "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD, data_dir)


@DATASETS.register("svhn")
def load_svhn(data_dir: Optional[str] = None, image_size: Optional[int] = None) -> ImageData:
    """SVHN from train_32x32.mat / test_32x32.mat under --data-dir (needs scipy)"""
    import torchvision

    root = _require_dir(data_dir, "svhn", "train_32x32.mat")
    if not (root / "test_32x32.mat").exists():
        raise EvopruneError(f"dataset 'svhn' not found: expected '{root / 'test_32x32.mat'}'")
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise EvopruneError("dataset 'svhn' needs scipy to read .mat files: pip install scipy") from None

    def build():
        tr = torchvision.datasets.SVHN(str(root), split="train", download=False)
        te = torchvision.datasets.SVHN(str(root), split="test", download=False)
        return {"x_train": torch.from_numpy(tr.data), "y_train": torch.from_numpy(tr.labels).long(),
                "x_test": torch.from_numpy(te.data), "y_test": torch.from_numpy(te.labels).long(),
                "classes": [str(i) for i in range(10)]}

    d = _cached(_file_key(root / "train_32x32.mat", "svhn"), build)
    return ImageData("svhn", d["x_train"], d["y_train"], d["x_test"], d["y_test"], d["classes"], SVHN_MEAN, SVHN_STD, str(root))


# ---------------------------------------------------------------------------------------------------- imagefolder
class _Source:
    """Uniform access to image files in a folder or a tar archive: ``{split: [(class, name, reader)]}``."""

    def __init__(self, path: Path):
        self.path = path
        self.tar: Optional[tarfile.TarFile] = None
        if path.is_dir():
            self.members = [str(p.relative_to(path)).replace(os.sep, "/") for p in path.rglob("*") if p.is_file()]
        else:
            try:
                self.tar = tarfile.open(str(path), "r:*")
                self._by_name = {m.name.lstrip("./"): m for m in self.tar.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError, EOFError) as exc:
                why = str(exc).splitlines()[0].rstrip(": ") if str(exc).strip() else type(exc).__name__
                raise EvopruneError(f"image folder archive '{path}' cannot be read ({why}); give a folder or .tar(.gz)") from None
            self.members = list(self._by_name)

    def read(self, rel: str) -> bytes:
        if self.tar is None:
            return (self.path / rel).read_bytes()
        fh = self.tar.extractfile(self._by_name[rel])
        return fh.read() if fh else b""


def _decode(data: bytes, where: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EvopruneError(f"'{where}' is not a readable image ({type(exc).__name__}); remove it from the image folder") from None
    return img


DATA_MODES = ("auto", "memory", "stream")
GRAY_MODES = ("L", "1", "I;16", "I")
DEFAULT_DATA_MEMORY_TEXT = "2GiB"  # how --help shows it
DEFAULT_DATA_MEMORY = 2 * 2 ** 30  # above this many decoded bytes (auto mode) an image folder is streamed from disk
MIN_IMAGE_SIZE = 8


@dataclass
class DataOptions:
    """How a dataset is read: ``--image-size``, ``--data-mode``, ``--data-memory``, ``--data-workers``."""

    image_size: Optional[int] = None
    mode: str = "auto"
    memory: Any = DEFAULT_DATA_MEMORY
    workers: int = 2


@dataclass
class _Layout:
    """What an image folder holds: classes and ``(class, member)`` lists of its train and test splits."""

    prefix: str
    classes: List[str]
    train: List[Tuple[str, str]]
    test: List[Tuple[str, str]]
    test_split: str


def _scan(src: "_Source", path: Path) -> _Layout:
    """Find train/<class>/<image> and test/ (or val/) in a folder or archive; one-line errors for bad layouts."""
    files = [m for m in src.members if not any(part.startswith(".") for part in m.split("/"))]
    tops = {m.split("/")[0] for m in files}
    prefix = ""
    if "train" not in tops and len(tops) == 1:  # archives often hold 'cifar10/train/...'
        prefix = next(iter(tops)) + "/"
        files = [m[len(prefix):] for m in files]
    splits: Dict[str, List[Tuple[str, str]]] = collections.defaultdict(list)
    for m in files:
        parts = m.split("/")
        if len(parts) == 3:
            splits[parts[0]].append((parts[1], m))
    test_split = "test" if "test" in splits else ("val" if "val" in splits else None)
    if "train" not in splits or test_split is None:
        raise EvopruneError(f"image folder '{path}' needs train/<class>/<image> and test/ (or val/) subfolders")
    classes = sorted({c for c, _ in splits["train"]})
    if len(classes) < 2:
        raise EvopruneError(f"image folder '{path}': train/ needs at least 2 class folders, found {len(classes)}")
    test_classes = {c for c, _ in splits[test_split]}
    if test_classes != set(classes):
        only_test = sorted(test_classes - set(classes))
        only_train = sorted(set(classes) - test_classes)
        what = (f"class '{only_test[0]}' in {test_split}/ is missing from train/" if only_test
                else f"class '{only_train[0]}' in train/ is missing from {test_split}/")
        raise EvopruneError(f"image folder '{path}': {what} ({len(only_test) + len(only_train)} class folders "
                            f"differ); train/ and {test_split}/ must hold the same class folders")
    for sp in ("train", test_split):
        for _, m in splits[sp]:
            if os.path.splitext(m)[1].lower() not in IMAGE_EXTS:
                raise EvopruneError(f"image folder '{path}': '{m}' is not an image file (extensions allowed: "
                                    f"{', '.join(sorted(IMAGE_EXTS))}); remove it")
    key = lambda t: t[1]  # noqa: E731 - sorted by path: the same order on every machine
    return _Layout(prefix, classes, sorted(splits["train"], key=key), sorted(splits[test_split], key=key), test_split)


def check_image_size(image_size: Optional[int]) -> None:
    if image_size is not None and int(image_size) < MIN_IMAGE_SIZE:
        raise EvopruneError(f"--image-size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")


def parse_memory(text: Any) -> int:
    """'4GB', '500MB', '2GiB' or a number of bytes -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    t = str(text).strip().upper().replace(" ", "")
    units = {"KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40, "KB": 10 ** 3, "MB": 10 ** 6,
             "GB": 10 ** 9, "TB": 10 ** 12, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "B": 1}
    for u, mult in units.items():
        if t.endswith(u):
            num = t[: -len(u)]
            break
    else:
        num, mult = t, 1
    try:
        value = float(num)
    except ValueError:
        raise EvopruneError(f"--data-memory '{text}' is not a size; give e.g. 4GB, 500MB or a number of bytes") from None
    if not np.isfinite(value) or value <= 0:
        raise EvopruneError(f"--data-memory must be a positive size, got '{text}'")
    return int(value * mult)


def _peek(src: "_Source", layout: _Layout, n: int = 16):
    """Sizes and modes of ``n`` images spread over the training split (decides memory vs stream, image size)."""
    items = layout.train
    step = max(1, len(items) // n)
    return [_decode(src.read(layout.prefix + m), m) for _, m in items[::step][:n]]


def _square_size(sizes, image_size: Optional[int]) -> int:
    if image_size:
        return int(image_size)
    w, h = collections.Counter(sizes).most_common(1)[0][0]
    return int(min(w, h))


@DATASETS.register("imagefolder:")
def load_imagefolder(spec: str, data_dir: Optional[str] = None, image_size: Optional[int] = None,
                     mode: str = "auto", memory_budget: Any = DEFAULT_DATA_MEMORY):
    """imagefolder:PATH -- folder/.tar(.gz) with train/<class>/ and test/ (or val/) subfolders"""
    check_image_size(image_size)
    if mode not in DATA_MODES:
        raise EvopruneError(f"--data-mode must be one of {', '.join(DATA_MODES)}, got '{mode}'")
    raw = spec.split(":", 1)[1] if spec.startswith("imagefolder:") else spec
    if not raw:
        raise EvopruneError("imagefolder needs a path: --data imagefolder:PATH")
    path = Path(raw)
    if not path.is_absolute() and data_dir and not path.exists():
        path = Path(data_dir) / path
    if not path.exists():
        raise EvopruneError(f"image folder '{path}' does not exist")
    if mode == "auto":
        mode = _choose_mode(path, image_size, parse_memory(memory_budget))
    if mode == "stream":
        return _stream_imagefolder(path, raw, image_size)
    key = _file_key(path, f"imagefolder-v2-{image_size}") if path.is_file() else None
    d = _cached(key, lambda: _decode_imagefolder(path, image_size)) if key else _decode_imagefolder(path, image_size)
    mean, std = _channel_stats(d["x_train"])
    return ImageData(f"imagefolder:{raw}", d["x_train"], d["y_train"], d["x_test"], d["y_test"], list(d["classes"]),
                     mean, std, str(path))


def _channel_stats(x: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std (fractions) of uint8 images; in float64 chunks when a float copy would be large."""
    if x.numel() <= 2 ** 28:  # up to a 1 GB float copy (CIFAR: 154 M values): one float32 pass, as before
        xf = x.float() / 255.0
        return (tuple(float(v) for v in xf.mean(dim=(0, 2, 3))),
                tuple(max(float(v), 1e-3) for v in xf.std(dim=(0, 2, 3))))
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), 4096):
        xb = x[i:i + 4096].to(torch.float64) / 255.0
        s += xb.sum(dim=(0, 2, 3))
        s2 += (xb * xb).sum(dim=(0, 2, 3))
    n = x.numel() // c
    mean = s / n
    var = (s2 - n * mean * mean) / max(n - 1, 1)
    return tuple(float(v) for v in mean), tuple(max(float(v), 1e-3) for v in var.clamp_min(0).sqrt())


def _choose_mode(path: Path, image_size: Optional[int], budget: int) -> str:
    """'memory' when the decoded uint8 tensors fit ``budget`` bytes, else 'stream'."""
    if path.is_file() and (cache_dir() / f"{_file_key(path, f'imagefolder-v2-{image_size}')}.pt").exists():
        return "memory"  # decoded into the cache by an earlier run
    src = _Source(path)
    layout = _scan(src, path)
    imgs = _peek(src, layout)
    size = _square_size([im.size for im in imgs], image_size)
    channels = 1 if all(im.mode in GRAY_MODES for im in imgs) else 3
    need = (len(layout.train) + len(layout.test)) * channels * size * size
    return "memory" if need <= budget else "stream"


def _decode_imagefolder(path: Path, image_size: Optional[int]) -> Dict[str, Any]:
    from .streaming import resize_crop

    from PIL import Image

    src = _Source(path)
    layout = _scan(src, path)
    cindex = {c: i for i, c in enumerate(layout.classes)}
    # pass 1: the encoded bytes and each image's header (size, mode); nothing is decoded yet
    raw = {sp: [(src.read(layout.prefix + m), m, cindex[c]) for c, m in items]
           for sp, items in (("train", layout.train), ("test", layout.test))}
    heads = []
    for data, m, _ in raw["train"] + raw["test"]:
        try:
            with Image.open(io.BytesIO(data)) as im:
                heads.append((im.size, im.mode))
        except Exception:  # noqa: BLE001 - an unreadable file is reported by name in pass 2
            heads.append(((0, 0), "RGB"))
    gray = all(md in GRAY_MODES for _, md in heads)
    mode = "L" if gray else "RGB"
    sizes = collections.Counter(sz for sz, _ in heads if sz != (0, 0))
    size = _square_size(list(sizes.elements()) or [(32, 32)], image_size)
    if len(sizes) > 1 and not image_size:
        warnings.warn(f"image folder '{path}' holds images of {len(sizes)} sizes; each is resized (shorter side) and "
                      f"centre-cropped to {size}x{size}; give --image-size to choose the size")

    def stack(items):
        # pass 2: one image decoded at a time into the final uint8 array (peak: encoded bytes + the result)
        out = np.empty((len(items), 1 if gray else 3, size, size), dtype=np.uint8)
        for i, (data, m, _) in enumerate(items):
            im = _decode(data, m).convert(mode)
            if im.size != (size, size):
                im = resize_crop(im, size, size)
            a = np.asarray(im, dtype=np.uint8)
            out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return torch.from_numpy(out), torch.tensor([y for _, _, y in items], dtype=torch.long)

    xtr, ytr = stack(raw.pop("train"))
    xte, yte = stack(raw.pop("test"))
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, "classes": layout.classes}


def _stream_imagefolder(path: Path, raw: str, image_size: Optional[int]):
    from .streaming import FolderData, estimate_stats, extract_archive

    root = path
    if path.is_file():  # an archive is unpacked once into the cache; then read like a folder
        root = extract_archive(path, cache_dir() / "extracted" / _file_key(path, "tree"))
    src = _Source(root)
    layout = _scan(src, path)
    base = root / layout.prefix if layout.prefix else root
    cindex = {c: i for i, c in enumerate(layout.classes)}
    train = [(str(base / m), cindex[c]) for c, m in layout.train]
    test = [(str(base / m), cindex[c]) for c, m in layout.test]
    imgs = _peek(src, layout)  # the same 16 images (and rule) the memory path and the auto mode look at
    gray = all(im.mode in GRAY_MODES for im in imgs)
    size = _square_size([im.size for im in imgs], image_size)
    mode = "L" if gray else "RGB"
    mean, std = estimate_stats(train, size, mode)
    return FolderData(f"imagefolder:{raw}", root, train, test, list(layout.classes), mean, std,
                      1 if gray else 3, size, str(path))


def load_dataset(name: str, data_dir: Optional[str] = None, image_size: Optional[int] = None,
                 mode: str = "auto", memory_budget: Any = DEFAULT_DATA_MEMORY):
    """Load a dataset by name (see module docstring). Errors are one line and say what to fix.

    ``mode``: ``memory`` decodes everything into uint8 tensors (:class:`ImageData`), ``stream`` reads an image folder
    from disk batch by batch (:class:`evoprune.streaming.FolderData`), ``auto`` streams an image folder whose
    decoded size would exceed ``memory_budget`` bytes (or '4GB'-style text). ``image_size`` resizes (shorter side)
    and centre-crops every image.
    """
    check_image_size(image_size)
    if mode not in DATA_MODES:
        raise EvopruneError(f"--data-mode must be one of {', '.join(DATA_MODES)}, got '{mode}'")
    loader = DATASETS.get(name)
    if loader is load_imagefolder:
        data = loader(name, data_dir=data_dir, image_size=image_size, mode=mode, memory_budget=memory_budget)
    else:
        if mode == "stream":
            raise EvopruneError(f"--data-mode stream reads image folders (imagefolder:PATH); '{name}' is always held "
                                "in memory, use --data-mode memory or auto")
        data = loader(data_dir=data_dir, image_size=image_size)
        if image_size and data.image_size != int(image_size):
            data = _resized(data, int(image_size))
    if data.n_train == 0 or data.n_test == 0:
        raise EvopruneError(f"dataset '{name}' is empty (train {data.n_train}, test {data.n_test} images)")
    return data


def _resized(data: "ImageData", size: int) -> "ImageData":
    """The same images resized to ``size`` x ``size`` (bilinear on the uint8 tensors, as --image-size asks)."""
    def rs(x: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(x), 1024):
            xb = torch.nn.functional.interpolate(x[i:i + 1024].float(), size=(size, size), mode="bilinear",
                                                 antialias=True, align_corners=False)
            out.append(xb.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out)

    return dataclasses.replace(data, x_train=rs(data.x_train), x_test=rs(data.x_test))


# ------------------------------------------------------------------------------------------------------ batching
def split_calibration(n_train: int, calib_size: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Carve a held-out calibration split from the training set (never from test): ``(train_idx, calib_idx)``.

    Fixed by ``seed`` alone, so training, search and fine-tuning all hold out the same images.
    """
    if calib_size < 0 or calib_size >= n_train:
        raise EvopruneError(f"calibration size must be in [0, {n_train - 1}], got {calib_size}")
    g = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(n_train, generator=g)
    # calibration images stay in random order: the first batches must not be a few classes (ImageFolder sorts by class)
    return perm[calib_size:].sort().values, perm[:calib_size]


def default_calib_size(n_train: int) -> int:
    return int(min(1000, max(1, n_train // 10)))


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """The image order of one epoch (a function of seed and epoch only), this rank's equal share of it."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    else:
        order = torch.arange(n)
    if world > 1:  # equal-size shards so every DDP rank runs the same number of steps
        per = n // world
        order = order[rank * per:(rank + 1) * per]
    return order


def batch_count(n: int, batch_size: int, drop_last: bool, world: int = 1) -> int:
    n //= world
    return n // batch_size if drop_last else -(-n // batch_size)


class EpochLoader:
    """What both loaders share: epoch ``e``'s order is a function of ``(seed, e)``, sharded for DDP, and
    ``start_batch`` resumes a partial epoch. Subclasses give ``_size()`` (images) and iterate."""

    shuffle: bool
    seed: int
    epoch: int
    start_batch: int
    rank: int
    world: int
    batch_size: int
    drop_last: bool

    def _size(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _order(self) -> torch.Tensor:
        return epoch_order(self._size(), self.shuffle, self.seed, self.epoch, self.rank, self.world)

    def __len__(self) -> int:
        return batch_count(self._size(), self.batch_size, self.drop_last, self.world)


class BatchLoader(EpochLoader):
    """Iterate ``(x, y)`` float batches from uint8 tensors: seeded shuffling, CIFAR augmentation, normalisation.

    Epoch ``e`` uses ``torch.Generator(seed * 1_000_003 + e)``, so a resumed run sees exactly the batches an
    uninterrupted one would (``start_batch`` skips the batches already done in a partial epoch).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 shuffle: bool = False, augment: bool = False, seed: int = 0, drop_last: bool = False,
                 device: torch.device | str = "cpu", channels_last: bool = False,
                 shard: Tuple[int, int] = (0, 1)) -> None:
        if batch_size < 1:
            raise EvopruneError(f"batch size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.seed, self.drop_last = shuffle, augment, seed, drop_last
        self.device = torch.device(device)
        self.channels_last = channels_last
        c = x.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1).to(self.device)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1).to(self.device)
        self.epoch = 0
        self.start_batch = 0
        self.rank, self.world = shard

    @property
    def n_images(self) -> int:
        return int(len(self.x))

    @property
    def labels(self) -> torch.Tensor:
        return self.y

    def with_options(self, **changes: Any) -> "BatchLoader":
        """A loader over the same images (or ``indices`` of them) with some settings changed."""
        kw = dict(batch_size=self.batch_size, mean=self.mean.flatten().tolist(), std=self.std.flatten().tolist(),
                  shuffle=self.shuffle, augment=self.augment, seed=self.seed, drop_last=self.drop_last,
                  device=self.device, channels_last=self.channels_last, shard=(self.rank, self.world))
        idx = changes.pop("indices", None)
        kw.update(changes)
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        return BatchLoader(x, y, **kw)

    def _size(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7_777 + 104_729 * self.rank)  # ranks differ
        nb = len(self)
        for b in range(nb):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.augment:  # draw for every batch, also skipped ones, so the stream is resume-stable
                shifts = torch.randint(0, 9, (len(idx), 2), generator=g)
                flips = torch.rand(len(idx), generator=g) < 0.5
            if b < self.start_batch:
                continue
            xb = self.x[idx]
            if self.augment:
                xb = _crop_flip(xb, shifts, flips)
            xb = xb.to(self.device, non_blocking=True).float().div_(255.0)
            xb = (xb - self.mean) / self.std
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx].to(self.device, non_blocking=True)
        self.start_batch = 0


def _crop_flip(xb: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, vectorised over the batch (uint8 in, uint8 out)."""
    n, c, h, w = xb.shape
    padded = torch.nn.functional.pad(xb, (pad, pad, pad, pad))
    rows = (shifts[:, 0:1] + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (shifts[:, 1:2] + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    out = out.gather(3, cols)
    out[flips] = out[flips].flip(-1)
    return out


@dataclass
class Loaders:
    """The three loaders every command uses: augmented training, held-out calibration, test.

    Each is a :class:`BatchLoader` (in memory) or a :class:`evoprune.streaming.StreamLoader` (from disk); both
    have ``set_epoch``, ``with_options``, ``n_images`` and ``len``, and yield normalised ``(x, y)`` batches.
    """

    train: Any
    calib: Any
    test: Any
    data: Any
    calib_idx: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def calib_batches(self, n_batches: Optional[int] = None, batch_size: Optional[int] = None) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The first ``n_batches`` calibration batches (no augmentation), materialised."""
        loader = self.calib if batch_size is None else self.calib.with_options(batch_size=batch_size, shuffle=False,
                                                                               augment=False, drop_last=False)
        if n_batches is not None and hasattr(loader, "max_batches"):  # streamed: decode only these batches
            loader = loader.with_options(max_batches=n_batches)
        out = []
        for i, b in enumerate(loader):
            if n_batches is not None and i >= n_batches:
                break
            out.append(b)
        return out

    def train_batches(self, n_batches: int, batch_size: Optional[int] = None, seed: int = 0) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``n_batches`` un-augmented shuffled training batches (for BN re-estimation and calibration statistics)."""
        loader = self.train.with_options(batch_size=batch_size or self.train.batch_size, shuffle=True, augment=False,
                                         seed=seed + 99, drop_last=False, channels_last=False, shard=(0, 1),
                                         **({"max_batches": n_batches} if hasattr(self.train, "max_batches") else {}))
        out = []
        for i, b in enumerate(loader):
            if i >= n_batches:
                break
            out.append(b)
        return out


def make_loaders(data, batch_size: int = 128, seed: int = 0, calib_size: Optional[int] = None,
                 device: torch.device | str = "cpu", channels_last: bool = False,
                 eval_batch_size: Optional[int] = None,
                 limit_train: Optional[int] = None, shard: Tuple[int, int] = (0, 1), workers: int = 2) -> Loaders:
    """Training / calibration / test loaders. The calibration split is held out of training.

    ``data`` is an in-memory :class:`ImageData` or a streamed :class:`evoprune.streaming.FolderData`
    (``workers`` decoding processes); the split, the batch order and the loaders' interface are the same.
    """
    n = data.n_train
    if eval_batch_size is None:  # 256 small images per evaluation batch; large ones no more than --batch-size
        eval_batch_size = 256 if data.image_size <= 64 else max(1, min(256, int(batch_size)))
    calib_size = default_calib_size(n) if calib_size is None else calib_size
    tr_idx, ca_idx = split_calibration(n, calib_size, seed=0)  # fixed split: the same across seeds and commands
    if limit_train:
        tr_idx = tr_idx[:limit_train]
    kw = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last)
    if getattr(data, "streaming", False):
        from .streaming import StreamLoader

        kw.update(image_size=data.image_size, in_channels=data.in_channels, workers=workers)
        train_files = [data.train_files[int(i)] for i in tr_idx]
        train = StreamLoader(train_files, batch_size, shuffle=True, augment=True, seed=seed,
                             drop_last=len(train_files) >= batch_size, shard=shard, **kw)
        calib = StreamLoader([data.train_files[int(i)] for i in ca_idx], eval_batch_size, **kw)
        test = StreamLoader(data.test_files, eval_batch_size, **kw)
        return Loaders(train, calib, test, data, ca_idx)
    train = BatchLoader(data.x_train[tr_idx], data.y_train[tr_idx], batch_size, shuffle=True, augment=True, seed=seed,
                        drop_last=len(tr_idx) >= batch_size, shard=shard, **kw)
    calib = BatchLoader(data.x_train[ca_idx], data.y_train[ca_idx], eval_batch_size, **kw)
    test = BatchLoader(data.x_test, data.y_test, eval_batch_size, **kw)
    return Loaders(train, calib, test, data, ca_idx)
