"""Flatness of winning tickets: Hessian trace and top eigenvalue per IMP level for the small and the
large learning rate and for SGD, SAM and NVRM, and the 1-D loss along the top eigenvector
(Sakamoto & Sato 2022, Table 1 and Fig. 2).

A cell is one arm (``lr``, ``step_rule``) of IMP (``tickets``); the arms of a trial share the
initialization and the data order (``shared_seed_params``). After each level the trained ticket's
Hessian restricted to its mask (``M H M``, ``deep_lottery.curvature``, the model in eval mode) is
measured on a fixed set of ``hessian_examples`` training examples (the same for every arm and
level): the Hutchinson trace over ``probes`` Rademacher probes with its standard error, and the
top eigenvalue by power iteration. At the sparsest level the training loss is traced along the
unit top eigenvector, a random unit direction and the normalized gradient (perturbations only on
kept weights), t in [-0.5, 0.5].

Claims (declared before any run; paired over trials, at the sparsest level; the paper measures
90% and 95% sparsity):
* the small-rate SGD ticket sits in a sharper minimum than the large-rate one: trace ratio
  small / large > 1 (Table 1's premise, Fig. 2 left vs middle);
* SAM at the small rate lowers the trace: trace ratio SAM / SGD < 1 (Table 1);
* NVRM at the small rate lowers the trace: trace ratio NVRM / SGD < 1 (Table 1).
Ratios are geometric means over trials of the per-trial ratios.
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
from .tickets import (
    LARGE_LR,
    QUICK,
    ROW_FIELDS,
    SMALL_LR,
    TICKET_PARAMS,
    each_full,
    final_level,
    grid,
    level_frame,
    missing_data,
    run_tickets,
    ticket_row,
)
from .tickets import check as ticket_check

LANDSCAPE_T = tuple(float(t) for t in np.linspace(-0.5, 0.5, 21))
SHARPNESS_SIGMAS = (0.005, 0.01, 0.02)
SHARPNESS_DRAWS = 10
"""Expected sharpness ``E[L(theta + m eps)] - L(theta)`` of the sparsest ticket (cross-entropy on
the Hessian set, eps ~ N(0, sigma^2) on kept weights and biases; spec sec. 1, the paper's Sec.
4.2), next to its second-order value ``sigma^2 tr(M H M) / 2``."""
DIRECTIONS = ("top", "random", "gradient")
CURVATURE = ("hessian_trace", "trace_stderr", "top_eigenvalue")
FIELDS = (*ROW_FIELDS, *CURVATURE)
KEYS = ("lr", "step_rule", "trial")
PARAMS: dict[str, Param] = {**TICKET_PARAMS, "hessian_examples": Param("int", low=1),
                            "probes": Param("int", low=2), "power_iterations": Param("int", low=1)}
"""Ticket parameters plus the curvature settings: examples of the fixed Hessian set, Hutchinson
probes (a fixed number, so every level gets the same effort) and power-iteration steps."""


def check(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """As ``tickets.check``; the Hessian set must fit in the training set."""
    yield from ticket_check(cell)
    if int(cell["hessian_examples"]) > int(cell["N"]):
        yield ("hessian_examples", f"hessian_examples must be at most N = {cell['N']}")


def arm(row: Mapping[str, Any]) -> str:
    """``"SGD lr 0.01"``, ``"SAM lr 0.01"``, ``"NVRM lr 0.01"``."""
    name = {"plain": "SGD", "sam": "SAM", "asam": "ASAM", "nvrm": "NVRM"}.get(
        str(row["step_rule"]), str(row["step_rule"]))
    return f"{name} lr {float(row['lr']):g}"


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """IMP of the arm, then the curvature of every level's ticket and the sparsest level's 1-D
    landscape."""
    from deep_lottery.curvature import (
        HessianOperator,
        gradient_direction,
        hutchinson_trace,
        loss_along,
        random_direction,
        top_eigenvalues,
    )
    from deep_lottery.data import TensorData
    from deep_lottery.pac_bayes import expected_sharpness

    tickets = run_tickets(params, seed)
    n = int(params["hessian_examples"])
    data = TensorData(tickets.splits.train.x[:n], tickets.splits.train.y[:n])
    probes, iterations = int(params["probes"]), int(params["power_iterations"])
    for record in tickets.records:
        level = int(record["level"])
        mask, _ = tickets.level(level)
        op = HessianOperator.from_model(tickets.trained_model(level), data.to(tickets.device),
                                        "classification", mask)
        trace = hutchinson_trace(op, max_probes=probes, tol=None, seed=seed)
        values, vectors = top_eigenvalues(op, 1, max_iter=iterations, tol=1e-3, seed=seed)
        record.update(hessian_trace=trace.trace, trace_stderr=trace.stderr,
                      top_eigenvalue=values[0])
        if level == tickets.levels[-1]:
            directions = {"top": vectors[0], "random": random_direction(op, seed=seed),
                          "gradient": gradient_direction(op)}
            landscape = {f"landscape_{k}": [float(v) for v in loss_along(op, d, LANDSCAPE_T)]
                         for k, d in directions.items()}
            _, state = tickets.level(level)
            landscape["expected_sharpness"] = [
                expected_sharpness(tickets.trained_model(level), state, mask,
                                   data.to(tickets.device), sigma, draws=SHARPNESS_DRAWS,
                                   seed=seed, loss="ce") for sigma in SHARPNESS_SIGMAS]
    row = ticket_row(tickets, FIELDS)
    row.update(landscape)
    return row


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    frame = level_frame(runs, KEYS, FIELDS)
    frame["arm"] = [arm(r) for _, r in frame.iterrows()] if len(frame) else []
    return frame


def _ratio(final: pd.DataFrame, top: str, bottom: str, field: str = "hessian_trace"
           ) -> tuple[float, int]:
    """Geometric mean over trials of ``field(top arm) / field(bottom arm)``."""
    a = final[final["arm"] == top].set_index("trial")[field]
    b = final[final["arm"] == bottom].set_index("trial")[field]
    both = a.index.intersection(b.index)
    r = (a[both] / b[both]).to_numpy(float)
    r = r[np.isfinite(r) & (r > 0)]
    return (float(np.exp(np.mean(np.log(r)))) if len(r) else math.nan), len(r)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Small-rate tickets sharper than large-rate ones; SAM and NVRM flatter than SGD."""
    final = final_level(_frame(runs), KEYS)
    sgd, big = f"SGD lr {SMALL_LR:g}", f"SGD lr {LARGE_LR:g}"
    out = []
    for text, top, bottom, above in (
            (f"IMP with the small learning rate ({SMALL_LR:g}) finds sharper minima than with the "
             f"large one ({LARGE_LR:g}): Hessian trace of the sparsest ticket (Table 1, Fig. 2)",
             sgd, big, True),
            ("SAM lowers the Hessian trace of the small-rate ticket (Table 1: e.g. ResNet-20 "
             "CIFAR-10 90% sparse 1556 -> 365)", f"SAM lr {SMALL_LR:g}", sgd, False),
            ("NVRM lowers the Hessian trace of the small-rate ticket (Table 1: 1556 -> 1238)",
             f"NVRM lr {SMALL_LR:g}", sgd, False)):
        ratio, n = _ratio(final, top, bottom)
        rule = f"geometric-mean trace ratio {top} / {bottom} {'>' if above else '<'} 1"
        ok = n > 0 and (ratio > 1 if above else ratio < 1)
        out.append(claim(text, rule, f"{ratio:.3f} over {n} trials", ok))
    return out + _findings(runs, final)


