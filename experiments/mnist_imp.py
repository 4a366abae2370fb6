"""IMP on MNIST, shared by the figures of several papers (Zhang et al. 2021 Fig. 7; Frankle &
Carbin 2019 Figs. 3-5): the splits a cell asks for, what data a size lacks, and one IMP run.

Data: the full sizes use the official 60k/10k splits (55k/5k train/validation); the quick sizes
use whatever the data directory holds, here only the 10,000-image test split, re-split
deterministically (``vision_splits(test_split_only=True)``, split seed 0).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .registry import Param

MNIST_IMAGES = {"train": 60_000, "test": 10_000}
DEFAULT_TEST = 2000  # test images of the re-split test split when n_test is 0

MNIST_PARAMS: dict[str, Param] = {
    "N": Param("int", low=1), "levels": Param("int", low=1), "iterations": Param("int", low=1),
    "eval_every": Param("int", low=1), "n_val": Param("int", low=1), "n_test": Param("int", low=0),
    "mnist_files": Param("str", choices=("train", "test")),
}
"""Rules of the MNIST IMP parameters (``n_test`` = 0: the whole official test split, or 2,000
images of the re-split test split); ``check_mnist_sizes`` checks that the sizes fit the split."""


def check_mnist_sizes(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """N, n_val and n_test must fit in the split they are drawn from: the 10,000 test images
    (``mnist_files`` = "test": test, validation and training pool) or the 60,000 training images
    (validation and training; the official test split gives the test set)."""
    n, n_val, n_test = int(cell["N"]), int(cell["n_val"]), int(cell["n_test"])
    if cell["mnist_files"] == "test":
        total, test = MNIST_IMAGES["test"], n_test or DEFAULT_TEST
        if test + n_val >= total:
            yield ("n_val", f"n_val must be below {total - test} (the {total} images of the MNIST "
                            f"test split less n_test = {test})")
        elif n > total - test - n_val:
            yield ("N", f"N must be at most {total - test - n_val} (the {total} images of the MNIST "
                        f"test split less n_test = {test} and n_val = {n_val})")
        return
    total = MNIST_IMAGES["train"]
    if n_val >= total:
        yield ("n_val", f"n_val must be below {total} (the images of the MNIST training split)")
    elif n > total - n_val:
        yield ("N", f"N must be at most {total - n_val} (the {total} images of the MNIST training "
                    f"split less n_val = {n_val})")
    if n_test > MNIST_IMAGES["test"]:
        yield ("n_test", f"n_test must be at most {MNIST_IMAGES['test']} (the MNIST test split; 0: "
                         "all of it)")


def mnist_splits(params: dict[str, Any]) -> Any:
    """The MNIST splits a cell asks for (``mnist_files`` = "test" re-splits the test split)."""
    from deep_lottery.data import vision_splits

    if params["mnist_files"] not in ("train", "test"):
        raise ValueError(f"mnist_files must be 'train' or 'test', got {params['mnist_files']!r}")
    n_test = int(params["n_test"]) or None
    return vision_splits("mnist", data_dir=params.get("data_dir"), n_train=int(params["N"]),
                         n_val=int(params["n_val"]), n_test=n_test, split_seed=0,
                         test_split_only=params["mnist_files"] == "test")


def missing_mnist(size: str) -> str | None:
    """What MNIST data the size lacks or cannot read: the quick size re-splits the test split; the
    full size needs the training and test splits. A corrupted file is named (once, before the
    run) with the advice to replace it."""
    from deep_lottery.data import missing_mnist_files, unreadable_mnist_files

    splits = ("test",) if size == "quick" else ("train", "test")
    return missing_mnist_files("mnist", splits) or unreadable_mnist_files("mnist", splits)


def run_mnist_imp(params: dict[str, Any], seed: int, model: str,
                  branches: tuple[str, ...] = ("imp",)) -> dict[str, Any]:
    """IMP of ``model`` on N MNIST examples (Adam, lr 1.2e-3, batch 60, 20% layer-wise per
    level, Glorot init) with the control ``branches``; one row of per-level lists."""
    from deep_lottery.imp import IMPConfig, cache_directory, run_imp
    from deep_lottery.models import build_model
    from deep_lottery.pruning import PruneConfig
    from deep_lottery.tables import records_to_row
    from deep_lottery.training import TrainConfig

    seed = int(seed) % (2**62)
    splits = mnist_splits(params)
    train = TrainConfig(iterations=int(params["iterations"]), batch_size=60, optimizer="adam",
                        lr=1.2e-3, eval_every=int(params["eval_every"]), data_order_seed=seed)
    config = IMPConfig(levels=int(params["levels"]), train=train,
                       prune=PruneConfig(fraction=0.2, scope="layerwise"), seed=seed)
    records = run_imp(lambda s: build_model(model, seed=s, init="glorot"), splits, config,
                      task="classification", branches=branches,
                      device=params.get("device", "auto"), progress=False,
                      out_dir=cache_directory(config, extra={**params, "model": model}))
    return records_to_row(records)
