"""IMP tickets trained with SGD, SAM and NVRM (Sakamoto & Sato 2022, Sec. 3.2, App. B.1 Table 3
and B.2 Fig. 5).

A cell is IMP (``tickets``: SGD with momentum 0.9, global magnitude pruning with the output layer
unpruned, reset to the initialization) whose every level is trained with one step rule: ``plain``
(SGD), ``sam`` (radius ``rho``) or ``nvrm`` (noise scale ``variability`` = b), restricted to the
ticket, at the small (0.01) or the large (0.1) learning rate. An *arm* is (step rule, its
hyperparameter). ``step_rule``, ``rho``, ``variability`` and ``lr`` are ``shared_seed_params``: the
arms of a trial share the initialization and the data order, so every comparison is paired over
trials. Recorded per level: test accuracy at the end of training, the distance from the
initialization, and SAM's ``||eps||`` (which must equal rho), loss increase ``L(w + eps) - L(w)``
and share of ``|eps|`` on pruned weights, NVRM's ``||eps|| / ||theta||``.

Claims (declared before any run; all at the sparsest level, mean over trials of the per-trial
paired difference; where a size has several rho (b) the arm of a rate is the value with the highest
mean test accuracy of the sparsest ticket, the paper's selection for Table 3):
* Table 3 (the same or better): SAM ticket - SGD ticket >= -0.5 pt at the small rate (the paper's
  own "same" includes -0.2 pt, NVRM at 95% on ResNet-20);
* Table 3: NVRM ticket - SGD ticket >= -0.5 pt at the small rate;
* Fig. 5 (SAM does not rescue the large-rate tickets): SAM helps less at the large rate than at
  the small one, (SAM - SGD) at 0.1 - (SAM - SGD) at 0.01 <= 0 pt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, NullFormatter

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

STEP_FIELDS = ("sam_eps_norm", "sam_loss_increase", "sam_grad_norm",
               "sam_eps_share_on_pruned_max", "nvrm_noise_to_weight_norm")
FIELDS = (*ROW_FIELDS, *STEP_FIELDS)
KEYS = ("step_rule", "rho", "variability", "lr", "trial")
METRIC = "test_metric_end"
TOLERANCE = 0.005
"""Table 3's "the same or better": a mean paired difference of at least -0.5 pt."""
QUICK_RHO, QUICK_B = 0.05, 0.01
FULL_RHOS = [0.05, 0.1, 0.2, 0.5]
FULL_BS = [0.014, 0.018, 0.022, 0.026]
QUICK_EVAL_EVERY = 40
"""Not a multiple of the quick size's 50 steps per epoch: NVRM measures its noise on evaluation
steps, and its weights are clean (no noise to measure) on the first step of every epoch."""


