"""Masks of small-learning-rate IMP retrained at the large rate (Sakamoto & Sato 2022, App. B.3,
Fig. 6).

A cell is IMP (``tickets``: SGD with momentum, global magnitude pruning with the output layer
unpruned, reset to the initialization) at the learning rate ``lr``; every pruned level's mask is
then trained again from the initialization at ``transfer_lr`` (the large rate), with everything
else of the ticket's training unchanged (iterations, data order). Where ``lr == transfer_lr`` that
retraining is IMP's own level (same mask, init and data order), so it is copied, not recomputed.
``lr`` and ``transfer_lr`` are ``shared_seed_params``: the cells of a trial share the
initialization and the data order, so the three accuracies compared per (trial, level) are paired:

* the small-rate ticket (IMP at the smallest ``lr``; Fig. 6's baseline 0);
* its mask trained at the large rate (``transfer``; Fig. 6's blue bars, transfer - ticket);
* IMP at the large rate (the cell with ``lr == transfer_lr``; Fig. 6's orange line, minus the
  ticket), at the same density (global pruning removes the same counts at every rate).

Test accuracy is at the end of training. Claims (declared before any run, from the text of
App. B.3):
* retraining the small-rate mask at the large rate improves test accuracy at low sparsity:
  mean over trials of transfer - ticket at the first pruned level > 0 pt;
* the improvement shrinks as sparsity grows: mean paired difference of the improvement at the
  sparsest level minus that at the first pruned level < 0 pt;
* the transferred mask follows "generally the same trend as IMP with the large learning rate"
  and is no winning ticket at the large rate: at the sparsest level, mean transfer - large-rate
  IMP <= +1.0 pt.
Findings: the per-level table (density, ticket accuracy, transfer - ticket, large IMP - ticket,
transfer - large IMP), distances from the initialization, throughput.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim, finding, throughput_finding
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Param, Size, register
from .tickets import (
    LARGE_LR,
    QUICK,
    ROW_FIELDS,
    SMALL_LR,
    TICKET_PARAMS,
    check,
    each_full,
    finite_or_none,
    grid,
    level_frame,
    missing_data,
    run_tickets,
    ticket_row,
)

PARAMS: dict[str, Param] = {**TICKET_PARAMS, "transfer_lr": Param("float", low=0.0,
                                                                    low_open=True)}
"""The ticket rules plus ``transfer_lr``, the rate at which each level's mask is retrained."""
TRANSFER_FIELDS = ("density", "test_metric_end", "test_metric_at_stop", "train_metric_end",
                   "distance_from_start")
