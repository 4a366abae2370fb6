"""The original lottery-ticket experiment: Lenet-300-100 on MNIST (Frankle & Carbin, ICLR 2019,
Figs. 1, 3 and 4).

IMP (layer-wise, 20% of the remaining weights per round, output layer at 10%, reset to the
initialization) against three controls at the same per-layer density: random reinitialization of
the ticket's mask (Fig. 4), a random mask on the original initialization (``random_prune``: the
randomly sampled sparse networks of Fig. 1) and one-shot pruning of the trained dense network
(Fig. 4c). Recorded per level against P_m (% of weights remaining): the early-stopping iteration
(minimum validation loss), the test and training accuracy there, the test accuracy at the end,
and the validation and test accuracy at every evaluation (Fig. 3).

Data: the full size uses the official splits (55k train / 5k validation / 10k test); the quick
size uses only the 10,000-image test split on disk, re-split deterministically (split seed 0):
2,000 test, 1,000 validation and the first N = 5,000 of the remaining 7,000 for training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim, finding
from ..plotting import figure, save_figure
from ..registry import Experiment, Size, register
from .imp_runs import IMP_PARAMS, ROW_FIELDS, check_sizes, missing_data, run_imp_cell

MODEL = "lenet_300_100"

BRANCHES = ("imp", "reinit", "random_prune", "one_shot")
LABELS = {"imp": "winning ticket (iterative, reset)", "reinit": "random reinitialization",
          "random_prune": "random sparse network (random mask)", "one_shot": "one-shot pruning"}
HISTORIES = ("iteration", "val_metric", "test_metric")

# Thresholds, fixed from the paper before any run was looked at.
CONTROL_RANGE = (0.02, 0.65)
"""P_m range of the ticket-vs-control comparisons: every pruned level from 64% (level 2) down to
2%, where the paper's tickets still reach ~100% training accuracy."""
MODERATE_RANGE = (0.20, 0.65)
"""P_m range where the paper's tickets learn faster than the dense net (64% down to 21%)."""
MATCH_DENSITY = 0.21
"""The paper's headline density (P_m = 21.1%, level 7)."""
DENSE_TOLERANCE = 0.005
"""Accuracy a ticket may lose to the dense net and still match it (0.5 pt: about one standard
error of a 2,000-image test set at 96%)."""
REACH_FRACTION = 0.99
"""Fig. 3: learning speed as the first evaluation whose test accuracy reaches this fraction of
the dense net's final test accuracy (same trial)."""
SPARSEST = 3
"""Levels of the iterative-vs-one-shot comparison (the sparsest ones)."""


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP of Lenet-300-100 with the reinit / random-mask / one-shot controls; one row of
    per-level lists, validation and test histories, device and throughput."""
    from deep_lottery.pruning import PruneConfig
    from deep_lottery.training import TrainConfig

    train = TrainConfig(iterations=int(params["iterations"]), batch_size=60, optimizer="adam",
                        lr=1.2e-3, eval_every=int(params["eval_every"]), test_history=True)
    return run_imp_cell(params, seed, model=MODEL, init="glorot", train=train,
                        prune=PruneConfig(fraction=0.2, scope="layerwise"), branches=BRANCHES,
                        histories=HISTORIES)


# ----------------------------------------------------------------------------- tables

def _runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a ``run`` key (row number), so trials of several cells stay apart."""
    return runs.reset_index(drop=True).assign(run=lambda t: np.arange(len(t)))


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, branch, level); each control shares IMP's dense level 0."""
    from deep_lottery.tables import explode_levels

    runs = _runs(runs)
    parts = []
    for branch in BRANCHES:
        fields = [f for f in ROW_FIELDS if f"{branch}_{f}" in runs.columns]
        t = explode_levels(runs, branch, ["run"], fields).reindex(
            columns=["run", "level", *ROW_FIELDS])
        t["branch"] = branch
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    dense = table[(table["branch"] == "imp") & (table["level"] == 0)]
    extras = [dense.assign(branch=b) for b in BRANCHES[1:]]
    return pd.concat([table, *extras], ignore_index=True).astype({f: float for f in ROW_FIELDS})


def _curve(table: pd.DataFrame, branch: str) -> pd.DataFrame:
    """Per level: mean density and the mean, min and max of every field over the runs."""
    rows = table[table["branch"] == branch]
    fields = [f for f in ROW_FIELDS if f != "density"]
    out = rows.groupby("level")[fields].agg(["mean", "min", "max"])
    out.columns = [f if stat == "mean" else f"{f}_{stat}" for f, stat in out.columns]
    out["density"] = rows.groupby("level")["density"].mean()
    return out.sort_index()


