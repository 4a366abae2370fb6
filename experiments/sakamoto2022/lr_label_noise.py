"""Winning tickets under label noise against the learning rate (Sakamoto & Sato 2022, Fig. 1).

A cell is IMP (``tickets``: SGD with momentum, global magnitude pruning, reset to the
initialization) at one learning rate ``lr`` on a training set whose ``label_noise`` fraction is
relabelled uniformly at random (the same examples in every cell). ``lr`` and ``label_noise`` are
``shared_seed_params``: the cells of a trial share the initialization and the data order, so the
clean-versus-noisy and small-versus-large comparisons are paired. Recorded per level: test accuracy
(clean test set) at the end of training and at the early-stopping iteration, training accuracy on
the relabelled and on the untouched examples, and the distance of the weights from the
initialization.

Claims (declared before any run; the paper's small and large rates are 0.01 and 0.1):
* the ticket found with the smallest rate loses more test accuracy to label noise than the ticket
  found with the largest rate (paired over trials, mean drop clean - noisy at the sparsest level);
* IMP works better at the small rate: ticket - dense accuracy (clean, sparsest level) is higher at
  the smallest rate than at the largest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim, finding, throughput_finding
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Size, register
from .tickets import (
    QUICK,
    ROW_FIELDS,
    TICKET_PARAMS,
    check,
    each_full,
    final_level,
    grid,
    level_frame,
    missing_data,
    run_tickets,
    ticket_row,
)

FIELDS = (*ROW_FIELDS, "train_metric_noisy", "train_metric_clean")
KEYS = ("lr", "label_noise", "trial")
METRIC = "test_metric_end"
NOISE = 0.2
QUICK_LRS = [0.01, 0.03, 0.1]
FULL_LRS = [0.003, 0.01, 0.03, 0.1, 0.2]


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP at the cell's learning rate and label noise; per-level lists."""
    return ticket_row(run_tickets(params, seed), FIELDS)


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    return level_frame(runs, KEYS, FIELDS)


