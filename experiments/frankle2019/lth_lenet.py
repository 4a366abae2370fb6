"""The original lottery-ticket experiment: Lenet-300-100 on MNIST (Frankle & Carbin, ICLR 2019,
Figs. 3-5).

IMP (layer-wise, 20% of the remaining weights per round, output layer at 10%, reset to the
initialization) against two controls at the same density: random reinitialization of the
winning ticket's mask (Fig. 4) and one-shot pruning of the dense trained network straight to that
density (Fig. 5). Recorded against P_m (% of weights remaining): the early-stopping iteration
(minimum validation loss) and the test accuracy there. Claims: winning tickets are more accurate
than their randomly reinitialized copies and learn at least as fast, tickets down to P_m ~ 21%
match the dense network, and iterative pruning beats one-shot pruning at the sparsest level.

Data: the full size uses the official splits (55k train / 5k validation / 10k test); the quick
size uses only the 10,000-image test split on disk, re-split deterministically (split seed 0):
2,000 test, 1,000 validation and the first N = 5,000 of the remaining 7,000 for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim
from ..mnist_imp import MNIST_PARAMS, check_mnist_sizes, missing_mnist, run_mnist_imp
from ..plotting import figure, save_figure
from ..registry import Experiment, Size, register

MODEL = "lenet_300_100"

BRANCHES = ("imp", "reinit", "one_shot")
LABELS = {"imp": "winning ticket (iterative, reset)", "reinit": "random reinitialization",
          "one_shot": "one-shot pruning"}


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One IMP run of Lenet-300-100 and its reinit / one-shot controls; per-level lists."""
    return run_mnist_imp(params, seed, MODEL, branches=BRANCHES)


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    from deep_lottery.tables import explode_levels

    parts = []
    for branch in BRANCHES:
        t = explode_levels(runs, branch, ["trial"])
        t["branch"] = branch
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    dense = table[(table["branch"] == "imp") & (table["level"] == 0)]
    for branch in ("reinit", "one_shot"):  # every control shares IMP's dense level 0
        extra = dense.copy()
        extra["branch"] = branch
        table = pd.concat([table, extra], ignore_index=True)
    return table


