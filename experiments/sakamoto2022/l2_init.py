"""IMP tickets trained with a penalty on the distance from the initialization (``l2_init``) or on
the norm (``l2_norm``) of the kept weights (Sakamoto & Sato 2022, Sec. 3.3, Eq. 1, Fig. 3 and App.
B.4 Fig. 7).

A cell is IMP (``tickets``: SGD with momentum 0.9, global magnitude pruning with the output layer
unpruned, reset to the initialization) at one learning rate whose every level (the dense level 0
included) minimizes ``L_S(theta) + lambda ||m (theta - theta_init)||^2`` (``l2_init``) or ``L_S +
lambda ||m theta||^2`` (``l2_norm``), Eq. 1 without a factor 1/2; the penalty replaces the weight
decay 1e-4 of the no-penalty cells (``regularizer = "none"``). ``lr``, ``regularizer`` and
``regularization`` (lambda) are ``shared_seed_params``: the cells of a trial share the
initialization and the data order, so every comparison is paired over trials. Recorded per level:
test accuracy at the end of training, the distance from the initialization ``||m (theta_T -
theta_0)||`` and the norm ``||m theta_T||``.

The quick lambdas, chosen from the scale of the problem before any run: with momentum beta the
penalty's gradient ``2 lambda (theta - theta_ref)`` shrinks an unopposed displacement at the rate
``2 lambda lr / (1 - beta)`` per step, so a level of T steps shrinks it by ``exp(-kappa)``, ``kappa
= 2 lambda lr T / (1 - beta)``. Quick (T = 200, beta = 0.9): kappa = 400 lambda at lr 0.1 and 40
lambda at lr 0.01; lambda in {1e-3, 1e-2} gives kappa 0.4 and 4 at the large rate (0.04 and 0.4
at the small one), a mild and a strong pull within one level. The paper's grid 1e-5..1e-3 over
ResNet-20's schedule (20k steps at 0.1, 5k at 0.01, 5k at 0.001) spans kappa 0.4..41 at the large
rate, its winning tickets appearing near lambda 2e-4 (kappa 8): the quick lambdas are its 1e-5 and
1e-4 in kappa.

Claims (declared before any run; sparsest level; for each penalty the lambda of a rate is the one
with the highest mean test accuracy of the sparsest ticket, the same selection for both):
* (sanity) l2_init shrinks the distance from the initialization: the mean distance of the
  sparsest ticket decreases strictly along no penalty (lambda = 0), lambda_1 < lambda_2 < ...,
  at every learning rate;
* (Fig. 3, Sec. 3.3) at the large rate l2_init raises the sparsest ticket's accuracy over no
  penalty more than l2_norm does: mean paired (best l2_init - best l2_norm) > 0 pt;
* (Fig. 3, Fig. 7) at the large rate the best l2_init ticket narrows the ticket - dense gap (both
  from the same run): mean paired gap(l2_init) - gap(no penalty) > 0 pt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import claim, finding, throughput_finding
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Size, register
from .tickets import (
    LARGE_LR,
    QUICK,
    ROW_FIELDS,
    SMALL_LR,
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

FIELDS = ROW_FIELDS
KEYS = ("lr", "regularizer", "regularization", "trial")
METRIC = "test_metric_end"
PENALTIES = ("l2_init", "l2_norm")
QUICK_LAMBDAS = [1e-3, 1e-2]
FULL_LAMBDAS = [1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3]
COLORS = {"l2_init": "C3", "l2_norm": "C0"}


def _grids(base: dict[str, list[Any]], lambdas: list[float]) -> list[dict[str, list[Any]]]:
    """No penalty, and both penalties over ``lambdas``, at both rates."""
    return [grid(base, lr=[SMALL_LR, LARGE_LR], regularizer=["none"], regularization=[0.0]),
            grid(base, lr=[SMALL_LR, LARGE_LR], regularizer=list(PENALTIES),
                 regularization=lambdas)]


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP with the cell's penalty and learning rate; per-level lists."""
    return ticket_row(run_tickets(params, seed), FIELDS)


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    frame = level_frame(runs, KEYS, FIELDS)
    for f in FIELDS:  # diverged (inf) and failed (NaN) values count as missing
        values = pd.to_numeric(frame[f], errors="coerce")
        frame[f] = values.where(np.isfinite(values))
    for k in KEYS:
        if k not in frame.columns:
            frame[k] = math.nan
    lam = pd.to_numeric(frame["regularization"], errors="coerce")
    frame["lam"] = lam.where(frame["regularizer"] != "none", 0.0)
    return frame