def _grids(base: dict[str, list[Any]], rhos: list[float], bs: list[float],
           **common: list[Any]) -> list[dict[str, list[Any]]]:
    """SGD and SAM at both rates, NVRM at the small rate."""
    return [grid(base, step_rule=["plain"], lr=[SMALL_LR, LARGE_LR], **common),
            grid(base, step_rule=["sam"], rho=rhos, lr=[SMALL_LR, LARGE_LR], **common),
            grid(base, step_rule=["nvrm"], variability=bs, lr=[SMALL_LR], **common)]


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP with the cell's step rule and learning rate; per-level lists (SAM's and NVRM's
    measurements where the rule records them)."""
    return ticket_row(run_tickets(params, seed), FIELDS)


def _arm(rule: Any, rho: Any, b: Any) -> str:
    if rule == "sam":
        return f"SAM rho={float(rho):g}"
    if rule == "asam":
        return f"ASAM rho={float(rho):g}"
    if rule == "nvrm":
        return f"NVRM b={float(b):g}"
    return "SGD"


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    frame = level_frame(runs, KEYS, FIELDS)
    for f in FIELDS:  # diverged (inf) and failed (NaN) values count as missing
        values = pd.to_numeric(frame[f], errors="coerce")
        frame[f] = values.where(np.isfinite(values))
    for k in KEYS:
        if k not in frame.columns:
            frame[k] = math.nan
    frame["arm"] = [_arm(r, rho, b) for r, rho, b in
                    zip(frame["step_rule"], frame["rho"], frame["variability"])]
    return frame


def _sparsest(frame: pd.DataFrame) -> pd.DataFrame:
    return final_level(frame, KEYS)


def _by_trial(final: pd.DataFrame, lr: float, arm: str) -> pd.Series:
    """Test accuracy of the sparsest ticket per trial (finite values only)."""
    rows = final[np.isclose(final["lr"].astype(float), lr) & (final["arm"] == arm)]
    return rows.groupby("trial")[METRIC].mean().dropna()


def _best_arm(final: pd.DataFrame, lr: float, rule: str) -> str | None:
    """The arm of ``rule`` at ``lr`` with the highest mean sparsest-ticket accuracy."""
    rows = final[np.isclose(final["lr"].astype(float), lr) & (final["step_rule"] == rule)]
    means = rows.groupby("arm")[METRIC].mean().dropna()
    return str(means.idxmax()) if len(means) else None


def _paired(final: pd.DataFrame, lr: float, rule: str) -> tuple[pd.Series, str | None]:
    """Per trial, best arm of ``rule`` - SGD at ``lr``."""
    arm = _best_arm(final, lr, rule)
    if arm is None:
        return pd.Series(dtype=float), None
    sgd, other = _by_trial(final, lr, "SGD"), _by_trial(final, lr, arm)
    both = sgd.index.intersection(other.index)
    return other[both] - sgd[both], arm


def _pt(series: pd.Series) -> str:
    return f"{100 * float(series.mean()):+.2f} pt" if len(series) else "nan"


def _mean(final: pd.DataFrame, lr: float, arm: str | None) -> float:
    return float(_by_trial(final, lr, arm).mean()) if arm is not None else math.nan


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """SAM and NVRM tickets the same as or better than SGD's at the small rate; SAM's gain over
    SGD smaller at the large rate; findings: accuracy per arm and level, SAM's and NVRM's
    measurements, throughput."""
    frame = _frame(runs)
    final = _sparsest(frame)
    lrs = sorted(float(v) for v in frame["lr"].dropna().unique())
    small = lrs[0] if lrs else SMALL_LR
    sparsity = 1 - float(final["density"].mean()) if len(final) else math.nan
    where = f"sparsest level ({100 * sparsity:.1f}% sparse)"
    out = []
    for rule, name in (("sam", "SAM"), ("nvrm", "NVRM")):
        diff, arm = _paired(final, small, rule)
        out.append(claim(
            f"Table 3: the {name} ticket is as accurate as or more accurate than the SGD ticket at "
            f"the small learning rate {small:g} (test accuracy, {where}, paired over trials)",
            f"mean paired difference ({name} - SGD) >= {-100 * TOLERANCE:.1f} pt",
            f"{_pt(diff)} over {len(diff)} trials ({arm or f'no {name} arm'}: "
            f"{100 * _mean(final, small, arm):.2f}%, SGD {100 * _mean(final, small, 'SGD'):.2f}%)",
            len(diff) > 0 and float(diff.mean()) >= -TOLERANCE))
    if len(lrs) < 2:
        out.append(claim("Fig. 5: SAM helps less at the large learning rate than at the small one",
                         "two learning rates at least", f"{len(lrs)} learning rate(s)", False))
    else:
        large = lrs[-1]
        gain_small, arm_small = _paired(final, small, "sam")
        gain_large, arm_large = _paired(final, large, "sam")
        both = gain_small.index.intersection(gain_large.index)
        diff = gain_large[both] - gain_small[both]
        out.append(claim(
            f"Fig. 5: SAM does not rescue the large-rate tickets: the gain of SAM over SGD "
            f"(test accuracy, {where}) is no larger at lr {large:g} than at lr {small:g}",
            f"mean paired (SAM - SGD at lr {large:g}) - (SAM - SGD at lr {small:g}) <= 0 pt",
            f"{_pt(diff)} over {len(diff)} trials (SAM - SGD: {_pt(gain_large)} at lr {large:g} "
            f"with {arm_large or 'no SAM arm'}, {_pt(gain_small)} at lr {small:g} with "
            f"{arm_small or 'no SAM arm'}; SGD {100 * _mean(final, large, 'SGD'):.2f}% at lr "
            f"{large:g})", len(diff) > 0 and float(diff.mean()) <= 0))
    return out + _findings(runs, frame, final)


def _findings(runs: pd.DataFrame, frame: pd.DataFrame,
              final: pd.DataFrame) -> list[dict[str, Any]]:
    parts = []
    for (lr, arm), rows in frame.groupby(["lr", "arm"]):
        per_level = rows.groupby("level")[[METRIC, "density"]].mean()
        accs = " / ".join(f"{100 * a:.2f}" for a in per_level[METRIC])
        dens = " / ".join(f"{100 * d:.1f}" for d in per_level["density"])
        dist = final[np.isclose(final["lr"].astype(float), float(lr)) & (final["arm"] == arm)]
        parts.append(f"lr {float(lr):g} {arm}: {accs} (density % {dens}; distance from init of "
                     f"the sparsest ticket {dist['distance_from_start'].mean():.2f})")
    out = [finding("test accuracy (%) at the end of training per IMP level, mean over trials, "
                   "per learning rate and arm", "; ".join(parts) or "none")]
    sam = frame[frame["step_rule"] == "sam"]
    if len(sam):
        stats = sam.groupby(["lr", "rho"])[["sam_eps_norm", "sam_loss_increase",
                                            "sam_eps_share_on_pruned_max"]].agg(
            ["mean", "max"])
        text = []
        for (lr, rho), r in stats.iterrows():
            eps = r[("sam_eps_norm", "mean")]
            error = abs(eps / rho - 1) if rho else math.nan
            text.append(f"lr {lr:g} rho {rho:g}: ||eps|| {eps:.4g} (relative error "
                        f"{error:.1e}), L(w + eps) - L(w) {r[('sam_loss_increase', 'mean')]:.4g}, "
                        f"largest share of |eps| on pruned weights "
                        f"{r[('sam_eps_share_on_pruned_max', 'max')]:.1g}")
        out.append(finding("SAM's measurements on the evaluation steps, mean over levels and "
                           "trials: ||eps|| (must equal rho), loss increase, |eps| on pruned "
                           "weights (must be 0)", "; ".join(text)))
    nvrm = frame[frame["step_rule"] == "nvrm"]
    if len(nvrm):
        stats = nvrm.groupby(["lr", "variability", "level"])["nvrm_noise_to_weight_norm"].mean()
        text = []
        for (lr, b), r in stats.groupby(level=[0, 1]):
            text.append(f"lr {lr:g} b {b:g}: " + " / ".join(f"{v:.3f}" for v in r.to_numpy()))
        out.append(finding("NVRM's noise-to-weight ratio ||eps|| / ||theta|| per IMP level (mean "
                           "over trials)", "; ".join(text)))
    speed = throughput_finding(runs)
    return out + ([speed] if speed is not None else [])


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Test accuracy against density (log x, decreasing) per arm, mean +- sd over trials; one
    panel per learning rate (small left, large right)."""
    frame = _frame(runs)
    lrs = sorted(float(v) for v in frame["lr"].dropna().unique()) or [SMALL_LR]
    fig, axes = figure(1, len(lrs), figsize=(5.0 * len(lrs), 4.2), squeeze=False)
    arms = sorted(frame["arm"].unique(), key=lambda a: (a != "SGD", a))
    colors = {a: f"C{i}" for i, a in enumerate(arms)}
    for ax, lr in zip(axes[0], lrs):
        rows = frame[np.isclose(frame["lr"].astype(float), lr)]
        for arm in arms:
            part = rows[rows["arm"] == arm]
            stats = part.groupby("level").agg(density=("density", "mean"),
                                              mean=(METRIC, "mean"), sd=(METRIC, "std"))
            stats = stats[stats["density"] > 0] if len(stats) else stats
            if not len(stats):
                continue
            ax.errorbar(100 * stats["density"], 100 * stats["mean"],
                        yerr=100 * stats["sd"].fillna(0), fmt="o-", color=colors[arm],
                        capsize=2, label=arm)
        if ax.has_data():
            ax.set_xscale("log")
            ax.invert_xaxis()
            low, high = sorted(ax.get_xlim())
            ax.set_xticks([t for t in (100, 50, 20, 10, 5, 2, 1) if low <= t <= high])
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.text(0.5, 0.5, "no finite results", ha="center", transform=ax.transAxes)
        kind = "small" if lr == min(lrs) and len(lrs) > 1 else "large" if len(lrs) > 1 else ""
        ax.set(xlabel="density (% of weights kept, log)", ylabel="test accuracy (%)",
               title=f"lr {lr:g}{f' ({kind})' if kind else ''}")
        legend(ax, fontsize=7)
    fig.suptitle("Sakamoto & Sato 2022, Table 3 / Fig. 5: IMP tickets with SGD, SAM, NVRM")
    save_figure(fig, path_stem)


