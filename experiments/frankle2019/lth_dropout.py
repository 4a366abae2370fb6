"""Winning tickets in Conv-2/4/6 trained with dropout (Frankle & Carbin, ICLR 2019, Fig. 6).

Per net two cells share one seed (``dropout`` and ``lr`` are ``shared_seed_params``: the same
initialization and data order): IMP with dropout (rate ``dropout``, after each hidden fc layer,
trained ``ITERATION_FACTOR`` = 3 times as long as ``iterations``, with its reinit control) and IMP
without dropout for ``iterations`` (the dashed lines of Fig. 6). Pruning and training otherwise as
``lth_conv``; the learning rates are the paper's re-tuned ones (``PAPER``).

Claims (declared before any run; each must hold for every net): with dropout, tickets beat their
random reinitializations over the pruned levels with P_m above ``lth_conv.DENSITY_FLOOR``; dropout
raises the dense net's accuracy; pruning raises the dropout net's accuracy further. Dropout's effect
on the ticket's early-stop speed-up is a finding.

Sizes: full = CIFAR-10 with the paper's settings on a GPU (unmeasured estimate); quick = Conv-2 and
Conv-6 at width 0.125 on the re-split MNIST test split on the CPU (``notes``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim, finding, throughput_finding
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Param, Size, register
from . import lth_conv
from .imp_runs import missing_data, run_imp_cell
from .lth_conv import (
    DENSITY_FLOOR,
    METRIC,
    MODELS,
    NAMES,
    axis_setup,
    by_trial_level,
    curve,
    dense_gaps,
    density_text,
    depth_order,
    draw,
    gaps,
    hline,
    level_table,
    mean_gap,
    prune_config,
    synthetic_runs,
    train_config,
)

BRANCHES = ("imp", "reinit")
ITERATION_FACTOR = 3
"""Dropout runs train 3x as many iterations (F&C App.: 60k / 75k / 90k)."""
DROPOUT = 0.5
KEYS = ("model", "width", "dropout", "lr", "trial")

PAPER = {"conv2": {"lr": 3e-4, "dense_gain": 2.1, "further": 2.3},
         "conv4": {"lr": 2e-4, "dense_gain": 3.0, "further": 4.6},
         "conv6": {"lr": 2e-4, "dense_gain": 2.4, "further": 4.7}}
"""F&C Fig. 6 (caption and text): Adam rates with dropout, dense-accuracy gain from dropout (pt) and
the further gain of the best dropout ticket (pt, 'up to')."""
PAPER_SPEED = ("F&C: learning still speeds up with pruning under dropout, less so for Conv-2; "
               "appendix (validation): Conv-4 up to 1.58x at P_m 7.6% with dropout vs 4.27x "
               "without, Conv-6 1.5x at 15.1%, Conv-2 no clear speed-up")

PARAMS: dict[str, Param] = {**lth_conv.PARAMS,
                            "dropout": Param("float", low=0.0, high=1.0, high_open=True)}
"""``lth_conv.PARAMS`` plus ``dropout`` (the drop probability; 0: the no-dropout cell).
``iterations`` is the budget without dropout; a dropout cell trains ``ITERATION_FACTOR`` times it."""


def check(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """As ``lth_conv.check``."""
    yield from lth_conv.check(cell)


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP with dropout (3x the iterations, with reinit) or without it (tickets only)."""
    p = float(params["dropout"])
    iterations = int(params["iterations"]) * (ITERATION_FACTOR if p > 0 else 1)
    return run_imp_cell(params, seed, model=params["model"], init=lth_conv.INIT,
                        train=train_config(params, iterations), prune=prune_config(params),
                        branches=BRANCHES if p > 0 else ("imp",),
                        model_options={"width": float(params["width"]), "dropout": p})


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    return level_table(runs, BRANCHES, KEYS)