def _ticket_and_dense(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the sparsest ticket's fields and the dense (level 0) accuracy."""
    final = final_level(frame, KEYS)
    dense = frame[frame["level"] == 0][[*KEYS, METRIC]].rename(columns={METRIC: "dense"})
    out = final.merge(dense, on=list(KEYS), how="left") if len(final) else \
        final.assign(dense=pd.Series(dtype=float))
    out["gap"] = out[METRIC] - out["dense"]
    return out


def _at(runs: pd.DataFrame, lr: float, penalty: str, lam: float | None = None) -> pd.DataFrame:
    rows = runs[np.isclose(runs["lr"].astype(float), lr) & (runs["regularizer"] == penalty)]
    return rows if lam is None else rows[np.isclose(rows["lam"].astype(float), lam)]


def _per_trial(runs: pd.DataFrame, lr: float, penalty: str, lam: float | None,
               field: str = METRIC) -> pd.Series:
    if penalty != "none" and lam is None:
        return pd.Series(dtype=float)
    return _at(runs, lr, penalty, lam).groupby("trial")[field].mean().dropna()


def _best_lambda(runs: pd.DataFrame, lr: float, penalty: str) -> float | None:
    """The lambda of ``penalty`` at ``lr`` with the highest mean sparsest-ticket accuracy."""
    means = _at(runs, lr, penalty).groupby("lam")[METRIC].mean().dropna()
    return float(means.idxmax()) if len(means) else None


def _difference(a: pd.Series, b: pd.Series) -> pd.Series:
    both = a.index.intersection(b.index)
    return a[both] - b[both]


def _pt(series: pd.Series) -> str:
    return f"{100 * float(series.mean()):+.2f} pt" if len(series) else "nan"


def _lam(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """l2_init's distance decreasing in lambda; at the large rate l2_init's best ticket gains more
    over no penalty than l2_norm's and narrows the ticket - dense gap; findings: the table, the
    small-rate l2_norm gap, throughput."""
    frame = _frame(runs)
    table = _ticket_and_dense(frame)
    lrs = sorted(float(v) for v in frame["lr"].dropna().unique())
    sparsity = 1 - float(table["density"].mean()) if len(table) else math.nan
    where = f"sparsest level, {100 * sparsity:.1f}% sparse"
    chains, monotone = [], bool(lrs)
    for lr in lrs:
        lams = sorted(float(v) for v in _at(table, lr, "l2_init")["lam"].dropna().unique())
        distances = [float(_per_trial(table, lr, "none", None, "distance_from_start").mean())]
        distances += [float(_per_trial(table, lr, "l2_init", lam, "distance_from_start").mean())
                      for lam in lams]
        ok = len(lams) > 0 and all(math.isfinite(d) for d in distances) and all(
            b < a for a, b in zip(distances, distances[1:]))
        monotone = monotone and ok
        chains.append(f"lr {lr:g}: " + " -> ".join(
            f"{d:.3f} ({'none' if i == 0 else f'lambda {lams[i - 1]:g}'})"
            for i, d in enumerate(distances)))
    out = [claim("l2_init shrinks the distance from the initialization ||m (theta_T - "
                 f"theta_0)|| of the sparsest ticket monotonically in lambda ({where}; sanity)",
                 "mean distance strictly decreasing along lambda = 0 (no penalty), lambda_1 < "
                 "lambda_2 < ... at every learning rate",
                 "; ".join(chains) or "no runs", monotone)]
    large = lrs[-1] if lrs else LARGE_LR
    none = _per_trial(table, large, "none", None)
    best = {p: _best_lambda(table, large, p) for p in PENALTIES}
    acc = {p: _per_trial(table, large, p, best[p]) for p in PENALTIES}
    gain = {p: _difference(acc[p], none) for p in PENALTIES}
    diff = _difference(acc["l2_init"], acc["l2_norm"])
    out.append(claim(
        f"Fig. 3: at the large learning rate {large:g}, l2_init raises the sparsest ticket's "
        f"test accuracy over no penalty more than l2_norm does (best lambda of each; {where})",
        "mean paired (best l2_init - best l2_norm) > 0 pt",
        f"{_pt(diff)} over {len(diff)} trials (gain over no penalty: l2_init {_pt(gain['l2_init'])}"
        f" at lambda {_lam(best['l2_init'])}, l2_norm {_pt(gain['l2_norm'])} at lambda "
        f"{_lam(best['l2_norm'])}; no penalty {100 * none.mean():.2f}%)",
        len(diff) > 0 and float(diff.mean()) > 0))
    gap_init = _per_trial(table, large, "l2_init", best["l2_init"], "gap")
    gap_none = _per_trial(table, large, "none", None, "gap")
    narrowing = _difference(gap_init, gap_none)
    out.append(claim(
        f"Fig. 3 / Fig. 7: at the large learning rate {large:g}, the best l2_init ticket narrows "
        f"the ticket - dense test-accuracy gap (dense = level 0 of the same run; {where})",
        "mean paired gap(l2_init) - gap(no penalty) > 0 pt",
        f"{_pt(narrowing)} over {len(narrowing)} trials (ticket - dense: l2_init lambda "
        f"{_lam(best['l2_init'])} {_pt(gap_init)}, no penalty {_pt(gap_none)})",
        len(narrowing) > 0 and float(narrowing.mean()) > 0))
    return out + _findings(runs, table, lrs)


def _findings(runs: pd.DataFrame, table: pd.DataFrame, lrs: list[float]) -> list[dict[str, Any]]:
    means = table.groupby(["lr", "regularizer", "lam"])[
        [METRIC, "dense", "gap", "distance_from_start", "weight_norm"]].mean()
    parts = [f"lr {lr:g} {reg}{'' if reg == 'none' else f' lambda {lam:g}'}: ticket "
             f"{100 * r[METRIC]:.2f}%, dense {100 * r['dense']:.2f}%, gap {100 * r['gap']:+.2f} "
             f"pt, distance {r['distance_from_start']:.3f}, norm {r['weight_norm']:.2f}"
             for (lr, reg, lam), r in means.iterrows()]
    out = [finding("sparsest ticket per learning rate, penalty and lambda (mean over trials): "
                   "test accuracy, dense (level 0) accuracy, ticket - dense gap, distance from "
                   "the initialization ||m (theta_T - theta_0)||, norm ||m theta_T||",
                   "; ".join(parts) or "none")]
    if lrs:
        small = lrs[0]
        gap_none = _per_trial(table, small, "none", None, "gap")
        lams = sorted(float(v) for v in _at(table, small, "l2_norm")["lam"].dropna().unique())
        text = [f"no penalty {_pt(gap_none)}"]
        for lam in lams:
            gap = _per_trial(table, small, "l2_norm", lam, "gap")
            text.append(f"lambda {lam:g} {_pt(gap)} (paired change "
                        f"{_pt(_difference(gap, gap_none))})")
        out.append(finding(f"paper's remark (Sec. 3.3): strong l2_norm widens the ticket - dense "
                           f"gap at the small learning rate {small:g}; ticket - dense per lambda "
                           f"(mean over trials)", "; ".join(text)))
    speed = throughput_finding(runs)
    return out + ([speed] if speed is not None else [])


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Test accuracy of the sparsest ticket (solid) and the dense net (dashed) against lambda (log
    x) per penalty, no penalty as grey lines; one panel per learning rate (mean +- sd)."""
    table = _ticket_and_dense(_frame(runs))
    lrs = sorted(float(v) for v in table["lr"].dropna().unique()) or [SMALL_LR]
    fig, axes = figure(1, len(lrs), figsize=(5.0 * len(lrs), 4.2), squeeze=False)
    sparsity = table["density"]
    label = f"{100 * (1 - float(sparsity.mean())):.0f}% sparse" if sparsity.notna().any() \
        else "ticket"
    for ax, lr in zip(axes[0], lrs):
        for field, style, what in ((METRIC, "-", f"ticket ({label})"), ("dense", "--", "dense")):
            for penalty in PENALTIES:
                stats = _at(table, lr, penalty).groupby("lam")[field].agg(["mean", "std"])
                stats = stats[stats.index > 0].dropna(subset=["mean"])
                if len(stats):
                    ax.errorbar(stats.index, 100 * stats["mean"],
                                yerr=100 * stats["std"].fillna(0), fmt="o" + style,
                                color=COLORS[penalty], capsize=2, label=f"{penalty}, {what}")
            base = _per_trial(table, lr, "none", None, field)
            if len(base):
                ax.axhline(100 * base.mean(), color="0.4", ls=style,
                           label=f"no penalty, {what}")
        if lr != min(lrs):  # Fig. 3: the small rate's dense net on the large-rate panel
            small = _per_trial(table, min(lrs), "none", None, "dense")
            if len(small):
                ax.axhline(100 * small.mean(), color="C2", ls=":",
                           label=f"dense, lr {min(lrs):g}, no penalty")
        if any(line.get_xdata().size > 1 for line in ax.get_lines()
               if not line.get_label().startswith(("no penalty", "dense, lr"))):
            ax.set_xscale("log")
        if not ax.has_data():
            ax.text(0.5, 0.5, "no finite results", ha="center", transform=ax.transAxes)
        kind = ("small" if lr == min(lrs) else "large") if len(lrs) > 1 else ""
        ax.set(xlabel="lambda (Eq. 1)", ylabel="test accuracy at the end of training (%)",
               title=f"lr {lr:g}{f' ({kind})' if kind else ''}")
        legend(ax, fontsize=6)
    fig.suptitle("Sakamoto & Sato 2022, Fig. 3: l2_init vs l2_norm penalties on IMP tickets")
    save_figure(fig, path_stem)


def synthetic_runs(accuracy: Callable[[float, str, float, int, int], float],
                   distance: Callable[[float, str, float], float] | None = None,
                   trials: int = 2) -> pd.DataFrame:
    """A runs table of the quick grid (levels 0..2): test accuracy ``accuracy(lr, penalty,
    lambda, level, trial)`` (lambda 0 for no penalty) and distance from the initialization
    ``distance(lr, penalty, lambda)`` (default: 3 / (1 + 100 lambda) for l2_init, 3 else)."""
    def default_distance(lr: float, penalty: str, lam: float) -> float:
        return 3.0 / (1 + 100 * lam) if penalty == "l2_init" else 3.0

    distance = distance or default_distance
    cells = [(lr, "none", 0.0) for lr in (SMALL_LR, LARGE_LR)] + [
        (lr, p, lam) for lr in (SMALL_LR, LARGE_LR) for p in PENALTIES for lam in QUICK_LAMBDAS]
    rows = []
    for trial in range(trials):
        for lr, penalty, lam in cells:
            levels = [0, 1, 2]
            acc = [accuracy(lr, penalty, lam, lv, trial) for lv in levels]
            row: dict[str, Any] = {**{k: v[0] for k, v in QUICK.items()}, "lr": lr,
                                   "regularizer": penalty, "regularization": lam, "trial": trial,
                                   "imp_level": levels, "images_per_second": 1000.0,
                                   "device": "cpu"}
            values = {"density": [0.56 ** lv for lv in levels], "test_metric_end": acc,
                      "test_metric_at_stop": acc, "train_metric_end": [1.0] * 3,
                      "distance_from_start": [distance(lr, penalty, lam)] * 3,
                      "weight_norm": [20.0] * 3}
            row.update({f"imp_{k}": v for k, v in values.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def contradicting_runs() -> pd.DataFrame:
    """l2_init moves the weights farther from the initialization, lowers the large-rate ticket
    while l2_norm raises it, and widens the ticket - dense gap: every claim fails."""
    def accuracy(lr: float, penalty: str, lam: float, level: int, trial: int) -> float:
        drop = 0.04 if lr == LARGE_LR else 0.01
        if lr == LARGE_LR and penalty == "l2_init":
            drop += 0.01
        if lr == LARGE_LR and penalty == "l2_norm":
            drop -= 0.01
        return 0.97 - drop * level + 0.001 * trial

    return synthetic_runs(accuracy, lambda lr, penalty, lam: 3.0 + 100 * lam)


EXPERIMENT = register(Experiment(
    name="l2-init",
    paper="Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory "
          "Perspective (NeurIPS 2022), Sec. 3.3, Eq. 1, Fig. 3 (IMP tickets with the l2_init and "
          "l2_norm penalties against lambda, small and large learning rate) and App. B.4 Fig. 7",
    description="IMP tickets trained with a penalty on the distance from the initialization "
                "(l2_init) or on the norm (l2_norm) of the kept weights over a lambda sweep, at "
                "the small and the large learning rate, against no penalty",
    quick=Size(grids=_grids(QUICK, QUICK_LAMBDAS), trials=2, estimate="~45 s on 2 cores"),
    full=Size(grids=each_full(lambda base: _grids(base, FULL_LAMBDAS)), trials=3,
              estimate="GPU (unmeasured): 78 ResNet-20 IMP runs of 11 levels x 30k steps"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1, shared_seed_params=("lr", "regularizer", "regularization"),
    notes="Settings of tickets.py (SGD momentum 0.9, global pruning with the output layer "
          "unpruned, reset to the initialization, Kaiming-normal init); weight decay 1e-4 "
          "without a penalty, 0 with one (the penalty replaces it); the penalty acts on the kept "
          "weights of the prunable tensors only, from the dense level 0 on, with theta_init the "
          "rewind point (the initialization); Eq. 1 has no factor 1/2. The paper does not say "
          "how the best lambda is chosen; the claims take, for each penalty and rate, the lambda "
          "with the best mean test accuracy of the sparsest ticket (the same for both "
          "penalties). Quick: Lenet-300-100 on the re-split MNIST test split, 4 levels of 44% "
          "(density 9.8%), lambda in {1e-3, 1e-2} chosen a priori from kappa = 2 lambda lr T / "
          "(1 - momentum) (module docstring), 2 trials. Full: ResNet-20 on CIFAR-10, 10 levels "
          "of 20% (89% sparse), the lambda grid {1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3}, 3 trials. "
          "Claim thresholds (> 0 pt, strict decrease) were fixed before any run.",
    requires=("torch",),
    missing_data=missing_data,
    params=TICKET_PARAMS,
    check=check,
))