def synthetic_runs(accuracy: Callable[[str, float, int, int], float],
                   trials: int = 2) -> pd.DataFrame:
    """A runs table of the quick grid's arms (SGD and SAM at both rates, NVRM at the small one),
    ``levels`` 0..2, test accuracy ``accuracy(arm, lr, level, trial)`` (the step rules'
    measurements set to their exact values)."""
    rows = []
    cells = [("plain", SMALL_LR), ("sam", SMALL_LR), ("nvrm", SMALL_LR), ("plain", LARGE_LR),
             ("sam", LARGE_LR)]
    for trial in range(trials):
        for rule, lr in cells:
            levels = [0, 1, 2]
            row: dict[str, Any] = {**{k: v[0] for k, v in QUICK.items()}, "step_rule": rule,
                                   "rho": QUICK_RHO, "variability": QUICK_B, "lr": lr,
                                   "eval_every": QUICK_EVAL_EVERY, "trial": trial,
                                   "imp_level": levels, "images_per_second": 1000.0,
                                   "device": "cpu"}
            arm = _arm(rule, QUICK_RHO, QUICK_B)
            acc = [accuracy(arm, lr, lv, trial) for lv in levels]
            values = {"density": [0.56 ** lv for lv in levels], "test_metric_end": acc,
                      "test_metric_at_stop": acc, "train_metric_end": [1.0] * 3,
                      "distance_from_start": [2.0 + lv for lv in levels],
                      "weight_norm": [20.0] * 3}
            if rule == "sam":
                values.update(sam_eps_norm=[QUICK_RHO] * 3, sam_loss_increase=[0.01] * 3,
                              sam_grad_norm=[1.0] * 3, sam_eps_share_on_pruned_max=[0.0] * 3)
            if rule == "nvrm":
                values["nvrm_noise_to_weight_norm"] = [0.1] * 3
            row.update({f"imp_{k}": v for k, v in values.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def contradicting_runs() -> pd.DataFrame:
    """SAM and NVRM tickets 2 pt worse than SGD's at the small rate, SAM 3 pt better at the large
    rate: every claim fails."""
    def accuracy(arm: str, lr: float, level: int, trial: int) -> float:
        base = 0.97 - 0.01 * level - (0.03 * level if lr == LARGE_LR else 0.0)
        if arm != "SGD" and level:
            base += 0.015 * level if lr == LARGE_LR else -0.01 * level
        return base + 0.001 * trial

    return synthetic_runs(accuracy)


EXPERIMENT = register(Experiment(
    name="sam-tickets",
    paper="Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory "
          "Perspective (NeurIPS 2022), App. B.1 Table 3 (IMP tickets with SGD, SAM and NVRM at "
          "the small learning rate) and App. B.2 Fig. 5 (SAM at the large learning rate)",
    description="IMP tickets trained with SGD, SAM and NVRM at the small learning rate, and "
                "with SGD and SAM at the large one: test accuracy against density",
    quick=Size(grids=_grids(QUICK, [QUICK_RHO], [QUICK_B], eval_every=[QUICK_EVAL_EVERY]),
               trials=2, estimate="~35 s on 2 cores"),
    full=Size(grids=each_full(lambda base: _grids(base, FULL_RHOS, FULL_BS,
                                                    levels=[base["levels"][0] + 4])), trials=3,
              estimate="GPU (unmeasured): 42 ResNet-20 IMP runs of 15 levels x 30k steps, 24 of "
                       "them SAM (two passes per step)"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=1, shared_seed_params=("step_rule", "rho", "variability", "lr"),
    notes="Settings of tickets.py (SGD momentum 0.9, weight decay 1e-4, global pruning with the "
          "output layer unpruned, reset to the initialization, Kaiming-normal init); SAM and NVRM "
          "perturb the kept weights only (deep_lottery.step_rules; NVRM also perturbs biases, "
          "noise_nonprunable, as [NV]). Where a size has several rho (b), each rate's SAM (NVRM) "
          "arm in the claims is the value with the best mean test accuracy of the sparsest "
          "ticket, as the paper selects them for Table 3 (a selection on the test set that "
          "favours SAM and NVRM when there are several values). Quick: Lenet-300-100 on the "
          "re-split MNIST test split, 4 levels of 44% (density 9.8%), rho 0.05, b 0.01, 2 "
          "trials, evaluations every 40 steps (NVRM's noise is measured on evaluation steps, "
          "and every 50th step is noise-free). Full: ResNet-20 on CIFAR-10 with 14 levels of "
          "20% (levels 10 and 14: 89% and 96% sparse, Table 3's 90% and 95%), rho in {0.05, "
          "0.1, 0.2, 0.5}, b in {0.014, 0.018, 0.022, 0.026}, 3 trials. Claim thresholds "
          "(-0.5 pt, 0 pt) were fixed before any run.",
    requires=("torch",),
    missing_data=missing_data,
    params=TICKET_PARAMS,
    check=check,
))
