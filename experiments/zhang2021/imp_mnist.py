"""IMP on MNIST with Lenet-5 for several training-set sizes N (Zhang et al., NeurIPS 2021, Fig. 7).

Lenet-5 is pruned by IMP (20% of the remaining weights per round, layer-wise, output layer at
half the rate, reset to the initialization) after being trained on N MNIST examples; the test
accuracy (at the early-stopping iteration of minimum validation loss) is recorded against the
percentage of weights remaining. Claims (the paper's reading of Fig. 7: pruning lowers the sample
complexity): a pruned ticket is at least as accurate as the dense network trained on the same N,
and more data gives higher accuracy at every density.

Data: the full size uses the official 60k/10k splits (55k/5k train/validation); the quick size
uses whatever the data directory holds, here only the 10,000-image test split, re-split
deterministically (``vision_splits(test_split_only=True)``, split seed 0): 2,000 test, 1,000
validation, and the first N of the remaining 7,000 for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim
from ..mnist_imp import missing_mnist, run_mnist_imp
from ..plotting import figure, save_figure
from ..registry import Experiment, Size, register

MODEL = "lenet5"


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One IMP run of Lenet-5 on N MNIST examples; per-level values as lists."""
    return run_mnist_imp(params, seed, MODEL)


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    from sparse_teacher.vision.tables import explode_levels

    return explode_levels(runs, "imp", ["N", "trial"])


def _curve(table: pd.DataFrame, n: int) -> pd.DataFrame:
    rows = table[table["N"] == n]
    return rows.groupby("level").agg(density=("density", "mean"),
                                     acc=("test_metric_at_stop", "mean"),
                                     acc_sd=("test_metric_at_stop", "std"),
                                     trials=("test_metric_at_stop", "size")).reset_index()


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Test accuracy against the percentage of weights remaining, one line per N."""
    table = _table(runs)
    fig, ax = figure()
    for n in sorted(table["N"].unique()):
        c = _curve(table, n)
        line, = ax.plot(100 * c["density"], 100 * c["acc"], "o-", ms=4, label=f"N = {n}")
        if (c["trials"] > 1).any():
            ax.fill_between(100 * c["density"], 100 * (c["acc"] - c["acc_sd"]),
                            100 * (c["acc"] + c["acc_sd"]), color=line.get_color(), alpha=0.2)
        ax.axhline(100 * c["acc"].iloc[0], color=line.get_color(), ls=":", lw=1)
    ax.plot([], [], "k:", lw=1, label="dense accuracy (theory: tickets match or beat it)")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="weights remaining (%)", ylabel="test accuracy at early stop (%)",
           title="IMP, Lenet-5 on MNIST, 20% per round\n(Zhang et al. 2021, Fig. 7)")
    ax.legend()
    save_figure(fig, path_stem)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Best pruned >= dense (every N); accuracy increases with N at every level."""
    table = _table(runs)
    ns = sorted(table["N"].unique())
    gains = []
    for n in ns:
        c = _curve(table, n)
        gains.append((n, float(c["acc"].iloc[1:].max() - c["acc"].iloc[0]),
                      float(c.loc[c["acc"].iloc[1:].idxmax(), "density"])))
    out = [claim("a pruned ticket is at least as accurate as the dense Lenet-5 at every N "
                 "(best pruned - dense accuracy >= 0)", ">= 0 for every N",
                 "; ".join(f"N={n}: {100 * g:+.2f} pt at {100 * d:.1f}%" for n, g, d in gains),
                 all(g >= 0 for _, g, _ in gains))]
    if len(ns) >= 2:
        small, large = _curve(table, ns[0]), _curve(table, ns[-1])
        levels = np.intersect1d(small["level"], large["level"])
        diff = (large.set_index("level").loc[levels, "acc"]
                - small.set_index("level").loc[levels, "acc"])
        out.append(claim(f"more data gives higher accuracy at every density "
                         f"(N={ns[-1]} vs N={ns[0]})", "positive at every level",
                         f"min {100 * diff.min():+.2f} pt, mean {100 * diff.mean():+.2f} pt over "
                         f"{len(levels)} levels", bool((diff > 0).all())))
    return out


EXPERIMENT = register(Experiment(
    name="imp-mnist",
    paper="Zhang, Wang, Liu, Chen, Xiong, Why Lottery Ticket Wins? (NeurIPS 2021), Fig. 7",
    description="IMP (20% per round) on Lenet-5 / MNIST for several N: test accuracy against "
                "weights remaining",
    quick=Size(grids=[{"N": [1000, 3000, 7000], "levels": [12], "iterations": [400],
                       "eval_every": [50], "n_val": [1000], "n_test": [2000],
                       "mnist_files": ["test"]}], trials=1,
               estimate="~2 min (4 min on a loaded 2-core machine)"),
    full=Size(grids=[{"N": [1000, 2000, 5000, 10000, 55000], "levels": [20],
                      "iterations": [10000], "eval_every": [100], "n_val": [5000],
                      "n_test": [0], "mnist_files": ["train"]}], trials=3,
              estimate="GPU: ~1 h"),
    run_cell=run_cell, plot=plot, claims=claims,
    notes="Lenet-5: conv 6@5x5 (pad 2), max-pool, conv 16@5x5, max-pool, fc 120-84-10, Gaussian "
          "Glorot init, zero biases. Training per level: Adam lr 1.2e-3 (Frankle & Carbin's Lenet "
          "setting), batch 60, fixed iteration budget; accuracy measured at the iteration of "
          "minimum validation loss. Pruning: layer-wise 20% per round of the remaining weights "
          "(output layer 10%), magnitude (large_final), reset to initialization. Quick size: "
          "only the MNIST test split is on disk, re-split with seed 0 into 2,000 test / 1,000 "
          "validation / 7,000 training pool (first N used); 400 iterations per level, 12 levels "
          "(down to ~7% of the weights). The training subset is fixed across trials (split seed "
          "0); trials vary the initialization and data order. The paper's optimizer, N values and "
          "iteration budget are not in our sources; these are our choices. The first claim takes "
          "the best of 12 pruned levels against one dense run, so it is biased upwards by "
          "selection; read it with the figure. $LOTTERY_LAB_IMP_CACHE keeps per-level outputs "
          "(resume).",
    requires=("torch",),
    missing_data=missing_mnist,
))
