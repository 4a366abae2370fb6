"""A toy experiment for the engine and CLI tests (registered only inside tests that ask for it)."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import registry
from experiments.registry import Experiment, Size

TOY = "toy-engine-test"


def toy_run_cell(params: dict, seed: int, *, sleep: float = 0.0, fail_x: float | None = None
                 ) -> dict:
    """Success with probability x; ``value`` is a normal draw shifted by n."""
    if fail_x is not None and params["x"] == fail_x:
        raise RuntimeError(f"toy failure at x={params['x']}")
    time.sleep(sleep)
    rng = np.random.default_rng(seed)
    return {"success": int(rng.random() < params["x"]), "value": float(rng.normal() + params["n"])}


def toy_plot(runs: pd.DataFrame, path_stem: Path) -> None:
    from experiments.plotting import figure, save_figure

    fig, ax = figure()
    rates = runs.groupby("x")["success"].mean()
    ax.plot(rates.index, rates.to_numpy(), "o", label="measured")
    ax.plot([0, 1], [0, 1], "--", label="theory: P = x")
    ax.set(xlabel="x", ylabel="success rate", title="Toy (Fig. 0)")
    save_figure(fig, path_stem)


def toy_claims(runs: pd.DataFrame) -> list[dict]:
    from experiments.analysis import claim_in_interval, fit_line

    fit = fit_line(runs["x"].to_numpy(float), runs["success"].to_numpy(float))
    return [claim_in_interval("success rate grows like x", 1.0, fit.slope, fit.slope_ci)]


def make_toy(*, sleep: float = 0.0, fail_x: float | None = None, name: str = TOY) -> Experiment:
    quick = Size(grids=[{"x": [0.1, 0.5, 0.9], "n": [1, 2]}, {"n": [2], "x": [0.5, 0.7]}],
                 trials=4, estimate="~1 s")
    full = Size(grids=[{"x": [0.1, 0.3, 0.5, 0.7, 0.9], "n": [1, 2, 3]}], trials=6)
    run_cell = functools.partial(toy_run_cell, sleep=sleep, fail_x=fail_x)
    return Experiment(name=name, paper="Toy paper, Fig. 0", description="engine test toy",
                      quick=quick, full=full, run_cell=run_cell, plot=toy_plot,
                      claims=toy_claims)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Experiment:
    """The toy experiment, registered under ``TOY`` for the duration of one test."""
    experiment = make_toy()
    registry.all_experiments()  # import the real catalog first
    monkeypatch.setitem(registry._REGISTRY, TOY, experiment)
    return experiment


@pytest.fixture
def one_torch_thread():
    """Tiny torch models run fastest (and immune to an overloaded machine) on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def learnable_mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with learnable MNIST-format files (700 training, 200 test images)."""
    pytest.importorskip("torch")
    from test_deep_lottery_imp import write_learnable_mnist

    root = tmp_path_factory.mktemp("data")
    write_learnable_mnist(root / "mnist", 700, 200, seed=0)
    return root


@pytest.fixture
def tiny_mnist_env(learnable_mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``learnable_mnist_dir`` found through ``$LOTTERY_LAB_DATA`` for one test."""
    from lottery_common import DATA_ENV

    monkeypatch.setenv(DATA_ENV, str(learnable_mnist_dir))
    return learnable_mnist_dir
