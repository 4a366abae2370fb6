"""One IMP run of a registered model, shared by the Frankle & Carbin experiments (``lth-*``).

Data: ``dataset`` = "mnist" (the quick sizes: the official splits with ``mnist_files`` = "train",
or the re-split test split with "test", ``mnist_imp.mnist_splits``) or "cifar10" (the full sizes:
45k/5k training/validation from the training batches, the 10k test batch; ``n_test`` = 0 keeps
all of it). The model takes the data's image shape through the builder (``input_shape``), so the
conv nets, VGG and ResNet run on 28x28x1 MNIST without copies.

A row holds the per-level lists of ``deep_lottery.tables.records_to_row`` (``FIELDS`` plus the
training accuracy at the early-stopping iteration), optional flat histories, the device and the
mean training throughput over the levels (images per second, evaluations excluded).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..mnist_imp import MNIST_PARAMS, check_mnist_sizes, missing_mnist, mnist_splits
from ..registry import Param

DATASETS = ("mnist", "cifar10")
CIFAR_IMAGES = {"train": 50_000, "test": 10_000}
ROW_FIELDS = ("density", "early_stop_iteration", "test_metric_at_stop", "test_metric_end",
              "train_metric_end", "train_metric_at_stop", "val_loss_min")
"""Per-level fields of a row (``<branch>_<field>`` lists)."""

IMP_PARAMS: dict[str, Param] = {**MNIST_PARAMS, "dataset": Param("str", choices=DATASETS)}
"""Rules of the data and IMP-size parameters (``mnist_files`` is ignored for CIFAR-10)."""


def check_sizes(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """N, n_val and n_test must fit in the split they are drawn from."""
    if cell.get("dataset", "mnist") == "mnist":
        yield from check_mnist_sizes(cell)
        return
    n, n_val, n_test = int(cell["N"]), int(cell["n_val"]), int(cell["n_test"])
    total = CIFAR_IMAGES["train"]
    if n_val >= total:
        yield ("n_val", f"n_val must be below {total} (the CIFAR-10 training images)")
    elif n > total - n_val:
        yield ("N", f"N must be at most {total - n_val} (the {total} CIFAR-10 training images "
                    f"less n_val = {n_val})")
    if n_test > CIFAR_IMAGES["test"]:
        yield ("n_test", f"n_test must be at most {CIFAR_IMAGES['test']} (0: all of them)")


def missing_data(dataset_of_size: Mapping[str, str]) -> Any:
    """``missing_data(size)`` for an experiment whose sizes use the data sets ``dataset_of_size``
    (e.g. ``{"quick": "mnist", "full": "cifar10"}``): what the size lacks, or None."""

    def missing(size: str) -> str | None:
        if dataset_of_size[size] == "mnist":
            return missing_mnist(size)
        from deep_lottery.data import missing_cifar_files

        return missing_cifar_files("cifar10")

    return missing


def splits_for(params: Mapping[str, Any]) -> Any:
    """The splits a cell asks for (see the module docstring)."""
    if params.get("dataset", "mnist") == "mnist":
        return mnist_splits(dict(params))
    from deep_lottery.data import vision_splits

    return vision_splits("cifar10", data_dir=params.get("data_dir"), n_train=int(params["N"]),
                         n_val=int(params["n_val"]), n_test=int(params["n_test"]) or None,
                         split_seed=0)


def run_imp_cell(params: Mapping[str, Any], seed: int, *, model: str, init: str,
                 train: Any, prune: Any, branches: Sequence[str] = ("imp",),
                 rewind_iteration: int = 0, model_options: Mapping[str, Any] | None = None,
                 histories: Sequence[str] = ()) -> dict[str, Any]:
    """IMP of ``model`` (``params["levels"]`` levels) with the control ``branches``; one row.

    ``train`` is a ``TrainConfig`` whose data order is re-seeded from ``seed``; ``prune`` a
    ``PruneConfig``. Levels are cached under ``$LOTTERY_LAB_IMP_CACHE`` when it is set (and then
    checkpointed inside each level, so a killed run resumes where it stopped).
    """
    from deep_lottery.imp import IMPConfig, cache_directory, run_imp
    from deep_lottery.models import build_model
    from deep_lottery.tables import records_to_row

    seed = int(seed) % (2**62)
    options = dict(model_options or {})
    splits = splits_for(params)
    shape = tuple(int(v) for v in splits.train.x.shape[1:])
    config = IMPConfig(levels=int(params["levels"]),
                       train=dataclasses.replace(train, data_order_seed=seed), prune=prune,
                       rewind_iteration=rewind_iteration, seed=seed)

    def make_model(s: int) -> Any:
        return build_model(model, seed=s, init=init, input_shape=shape, **options)

    records = run_imp(make_model, splits, config, task="classification", branches=branches,
                      device=params.get("device", "auto"), progress=False,
                      out_dir=cache_directory(config, extra={**params, "model": model, **options}))
    row: dict[str, Any] = records_to_row(records, ROW_FIELDS, histories=histories)
    speeds = [float(r["images_per_second"]) for r in records
              if math.isfinite(float(r.get("images_per_second", math.nan)))]
    row["images_per_second"] = sum(speeds) / len(speeds) if speeds else math.nan
    row["device"] = str(records[0]["device"])
    return row
