"""Training-accuracy drop of IMP's pruning step under different pruning criteria (Sakamoto & Sato
2022, Sec. 4.4.1, Table 2).

A cell is one IMP ticket (``tickets``: SGD with momentum, global magnitude pruning with the output
layer unpruned, reset to the initialization) found at the learning rate ``lr``. With ``levels = L``,
the trained network of level L-1 is pruned to level L's kept count (global, output layer unpruned,
among the weights level L-1 still keeps, as IMP's own step does) by every criterion of
``deep_lottery.pruning.CRITERIA`` (``large_final`` = IMP, ``small_final``, ``random``, and the
others of Zhou et al. 2019; the rewind point, the initialization, is their ``init``). The TRAINING
accuracy of each new mask is measured against that of the level L-1 trained network:

* after pruning: trained weights of level L-1 x the new mask;
* after rewinding: initial weights x the new mask;
* after retraining: trained from the initialization under the new mask with the ticket's own
  training configuration (same iterations, learning rate, data order).

``large_final``'s mask is IMP's level-L mask, so its retraining is IMP's level L (recorded:
``mask_equals_imp``). ``lr`` is a ``shared_seed_params``: the tickets of a trial share the
initialization and the data order. Drops are in percentage points, averaged over the tickets
(learning rates x trials), as the paper averages five tickets from five learning rates.

Claims (declared before any run; paper, ResNet-20 / CIFAR-10, 90% sparsity, 20% per level:
after pruning -19.8 / -89.7 / -88.8, after rewinding -88.6 / -89.5 / -88.6, after retraining
-0.3 / -8.0 / -5.7 for large_final / small_final / random):
* after pruning, large_final's mean drop is smaller than small_final's and than random's (mean
  paired difference large_final - other > 0 pt for both);
* after retraining, large_final's mean drop is smaller than small_final's and than random's
  (same test).
Findings: the table of mean drops per criterion and stage, the spread of the rewinding drops
across criteria (paper: all about -89%), per-learning-rate drops, test accuracy after retraining.
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
    Tickets,
    check,
    each_full,
    grid,
    missing_data,
    prune_config,
    run_tickets,
    ticket_row,
)

PAPER_CRITERIA = ("large_final", "small_final", "random")
STAGES = ("pruned", "rewound", "retrained")
STAGE_NAMES = {"pruned": "after pruning", "rewound": "after rewinding",
               "retrained": "after retraining"}
PAPER: dict[str, dict[str, float]] = {
    "large_final": {"pruned": -19.8, "rewound": -88.6, "retrained": -0.3},
    "small_final": {"pruned": -89.7, "rewound": -89.5, "retrained": -8.0},
    "random": {"pruned": -88.8, "rewound": -88.6, "retrained": -5.7}}
"""Table 2 of the paper (training-accuracy drop in points, mean of five ResNet-20 tickets)."""
KEYS = ("lr", "trial")
STREAM = "sakamoto2022/pruning_criteria"
QUICK_LRS = [0.01, 0.03, 0.1]
FULL_LRS = [0.003, 0.01, 0.03, 0.1, 0.2]


def criteria() -> tuple[str, ...]:
    """Every registered pruning criterion, the paper's three first."""
    from deep_lottery.pruning import CRITERIA

    names = CRITERIA.names()
    return tuple(c for c in PAPER_CRITERIA if c in names) + tuple(
        c for c in names if c not in PAPER_CRITERIA)