def _history(runs: pd.DataFrame, branch: str) -> pd.DataFrame:
    """One row per (run, level, evaluation) of ``branch``: iteration and test accuracy."""
    from deep_lottery.tables import explode_history

    runs = _runs(runs)
    if f"{branch}_history_test_metric" not in runs.columns:
        return pd.DataFrame(columns=["run", "level", "iteration", "test_metric"])
    return explode_history(runs, branch, ["run"], ("iteration", "test_metric"))


def _in_range(curve: pd.DataFrame, bounds: tuple[float, float]) -> list[int]:
    density = curve["density"]
    return [int(lv) for lv in curve.index
            if lv > 0 and bounds[0] <= density.loc[lv] <= bounds[1]]


def _nearest(curve: pd.DataFrame, target: float) -> int | None:
    density = curve["density"].dropna()
    if density.empty:
        return None
    return int(density.index[np.argmin(np.abs(density.to_numpy() - target))])


def _span(curve: pd.DataFrame, levels: Sequence[int]) -> str:
    if not levels:
        return "no level in range"
    pm = 100 * curve.loc[list(levels), "density"]
    return f"P_m {pm.min():.1f}-{pm.max():.1f}% ({len(levels)} levels)"


def _gap(a: pd.DataFrame, b: pd.DataFrame, field: str, levels: Sequence[int]) -> float:
    """Mean over ``levels`` of ``a``'s mean ``field`` less ``b``'s (NaN without levels)."""
    levels = [lv for lv in levels if lv in a.index and lv in b.index]
    if not levels:
        return float("nan")
    return float((a.loc[levels, field] - b.loc[levels, field]).mean())


def reach_iterations(runs: pd.DataFrame, branch: str = "imp",
                     fraction: float = REACH_FRACTION) -> pd.DataFrame:
    """Per (run, level) of ``branch``: the first evaluated iteration whose test accuracy reaches
    ``fraction`` of that run's dense final test accuracy (inf: never; NaN: no target)."""
    table = _table(runs)
    dense = table[(table["branch"] == "imp") & (table["level"] == 0)]
    target = (fraction * dense.set_index("run")["test_metric_end"]).to_dict()
    history = _history(runs, branch)
    rows = []
    for (run, level), points in history.groupby(["run", "level"]):
        goal = target.get(run, np.nan)
        reached = points.loc[points["test_metric"] >= goal, "iteration"].dropna()
        if not np.isfinite(goal) or not np.isfinite(points["iteration"]).all():
            first = np.nan
        else:
            first = float(reached.min()) if len(reached) else np.inf
        rows.append({"run": run, "level": int(level), "reach": first})
    return pd.DataFrame(rows, columns=["run", "level", "reach"])


# ----------------------------------------------------------------------------- plot

def _errorbar(ax: Any, curve: pd.DataFrame, field: str, scale: float, **style: Any) -> None:
    y = scale * curve[field]
    low = (y - scale * curve[f"{field}_min"]).clip(lower=0).fillna(0)
    high = (scale * curve[f"{field}_max"] - y).clip(lower=0).fillna(0)
    ax.errorbar(100 * curve["density"], y, yerr=[low.to_numpy(), high.to_numpy()], ms=4,
                capsize=2, **style)


STYLES = {"imp": dict(fmt="o-", color="C0"), "reinit": dict(fmt="s--", color="C1"),
          "random_prune": dict(fmt="^--", color="C2"), "one_shot": dict(fmt="v-.", color="C3")}


PM_TICKS = (100, 51.3, 21.1, 13.5, 7.0, 3.6, 1.9, 1.2)
"""P_m ticks (%): the densities the paper quotes."""