def _curve(table: pd.DataFrame, branch: str) -> pd.DataFrame:
    rows = table[table["branch"] == branch]
    return rows.groupby("level").agg(
        density=("density", "mean"), acc=("test_metric_at_stop", "mean"),
        acc_sd=("test_metric_at_stop", "std"), stop=("early_stop_iteration", "mean"),
        stop_sd=("early_stop_iteration", "std")).reset_index()


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """(a) early-stopping iteration and (b) test accuracy at early stop, against P_m."""
    table = _table(runs)
    fig, (left, right) = figure(1, 2, figsize=(10.5, 4.2))
    for branch in BRANCHES:
        c = _curve(table, branch)
        pm = 100 * c["density"]
        left.errorbar(pm, c["stop"], yerr=c["stop_sd"].fillna(0), fmt="o-", ms=4, capsize=2,
                      label=LABELS[branch])
        right.errorbar(pm, 100 * c["acc"], yerr=100 * c["acc_sd"].fillna(0), fmt="o-", ms=4,
                       capsize=2, label=LABELS[branch])
    dense = _curve(table, "imp").iloc[0]
    right.axhline(100 * dense["acc"], color="k", ls=":", lw=1,
                  label="dense network, measured (tickets should match it)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("P_m, weights remaining (%)")
    left.set(ylabel="early-stopping iteration (min. validation loss)",
             title="(a) learning speed (Frankle & Carbin 2019, Fig. 4)")
    right.set(ylabel="test accuracy at early stop (%)",
              title="(b) accuracy, Lenet-300-100 on MNIST (Figs. 4-5)")
    right.legend()
    save_figure(fig, path_stem)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Ticket vs reinit (accuracy, speed), ticket vs dense at P_m ~ 21%, iterative vs one-shot."""
    table = _table(runs)
    imp, reinit, one_shot = (_curve(table, b).set_index("level") for b in BRANCHES)
    pruned = [lv for lv in imp.index if lv >= 2 and lv in reinit.index]
    acc_gap = (imp.loc[pruned, "acc"] - reinit.loc[pruned, "acc"])
    stop_gap = (imp.loc[pruned, "stop"] - reinit.loc[pruned, "stop"])
    out = [
        claim("winning tickets are more accurate than random reinitialization (levels >= 2, "
              "mean accuracy gap)", "> 0",
              f"{100 * acc_gap.mean():+.2f} pt (min {100 * acc_gap.min():+.2f}, max "
              f"{100 * acc_gap.max():+.2f}) over P_m {100 * imp.loc[pruned[-1], 'density']:.1f}"
              f"-{100 * imp.loc[pruned[0], 'density']:.1f}%", acc_gap.mean() > 0),
        claim("winning tickets learn at least as fast as random reinitialization (mean "
              "early-stopping iteration gap, levels >= 2)", "<= 0 iterations",
              f"{stop_gap.mean():+.0f} iterations", stop_gap.mean() <= 0),
    ]
    target = 0.21
    level = int(imp.index[np.argmin(np.abs(imp["density"].to_numpy() - target))])
    diff = imp.loc[level, "acc"] - imp.loc[0, "acc"]
    out.append(claim(f"tickets at P_m ~ 21% match the dense network (accuracy within 0.5 pt "
                     f"or better; level {level})", ">= -0.5 pt",
                     f"{100 * diff:+.2f} pt at P_m = {100 * imp.loc[level, 'density']:.1f}%",
                     diff >= -0.005))
    sparse = sorted(lv for lv in imp.index if lv in one_shot.index and lv > 0)[-3:]
    it_gap = (imp.loc[sparse, "acc"] - one_shot.loc[sparse, "acc"]).mean()
    out.append(claim("iterative pruning is at least as accurate as one-shot pruning at the "
                     "sparsest levels (mean gap over the 3 sparsest)", ">= 0 pt",
                     f"{100 * it_gap:+.2f} pt over P_m = "
                     f"{100 * imp.loc[sparse[-1], 'density']:.1f}-"
                     f"{100 * imp.loc[sparse[0], 'density']:.1f}%", it_gap >= 0))
    return out


def contradicting_runs() -> pd.DataFrame:
    """Per-level rows (``records_to_row`` format) where pruning hurts the ticket: random
    reinitialization and one-shot pruning stay accurate while the ticket loses accuracy and
    learns slower."""
    from deep_lottery.tables import FIELDS

    levels = list(range(11))
    density = [0.8**level for level in levels]

    def branch(name: str, acc: list[float], stop: list[float], first: int) -> dict[str, list]:
        values = {"density": density, "early_stop_iteration": stop, "test_metric_at_stop": acc,
                  "test_metric_end": acc, "train_metric_end": [min(1.0, a + 0.02) for a in acc],
                  "val_loss_min": [1.0 - a for a in acc]}
        row: dict[str, list] = {f"{name}_level": levels[first:]}
        row.update({f"{name}_{f}": [float(v) for v in values[f][first:]] for f in FIELDS})
        return row

    rows = []
    for trial in range(2):
        ticket = [0.97 - 0.08 * (1 - d) - 0.001 * trial for d in density]
        steady = [0.97 - 0.001 * trial] * len(levels)
        rows.append({"N": 5000, "levels": 10, "iterations": 1000, "eval_every": 50,
                     "n_val": 1000, "n_test": 2000, "mnist_files": "test", "trial": trial,
                     **branch("imp", ticket, [300.0 + 50 * lv for lv in levels], 0),
                     **branch("reinit", steady, [300.0] * len(levels), 1),
                     **branch("one_shot", steady, [300.0] * len(levels), 1)})
    return pd.DataFrame(rows)


EXPERIMENT = register(Experiment(
    name="lth-lenet",
    paper="Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019), Figs. 3-5",
    description="Lenet-300-100 on MNIST: iterative pruning vs one-shot vs random "
                "reinitialization; early-stopping iteration and accuracy against P_m",
    quick=Size(grids=[{"N": [5000], "levels": [10], "iterations": [1000], "eval_every": [50],
                       "n_val": [1000], "n_test": [2000], "mnist_files": ["test"]}], trials=2,
               estimate="~2 min (3.5 min on a loaded 2-core machine)"),
    full=Size(grids=[{"N": [55000], "levels": [20], "iterations": [50000], "eval_every": [100],
                      "n_val": [5000], "n_test": [0], "mnist_files": ["train"]}], trials=5,
              estimate="GPU: ~3 h"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    notes="Frankle & Carbin's Lenet settings: fc 784-300-100-10, Gaussian Glorot init, Adam "
          "lr 1.2e-3, batch 60, 50,000 iterations (full), layer-wise pruning 20% per round with "
          "the output layer at 10%, reset to the initialization, validation loss every 100 "
          "iterations. Random reinitialization draws a fresh Glorot init for the ticket's mask; "
          "one-shot pruning prunes the dense trained net once to the level's per-layer density "
          "(1 - f)^L and resets. Quick size: 1,000 iterations per level (12 epochs of N = 5,000), "
          "validation every 50 iterations, 10 levels (P_m down to 11%), data re-split from the "
          "MNIST test split (2,000 test / 1,000 validation / 5,000 training). The accuracy and "
          "learning-speed gaps are means over levels >= 2 (P_m <= 64%); the iterative-vs-one-shot "
          "gap is the mean over the 3 sparsest levels (at quick size it is within the noise of "
          "a 2,000-image test set). $LOTTERY_LAB_IMP_CACHE keeps per-level outputs (resume).",
    requires=("torch",),
    missing_data=missing_mnist,
    params=MNIST_PARAMS,
    check=check_mnist_sizes,
))