def criterion_masks(tickets: Tickets, level: int, seed: int) -> dict[str, Any]:
    """Level ``level - 1``'s trained weights pruned by each criterion to level ``level``'s kept
    count (global over the prunable tensors but the output layer, among the weights level
    ``level - 1`` keeps); the rewind point is the ``init`` of the criteria that need one."""
    from deep_lottery.device import generator
    from deep_lottery.pruning import keep_scores, prune_like
    from lottery_common import derive_seed

    previous, trained = tickets.level(level - 1)
    target, _ = tickets.level(level)
    config = prune_config()
    names = previous.names()
    device = tickets.device
    final = {n: trained[n].to(device) for n in names}
    init = {n: tickets.states.rewind[n].to(device) for n in names}
    out = {}
    for c in criteria():
        scores = keep_scores(c, final, init, names, generator(derive_seed(seed, STREAM, c)))
        out[c] = prune_like(previous.to(device), scores, target.to(device), config.scope,
                            generator(derive_seed(seed, STREAM, c, 1)),
                            ignore=config.ignore).cpu()
    return out


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One IMP ticket at the cell's rate; its level L-1 pruned by every criterion to level L's
    count; training accuracy after pruning, rewinding and retraining (and the ticket's lists)."""
    from deep_lottery.training import evaluate, train

    tickets = run_tickets(params, seed)
    level = int(params["levels"])
    device, cfg = tickets.device, tickets.train
    splits = tickets.splits.to(device)
    previous, trained = tickets.level(level - 1)
    target, _ = tickets.level(level)
    rewind = tickets.states.rewind

    def start(state: dict[str, Any], mask: Any) -> Any:
        model = tickets.make_model(0)
        model.load_state_dict(state)
        mask.apply(model)
        return model.to(device)

    def accuracy(state: dict[str, Any], mask: Any, data: Any) -> float:
        return float(evaluate(start(state, mask), data, "classification", device,
                              cfg.eval_batch_size, cfg.amp)[1])

    row: dict[str, Any] = {**ticket_row(tickets, ROW_FIELDS), "level": level,
                           "target_kept": target.num_kept, "target_density": target.density,
                           "train_base": accuracy(trained, previous, splits.train),
                           "test_base": accuracy(trained, previous, splits.test)}
    for c, mask in criterion_masks(tickets, level, seed).items():
        row[f"kept_{c}"] = mask.num_kept
        row[f"train_pruned_{c}"] = accuracy(trained, mask, splits.train)
        row[f"train_rewound_{c}"] = accuracy(rewind, mask, splits.train)
        result = train(start(rewind, mask), mask, splits, cfg, task="classification",
                       device=device)
        row[f"train_retrained_{c}"] = float(result.train_metric_end)
        row[f"test_retrained_{c}"] = float(result.test_metric_end)
        if c == "large_final":
            row["mask_equals_imp"] = bool(mask == target)
    return row


def criteria_in(runs: pd.DataFrame) -> list[str]:
    """The criteria of the table's columns (``train_pruned_<criterion>``), the paper's first."""
    found = [c[len("train_pruned_"):] for c in runs.columns if c.startswith("train_pruned_")]
    return [c for c in PAPER_CRITERIA if c in found] + [c for c in found
                                                        if c not in PAPER_CRITERIA]


def drops(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (ticket, criterion, stage): training-accuracy drop in points against the
    level L-1 trained network (finite values only)."""
    rows = []
    if "train_base" in runs.columns:
        for _, run in runs.iterrows():
            base = pd.to_numeric(run["train_base"], errors="coerce")
            for c in criteria_in(runs):
                for s in STAGES:
                    value = pd.to_numeric(run.get(f"train_{s}_{c}", math.nan), errors="coerce")
                    drop = 100.0 * (float(value) - float(base))
                    if math.isfinite(drop):
                        rows.append({**{k: run.get(k, math.nan) for k in KEYS}, "criterion": c,
                                     "stage": s, "drop": drop})
    return pd.DataFrame(rows, columns=[*KEYS, "criterion", "stage", "drop"])


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and count of the drop per (criterion, stage)."""
    return frame.groupby(["criterion", "stage"])["drop"].agg(["mean", "std", "count"])


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Grouped bars like Table 2: training-accuracy drop per stage (groups) and criterion
    (bars), mean +- sd over the tickets; the paper's values as black crosses."""
    frame = drops(runs)
    table = _table(frame)
    names = criteria_in(runs) if len(frame) else list(PAPER_CRITERIA)
    fig, ax = figure(figsize=(7.0, 4.2))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(STAGES))
    for i, c in enumerate(names):
        offset = x - 0.4 + width * (i + 0.5)
        means = [table.loc[(c, s), "mean"] if (c, s) in table.index else math.nan for s in STAGES]
        sds = [table.loc[(c, s), "std"] if (c, s) in table.index else math.nan for s in STAGES]
        if np.isfinite(means).any():
            ax.bar(offset, means, width, yerr=np.nan_to_num(sds), capsize=2, color=f"C{i}",
                   label=c)
        if c in PAPER:
            ax.plot(offset, [PAPER[c][s] for s in STAGES], "kx", ms=6,
                    label="paper (ResNet-20, CIFAR-10)" if i == 0 else None)
    density = pd.to_numeric(runs.get("target_density", pd.Series(dtype=float)), errors="coerce")
    sparsity = f"{100 * (1 - float(density.mean())):.0f}% sparse" if density.notna().any() \
        else "target sparsity"
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x, [STAGE_NAMES[s] for s in STAGES])
    ax.set(ylabel="training accuracy - level L-1 trained net (pt)",
           title=f"Sakamoto & Sato 2022, Table 2: pruning criteria ({sparsity}, "
                 f"{frame.groupby(list(KEYS)).ngroups if len(frame) else 0} tickets)")
    legend(ax, fontsize=7, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.09))
    save_figure(fig, path_stem)