def _findings(runs: pd.DataFrame, final: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    if len(final):
        table = final.groupby("arm")[["hessian_trace", "trace_stderr", "top_eigenvalue",
                                      "test_metric_end", "distance_from_start",
                                      "density"]].mean()
        out.append(finding(
            "sparsest ticket per arm, mean over trials: Hessian trace (Hutchinson, +- standard "
            "error), top eigenvalue, test accuracy, distance from the initialization",
            "; ".join(f"{a}: trace {r.hessian_trace:.1f} +- {r.trace_stderr:.1f}, lambda_max "
                      f"{r.top_eigenvalue:.2f}, test {100 * r.test_metric_end:.2f}%, distance "
                      f"{r.distance_from_start:.2f} (density {100 * r.density:.1f}%)"
                      for a, r in table.iterrows())))
        sharp = _sharpness(runs)
        if sharp:
            out.append(finding(
                "expected sharpness E[L(theta + m eps)] - L(theta) of the sparsest ticket "
                "(cross-entropy on the Hessian set, sigma = " + ", ".join(
                    f"{s:g}" for s in SHARPNESS_SIGMAS) + ") beside sigma^2 tr(M H M) / 2, mean "
                "over trials", sharp))
        ratio, n = _ratio(final, f"SGD lr {SMALL_LR:g}", f"SGD lr {LARGE_LR:g}", "top_eigenvalue")
        out.append(finding("top-eigenvalue ratio small / large rate (sparsest ticket, "
                           "geometric mean)", f"{ratio:.3f} over {n} trials"))
    frame = _frame(runs)
    if len(frame):
        per = frame.groupby(["arm", "level"])[["density", "hessian_trace"]].mean().reset_index()
        out.append(finding("Hessian trace per level (mean over trials)", "; ".join(
            f"{a}: " + ", ".join(f"{100 * r.density:.0f}% {r.hessian_trace:.0f}"
                                 for r in g.itertuples())
            for a, g in per.groupby("arm"))))
    speed = throughput_finding(runs)
    return out + ([speed] if speed is not None else [])


def _sharpness(runs: pd.DataFrame) -> str:
    """Per arm: measured expected sharpness and its second-order prediction, per sigma."""
    if "expected_sharpness" not in runs.columns or "imp_hessian_trace" not in runs.columns:
        return ""
    parts: dict[str, list[np.ndarray]] = {}
    for _, run in runs.iterrows():
        values, traces = run.get("expected_sharpness"), run.get("imp_hessian_trace")
        if not hasattr(values, "__len__") or not hasattr(traces, "__len__") \
                or traces[-1] is None:
            continue
        predicted = [0.5 * s * s * float(traces[-1]) for s in SHARPNESS_SIGMAS]
        parts.setdefault(arm(run), []).append(np.array([list(values), predicted], float))
    return "; ".join(f"{name}: " + ", ".join(
        f"{m:.4f} (2nd order {p:.4f})" for m, p in zip(*np.mean(v, axis=0)))
        for name, v in sorted(parts.items()))


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """Left: Hessian trace against density per arm (Table 1 across levels). Right: training loss
    along the top eigenvector of the sparsest ticket per arm (Fig. 2), random direction dotted."""
    frame = _frame(runs)
    fig, (left, right) = figure(1, 2, figsize=(11.0, 4.2))
    drawn = False
    for i, (name, rows) in enumerate(frame.groupby("arm") if len(frame) else []):
        per = rows.groupby("level")[["density", "hessian_trace"]].agg(["mean", "std"])
        ok = np.isfinite(per[("density", "mean")]) & np.isfinite(per[("hessian_trace", "mean")]) \
            & (per[("density", "mean")] > 0) & (per[("hessian_trace", "mean")] > 0)
        per = per[ok]
        if not len(per):
            continue
        left.errorbar(per[("density", "mean")], per[("hessian_trace", "mean")],
                      yerr=per[("hessian_trace", "std")].fillna(0), fmt="o-", color=f"C{i}",
                      capsize=2, label=name)
        drawn = True
    left.set(xlabel="density (fraction of weights kept)", ylabel="Hessian trace tr(M H M)",
             title="Table 1 across IMP levels")
    if drawn:
        left.set(xscale="log", yscale="log")
        left.invert_xaxis()
    legend(left, fontsize=7)
    for _, run in (runs.iterrows() if "landscape_top" in runs.columns else []):
        values = run.get("landscape_top")
        if not hasattr(values, "__len__"):
            continue
        name = arm(run)
        colour = f"C{sorted(frame['arm'].unique()).index(name)}" if name in set(frame["arm"]) \
            else "k"
        first = int(run.get("trial", 0)) == 0
        right.plot(LANDSCAPE_T, values, "-", color=colour, label=name if first else None)
        random = run.get("landscape_random")
        if hasattr(random, "__len__"):
            right.plot(LANDSCAPE_T, random, ":", color=colour, lw=1)
    right.set(xlabel="t (unit direction, kept weights only)", ylabel="training loss",
              title="Fig. 2: loss along the top eigenvector (dotted: random direction)")
    legend(right, fontsize=7)
    fig.suptitle("Sakamoto & Sato 2022: flatness of IMP tickets (quick: Lenet-300-100 on MNIST)",
                 fontsize=10)
    save_figure(fig, path_stem)


def contradicting_runs() -> pd.DataFrame:
    """The large-rate ticket is the sharper one and SAM / NVRM raise the trace: every claim
    fails."""
    traces = {("plain", SMALL_LR): 10.0, ("plain", LARGE_LR): 20.0, ("sam", SMALL_LR): 30.0,
              ("nvrm", SMALL_LR): 40.0}
    rows = []
    for trial in range(2):
        for (rule, lr), trace in traces.items():
            row: dict[str, Any] = {**{k: v[0] for k, v in QUICK.items()}, "lr": lr,
                                   "step_rule": rule, "trial": trial, "imp_level": [0, 1],
                                   "images_per_second": 1000.0, "device": "cpu",
                                   "hessian_examples": 500, "probes": 20,
                                   "power_iterations": 20}
            for f in FIELDS:
                row[f"imp_{f}"] = [1.0, 0.5] if f == "density" else \
                    [trace, trace] if f in ("hessian_trace", "top_eigenvalue") else [0.9, 0.9]
            for d in DIRECTIONS:
                row[f"landscape_{d}"] = [trace * t * t for t in LANDSCAPE_T]
            row["expected_sharpness"] = [0.5 * s * s * trace for s in SHARPNESS_SIGMAS]
            rows.append(row)
    return pd.DataFrame(rows)


CURVATURE_QUICK = {"hessian_examples": [500], "probes": [20], "power_iterations": [20]}
CURVATURE_FULL = {"hessian_examples": [5000], "probes": [100], "power_iterations": [100]}


def _arms(base: dict[str, list[Any]], extra: dict[str, list[Any]], rho: float,
          variability: float) -> list[dict[str, list[Any]]]:
    return [{**grid(base, lr=[SMALL_LR, LARGE_LR], step_rule=["plain"]), **extra},
            {**grid(base, lr=[SMALL_LR], step_rule=["sam"], rho=[rho]), **extra},
            {**grid(base, lr=[SMALL_LR], step_rule=["nvrm"], variability=[variability]),
             **extra}]


EXPERIMENT = register(Experiment(
    name="ticket-sharpness",
    paper="Sakamoto & Sato, Analyzing Lottery Ticket Hypothesis from PAC-Bayesian Theory "
          "Perspective (NeurIPS 2022), Table 1 (Hessian trace for SGD / SAM / NVRM) and Fig. 2 "
          "(1-D loss along the top Hessian eigenvector)",
    description="Hessian trace and top eigenvalue of IMP tickets per level, small vs large "
                "learning rate and SGD vs SAM vs NVRM; loss along the top eigenvector",
    quick=Size(grids=_arms(QUICK, CURVATURE_QUICK, 0.05, 0.01), trials=2,
               estimate="~45 s on 2 cores"),
    full=Size(grids=each_full(lambda base: _arms(base, CURVATURE_FULL, 0.05, 0.014)), trials=3,
              estimate="GPU (unmeasured): 4 ResNet-20 IMP runs of 11 levels x 30k steps per "
                       "trial (SAM 2x) plus ~200 Hessian-vector products of 5,000 images per "
                       "level"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    version=2, shared_seed_params=("lr", "step_rule", "rho", "variability"),
    notes="Settings of tickets.py. Curvature with deep_lottery.curvature: the Hessian of the "
          "mean cross-entropy over a fixed set of training examples (the first "
          "hessian_examples of the training split, un-augmented, the model in eval mode), "
          "restricted to the mask (M H M, biases included), Hutchinson with a fixed number of "
          "Rademacher probes (PyHessian's relative-change stop is not used, so every level gets "
          "the same effort), power iteration with tolerance 1e-3 (PyHessian). The paper picks "
          "SAM's rho and NVRM's b by test accuracy from {0.05, 0.1, 0.2, 0.5} and {0.014, ..., "
          "0.026}; the quick size fixes rho = 0.05 and b = 0.01 (absolute noise; Lenet's weights "
          "have standard deviation ~0.05), the full size rho = 0.05 and b = 0.014. Quick: 500 "
          "examples, 20 probes, 20 power iterations, 2 trials. Expected sharpness of the "
          "sparsest ticket: cross-entropy on the Hessian set, sigma in {0.005, 0.01, 0.02}, 10 "
          "draws (a finding beside sigma^2 tr / 2). Claim rules (ratios vs 1) were fixed "
          "before any run.",
    requires=("torch",),
    missing_data=missing_data,
    params=PARAMS,
    check=check,
))