def _density_axes(axes: Sequence[Any], density: pd.Series) -> None:
    """Log P_m axes, dense on the left, ticked at the paper's densities."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    pm = 100 * density[np.isfinite(density) & (density > 0)]
    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(PM_TICKS))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if len(pm):
            ax.set_xlim(1.15 * pm.max(), pm.min() / 1.15)
        ax.set_xlabel("P_m, weights remaining (%)")


def _fig3_panel(ax: Any, runs: pd.DataFrame, curves: dict[str, pd.DataFrame],
                picks: Sequence[tuple[str, float]], title: str) -> None:
    """Mean test accuracy against iteration (min-max band) at the levels nearest each pick."""
    seen: set[tuple[str, int]] = set()
    finite: list[float] = []
    drawn = False
    for branch, target in picks:
        level = _nearest(curves[branch], target)
        if level is None or (branch, level) in seen:
            continue
        seen.add((branch, level))
        points = _history(runs, "imp" if level == 0 else branch)
        points = points[(points["level"] == level)].dropna(subset=["iteration"])
        if points.empty:
            continue
        acc = points.groupby("iteration")["test_metric"].agg(["mean", "min", "max"])
        x = acc.index.to_numpy(float)
        pm = 100 * curves[branch].loc[level, "density"]
        name = "dense" if level == 0 else ("ticket" if branch == "imp" else "reinit")
        color = f"C{level % 10}"
        ax.plot(x, 100 * acc["mean"], "-" if branch == "imp" else "--", color=color,
                label=f"{name}, P_m = {pm:.1f}%")
        ax.fill_between(x, 100 * acc["min"], 100 * acc["max"], color=color, alpha=0.15)
        drawn = True
        late = acc.loc[acc.index >= 0.1 * x.max(), "mean"].to_numpy()
        finite.extend(v for v in late if np.isfinite(v))
    if finite:
        ax.set_ylim(100 * min(finite) - 0.5, min(100.0, 100 * max(finite) + 0.5))
    ax.set(xlabel="training iteration", ylabel="test accuracy (%)", title=title)
    if drawn:
        ax.legend(fontsize=7)


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Fig. 4 (early stop, test and training accuracy at it, test accuracy at the end; winning
    tickets vs reinitialization vs one-shot), Fig. 1 (tickets vs random sparse networks) and
    Fig. 3 (test accuracy during training at several P_m), on a 3x3 grid."""
    table = _table(runs)
    curves = {b: _curve(table, b) for b in BRANCHES}
    fig, axes = figure(3, 3, figsize=(15.5, 13))
    fig4 = [("early_stop_iteration", 1.0, "early-stopping iteration", "Fig. 4a: learning speed"),
            ("test_metric_at_stop", 100.0, "test accuracy at early stop (%)",
             "Fig. 4a: accuracy at early stop"),
            ("train_metric_at_stop", 100.0, "training accuracy at early stop (%)",
             "Fig. 4a: training accuracy at early stop"),
            ("test_metric_end", 100.0, "test accuracy at the end of training (%)",
             "Fig. 4b: accuracy at the end")]
    fig4_axes = [axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 0]]
    for ax, (field, scale, ylabel, title) in zip(fig4_axes, fig4):
        for branch in ("imp", "reinit", "one_shot"):
            _errorbar(ax, curves[branch], field, scale, label=LABELS[branch], **STYLES[branch])
        ax.set(ylabel=ylabel, title=title)
    for ax, (field, scale, ylabel, title) in zip(
            (axes[1, 1], axes[1, 2]),
            [("early_stop_iteration", 1.0, "early-stopping iteration",
              "Fig. 1: learning speed, tickets vs random sparse"),
             ("test_metric_at_stop", 100.0, "test accuracy at early stop (%)",
              "Fig. 1: accuracy, tickets vs random sparse")]):
        for branch in ("imp", "random_prune"):
            _errorbar(ax, curves[branch], field, scale, label=LABELS[branch], **STYLES[branch])
        ax.set(ylabel=ylabel, title=title)
    dense = curves["imp"]["test_metric_at_stop"].get(0, np.nan)
    for ax in (axes[0, 1], axes[1, 2]):
        ax.axhline(100 * dense, color="k", ls=":", lw=1, label="dense network")
        ax.legend(fontsize=7)
    _density_axes([*fig4_axes, axes[1, 1], axes[1, 2]], curves["imp"]["density"])
    _fig3_panel(axes[2, 0], runs, curves, [("imp", 1.0), ("imp", 0.513), ("imp", 0.211)],
                "Fig. 3 left: tickets, P_m >= 21%")
    sparse = [("imp", t) for t in (0.07, 0.036, 0.019)
              if _nearest(curves["imp"], t) not in (None, _nearest(curves["imp"], 0.211))]
    _fig3_panel(axes[2, 1], runs, curves, [("imp", 1.0), ("imp", 0.211), *sparse],
                "Fig. 3 middle: tickets, P_m <= 21%")
    _fig3_panel(axes[2, 2], runs, curves, [("imp", 1.0), ("imp", 0.513), ("imp", 0.211),
                                            ("reinit", 0.513), ("reinit", 0.211)],
                "Fig. 3 right: tickets vs reinitialized")
    fig.suptitle("Lenet-300-100 on MNIST (Frankle & Carbin 2019, Figs. 1, 3, 4); "
                 "mean over trials, bars min-max")
    save_figure(fig, path_stem)