def _paired(frame: pd.DataFrame, stage: str, other: str) -> pd.Series:
    """Per ticket, drop(large_final) - drop(other) at ``stage``."""
    rows = frame[frame["stage"] == stage]
    wide = rows.pivot_table(index=list(KEYS), columns="criterion", values="drop",
                            aggfunc="mean") if len(rows) else pd.DataFrame()
    if "large_final" not in wide.columns or other not in wide.columns:
        return pd.Series(dtype=float)
    return (wide["large_final"] - wide[other]).dropna()


def _stage_claim(frame: pd.DataFrame, stage: str) -> dict[str, Any]:
    table = _table(frame)
    diffs = {o: _paired(frame, stage, o) for o in ("small_final", "random")}
    passed = all(len(d) > 0 and float(d.mean()) > 0 for d in diffs.values())

    def mean(c: str) -> str:
        return f"{table.loc[(c, stage), 'mean']:+.1f}" if (c, stage) in table.index else "n/a"

    paper = " / ".join(f"{PAPER[c][stage]:+.1f}" for c in PAPER_CRITERIA)
    measured = (f"drops large_final / small_final / random {mean('large_final')} / "
                f"{mean('small_final')} / {mean('random')} pt (paper {paper}); large_final - "
                + ", - ".join(f"{o} {d.mean():+.1f} pt over {len(d)} tickets"
                              for o, d in diffs.items()))
    return claim(f"large_final (IMP) loses less training accuracy {STAGE_NAMES[stage]} than "
                 f"small_final and random (Sakamoto & Sato Table 2)",
                 "mean paired difference of drops large_final - small_final > 0 pt and "
                 "large_final - random > 0 pt", measured, passed)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """large_final's drop smaller than small_final's and random's after pruning and after
    retraining; findings: the table, the rewinding drops, per learning rate, test accuracy."""
    frame = drops(runs)
    out = [_stage_claim(frame, "pruned"), _stage_claim(frame, "retrained")]
    return out + _findings(runs, frame)


def _findings(runs: pd.DataFrame, frame: pd.DataFrame) -> list[dict[str, Any]]:
    table = _table(frame)
    names = criteria_in(runs)
    parts = []
    for c in names:
        cells = [f"{table.loc[(c, s), 'mean']:+.1f} +- {np.nan_to_num(table.loc[(c, s), 'std']):.1f}"
                 if (c, s) in table.index else "n/a" for s in STAGES]
        paper = " (paper " + " / ".join(f"{PAPER[c][s]:+.1f}" for s in STAGES) + ")" \
            if c in PAPER else ""
        parts.append(f"{c}: {' / '.join(cells)}{paper}")
    out = [finding("training-accuracy drop (pt) against the level L-1 trained net, after pruning "
                   "/ rewinding / retraining, mean +- sd over tickets", "; ".join(parts) or "none")]
    rewound = [table.loc[(c, "rewound"), "mean"] for c in names if (c, "rewound") in table.index]
    if rewound:
        out.append(finding("drop after rewinding, range of the mean drops across criteria (paper: "
                           "similar for all three, -88.6 to -89.5, i.e. near chance)",
                           f"{min(rewound):+.1f} to {max(rewound):+.1f} pt "
                           f"(spread {max(rewound) - min(rewound):.1f} pt)"))
    if len(frame) and "lr" in frame.columns:
        lines = []
        for lr, rows in frame[frame["stage"] == "retrained"].groupby("lr"):
            means = rows.groupby("criterion")["drop"].mean()
            lines.append(f"lr {float(lr):g}: " + ", ".join(
                f"{c} {means[c]:+.1f}" for c in names if c in means.index))
        base = pd.to_numeric(runs.get("train_base"), errors="coerce").groupby(runs["lr"]).mean() \
            if "lr" in runs.columns and "train_base" in runs.columns else pd.Series(dtype=float)
        out.append(finding("drop after retraining (pt) per learning rate; training accuracy of "
                           "the level L-1 trained net",
                           "; ".join(lines) + " | base " + ", ".join(
                               f"lr {float(lr):g} {100 * v:.1f}%" for lr, v in base.items())))
    tests = []
    for c in names:
        col = pd.to_numeric(runs.get(f"test_retrained_{c}"), errors="coerce")
        if col is not None and np.isfinite(col).any():
            tests.append(f"{c} {100 * float(col[np.isfinite(col)].mean()):.2f}%")
    if tests:
        same = int(runs["mask_equals_imp"].eq(True).sum()) if "mask_equals_imp" in runs else 0
        out.append(finding("test accuracy after retraining, mean over tickets (large_final's "
                           "mask equals IMP's level-L mask in how many tickets)",
                           ", ".join(tests) + f" (large_final = IMP mask in {same}/{len(runs)})"))
    speed = throughput_finding(runs)
    return out + ([speed] if speed is not None else [])