METRIC = "test_metric_end"
MARGIN = 1.0
"""Points by which the transferred mask may beat large-rate IMP at the sparsest level (claim 3)."""
KEYS = ("lr", "transfer_lr", "trial")


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP at ``lr`` (its per-level lists, ``imp_*``) and each pruned level's mask trained from
    the initialization at ``transfer_lr`` (``transfer_*``, levels 1..L)."""
    import dataclasses

    from deep_lottery.training import train

    tickets = run_tickets(params, seed)
    row = ticket_row(tickets, ROW_FIELDS)
    rate = float(params["transfer_lr"])
    same = math.isclose(rate, float(params["lr"]))
    cfg = dataclasses.replace(tickets.train, lr=rate)
    splits = tickets.splits.to(tickets.device)
    out: dict[str, list[Any]] = {f: [] for f in ("level", *TRANSFER_FIELDS)}
    for level in tickets.levels:
        if level == 0:
            continue
        mask, _ = tickets.level(level)
        if same:  # IMP's own level: same mask, initialization, data order and rate
            record = tickets.record(level)
            values = {f: float(record[f]) for f in TRANSFER_FIELDS if f != "density"}
        else:
            model = tickets.make_model(0)
            model.load_state_dict(tickets.states.rewind)
            mask.apply(model)
            result = train(model, mask, splits, cfg, task="classification",
                           device=tickets.device)
            values = {**result.summary(), **result.extra}
        out["level"].append(level)
        out["density"].append(mask.density)
        for f in TRANSFER_FIELDS:
            if f != "density":
                out[f].append(float(values[f]))
    row.update({f"transfer_{f}": finite_or_none(values) for f, values in out.items()})
    row["transfer_is_imp"] = same
    return row


def _long(runs: pd.DataFrame, prefix: str, fields: tuple[str, ...]) -> pd.DataFrame:
    """One row per (run, level) of the ``<prefix>_<field>`` lists (failed rows skipped)."""
    return level_frame(runs, KEYS, fields, prefix)


def comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (trial, pruned level): density, the small-rate ticket's accuracy (``ticket``), its
    mask at the large rate (``transfer``) and large-rate IMP (``large``), in points, with
    ``improvement`` = transfer - ticket, ``large_gain`` = large - ticket, ``transfer_vs_large`` =
    transfer - large (NaN where a value failed). Small rate = the smallest ``lr``; large rate =
    the largest ``transfer_lr`` of its rows."""
    columns = ["trial", "level", "density", "ticket", "transfer", "large", "improvement",
               "large_gain", "transfer_vs_large"]
    if not {"lr", "transfer_lr", "trial"} <= set(runs.columns) or not len(runs):
        return pd.DataFrame(columns=columns)
    lrs = pd.to_numeric(runs["lr"], errors="coerce")
    small_lr = float(lrs.min())
    small_rows = runs[np.isclose(lrs, small_lr)]
    large_lr = float(pd.to_numeric(small_rows["transfer_lr"], errors="coerce").max())
    small_rows = small_rows[np.isclose(small_rows["transfer_lr"].astype(float), large_lr)]
    large_rows = runs[np.isclose(lrs, large_lr)]
    ticket = _long(small_rows, "imp", ("density", METRIC))
    transfer = _long(small_rows, "transfer", (METRIC,))
    large = _long(large_rows, "imp", (METRIC,))
    frame = ticket[ticket["level"] > 0][["trial", "level", "density", METRIC]].rename(
        columns={METRIC: "ticket"})
    for name, table in (("transfer", transfer), ("large", large)):
        table = table[["trial", "level", METRIC]].groupby(["trial", "level"], as_index=False).mean()
        frame = frame.merge(table.rename(columns={METRIC: name}), on=["trial", "level"],
                            how="left")
    for c in ("ticket", "transfer", "large"):
        frame[c] = 100.0 * pd.to_numeric(frame[c], errors="coerce").where(
            lambda v: np.isfinite(v))
    frame["improvement"] = frame["transfer"] - frame["ticket"]
    frame["large_gain"] = frame["large"] - frame["ticket"]
    frame["transfer_vs_large"] = frame["transfer"] - frame["large"]
    return frame[columns].reset_index(drop=True)