# ----------------------------------------------------------------------------- claims

def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Tickets vs reinitialization and random sparse networks (accuracy, speed), tickets vs the
    dense net (accuracy at 21%, Fig. 3 speed), iterative vs one-shot; training accuracy as
    findings. Failed or diverged runs give NaN or inf measures, hence failed claims."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _claims(runs)


def _claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    table = _table(runs)
    c = {b: _curve(table, b) for b in BRANCHES}
    imp = c["imp"]
    span = _in_range(imp, CONTROL_RANGE)
    where = _span(imp, span)
    near = _nearest(imp, MATCH_DENSITY)
    at21 = "" if near is None else f"; at P_m = {100 * imp.loc[near, 'density']:.1f}%: "

    def at(branch: str, field: str) -> float:
        level = near if near is not None and near in c[branch].index else None
        return float("nan") if level is None else float(c[branch].loc[level, field])

    def speed(branch: str) -> str:
        ratio = at(branch, "early_stop_iteration") / at("imp", "early_stop_iteration")
        return "" if near is None else f"{at21}{branch} stops at {ratio:.2f}x the ticket's iteration"

    out = []
    for branch, fig, paper_acc, paper_speed in (
            ("reinit", "Fig. 4",
             "paper: +0.5 pt at P_m = 21%, reinit falls below the dense net from 21.1% (tickets "
             "from 2.9%)", "paper: at 21%, reinit stops at 2.51x the ticket's iteration"),
            ("random_prune", "Fig. 1",
             "paper: random sparse nets lose accuracy as P_m falls, tickets do not",
             "paper: random sparse nets learn slower as P_m falls, tickets faster down to 21%")):
        acc = _gap(imp, c[branch], "test_metric_at_stop", span)
        stop = _gap(imp, c[branch], "early_stop_iteration", span)
        out.append(claim(
            f"{fig}: winning tickets are more accurate at early stop than {LABELS[branch]} "
            f"(mean gap over P_m in [{100 * CONTROL_RANGE[0]:g}, {100 * CONTROL_RANGE[1]:g}]%)",
            "> 0 pt", f"{100 * acc:+.2f} pt over {where}{at21}"
            f"{100 * (at('imp', 'test_metric_at_stop') - at(branch, 'test_metric_at_stop')):+.2f}"
            f" pt; {paper_acc}", acc > 0))
        out.append(claim(
            f"{fig}: winning tickets learn at least as fast as {LABELS[branch]} (mean "
            f"early-stopping iteration gap over the same range)", "<= 0 iterations",
            f"{stop:+.0f} iterations over {where}{speed(branch)}; {paper_speed}", stop <= 0))
    end = _gap(imp, c["reinit"], "test_metric_end", span)
    out.append(claim(
        "Fig. 4b: at the end of training, winning tickets are more accurate than random "
        "reinitialization (mean gap over the same range)", "> 0 pt",
        f"{100 * end:+.2f} pt over {where}; paper: tickets generalize better (all nets reach "
        "100% training accuracy for P_m >= 5%)", end > 0))

    dense_acc = imp["test_metric_at_stop"].get(0, np.nan)
    diff = at("imp", "test_metric_at_stop") - dense_acc
    best = imp.loc[[lv for lv in imp.index if lv > 0], "test_metric_at_stop"].dropna()
    best_text = "" if best.empty else (
        f"; best ticket {100 * (best.max() - dense_acc):+.2f} pt at P_m = "
        f"{100 * imp.loc[best.idxmax(), 'density']:.1f}%")
    level_text = "" if near is None else f" at P_m = {100 * imp.loc[near, 'density']:.1f}%"
    out.append(claim(
        f"Fig. 4a: tickets at P_m ~ {100 * MATCH_DENSITY:g}% are at least as accurate at early "
        f"stop as the dense network (within {100 * DENSE_TOLERANCE:g} pt)",
        f">= -{100 * DENSE_TOLERANCE:g} pt",
        f"{100 * diff:+.2f} pt{level_text}{best_text}; paper: above the dense net down to 3.6%, "
        "+0.3 pt at 13.5%", diff >= -DENSE_TOLERANCE))

    reach = reach_iterations(runs)
    moderate = _in_range(imp, MODERATE_RANGE)
    tickets = reach.loc[reach["level"].isin(moderate), "reach"].mean() if moderate else np.nan
    dense_reach = reach.loc[reach["level"] == 0, "reach"].mean()
    out.append(claim(
        f"Fig. 3: tickets at moderate density (P_m in [{100 * MODERATE_RANGE[0]:g}, "
        f"{100 * MODERATE_RANGE[1]:g}]%) reach {100 * REACH_FRACTION:g}% of the dense net's "
        "final test accuracy in fewer iterations than the dense net (mean first evaluation)",
        "ticket < dense", f"tickets {tickets:.0f}, dense {dense_reach:.0f} iterations over "
        f"{_span(imp, moderate)}; paper: P_m = 51.3% learns faster than the dense net and 21.1% "
        "faster still", bool(tickets < dense_reach)))

    sparse = sorted(lv for lv in imp.index if lv > 0 and lv in c["one_shot"].index)[-SPARSEST:]
    it_gap = _gap(imp, c["one_shot"], "test_metric_at_stop", sparse)
    out.append(claim(
        f"Fig. 4c: iterative pruning is at least as accurate as one-shot pruning at the "
        f"{SPARSEST} sparsest levels (mean gap)", ">= 0 pt",
        f"{100 * it_gap:+.2f} pt over {_span(imp, sparse)}; paper: iterative tickets are more "
        "accurate at small sizes (one-shot beats the dense net for 95% >= P_m >= 5.17%)",
        it_gap >= 0))

    train = ", ".join(f"{b} {100 * c[b].loc[span, 'train_metric_at_stop'].mean():.2f}%"
                      for b in BRANCHES if set(span) <= set(c[b].index))
    dense_train = imp["train_metric_at_stop"].get(0, np.nan)
    out.append(finding(
        "Fig. 4a: training accuracy at early stop (mean over the comparison range; dense net "
        "apart)", f"dense {100 * dense_train:.2f}%, {train or 'no level in range'} over {where}; "
        "paper: rises with pruning like the test accuracy"))
    train_end = ", ".join(f"{b} min {100 * c[b].loc[span, 'train_metric_end_min'].min():.2f}%"
                          for b in ("imp", "reinit") if set(span) <= set(c[b].index))
    out.append(finding(
        "training accuracy at the end of training", f"{train_end or 'no level in range'} over "
        f"{where}; paper: 100% for P_m >= 5% at 50,000 iterations"))
    ratio = at("imp", "early_stop_iteration") / imp["early_stop_iteration"].get(0, np.nan)
    out.append(finding(
        f"early-stopping iteration of tickets at P_m ~ {100 * MATCH_DENSITY:g}% relative to the "
        "dense net", f"{ratio:.2f}x; paper: 0.62x (38% earlier)"))
    rr = _gap(c["reinit"], c["random_prune"], "test_metric_at_stop", span)
    out.append(finding(
        "random reinitialization less random sparse network, accuracy at early stop (mean over "
        "the comparison range)", f"{100 * rr:+.2f} pt over {where}; paper (App. on random "
        "sparsity): reinitialized tickets beat random sparsity on Lenet"))
    return out


