"""Data sets for the torch backend, read from their standard on-disk formats (no torchvision).

* MNIST and Fashion-MNIST: IDX files (gzipped or raw) read by ``deep_lottery.idx_files``, in
  ``<data_dir>/mnist/`` (``<data_dir>/fashion-mnist/``), torchvision's ``MNIST/raw/``
  (``FashionMNIST/raw/``) layout, or flat in ``<data_dir>`` itself; the named subfolder wins.
* CIFAR-10 / CIFAR-100: the python pickle batches in ``<data_dir>/cifar-10-batches-py/`` and
  ``<data_dir>/cifar-100-python/`` (as unpacked from the official tarballs).

The data directory is the ``data_dir`` argument, else ``$LOTTERY_LAB_DATA``, else
``~/.cache/lottery-lab/data`` (``lottery_common.resolve_data_dir``). Files are downloaded
(urllib, official mirrors, MD5-checked) only when the caller passes ``download=True``; otherwise
a missing file raises ``FileNotFoundError`` naming the file, the folder searched and the URL to
fetch it from.

Splits follow Frankle & Carbin (ICLR 2019): 5,000 training examples are held out for validation
(MNIST 55k/5k, CIFAR 45k/5k); the training set may then be subsampled to N examples (Zhang et al.
2021 vary N) and given symmetric label noise (open_lth ``randomize_labels``, spec sec. 0), on the
training set only. Images are normalized per channel: MNIST-like with (0.1307, 0.3081), CIFAR with
the ImageNet mean and std as open_lth does.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lottery_common import DATA_ENV, as_generator, check_float, check_int, resolve_data_dir
from sparse_teacher.teacher import draw_teacher, make_dataset

from .idx_files import (
    MNIST_FILES,
    find_idx_file,
    read_idx,
    unreadable_file,
)

DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
IDX_MD5 = {  # of the official gzipped files (torchvision uses the same)
    "mnist": {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion_mnist": {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
}
CIFAR_ARCHIVES = {  # name -> (url, md5, folder inside the tarball)
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}
_SUBFOLDERS = {"mnist": ("mnist", "MNIST"),
               "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST")}

NORMALIZATION = {  # per-channel (mean, std) of pixel values in [0, 1]
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
VALIDATION_SIZE = 5000  # held out of the training set (Frankle & Carbin 2019)


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    return name


# ---------------------------------------------------------------------------------------------
# Downloading (only when allowed)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(urls: tuple[str, ...], target: Path, md5: str) -> None:
    """Fetch the first mirror that answers into ``target`` and check its MD5."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, \
                    tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                shutil.copyfileobj(response, tmp)
            tmp_path = Path(tmp.name)
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        if _md5(tmp_path) != md5:
            tmp_path.unlink()
            errors.append(f"{url}: MD5 mismatch (expected {md5})")
            continue
        tmp_path.replace(target)
        return
    raise FileNotFoundError(f"could not download {target.name} into {target.parent}; tried:\n  "
                            + "\n  ".join(errors)
                            + f"\nDownload it by hand and put it in {target.parent}.")


# ---------------------------------------------------------------------------------------------
# Raw readers (NumPy arrays: images uint8 (n, C, H, W), labels int64 (n,))


