"""Data readers on tiny files in the real on-disk formats, splits, label noise, download paths,
the synthetic teacher data, augmentation, and the real MNIST test split when it is present."""

from __future__ import annotations

import hashlib
import io
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from deep_lottery import data as vdata
from deep_lottery.data import (
    augment_flip_crop,
    load_raw,
    split_indices,
    symmetric_label_noise,
    teacher_splits,
    vision_splits,
)
from deep_lottery.device import generator
from deep_lottery.idx_files import write_idx
from lottery_common import default_data_dir
from sparse_teacher.teacher import network_outputs


def real_data_dir() -> Path:
    """Where the real-MNIST test looks: the library's data folder (``$LOTTERY_LAB_DATA``, else
    ``<repo>/../shared/data``, else the cache), in any layout the reader accepts."""
    return default_data_dir()


REAL_DATA = real_data_dir()

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def write_mnist(folder: Path, split: str, n: int, seed: int, gz: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images


def write_cifar10(root: Path, n_per_batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    all_x, all_y = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x, "labels": y, "batch_label": name}, fh)
        all_x.append(x)
        all_y.append(y)
    return np.concatenate(all_x[:5]), np.concatenate(all_y[:5])


@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "flat"])
def test_mnist_layouts_gz_and_raw(tmp_path: Path, layout: str) -> None:
    folder = tmp_path if layout == "flat" else tmp_path / layout
    images = write_mnist(folder, "test", 12, seed=1, gz=(layout != "flat"))
    x, y = load_raw("mnist", "test", data_dir=tmp_path)
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x[:, 0], images)


def test_cifar10_and_cifar100_pickles(tmp_path: Path) -> None:
    train_x, train_y = write_cifar10(tmp_path, 4, seed=0)
    x, y = load_raw("cifar10", "train", data_dir=tmp_path)
    assert x.shape == (20, 3, 32, 32)
    assert np.array_equal(x.reshape(20, -1), train_x) and np.array_equal(y, train_y)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    with open(folder / "test", "wb") as fh:
        pickle.dump({"data": raw, "fine_labels": [0, 99, 5, 7, 8, 1], "coarse_labels": [0] * 6},
                    fh)
    x, y = load_raw("cifar100", "test", data_dir=tmp_path)
    assert y.tolist() == [0, 99, 5, 7, 8, 1]
    assert np.array_equal(x[2, 1], raw[2, 1024:2048].reshape(32, 32))  # channel-major rows