# ----------------------------------------------------------------------------- synthetic tables

def made_up_runs(accuracy: Callable[[str, int, int], float],
                 stop: Callable[[str, int, int], float], *, levels: int = 9, trials: int = 2,
                 iterations: int = 1000, eval_every: int = 50) -> pd.DataFrame:
    """A runs table in ``run_cell``'s format from ``accuracy(branch, level, trial)`` and
    ``stop(branch, level, trial)``: each test-accuracy history rises to its accuracy with a time
    scale of a third of its early-stopping iteration (for tests and ``contradicting_runs``)."""
    from deep_lottery.tables import records_to_row

    grid = np.arange(0, iterations + 1, eval_every, dtype=float)
    rows = []
    for trial in range(trials):
        records = []
        for branch in BRANCHES:
            for level in range(0 if branch == "imp" else 1, levels + 1):
                acc, it = accuracy(branch, level, trial), stop(branch, level, trial)
                curve = 0.1 + (acc - 0.1) * (1 - np.exp(-3 * grid / it))
                records.append({
                    "branch": branch, "level": level, "density": 0.8**level,
                    "early_stop_iteration": it, "test_metric_at_stop": acc,
                    "test_metric_end": acc, "train_metric_end": 1.0,
                    "train_metric_at_stop": min(1.0, acc + 0.02), "val_loss_min": 1.0 - acc,
                    "history": {"iteration": grid.tolist(), "val_metric": curve.tolist(),
                                "test_metric": curve.tolist()}})
        rows.append({"N": 5000, "levels": levels, "iterations": iterations,
                     "eval_every": eval_every, "n_val": 1000, "n_test": 2000,
                     "mnist_files": "test", "dataset": "mnist", "trial": trial,
                     **records_to_row(records, ROW_FIELDS, histories=HISTORIES),
                     "images_per_second": 20000.0, "device": "cpu"})
    return pd.DataFrame(rows)


