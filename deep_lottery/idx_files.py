"""Readers for the IDX files of MNIST and Fashion-MNIST (plain NumPy, no torch needed).

Format (LeCun's MNIST page): a big-endian header ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the data. Files may be gzipped (``.gz``). A file that does not read
back (a truncated or otherwise corrupted gzip stream, a bad header, a size that disagrees with the
header) raises a ValueError that names the file and says to replace it; ``idx_file_problem``
reports the same without raising.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lottery_common import DATA_ENV

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


class CorruptedFileError(ValueError):
    """A data file on disk that does not read back; the message names it and says to replace it."""


def _corrupted(path: Path, reason: str) -> CorruptedFileError:
    return CorruptedFileError(f"{path} is corrupted ({reason}); replace it with a fresh copy")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a NumPy array of its stored shape.

    Raises ``CorruptedFileError`` (a ValueError) naming the file when the gzip stream is broken
    or the header disagrees with the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _corrupted(path, f"{type(exc).__name__}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise _corrupted(path, f"not an IDX file: bad magic number {raw[:4]!r}")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupted(path, f"the header of {ndim} sizes is cut short")
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise _corrupted(path, f"header says shape {shape} ({expected} bytes) but the file holds "
                               f"{len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def idx_file_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` reads back as an IDX file, else why not (``"corrupted (EOFError: ...)"``).

    Reads (and decompresses) the whole file once per version of it (path, size, modification
    time): cheap enough to check the files a run needs before it starts.
    """
    path = Path(path)
    stat = path.stat()
    return _idx_problem(str(path), stat.st_size, stat.st_mtime_ns)


def unreadable_file(paths: Iterable[str | os.PathLike], label: str) -> str | None:
    """The first of ``paths`` that does not read back, as ``"LABEL file PATH is corrupted (...);
    replace it with a fresh copy"``; None when every one reads."""
    for path in paths:
        problem = idx_file_problem(path)
        if problem is not None:
            return f"{label} file {Path(path)} is {problem}; replace it with a fresh copy"
    return None


@functools.lru_cache(maxsize=32)
def _idx_problem(path: str, size: int, mtime_ns: int) -> str | None:
    try:
        read_idx(path)
    except CorruptedFileError as exc:
        return str(exc).removeprefix(f"{path} is ").removesuffix("; replace it with a fresh copy")
    return None


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz); used to make test files."""
    path = Path(path)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    arr = np.asarray(array)
    code = codes.get(arr.dtype)
    if code is None:
        raise ValueError(f"array dtype {arr.dtype} has no IDX code; allowed: "
                         f"{sorted(str(d) for d in codes)}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + arr.astype(np.dtype(_IDX_DTYPES[code])).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def find_idx_file(directory: str | os.PathLike, stem: str) -> Path | None:
    """Locate ``stem`` or ``stem.gz`` in ``directory`` or its ``raw/`` subfolder (torchvision layout)."""
    directory = Path(directory)
    for folder in (directory, directory / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) of the MNIST ``split`` ("train" or "test").

    Raises ``FileNotFoundError`` naming the missing files and the folder searched.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = {}
    for kind in ("images", "labels"):
        stem = MNIST_FILES[(split, kind)]
        found = find_idx_file(directory, stem)
        if found is None:
            raise FileNotFoundError(
                f"MNIST {split} {kind} not found: put {stem} or {stem}.gz in {Path(directory)} "
                f"(or its raw/ subfolder), or point ${DATA_ENV} at the folder that holds them")
        paths[kind] = found
    images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels
