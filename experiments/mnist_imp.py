"""IMP on MNIST, shared by the figures of several papers (Zhang et al. 2021 Fig. 7; Frankle &
Carbin 2019 Figs. 3-5): the splits a cell asks for, what data a size lacks, and one IMP run.

Data: the full sizes use the official 60k/10k splits (55k/5k train/validation); the quick sizes
use whatever the data directory holds, here only the 10,000-image test split, re-split
deterministically (``vision_splits(test_split_only=True)``, split seed 0).
"""

from __future__ import annotations

from typing import Any


def mnist_splits(params: dict[str, Any]) -> Any:
    """The MNIST splits a cell asks for (``mnist_files`` = "test" re-splits the test split)."""
    from sparse_teacher.vision.data import vision_splits

    if params["mnist_files"] not in ("train", "test"):
        raise ValueError(f"mnist_files must be 'train' or 'test', got {params['mnist_files']!r}")
    n_test = int(params["n_test"]) or None
    return vision_splits("mnist", data_dir=params.get("data_dir"), n_train=int(params["N"]),
                         n_val=int(params["n_val"]), n_test=n_test, split_seed=0,
                         test_split_only=params["mnist_files"] == "test")


def missing_mnist(size: str) -> str | None:
    """What MNIST data the size lacks: the quick size re-splits the test split; the full size
    needs the training and test splits."""
    from sparse_teacher.vision.data import missing_mnist_files

    return missing_mnist_files("mnist", ("test",) if size == "quick" else ("train", "test"))


def run_mnist_imp(params: dict[str, Any], seed: int, model: str,
                  branches: tuple[str, ...] = ("imp",)) -> dict[str, Any]:
    """IMP of ``model`` on N MNIST examples (Adam, lr 1.2e-3, batch 60, 20% layer-wise per
    level, Glorot init) with the control ``branches``; one row of per-level lists."""
    from sparse_teacher.vision.imp import IMPConfig, cache_directory, run_imp
    from sparse_teacher.vision.models import build_model
    from sparse_teacher.vision.pruning import PruneConfig
    from sparse_teacher.vision.tables import records_to_row
    from sparse_teacher.vision.training import TrainConfig

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