def contradicting_runs() -> pd.DataFrame:
    """Pruning hurts the ticket: it loses accuracy and learns slower while every control stays
    as accurate and as fast as the dense net."""

    def accuracy(branch: str, level: int, trial: int) -> float:
        drop = 0.08 * (1 - 0.8**level) if branch == "imp" else 0.0
        return 0.97 - drop - 0.001 * trial

    def stop(branch: str, level: int, trial: int) -> float:
        return 300.0 + (50.0 * level if branch == "imp" else 0.0)

    return made_up_runs(accuracy, stop)


EXPERIMENT = register(Experiment(
    name="lth-lenet",
    paper="Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019), Figs. 1, 3 and 4: "
          "early-stopping iteration, test and training accuracy at it and test accuracy at the "
          "end against P_m (winning tickets vs random reinitialization vs one-shot, Fig. 4; vs "
          "random sparse networks, Fig. 1) and test accuracy during training (Fig. 3)",
    description="Lenet-300-100 on MNIST: iterative pruning vs random reinitialization, random "
                "sparse networks and one-shot pruning; learning speed and accuracy against P_m "
                "and test-accuracy curves",
    quick=Size(grids=[{"dataset": ["mnist"], "N": [5000], "levels": [9], "iterations": [1000],
                       "eval_every": [50], "n_val": [1000], "n_test": [2000],
                       "mnist_files": ["test"]}], trials=2,
               estimate="~70 s, ~135 CPU-s (4.5 min measured on a 2-core machine at load 4-5)"),
    full=Size(grids=[{"dataset": ["mnist"], "N": [55000], "levels": [20],
                      "iterations": [50000], "eval_every": [100], "n_val": [5000],
                      "n_test": [0], "mnist_files": ["train"]}], trials=5,
              estimate="GPU: ~4 h (not measured)"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=2,
    notes="Frankle & Carbin's Lenet settings: fc 784-300-100-10, Gaussian Glorot init, Adam "
          "lr 1.2e-3, batch 60, 50,000 iterations (full), layer-wise pruning 20% per round with "
          "the output layer at 10%, reset to the initialization, validation loss and test "
          "accuracy every 100 iterations (full). Controls at each level, one per ticket and "
          "trial (the paper reinitializes each ticket 3 times and samples 10 random sparse "
          "networks): random reinitialization draws a fresh Glorot init for the ticket's mask; "
          "the random sparse networks of Fig. 1 are the random_prune branch, the ticket's mask "
          "shuffled within each layer on the original init, so they keep the ticket's per-layer "
          "counts (output layer at its half rate) and differ from it only in which connections "
          "are kept - the mask is independent of the weights, so this is a random sparse "
          "network with a fresh draw from the init distribution, the paper's control; one-shot "
          "prunes the dense trained net once to the level's per-layer counts and resets. Quick "
          "size: 9 levels (P_m down to 13.5%, the paper's best-accuracy point; was 10 with 3 "
          "branches), 1,000 iterations per level (12 epochs of N = 5,000), evaluation every 50 "
          "iterations, 2 trials, data re-split from the MNIST test split (2,000 test / 1,000 "
          "validation / 5,000 training). Claims: controls are compared over P_m in [2, 65]% "
          "(levels >= 2), tickets vs the dense net at the level nearest 21% and, for Fig. 3, "
          "over P_m in [20, 65]% with learning speed = the first evaluation reaching 99% of the "
          "dense net's final test accuracy; iterative vs one-shot over the 3 sparsest levels "
          "(at quick size within the noise of a 2,000-image test set). Error bars are min-max "
          "over trials. $LOTTERY_LAB_IMP_CACHE keeps per-level outputs (resume).",
    requires=("torch",),
    missing_data=missing_data({"quick": "mnist", "full": "mnist"}),
    params=IMP_PARAMS,
    check=check_sizes,
))