def test_missing_data_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_raw("mnist", "train", data_dir=tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "mnist") in message
    assert "download=True" in message and "LOTTERY_LAB_DATA" in message
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_raw("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_raw("svhn", "test", data_dir=tmp_path)


def test_offline_download_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(vdata.urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_raw("fashion_mnist", "test", data_dir=tmp_path, download=True)
    message = str(err.value)
    assert "fashion-mnist.s3-website" in message and "no network" in message
    assert str(tmp_path / "fashion-mnist") in message


def test_download_path_writes_checked_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    source = tmp_path / "server"
    write_mnist(source, "test", 7, seed=3)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    md5 = {name[:-3]: hashlib.md5(blob).hexdigest() for name, blob in files.items()}
    monkeypatch.setitem(vdata.IDX_MD5, "mnist", md5)
    requested = []

    def serve(url, timeout=None):
        requested.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(vdata.urllib.request, "urlopen", serve)
    x, y = load_raw("mnist", "test", data_dir=tmp_path / "data", download=True)
    assert x.shape == (7, 1, 28, 28)
    assert (tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert all(u.startswith(vdata.MNIST_MIRRORS[0]) for u in requested)
    monkeypatch.setitem(vdata.IDX_MD5, "mnist", {k: "0" * 32 for k in md5})  # corrupt download
    with pytest.raises(FileNotFoundError, match="MD5 mismatch"):
        load_raw("mnist", "test", data_dir=tmp_path / "other", download=True)


def test_splits_are_disjoint_sized_and_deterministic(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", "train", 300, seed=4)
    write_mnist(tmp_path / "mnist", "test", 50, seed=5)
    a = vision_splits("mnist", data_dir=tmp_path, n_val=100, n_train=120)
    b = vision_splits("mnist", data_dir=tmp_path, n_val=100, n_train=120)
    assert (len(a.train), len(a.val), len(a.test)) == (120, 100, 50)
    assert torch.equal(a.train.x, b.train.x)
    tr, va = split_indices(300, 100, 120, seed=0)
    assert len(np.intersect1d(tr, va)) == 0
    full = vision_splits("mnist", data_dir=tmp_path, n_val=100)
    assert len(full.train) == 200
    # normalization (x/255 - 0.1307) / 0.3081
    raw, _ = load_raw("mnist", "test", data_dir=tmp_path)
    expected = (raw[:3].astype(np.float32) / 255 - 0.1307) / 0.3081
    assert np.allclose(a.test.x[:3].numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="n_train"):
        vision_splits("mnist", data_dir=tmp_path, n_val=100, n_train=250)


def test_label_noise_is_open_lth_randomize_labels() -> None:
    labels = np.arange(1000) % 10
    noisy, flipped = symmetric_label_noise(labels, 0.3, 10, seed=7)
    n = 300
    idx = np.random.RandomState(8).permutation(1000)[:n]
    new = np.random.RandomState(7).randint(10, size=n)
    expected = labels.copy()
    expected[idx] = new
    assert np.array_equal(noisy, expected)
    assert np.array_equal(flipped, expected != labels)
    assert flipped.mean() == pytest.approx(0.3 * 0.9, abs=0.03)
    same, none = symmetric_label_noise(labels, 0.0, 10)
    assert np.array_equal(same, labels) and not none.any()
    with pytest.raises(ValueError, match="label_noise"):
        symmetric_label_noise(labels, 1.5, 10)


def test_label_noise_touches_training_only(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", "train", 200, seed=4)
    write_mnist(tmp_path / "mnist", "test", 40, seed=5)
    clean = vision_splits("mnist", data_dir=tmp_path, n_val=50)
    noisy = vision_splits("mnist", data_dir=tmp_path, n_val=50, label_noise=0.5)
    assert torch.equal(clean.val.y, noisy.val.y) and torch.equal(clean.test.y, noisy.test.y)
    changed = (clean.train.y != noisy.train.y).numpy()
    assert np.array_equal(changed, noisy.info["noisy_train_mask"].numpy())
    assert 0.3 < changed.mean() < 0.6


def test_teacher_splits_match_the_numpy_teacher() -> None:
    s = teacher_splits(d=12, K=3, r_star=4, n_train=50, n_val=20, n_test=30, noise_level=0.1,
                       seed=3)
    teacher = s.info["teacher"]
    expected = network_outputs(teacher.weights, teacher.supports, s.test.x.double().numpy())
    assert np.allclose(s.test.y.numpy(), expected, atol=1e-5)  # test targets are noiseless
    clean = network_outputs(teacher.weights, teacher.supports, s.train.x.double().numpy())
    resid = s.train.y.numpy() - clean
    assert 0 < np.std(resid) < 0.5 * np.std(clean)
    assert s.num_classes is None and len(s.val) == 20


def test_augment_flip_crop_matches_a_loop() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = augment_flip_crop(x, generator(5), padding=2)
    g = generator(5)
    flip = torch.rand(2, generator=g) < 0.5
    dx = torch.randint(0, 5, (2,), generator=g)
    dy = torch.randint(0, 5, (2,), generator=g)
    for i in range(2):
        img = x[i].flip(2) if flip[i] else x[i]
        padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
        ref = padded[:, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6]
        assert torch.equal(out[i], ref)


def test_the_real_mnist_test_follows_lottery_lab_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOTTERY_LAB_DATA", str(tmp_path))
    assert real_data_dir() == tmp_path


@pytest.mark.skipif(vdata.missing_mnist_files("mnist", ("test",), REAL_DATA) is not None,
                    reason=f"real MNIST test split not present under {REAL_DATA}")
def test_real_mnist_test_split() -> None:
    x, y = load_raw("mnist", "test", data_dir=REAL_DATA)
    assert x.shape == (10000, 1, 28, 28)
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    s = vision_splits("mnist", data_dir=REAL_DATA, n_train=500, n_val=1000,
                      test_split_only=True)
    assert (len(s.train), len(s.val), len(s.test)) == (500, 1000, 2000)
    assert abs(float(s.test.x.mean())) < 0.05 and abs(float(s.test.x.std()) - 1) < 0.05
    if vdata.missing_mnist_files("mnist", ("train",), REAL_DATA) is not None:
        with pytest.raises(FileNotFoundError, match="train"):
            vision_splits("mnist", data_dir=REAL_DATA)


def test_missing_cifar_files_names_files_folder_and_archive(tmp_path):
    from deep_lottery.data import CIFAR_FILES, missing_cifar_files

    text = missing_cifar_files("cifar10", tmp_path)
    assert "data_batch_1" in text and "test_batch" in text and "cifar-10-python.tar.gz" in text
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in CIFAR_FILES["cifar10"][:-1]:
        (folder / name).write_bytes(b"")
    assert missing_cifar_files("cifar10", tmp_path).split(" not found")[0] == "cifar10 files test_batch"
    (folder / "test_batch").write_bytes(b"")
    assert missing_cifar_files("cifar10", tmp_path) is None
    with pytest.raises(ValueError, match="cifar10"):
        missing_cifar_files("svhn", tmp_path)