def _per_level(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("level")[["density", "ticket", "transfer", "large", "improvement",
                                   "large_gain", "transfer_vs_large"]].agg(["mean", "std"])


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Left (Fig. 6): transfer - small-rate ticket per sparsity (bars) and large-rate IMP -
    ticket (orange line), mean +- sd over trials. Right: the three test accuracies."""
    frame = comparison(runs)
    fig, (ax, ax2) = figure(1, 2, figsize=(10.0, 4.2))
    if len(frame):
        table = _per_level(frame)
        x = np.arange(len(table))
        labels = [f"{100 * (1 - d):.1f}" if np.isfinite(d) else "?"
                  for d in table[("density", "mean")]]
        ax.bar(x, table[("improvement", "mean")], 0.6,
               yerr=np.nan_to_num(table[("improvement", "std")].to_numpy(float)), capsize=2,
               color="C0", label="small-rate mask trained at the large rate")
        ax.errorbar(x, table[("large_gain", "mean")],
                    yerr=np.nan_to_num(table[("large_gain", "std")].to_numpy(float)), fmt="o-",
                    color="C1", capsize=2, label="IMP at the large rate")
        ax.set_xticks(x, labels)
        for name, style, color, text in (("ticket", "s-", "C2", "small-rate ticket (IMP)"),
                                         ("transfer", "o-", "C0", "its mask at the large rate"),
                                         ("large", "^--", "C1", "IMP at the large rate")):
            ax2.errorbar(x, table[(name, "mean")],
                         yerr=np.nan_to_num(table[(name, "std")].to_numpy(float)), fmt=style,
                         color=color, capsize=2, label=text)
        ax2.set_xticks(x, labels)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set(xlabel="sparsity (%)", ylabel="test accuracy - small-rate ticket (pt)",
           title="Sakamoto & Sato 2022, Fig. 6: masks retrained at the large rate")
    ax2.set(xlabel="sparsity (%)", ylabel="test accuracy at the end of training (%)",
            title="test accuracy per level (mean +- sd over trials)")
    legend(ax, fontsize=7)
    legend(ax2, fontsize=7)
    save_figure(fig, path_stem)


def _at(frame: pd.DataFrame, level: Any, column: str) -> pd.Series:
    """``column`` per trial at ``level`` (finite values)."""
    rows = frame[frame["level"] == level].set_index("trial")[column]
    return rows[np.isfinite(rows.astype(float))]


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Improvement > 0 at the first pruned level; smaller at the sparsest than at the first;
    transfer no better than large-rate IMP by more than ``MARGIN`` at the sparsest level."""
    frame = comparison(runs)
    levels = sorted(frame["level"].unique()) if len(frame) else []
    first, last = (levels[0], levels[-1]) if levels else (1, 1)
    lrs = f"lr {float(runs['lr'].min()):g} -> {float(runs['transfer_lr'].max()):g}" \
        if {"lr", "transfer_lr"} <= set(runs.columns) and len(runs) else "the two rates"
    gain = _at(frame, first, "improvement") if levels else pd.Series(dtype=float)
    shrink_parts = _at(frame, last, "improvement") - _at(frame, first, "improvement") \
        if len(levels) > 1 else pd.Series(dtype=float)
    shrink = shrink_parts.dropna()
    versus = _at(frame, last, "transfer_vs_large") if levels else pd.Series(dtype=float)

    def density(level: Any) -> str:
        d = frame.loc[frame["level"] == level, "density"]
        return f"{100 * (1 - float(d.mean())):.1f}% sparse" if len(d) else "n/a"

    out = [
        claim(f"retraining the small-rate IMP mask at the large rate improves test accuracy at "
              f"low sparsity ({lrs}; first pruned level, {density(first)}; App. B.3, Fig. 6)",
              "mean over trials of transfer - small-rate ticket > 0 pt",
              f"{gain.mean():+.2f} pt over {len(gain)} trials", len(gain) > 0
              and float(gain.mean()) > 0),
        claim("the improvement shrinks as sparsity grows (App. B.3: 'as sparsity is increased, "
              "this improvement decreases or the test accuracy worsens')",
              "mean paired difference improvement(sparsest) - improvement(first pruned level) "
              "< 0 pt",
              f"{shrink.mean():+.2f} pt over {len(shrink)} trials (improvement "
              f"{_at(frame, first, 'improvement').mean():+.2f} pt at {density(first)}, "
              f"{_at(frame, last, 'improvement').mean():+.2f} pt at {density(last)})"
              if len(levels) > 1 else f"{len(levels)} pruned level(s): nothing to compare",
              len(shrink) > 0 and float(shrink.mean()) < 0),
        claim("at the sparsest level the transferred mask does no better than IMP at the large "
              "rate ('generally the same trend as IMP with the large learning rate'; no winning "
              "ticket at the large rate)",
              f"mean over trials of transfer - large-rate IMP <= +{MARGIN:g} pt at the sparsest "
              f"level",
              f"{versus.mean():+.2f} pt over {len(versus)} trials at {density(last)} (large IMP "
              f"- ticket {_at(frame, last, 'large_gain').mean():+.2f} pt)",
              len(versus) > 0 and float(versus.mean()) <= MARGIN)]
    return out + _findings(runs, frame)


def _findings(runs: pd.DataFrame, frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    if len(frame):
        table = _per_level(frame)
        parts = [f"L{level} ({100 * (1 - r[('density', 'mean')]):.1f}% sparse): ticket "
                 f"{r[('ticket', 'mean')]:.2f}%, transfer - ticket {r[('improvement', 'mean')]:+.2f}"
                 f", large IMP - ticket {r[('large_gain', 'mean')]:+.2f}, transfer - large IMP "
                 f"{r[('transfer_vs_large', 'mean')]:+.2f}" for level, r in table.iterrows()]
        out.append(finding("test accuracy per pruned level, mean over trials (pt)",
                           "; ".join(parts)))
    dense = _long(runs, "imp", (METRIC,)) if "lr" in runs.columns else pd.DataFrame()
    dense = dense[(dense["level"] == 0) & np.isfinite(dense[METRIC])] if len(dense) \
        else dense
    if len(dense):
        out.append(finding("dense net (level 0) test accuracy per learning rate, mean over "
                           "trials", ", ".join(f"lr {float(lr):g}: {100 * v:.2f}%" for lr, v in
                                               dense.groupby("lr")[METRIC].mean().items())))
    lists = []
    if {"lr", "transfer_lr"} <= set(runs.columns):
        for (lr, rate), rows in runs.groupby(["lr", "transfer_lr"]):
            imp = _long(rows, "imp", ("distance_from_start", "train_metric_end"))
            moved = _long(rows, "transfer", ("distance_from_start", "train_metric_end"))
            if not len(imp):
                continue
            last = int(imp["level"].max())
            a = imp[imp["level"] == last].mean(numeric_only=True)
            text = f"IMP at lr {float(lr):g}: distance {a['distance_from_start']:.2f}, train " \
                   f"{100 * a['train_metric_end']:.1f}%"
            if len(moved) and not np.isclose(float(lr), float(rate)):
                b = moved[moved["level"] == last].mean(numeric_only=True)
                text += f"; its mask at lr {float(rate):g}: distance " \
                        f"{b['distance_from_start']:.2f}, train {100 * b['train_metric_end']:.1f}%"
            lists.append(text)
    if lists:
        out.append(finding("sparsest level: distance from the initialization ||m (theta_T - "
                           "theta_0)|| and training accuracy, mean over trials", "; ".join(lists)))
    speed = throughput_finding(runs)
    return out + ([speed] if speed is not None else [])


def contradicting_runs() -> pd.DataFrame:
    """The transferred masks lose accuracy at low sparsity, gain more as sparsity grows and beat
    large-rate IMP at the sparsest level by 9 pt: all three claims fail."""
    rows = []
    levels = [0, 1, 2, 3]
    density = [0.56 ** lv for lv in levels]
    for trial in range(2):
        for lr in (SMALL_LR, LARGE_LR):
            imp = [0.95, 0.95, 0.94, 0.93] if lr == SMALL_LR else [0.96, 0.95, 0.92, 0.88]
            transfer = [0.93, 0.95, 0.97] if lr == SMALL_LR else imp[1:]
            row: dict[str, Any] = {**{k: v[0] for k, v in QUICK.items()}, "lr": lr,
                                   "transfer_lr": LARGE_LR, "levels": 3, "trial": trial,
                                   "imp_level": levels, "imp_density": density,
                                   "images_per_second": 1000.0, "device": "cpu",
                                   "transfer_level": levels[1:], "transfer_density": density[1:],
                                   "transfer_is_imp": lr == LARGE_LR}
            for f in ROW_FIELDS[1:]:
                row[f"imp_{f}"] = imp if f.startswith("test") else [0.99] * 4 \
                    if f.startswith("train") else [1.0, 2.0, 3.0, 4.0]
            for f in TRANSFER_FIELDS[1:]:
                row[f"transfer_{f}"] = transfer if f.startswith("test") else [0.99] * 3 \
                    if f.startswith("train") else [5.0, 6.0, 7.0]
            rows.append(row)
    return pd.DataFrame(rows)


def _grid(base: dict[str, list[Any]], **changes: list[Any]) -> dict[str, list[Any]]:
    return {**grid(base, **changes), "transfer_lr": [LARGE_LR]}


EXPERIMENT = register(Experiment(
    name="mask-transfer",
    paper="Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory "
          "Perspective (NeurIPS 2022), App. B.3, Fig. 6 (small-learning-rate IMP masks trained "
          "from the initialization at the large rate, against the ticket and large-rate IMP)",
    description="IMP at the small and the large learning rate; each small-rate mask retrained "
                "from the initialization at the large rate: test-accuracy change per sparsity",
    quick=Size(grids=[_grid(QUICK, lr=[SMALL_LR, LARGE_LR])], trials=3,
               estimate="~30 s on 2 cores"),
    full=Size(grids=each_full(lambda base: _grid(base, lr=[SMALL_LR, LARGE_LR])), trials=2,
              estimate="GPU (unmeasured): 4 ResNet-20 IMP runs of 11 levels x 30k steps plus "
                       "20 retrainings"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1, shared_seed_params=("lr", "transfer_lr"),
    notes="Tickets of tickets.py (SGD momentum 0.9, weight decay 1e-4, global pruning with the "
          "output layer unpruned, reset to the initialization, Kaiming-normal init); small rate "
          "0.01, large 0.1 (the paper's ResNet-20 rates). One cell per (rate, trial): the "
          "small-rate cell runs IMP and retrains its masks at the large rate; the large-rate cell "
          "runs IMP only (its 'transfer' is IMP itself, copied). Cells of a trial share the "
          "initialization and the data order, so every comparison is paired. Test accuracy at "
          "the end of training; the paper does not say whether Fig. 6 uses the end or early "
          "stopping (at_stop values are recorded too). Claim 3's margin (+1 pt) and the other "
          "thresholds (> 0, < 0) were fixed before any run. Quick: Lenet-300-100 on the "
          "re-split MNIST test split (3,000 training / 500 validation / 2,000 test), 4 levels of "
          "44% (densities 56%, 31%, 18%, 9.8%), 3 trials. Full: ResNet-20, CIFAR-10, 10 levels "
          "of 20% (89% sparse), 2 trials; the paper also shows CIFAR-100.",
    requires=("torch",),
    missing_data=missing_data,
    params=PARAMS,
    check=check,
))