def _nets(table: pd.DataFrame) -> list[tuple[str, float]]:
    rows = table.dropna(subset=["model"]) if len(table) else table
    found = rows[["model", "width"]].drop_duplicates().itertuples(index=False, name=None)
    return sorted(found, key=lambda n: (depth_order(n[0]), n[1]))


def _rows(table: pd.DataFrame, net: tuple[str, float], p: float) -> pd.DataFrame:
    return table[(table["model"] == net[0]) & np.isclose(table["width"].astype(float), net[1])
                 & np.isclose(table["dropout"].astype(float), p)]


def _rates(table: pd.DataFrame, net: tuple[str, float]) -> list[float]:
    rows = table[(table["model"] == net[0]) & np.isclose(table["width"].astype(float), net[1])]
    return sorted(float(p) for p in rows["dropout"].dropna().unique() if float(p) > 0)


def _label(net: tuple[str, float], p: float | None = None) -> str:
    text = f"{NAMES.get(net[0], net[0])} (width {net[1]:g}"
    return text + (f", dropout {p:g})" if p is not None else ")")


def _branch(rows: pd.DataFrame, branch: str = "imp", field: str = METRIC) -> pd.DataFrame:
    return by_trial_level(rows[rows["branch"] == branch], field)


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Per net: early-stop iteration and test accuracy at early stop against P_m (log,
    decreasing): tickets and reinit with dropout, tickets without dropout."""
    table = _table(runs)
    nets = _nets(table) or [("conv2", 1.0)]
    fig, axes = figure(2, len(nets), figsize=(4.8 * len(nets) + 0.6, 7.6), squeeze=False)
    panels = (("early_stop_iteration", 1.0, "early-stopping iteration\n(min. validation loss)"),
              (METRIC, 100.0, "test accuracy at early stop (%)"))
    for j, net in enumerate(nets):
        base = _rows(table, net, 0.0)
        for i, (field, scale, ylabel) in enumerate(panels):
            ax = axes[i][j]
            for k, p in enumerate(_rates(table, net)):
                rows = _rows(table, net, p)
                draw(ax, curve(rows[rows["branch"] == "imp"], field), scale, "o-", f"C{2 * k}",
                     f"ticket, dropout {p:g}")
                draw(ax, curve(rows[rows["branch"] == "reinit"], field), scale, "s--",
                     f"C{2 * k + 1}", f"random reinit, dropout {p:g}")
                if scale == 100.0:
                    dense = curve(rows[(rows["branch"] == "imp") & (rows["level"] == 0)], field)
                    hline(ax, float(dense["mean"].iloc[0]) if len(dense) else math.nan, scale,
                          f"dense, dropout {p:g}", color=f"C{2 * k}")
            draw(ax, curve(base[base["branch"] == "imp"], field), scale, "^:", "0.35",
                 "ticket, no dropout")
            if scale == 100.0:
                dense = curve(base[(base["branch"] == "imp") & (base["level"] == 0)], field)
                hline(ax, float(dense["mean"].iloc[0]) if len(dense) else math.nan, scale,
                      "dense, no dropout", color="0.35")
            axis_setup(ax, table)
            ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(_label(net))
        legend(axes[1][j], fontsize=7)
    fig.suptitle(f"Frankle & Carbin 2019, Fig. 6: IMP with dropout (trained {ITERATION_FACTOR}x "
                 "longer) vs without; mean +- sd over trials", fontsize=10)
    save_figure(fig, path_stem)


def _dense_change(drop: pd.DataFrame, base: pd.DataFrame) -> tuple[float, int]:
    """Mean over trials of dense accuracy with dropout - without (same trial)."""
    a, b = _branch(drop), _branch(base)
    if 0 not in a.index.get_level_values("level") or 0 not in b.index.get_level_values("level"):
        return math.nan, 0
    diff = (a.xs(0, level="level")["value"] - b.xs(0, level="level")["value"]).dropna()
    diff = diff[np.isfinite(diff.to_numpy(float))]
    return (float(diff.mean()) if len(diff) else math.nan), len(diff)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """With dropout: ticket > reinit, dropout raises dense accuracy, pruning raises it further;
    findings: speed-up with vs without dropout, tickets with vs without dropout."""
    table = _table(runs)
    nets = _nets(table)
    cells = [(net, p) for net in nets for p in _rates(table, net)]
    floor = f"pruned levels with P_m > {100 * DENSITY_FLOOR:g}%"
    reinit, dense, further = [], [], []
    ok_reinit = ok_dense = ok_further = bool(cells)
    for net, p in cells:
        drop, base = _rows(table, net, p), _rows(table, net, 0.0)
        pairs = gaps(_branch(drop), _branch(drop, "reinit"))
        g, n = mean_gap(pairs)
        ok_reinit = ok_reinit and n > 0 and g > 0
        reinit.append(f"{_label(net, p)}: {100 * g:+.2f} pt ({n} pairs, {density_text(pairs)})")
        g, n = _dense_change(drop, base)
        ok_dense = ok_dense and n > 0 and g > 0
        paper = PAPER.get(net[0], {}).get("dense_gain", math.nan)
        dense.append(f"{_label(net, p)}: {100 * g:+.2f} pt over {n} trials (F&C +{paper} pt)")
        pairs = dense_gaps(_branch(drop), _branch(drop))
        g, n = mean_gap(pairs)
        ok_further = ok_further and n > 0 and g > 0
        paper = PAPER.get(net[0], {}).get("further", math.nan)
        further.append(f"{_label(net, p)}: {100 * g:+.2f} pt ({n} pairs, {density_text(pairs)}; "
                       f"F&C best +{paper} pt)")
    none = "no dropout runs"
    out = [claim(f"winning tickets are still found with dropout: tickets trained with dropout are "
                 f"more accurate at early stop than random reinitializations of their masks "
                 f"trained with dropout ({floor}; F&C Fig. 6)",
                 "mean paired gap ticket - reinit (same trial and level) > 0 pt, every net",
                 "; ".join(reinit) or none, ok_reinit),
           claim("dropout raises the dense net's test accuracy at early stop (F&C: +2.1 / +3.0 / "
                 "+2.4 pt for Conv-2 / 4 / 6)",
                 "mean over trials of dense accuracy with dropout - without (same seed) > 0 pt, "
                 "every net", "; ".join(dense) or none, ok_dense),
           claim(f"iterative pruning raises the dropout net's accuracy further ({floor}; F&C: up to "
                 f"+2.3 / +4.6 / +4.7 pt more for Conv-2 / 4 / 6)",
                 "mean paired accuracy gap dropout ticket - dropout dense net (same trial) > 0 pt, "
                 "every net", "; ".join(further) or none, ok_further)]
    out.extend(_findings(runs, table, cells))
    return out


def _speedups(rows: pd.DataFrame) -> tuple[float, float, float]:
    """(mean over pruned levels in range, best, its P_m) of dense / ticket mean early-stop
    iteration."""
    c = curve(rows[rows["branch"] == "imp"], "early_stop_iteration")
    dense = c.loc[c["level"] == 0, "mean"]
    pruned = c[(c["level"] > 0) & (c["density"] > DENSITY_FLOOR)].dropna(subset=["mean"])
    pruned = pruned[pruned["mean"] > 0]
    if dense.empty or not np.isfinite(dense.iloc[0]) or not len(pruned):
        return math.nan, math.nan, math.nan
    ratio = float(dense.iloc[0]) / pruned["mean"]
    i = ratio.idxmax()
    return float(ratio.mean()), float(ratio[i]), float(pruned.loc[i, "density"])


def _findings(runs: pd.DataFrame, table: pd.DataFrame, cells: list) -> list[dict[str, Any]]:
    speed, versus, best, stops, levels = [], [], [], [], []
    for net, p in cells:
        drop, base = _rows(table, net, p), _rows(table, net, 0.0)
        m_d, b_d, at_d = _speedups(drop)
        m_0, b_0, at_0 = _speedups(base)
        speed.append(f"{_label(net, p)}: mean {m_d:.2f}x, best {b_d:.2f}x at P_m {100 * at_d:.1f}%; "
                     f"without dropout mean {m_0:.2f}x, best {b_0:.2f}x at {100 * at_0:.1f}%")
        g, n = mean_gap(gaps(_branch(drop), _branch(base)))
        if n:
            versus.append(f"{_label(net, p)}: {100 * g:+.2f} pt ({n} pairs)")
        c = curve(drop[drop["branch"] == "imp"], METRIC)
        pruned = c[c["level"] > 0].dropna(subset=["mean"])
        if len(pruned) and (c["level"] == 0).any():
            i = pruned["mean"].idxmax()
            diff = pruned.loc[i, "mean"] - float(c.loc[c["level"] == 0, "mean"].iloc[0])
            best.append(f"{_label(net, p)}: {100 * diff:+.2f} pt at P_m "
                        f"{100 * pruned.loc[i, 'density']:.1f}%")
        g, n = mean_gap(gaps(_branch(drop, "imp", "early_stop_iteration"),
                             _branch(drop, "reinit", "early_stop_iteration")))
        if n:
            stops.append(f"{_label(net, p)}: {g:+.0f} iterations")
        without = curve(base[base["branch"] == "imp"], METRIC).set_index("level")
        reinit = curve(drop[drop["branch"] == "reinit"], METRIC).set_index("level")
        parts = []
        for row in c.itertuples():
            cols = [f"{100 * row.mean:.2f}"]
            cols.append(f"{100 * reinit.loc[row.level, 'mean']:.2f}"
                        if row.level > 0 and row.level in reinit.index else "-")
            cols.append(f"{100 * without.loc[row.level, 'mean']:.2f}"
                        if row.level in without.index else "-")
            parts.append(f"{100 * row.density:.1f}%: {'/'.join(cols)}")
        levels.append(f"{_label(net, p)}: " + " | ".join(parts))
    out = []
    if speed:
        out.append(finding("early-stop speed-up of tickets over their dense net (dense / ticket mean "
                           f"iteration over pruned levels with P_m > {100 * DENSITY_FLOOR:g}%; "
                           f"best level chosen after seeing the data), with vs without dropout "
                           f"({PAPER_SPEED})", "; ".join(speed)))
    if versus:
        out.append(finding("dropout tickets - no-dropout tickets at the same level (accuracy at "
                           "early stop; F&C Fig. 6: solid above dashed)", "; ".join(versus)))
    if best:
        out.append(finding("best dropout ticket - dropout dense net (level chosen after seeing the "
                           "data; F&C: up to +2.3 / +4.6 / +4.7 pt)", "; ".join(best)))
    if stops:
        out.append(finding("mean early-stop iteration gap ticket - reinit with dropout (in range)",
                           "; ".join(stops)))
    if levels:
        out.append(finding("test accuracy at early stop (%) per P_m, mean over trials: dropout "
                           "ticket / dropout reinit / ticket without dropout", "; ".join(levels)))
    speed_record = throughput_finding(runs)
    if speed_record is not None:
        out.append(speed_record)
    return out


def contradicting_runs() -> pd.DataFrame:
    """Dropout lowers the dense accuracy, pruning lowers it further and tickets trail their
    reinitializations: every claim fails."""
    def make(p: float) -> pd.DataFrame:
        def accuracy(model: str, branch: str, trial: int, level: int, density: float) -> float:
            base = 0.95 - 0.001 * trial - (0.01 if p > 0 else 0.0)
            return base - 0.003 * level if branch == "imp" else base

        def stop(model: str, branch: str, trial: int, level: int, density: float) -> float:
            return 300.0 if p > 0 else 100.0

        return synthetic_runs(accuracy, stop, levels=3,
                              extra={"dropout": p, "lr": 2e-3, "iterations": 100},
                              branches=BRANCHES if p > 0 else ("imp",))

    return pd.concat([make(0.0), make(DROPOUT)], ignore_index=True)


_QUICK = {"dataset": ["mnist"], "mnist_files": ["test"], "N": [1000], "n_val": [500],
          "n_test": [2000], "levels": [3], "iterations": [90], "eval_every": [10],
          "width": [0.125], "lr": [2e-3], "fc_rate": [0.2]}


def _quick(model: str) -> list[dict[str, list]]:
    rate = lth_conv.PAPER[model]["conv_rate"]
    return [{**_QUICK, "model": [model], "conv_rate": [rate], "dropout": [p]}
            for p in (0.0, DROPOUT)]


def _full(model: str) -> list[dict[str, list]]:
    return [lth_conv.full_grid(model, dropout=[0.0]),
            lth_conv.full_grid(model, dropout=[DROPOUT], lr=[PAPER[model]["lr"]])]


EXPERIMENT = register(Experiment(
    name="lth-dropout",
    paper="Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019), Fig. 6 (Conv-2/4/6 with "
          "dropout on CIFAR-10) and the appendix on dropout learning rates",
    description="Conv-2/4/6 trained with dropout 0.5 (3x the iterations): IMP tickets vs random "
                "reinitialization, and vs the same nets without dropout; early-stop iteration and "
                "accuracy against P_m",
    quick=Size(grids=[g for m in ("conv2", "conv6") for g in _quick(m)], trials=2,
               estimate="~1.5 min on 2 free cores (~170 CPU-s; measured 192 CPU-s and 3.9 min "
                        "wall at load 1.6-3.3 from other jobs, which halved the throughput)"),
    full=Size(grids=[g for m in MODELS for g in _full(m)], trials=5,
              estimate="GPU (unmeasured): ~26 h on one H200-class GPU (62.7M Adam steps of batch "
                       "60 at an assumed ~1.5 ms per step; several workers can share the GPU)"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1,
    shared_seed_params=("dropout", "lr"),
    notes="As lth-conv (nets, Glorot init, Adam, batch 60, layer-wise IMP at conv 10% / 15% and "
          "fc 20% with the output layer at 10%, reset to the initialization, early stopping on "
          "validation loss) with: dropout after each hidden fc layer (fc1 and fc2, not after the "
          "convs or the output; F&C do not say where), rate = drop probability 0.5, off at "
          "evaluation; dropout cells train 3x 'iterations' (F&C: 60k / 75k / 90k) at the paper's "
          "re-tuned Adam rates (3e-4 Conv-2, 2e-4 Conv-4 and Conv-6) and carry the reinit control "
          "(also trained with dropout); no-dropout cells are tickets only at the lth-conv rates "
          "(2e-4, 3e-4, 3e-4) and iterations. dropout and lr are left out of the seed, so both "
          "cells of a (net, trial) start from the same weights and data order (paired dense "
          "comparison). Full size: CIFAR-10 45k / 5k / 10k, width 1, 20 / 24 / 25 levels, 5 "
          "trials, validation every 100 iterations. Quick size (CPU, 2 cores): MNIST test split "
          "re-split (2,000 test / 500 validation / 1,000 training), Conv-2 and Conv-6 at width "
          "0.125, Adam 2e-3 with and without dropout (not re-tuned), 90 iterations per level "
          "without dropout and 270 with, validation every 10, 3 levels (P_m down to ~51-53%), 2 "
          "trials (at 100 / 300 iterations the quick size measured 188 CPU-s, 3 min wall at load "
          "2-3 from other jobs; 90 / 270 cuts the steps by 10%, measured 192 CPU-s at load up "
          "to 3.3; Conv-4 did not fit ~90 s). Claim "
          "thresholds (pruned levels with P_m > 2%, gaps > 0) were fixed before any run.",
    requires=("torch",),
    missing_data=missing_data({"quick": "mnist", "full": "cifar10"}),
    params=PARAMS,
    check=check,
))