def _find_mnist_like(name: str, directory: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in any accepted layout under ``directory``."""
    candidates = [directory / sub for sub in _SUBFOLDERS[name]] + [directory]
    stems = [MNIST_FILES[(split, kind)] for kind in ("images", "labels")]
    for folder in candidates:
        found = [find_idx_file(folder, stem) for stem in stems]
        if all(f is not None for f in found):
            return found[0], found[1]
    return None


def missing_mnist_files(name: str, splits: Sequence[str], data_dir: str | os.PathLike | None = None
                        ) -> str | None:
    """None when every split of ``name`` is on disk, else one line saying what is missing where.

    Cheap (no file is read): experiments use it to be skipped, not failed, when data is absent.
    """
    directory = resolve_data_dir(data_dir)
    absent = [split for split in splits if _find_mnist_like(_check_name(name), directory, split) is None]
    if not absent:
        return None
    return (f"{name} {'/'.join(absent)} files not found under {directory} (set ${DATA_ENV} to the "
            f"folder that holds them)")


CIFAR_FILES = {"cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
               "cifar100": ("train", "test")}
"""The python pickle batches of each CIFAR archive (inside its folder, ``CIFAR_ARCHIVES``)."""


def missing_cifar_files(name: str, data_dir: str | os.PathLike | None = None) -> str | None:
    """None when every batch of CIFAR ``name`` is on disk, else one line naming the missing files,
    the folder they go in and the archive to unpack there (cheap: no file is read)."""
    if name not in CIFAR_FILES:
        raise ValueError(f"CIFAR data set must be one of {tuple(CIFAR_FILES)}, got {name!r}")
    directory = resolve_data_dir(data_dir)
    url, _, folder_name = CIFAR_ARCHIVES[name]
    folder = directory / folder_name
    absent = [f for f in CIFAR_FILES[name] if not (folder / f).is_file()]
    if not absent:
        return None
    return (f"{name} files {', '.join(absent)} not found in {folder}: download {url} and unpack "
            f"it in {directory} (it creates {folder_name}/), or set ${DATA_ENV} to the folder "
            f"that holds {folder_name}/")


def unreadable_mnist_files(name: str, splits: Sequence[str],
                           data_dir: str | os.PathLike | None = None) -> str | None:
    """None when the files of every split of ``name`` that are on disk read back, else one line
    naming the first corrupted file and saying to replace it (``"a readable mnist test split:
    mnist file PATH is corrupted (EOFError: ...); replace it with a fresh copy"``).

    Decompresses each file once per version of it (``idx_files.idx_file_problem``), so a run can
    check its data before any trial starts.
    """
    directory = resolve_data_dir(data_dir)
    for split in splits:
        found = _find_mnist_like(_check_name(name), directory, split)
        problem = None if found is None else unreadable_file(found, name)
        if problem is not None:
            return f"a readable {name} {split} split: {problem}"
    return None


def _mnist_like(name: str, directory: Path, split: str, download: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    stems = [MNIST_FILES[(split, kind)] for kind in ("images", "labels")]
    found = _find_mnist_like(name, directory, split)
    if found is not None:
        images, labels = read_idx(found[0]), read_idx(found[1])
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name} {split}: {images.shape[0]} images but "
                             f"{labels.shape[0]} labels in {found[0].parent}")
        return images[:, None, :, :].astype(np.uint8), labels.astype(np.int64)
    target = directory / _SUBFOLDERS[name][0]
    mirrors = MNIST_MIRRORS if name == "mnist" else FASHION_MIRRORS
    if not download:
        raise FileNotFoundError(
            f"{name} {split} split not found: put {stems[0]}(.gz) and {stems[1]}(.gz) in {target} "
            f"(or {directory / _SUBFOLDERS[name][-1] / 'raw'}, or flat in {directory}); "
            f"get them from {mirrors[0]}, pass download=True (library call) to fetch them, or "
            f"point ${DATA_ENV} (or data_dir=) at the folder that holds them")
    for stem in stems:
        _download(tuple(m + stem + ".gz" for m in mirrors), target / (stem + ".gz"),
                  IDX_MD5[name][stem])
    return _mnist_like(name, directory, split, download=False)


def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def _cifar(name: str, directory: Path, split: str, download: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    url, md5, folder_name = CIFAR_ARCHIVES[name]
    folder = directory / folder_name
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        files = [split]
        label_key = "fine_labels"
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        if not download:
            raise FileNotFoundError(
                f"{name} {split} split not found: {', '.join(missing)} missing from {folder}; "
                f"download {url} and unpack it in {directory} (it creates {folder_name}/), pass "
                f"download=True (library call) to fetch it, or point ${DATA_ENV} (or data_dir=) at "
                f"the folder that holds {folder_name}/")
        archive = directory / url.rsplit("/", 1)[1]
        if not archive.is_file():
            _download((url,), archive, md5)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(directory, filter="data")
        return _cifar(name, directory, split, download=False)
    images, labels = [], []
    for f in files:
        batch = _unpickle(folder / f)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def load_raw(name: str, split: str, data_dir: str | os.PathLike | None = None,
             download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, C, H, W) uint8 and labels (n,) int64 of one split ("train" or "test")."""
    name = _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = resolve_data_dir(data_dir)
    if name in ("mnist", "fashion_mnist"):
        return _mnist_like(name, directory, split, download)
    return _cifar(name, directory, split, download)


# ---------------------------------------------------------------------------------------------
# Tensors, splits, subsampling, label noise


class TensorData(torch.utils.data.Dataset):
    """Inputs ``x`` and targets ``y`` as tensors (works with a DataLoader; batches by indexing)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def to(self, device: torch.device | str) -> TensorData:
        return TensorData(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Splits:
    """Train / validation / test data plus a description (sizes, noise, source)."""

    train: TensorData
    val: TensorData
    test: TensorData
    num_classes: int | None  # None for regression
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device),
                      self.num_classes, dict(self.info))


def normalize_images(images: np.ndarray, name: str) -> torch.Tensor:
    """uint8 (n, C, H, W) to float32 ``(x / 255 - mean_c) / std_c``."""
    mean, std = NORMALIZATION[_check_name(name)]
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def symmetric_label_noise(labels: np.ndarray, fraction: float, num_classes: int,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """open_lth ``randomize_labels``: relabel n = ceil(fraction * N) examples uniformly at random.

    The chosen indices are ``RandomState(seed + 1).permutation(N)[:n]`` and the new labels
    ``RandomState(seed).randint(num_classes, size=n)`` (spec sec. 0); a new label may equal the
    old one, so the expected flip rate is ``fraction * (1 - 1/num_classes)``. Returns the noisy
    labels and the boolean array of examples whose label actually changed.
    """
    fraction = check_float("label_noise", fraction, low=0.0, high=1.0)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    seed = check_int("noise_seed", seed, minimum=0)
    labels = np.asarray(labels, dtype=np.int64)
    n = math.ceil(fraction * labels.shape[0])
    noisy = labels.copy()
    if n:
        idx = np.random.RandomState(seed + 1).permutation(labels.shape[0])[:n]
        noisy[idx] = np.random.RandomState(seed).randint(num_classes, size=n)
    return noisy, noisy != labels


def split_indices(n: int, n_val: int, n_train: int | None, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices from ``range(n)``: a seeded permutation, the first ``n_val``
    go to validation, the next ``n_train`` (all remaining when None) to training."""
    n = check_int("n", n, minimum=1)
    n_val = check_int("n_val", n_val, minimum=0, maximum=n - 1)
    if n_train is not None:
        n_train = check_int("n_train", n_train, minimum=1, maximum=n - n_val)
    perm = as_generator(seed).permutation(n)
    val = perm[:n_val]
    train = perm[n_val:] if n_train is None else perm[n_val:n_val + n_train]
    return np.sort(train), np.sort(val)


def vision_splits(name: str, *, data_dir: str | os.PathLike | None = None, download: bool = False,
                  n_train: int | None = None, n_val: int = VALIDATION_SIZE,
                  n_test: int | None = None, label_noise: float = 0.0, noise_seed: int = 0,
                  split_seed: int = 0, test_split_only: bool = False) -> Splits:
    """Normalized train / validation / test tensors of a vision data set.

    Normal mode: validation = ``n_val`` examples held out of the official training split by a
    permutation seeded with ``split_seed``; training = ``n_train`` of the rest (all when None);
    test = the official test split (its first ``n_test`` when given).

    ``test_split_only=True`` (for machines that only hold the 10,000-image test split, as the
    quick experiments do): one permutation of the test split (seeded with ``split_seed``) gives
    the test set (its first ``n_test``, default 2,000), then the validation set (``n_val``), then the
    training pool, from which the first ``n_train`` are used.

    Label noise (``label_noise`` = fraction relabelled, ``noise_seed``) touches training only.
    """
    name = _check_name(name)
    split_seed = check_int("split_seed", split_seed, minimum=0)
    n_val = check_int("n_val", n_val, minimum=1)
    if n_test is not None:
        n_test = check_int("n_test", n_test, minimum=1)
    if test_split_only:
        images, labels = load_raw(name, "test", data_dir, download)
        n_test = 2000 if n_test is None else n_test
        if n_test + n_val >= images.shape[0]:
            raise ValueError(f"n_test + n_val = {n_test + n_val} leaves no training examples out "
                             f"of the {images.shape[0]} images of the test split")
        perm = as_generator(split_seed).permutation(images.shape[0])
        test_idx = perm[:n_test]
        pool = perm[n_test:]
        tr_idx, va_idx = split_indices(pool.shape[0], n_val, n_train, split_seed + 1)
        tr_idx, va_idx = pool[tr_idx], pool[va_idx]
        tr_x, tr_y, va_x, va_y = images[tr_idx], labels[tr_idx], images[va_idx], labels[va_idx]
        te_x, te_y = images[test_idx], labels[test_idx]
        source = f"test split only ({images.shape[0]} images) re-split with seed {split_seed}"
    else:
        images, labels = load_raw(name, "train", data_dir, download)
        tr_idx, va_idx = split_indices(images.shape[0], n_val, n_train, split_seed)
        tr_x, tr_y, va_x, va_y = images[tr_idx], labels[tr_idx], images[va_idx], labels[va_idx]
        te_x, te_y = load_raw(name, "test", data_dir, download)
        if n_test is not None:
            te_x, te_y = te_x[:n_test], te_y[:n_test]
        source = "official train/test splits"
    k = NUM_CLASSES[name]
    noisy, flipped = symmetric_label_noise(tr_y, label_noise, k, noise_seed)
    info = {"dataset": name, "source": source, "n_train": int(tr_y.shape[0]),
            "n_val": int(va_y.shape[0]), "n_test": int(te_y.shape[0]),
            "label_noise": float(label_noise), "flip_rate": float(flipped.mean()),
            "noisy_train_mask": torch.from_numpy(flipped)}
    return Splits(TensorData(normalize_images(tr_x, name), torch.from_numpy(noisy)),
                  TensorData(normalize_images(va_x, name), torch.from_numpy(va_y)),
                  TensorData(normalize_images(te_x, name), torch.from_numpy(te_y)),
                  k, info)


def teacher_splits(*, d: int, K: int, r_star: int, n_train: int, n_val: int, n_test: int,
                   noise_level: float, seed: int) -> Splits:
    """The sparse teacher's regression data (Zhang et al. 2021, Sec. 2) as float32 tensors.

    One teacher (``draw_teacher``) with seed-derived streams for teacher, training, validation and
    test draws. Training and validation labels carry noise ``sigma = noise_level * E_y``; test
    targets are the noiseless teacher outputs (the test error measures recovery of the teacher).
    """
    seed = check_int("seed", seed, minimum=0)
    streams = np.random.SeedSequence(seed).spawn(4)
    teacher = draw_teacher(d, K, r_star, np.random.default_rng(streams[0]))
    parts = []
    for n, stream in zip((n_train, n_val, n_test), streams[1:]):
        ds = make_dataset(teacher, n, np.random.default_rng(stream), noise_level)
        parts.append(ds)
    tr, va, te = parts

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorData:
        return TensorData(torch.from_numpy(x).float(), torch.from_numpy(y).float())

    info = {"dataset": "sparse_teacher", "d": d, "K": K, "r_star": r_star,
            "n_train": n_train, "n_val": n_val, "n_test": n_test, "noise_level": noise_level,
            "noise_sigma": tr.noise_sigma, "teacher": teacher}
    return Splits(tensors(tr.X, tr.y), tensors(va.X, va.y), tensors(te.X, te.y_clean), None, info)


def augment_flip_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4
                      ) -> torch.Tensor:
    """CIFAR augmentation on a batch: random horizontal flip and random crop of the zero-padded
    image back to its size (open_lth's RandomHorizontalFlip + RandomCrop(32, padding=4)).

    Random numbers come from ``generator`` (CPU) so CPU and GPU runs see the same crops.
    """
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip, dx, dy = flip.to(x.device), dx.to(x.device), dy.to(x.device)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h))  # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w))  # (n, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()