def contradicting_runs() -> pd.DataFrame:
    """large_final loses more training accuracy than small_final and random after pruning and
    after retraining: both claims fail."""
    accuracy = {"large_final": {"pruned": 0.20, "rewound": 0.10, "retrained": 0.80},
                "small_final": {"pruned": 0.60, "rewound": 0.11, "retrained": 0.97},
                "random": {"pruned": 0.50, "rewound": 0.10, "retrained": 0.96}}
    rows = []
    for trial in range(2):
        for lr in QUICK_LRS:
            levels = [0, 1, 2]
            row: dict[str, Any] = {**{k: v[0] for k, v in QUICK.items()}, "lr": lr,
                                   "levels": 2, "trial": trial, "imp_level": levels,
                                   "imp_density": [0.56 ** lv for lv in levels],
                                   "imp_test_metric_end": [0.95, 0.95, 0.94],
                                   "imp_train_metric_end": [0.99, 0.99, 0.98],
                                   "images_per_second": 1000.0, "device": "cpu", "level": 2,
                                   "target_kept": 83_000, "target_density": 0.56 ** 2,
                                   "train_base": 0.99, "test_base": 0.95}
            for c, stages in accuracy.items():
                row[f"kept_{c}"] = 83_000
                for s, a in stages.items():
                    row[f"train_{s}_{c}"] = a
                row[f"test_retrained_{c}"] = stages["retrained"] - 0.04
            row["mask_equals_imp"] = True
            rows.append(row)
    return pd.DataFrame(rows)


EXPERIMENT = register(Experiment(
    name="pruning-criteria",
    paper="Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory "
          "Perspective (NeurIPS 2022), Sec. 4.4.1, Table 2 (training-accuracy drop after "
          "pruning, rewinding and retraining with different pruning criteria)",
    description="IMP tickets at several learning rates: level L-1 pruned to level L's count by "
                "each pruning criterion; training-accuracy drop after pruning, rewinding and "
                "retraining",
    quick=Size(grids=[grid(QUICK, lr=QUICK_LRS)], trials=1, estimate="~30 s on 2 cores"),
    full=Size(grids=each_full(lambda base: grid(base, lr=FULL_LRS)), trials=1,
              estimate="GPU (unmeasured): 5 ResNet-20 IMP runs of 11 levels x 30k steps plus "
                       "6 retrainings each"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1, shared_seed_params=("lr",),
    notes="Tickets of tickets.py (SGD momentum 0.9, weight decay 1e-4, global pruning with the "
          "output layer unpruned, reset to the initialization, Kaiming-normal init). The paper "
          "averages five tickets from different learning rates that it does not list; the full "
          "size uses lr in {0.003, 0.01, 0.03, 0.1, 0.2} (those of lr-label-noise), 10 levels of "
          "20% (89% sparse, the paper's 90%). Every criterion prunes among the weights level L-1 "
          "keeps, down to level L's kept count (prune_like, global, fc.weight unpruned); the "
          "criteria that read an initialization use the rewind point (k = 0: the init). Drops are "
          "training accuracy minus that of the level L-1 trained net, in points; retraining uses "
          "the ticket's TrainConfig (large_final's retraining is IMP's level L). Quick: "
          "Lenet-300-100 on the re-split MNIST test split (3,000 training images), 4 levels of "
          "44% (level 3 at 17.6% density pruned to 9.8%, 90% sparse), lr in {0.01, 0.03, 0.1}, "
          "1 trial (3 tickets). Claim thresholds (> 0) were fixed before any run.",
    requires=("torch",),
    missing_data=missing_data,
    params=TICKET_PARAMS,
    check=check,
))