def _means(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    """Mean and sd over trials of the metric at the sparsest level ("final") or the dense one."""
    rows = final_level(frame, KEYS) if level == "final" else frame[frame["level"] == 0]
    return rows.groupby(["lr", "label_noise"])[METRIC].agg(["mean", "std", "count"]).reset_index()


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Test accuracy of the sparsest ticket (solid) and the dense net (dashed) against the
    learning rate, clean (green) and noisy (orange) training labels; mean +- sd over trials."""
    frame = _frame(runs)
    fig, ax = figure(figsize=(6.0, 4.2))
    final, dense = _means(frame, "final"), _means(frame, "dense")
    sparsity = final_level(frame, KEYS)["density"]
    label = f"{100 * (1 - float(sparsity.mean())):.0f}% sparse" if len(sparsity) else "ticket"
    for noise, color in ((0.0, "C2"), (NOISE, "C1")):
        for table, style, what in ((final, "o-", f"ticket ({label})"), (dense, "s--", "dense")):
            rows = table[np.isclose(table["label_noise"].astype(float), noise)] \
                if len(table) else table
            if not len(rows):
                continue
            ax.errorbar(rows["lr"], 100 * rows["mean"], yerr=100 * rows["std"].fillna(0),
                        fmt=style, color=color, capsize=2,
                        label=f"{what}, {'clean' if noise == 0 else f'{noise:.0%} noisy'} labels")
    ax.set(xscale="log", xlabel="learning rate (SGD, momentum 0.9)",
           ylabel="test accuracy at the end of training (%)",
           title="Sakamoto & Sato 2022, Fig. 1: tickets under label noise")
    legend(ax, fontsize=7)
    save_figure(fig, path_stem)


def _paired(frame: pd.DataFrame, lr: float, value: Any) -> pd.Series:
    """Per trial, ``value(rows of that trial at lr)`` over the trials that have it."""
    rows = frame[np.isclose(frame["lr"].astype(float), lr)]
    return rows.groupby("trial").apply(value, include_groups=False).dropna()


def _noise_drop(rows: pd.DataFrame) -> float:
    final = final_level(rows, ("label_noise",))
    clean = final.loc[np.isclose(final["label_noise"].astype(float), 0.0), METRIC]
    noisy = final.loc[final["label_noise"].astype(float) > 0, METRIC]
    return float(clean.mean() - noisy.mean()) if len(clean) and len(noisy) else math.nan


def _ticket_gap(rows: pd.DataFrame) -> float:
    clean = rows[np.isclose(rows["label_noise"].astype(float), 0.0)]
    final, dense = final_level(clean, ("label_noise",)), clean[clean["level"] == 0]
    return float(final[METRIC].mean() - dense[METRIC].mean()) \
        if len(final) and len(dense) else math.nan


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Noise drop of the small-rate ticket > of the large-rate ticket; ticket - dense higher at
    the small rate; findings: the accuracy table and the memorization of noisy labels."""
    frame = _frame(runs)
    lrs = sorted(float(v) for v in frame["lr"].dropna().unique())
    if len(lrs) < 2:
        return [claim("label noise hurts the small-rate ticket more than the large-rate one",
                      "two learning rates at least", f"{len(lrs)} learning rate(s)", False)]
    small, large = lrs[0], lrs[-1]
    drop_small, drop_large = _paired(frame, small, _noise_drop), _paired(frame, large, _noise_drop)
    both = drop_small.index.intersection(drop_large.index)
    diff = (drop_small[both] - drop_large[both]) if len(both) else pd.Series(dtype=float)
    gap_small, gap_large = _paired(frame, small, _ticket_gap), _paired(frame, large, _ticket_gap)
    pair = gap_small.index.intersection(gap_large.index)
    gdiff = (gap_small[pair] - gap_large[pair]) if len(pair) else pd.Series(dtype=float)
    out = [
        claim(f"winning tickets (small learning rate) are more vulnerable to label noise: the "
              f"test-accuracy drop clean -> {NOISE:.0%} noisy labels of the sparsest ticket is "
              f"larger at lr {small:g} than at lr {large:g} (Sakamoto & Sato Fig. 1)",
              "mean paired difference of drops (small - large) > 0 pt",
              f"{100 * diff.mean():+.2f} pt over {len(diff)} trials (drops {100 * drop_small.mean():.2f}"
              f" pt at lr {small:g}, {100 * drop_large.mean():.2f} pt at lr {large:g})",
              len(diff) > 0 and float(diff.mean()) > 0),
        claim(f"IMP finds better tickets at the small learning rate: ticket - dense test accuracy "
              f"(clean labels, sparsest level) is higher at lr {small:g} than at lr {large:g} "
              f"(Fig. 1: the accuracy drops at some point as the rate grows)",
              "mean paired difference (small - large) > 0 pt",
              f"{100 * gdiff.mean():+.2f} pt over {len(gdiff)} trials (ticket - dense "
              f"{100 * gap_small.mean():+.2f} pt at lr {small:g}, {100 * gap_large.mean():+.2f} pt "
              f"at lr {large:g})", len(gdiff) > 0 and float(gdiff.mean()) > 0)]
    return out + _findings(runs, frame)


def _findings(runs: pd.DataFrame, frame: pd.DataFrame) -> list[dict[str, Any]]:
    final, dense = _means(frame, "final"), _means(frame, "dense")
    parts = []
    for row in final.itertuples():
        d = dense[np.isclose(dense["lr"], row.lr) & np.isclose(dense["label_noise"],
                                                               row.label_noise)]
        parts.append(f"lr {row.lr:g}, noise {row.label_noise:g}: ticket {100 * row.mean:.2f}%"
                     + (f", dense {100 * float(d['mean'].iloc[0]):.2f}%" if len(d) else ""))
    out = [finding("test accuracy (%) at the end of training, mean over trials: sparsest ticket "
                   "and dense net per learning rate and label noise", "; ".join(parts) or "none")]
    noisy = final_level(frame, KEYS)
    noisy = noisy[noisy["label_noise"].astype(float) > 0].groupby("lr")[
        ["train_metric_noisy", "train_metric_clean", "distance_from_start"]].mean()
    if len(noisy):
        out.append(finding("sparsest tickets with noisy labels: training accuracy on the "
                           "relabelled / untouched examples (memorization) and distance from "
                           "the initialization ||m (theta_T - theta_0)||, per learning rate",
                           "; ".join(f"lr {lr:g}: {100 * r.train_metric_noisy:.1f}% / "
                                     f"{100 * r.train_metric_clean:.1f}%, distance "
                                     f"{r.distance_from_start:.2f}"
                                     for lr, r in noisy.iterrows())))
    speed = throughput_finding(runs)
    return out + ([speed] if speed is not None else [])


def contradicting_runs() -> pd.DataFrame:
    """Noise hurts the large-rate ticket more, and the large rate's ticket beats its dense net
    while the small rate's does not: both claims fail."""
    rows = []
    for trial in range(2):
        for lr in QUICK_LRS:
            for noise in (0.0, NOISE):
                big = lr == max(QUICK_LRS)
                acc0 = 0.95 - (0.10 if noise and big else 0.02 if noise else 0.0)
                final = acc0 + (0.01 if big else -0.02)
                levels = [0, 1, 2]
                values = [acc0, (acc0 + final) / 2, final]
                row: dict[str, Any] = {**{k: v[0] for k, v in QUICK.items()}, "lr": lr,
                                       "label_noise": noise, "trial": trial, "imp_level": levels,
                                       "images_per_second": 1000.0, "device": "cpu"}
                for f in FIELDS:
                    row[f"imp_{f}"] = [0.56 ** lv for lv in levels] if f == "density" else \
                        values if f.startswith("test") else [0.9, 0.9, 0.9]
                rows.append(row)
    return pd.DataFrame(rows)


EXPERIMENT = register(Experiment(
    name="lr-label-noise",
    paper="Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory "
          "Perspective (NeurIPS 2022), Fig. 1 (test accuracy of IMP tickets against the learning "
          "rate, clean and noisy labels)",
    description="IMP tickets at several SGD learning rates with clean and 20%-noisy training "
                "labels: test accuracy of the sparsest ticket and of the dense net",
    quick=Size(grids=[grid(QUICK, lr=QUICK_LRS, label_noise=[0.0, NOISE])], trials=2,
               estimate="~30 s on 2 cores"),
    full=Size(grids=each_full(lambda base: grid(base, lr=FULL_LRS, label_noise=[0.0, NOISE],
                                                  iterations=[2 * base["iterations"][0]])),
              trials=3,
              estimate="GPU (unmeasured): ~10 ResNet-20 IMP runs of 11 levels x 60k steps"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1, shared_seed_params=("lr", "label_noise"),
    notes="Settings of tickets.py (SGD momentum 0.9, weight decay 1e-4, global pruning with the "
          "output layer unpruned, reset to the initialization, Kaiming-normal init). The paper "
          "does not give its noise fraction; 20% is used (spec sec. 1 suggests 0.1-0.4). The "
          "paper trains noisy runs longer until convergence; the full size doubles the "
          "iterations (60k) for every cell, the quick size keeps 200 per level. Accuracy is at "
          "the end of training (no early stopping), as in Fig. 1. Quick: Lenet-300-100 on the "
          "re-split MNIST test split (3,000 training / 500 validation / 2,000 test), 4 levels of "
          "44% (density 9.8%), lr in {0.01, 0.03, 0.1}, 2 trials. Claim thresholds (> 0) were "
          "fixed before any run.",
    requires=("torch",),
    missing_data=missing_data,
    params=TICKET_PARAMS,
    check=check,
))
