"""Fig. 5 of Zhang et al. (NeurIPS 2021): the error floor of AGD on noisy labels.

Setting (paper, Sec. 5): N = 1000, K = 10, d = 300, labels ``y = teacher(x) + xi`` with
``xi ~ N(0, sigma^2)`` and noise level ``sigma / E_y`` (``E_y`` the RMS of the noiseless
labels), student support = teacher support (r* = r). AGD (Algorithm 1, eta = 0.5, beta = 0.2,
stop when ``|W(t+1) - W(t)|_F / |W(t)|_F < 1e-8`` or after 10^4 iterations) starts at relative
distance ``lam`` from W*; the final relative error ``|W - W*|_F / |W*|_F`` is recorded.

Claim (Theorem 2): the iterates converge linearly to a floor
``O(sqrt(K^2 r log d / N)) |xi|``; at fixed N, K, d the relative error is
``c sqrt(r) * (sigma / E_y)``: linear in sqrt(r) and proportional to the noise level.

Convergence certificate. With noise the minimum of the loss sits where samples with
``w_j . x = 0`` make the gradient jump, so AGD at a fixed step chatters around it and the
paper's stopping rule rarely fires: "stopped by the rule" cannot tell a converged run. Instead
the error history's tail is extrapolated by Aitken's delta-squared rule (``aitken_limit``, three
points ``TAIL_WINDOW`` iterations apart; a tail changing by at most ``SETTLED_TOL`` per window
has settled); a run counts as converged when the change still to come is at most ``GAP_TOL``
of its final error, so the recorded error is the floor's to that accuracy. Other runs
("not-converged", "diverged") are excluded from the fits and counted in the claims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lottery_common import check_float, check_int
from sparse_teacher.agd import init_at_distance, run_agd
from sparse_teacher.theory import noise_floor

from ..analysis import claim, fit_line, fixed_effect_slope, format_interval
from ..plotting import figure, save_figure
from ..registry import Experiment, Param, Size, register
from .teacher_instances import AGD_PARAMS, draw_instance

GAP_TOL = 0.02  # converged: the error still to come (Aitken) <= GAP_TOL * the final error
TAIL_WINDOW = 1000  # iterations between the three tail points of the Aitken extrapolation
SETTLED_TOL = 1e-4  # a tail changing by less than this (relative) per window has settled
MIN_R2 = 0.9  # "linear in sqrt(r)": slope CI above 0 and R^2 of the per-run fit at least this
NOISE_SLOPE_TOL = 0.05  # proportional to the noise level: exponent 1 within CI +- this
MIN_CONVERGED = 0.9  # share of runs that must reach the floor for the sweep to be usable


def aitken_limit(history: np.ndarray, window: int, settled: float = 0.0
                 ) -> tuple[float, float, float]:
    """Limit of a linearly converging sequence by Aitken's delta-squared rule.

    With ``e(t) = e_inf + A nu^t`` and the last three points ``e0, e1, e2`` spaced ``window``
    apart, ``rho = (e2 - e1) / (e1 - e0) = nu^window`` and
    ``e_inf = e2 + (e2 - e1) rho / (1 - rho)``. Returns ``(e_inf, remaining, rho)`` with
    ``remaining = |e_inf - e2|``, the change still to come. A tail whose two changes are both
    at most ``settled * |e2|`` has settled (its last digits chatter; ``remaining`` is the larger
    change); an oscillating tail (``rho < 0``) is bounded by its last change ``|e2 - e1|``; a
    tail that does not contract (``rho >= 1``) has ``remaining = inf``. Needs ``2 window + 1``
    finite entries.
    """
    window = check_int("window", window, minimum=1)
    settled = check_float("settled", settled, low=0.0)
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 1 or h.size < 2 * window + 1 or not np.all(np.isfinite(h[-2 * window - 1:])):
        raise ValueError(f"history must be 1-d with at least 2 window + 1 = {2 * window + 1} "
                         f"finite trailing entries, got {h.size} entries")
    e0, e1, e2 = h[-2 * window - 1], h[-window - 1], h[-1]
    d0, d1 = e1 - e0, e2 - e1
    rho = d1 / d0 if d0 != 0.0 else (0.0 if d1 == 0.0 else float("inf"))
    if max(abs(d0), abs(d1)) <= settled * abs(e2):
        return float(e2), float(max(abs(d0), abs(d1))), float(rho)
    if rho < 0.0:
        return float(e2), float(abs(d1)), float(rho)
    if rho >= 1.0:
        return float("nan"), float("inf"), float(rho)
    remaining = d1 * rho / (1.0 - rho)
    return float(e2 + remaining), float(abs(remaining)), float(rho)


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    inst = draw_instance(d=params["d"], K=params["K"], r=params["r"], N=params["N"], seed=seed,
                         noise_level=params["noise_level"])
    W0 = init_at_distance(inst.W_star, params["lam"], inst.init_rng)
    res = run_agd(inst.problem, W0, eta=params["eta"], beta=params["beta"],
                  max_iter=params["max_iter"], W_star=inst.W_star)
    hist = res.rel_error_history
    out: dict[str, Any] = {"rel_error": float(res.rel_error), "status": res.status,
                           "n_iter": int(res.n_iter), "noise_sigma": inst.data.noise_sigma,
                           "final_loss": float(res.loss_history[-1])}
    window = min(TAIL_WINDOW, (len(hist) - 1) // 2)
    if res.diverged or window < 1:
        out.update(limit_error=float("nan"), remaining=float("inf"), tail_ratio=float("nan"),
                   outcome="diverged" if res.diverged else "not-converged")
        return out
    limit, remaining, rho = aitken_limit(hist, window, settled=SETTLED_TOL)
    out.update(limit_error=limit, remaining=remaining, tail_ratio=rho,
               outcome="converged" if remaining <= GAP_TOL * res.rel_error else "not-converged")
    return out


def converged(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose final error is the floor's (``outcome == "converged"``), positive errors."""
    keep = (runs["outcome"] == "converged") & (runs["rel_error"] > 0)
    return runs[keep]


def fit_constant(runs: pd.DataFrame) -> float:
    """``c`` of ``error = c sqrt(r) noise_level``: geometric mean of ``error / (sqrt(r) noise)``."""
    x = np.sqrt(runs["r"].to_numpy(float)) * runs["noise_level"].to_numpy(float)
    return float(np.exp(np.mean(np.log(runs["rel_error"].to_numpy(float) / x))))


def _cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    return (converged(runs).groupby(["noise_level", "r"])["rel_error"]
            .agg(["median", "min", "max", "count"]).reset_index())


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    import matplotlib

    fig, (ax_a, ax_b) = figure(1, 2, figsize=(11, 4.2))
    levels = sorted(runs["noise_level"].unique())
    colors = dict(zip(levels, matplotlib.colormaps["plasma"](np.linspace(0, 0.85, len(levels)))))
    good = converged(runs)
    table = _cell_table(runs)
    c = fit_constant(good) if len(good) else float("nan")
    r_grid = np.linspace(runs["r"].min(), runs["r"].max(), 100)
    for level in levels:
        group = table[table["noise_level"] == level]
        x = np.sqrt(group["r"].to_numpy(float))
        med = group["median"].to_numpy(float)
        err = np.vstack([med - group["min"], group["max"] - med])
        kw = {"color": colors[level], "capsize": 3, "fmt": "o"}
        ax_a.errorbar(x, med, yerr=err, label=f"noise {level:g}", **kw)
        ax_b.errorbar(x, med / level, yerr=err / level, label=f"noise {level:g}", **kw)
        if np.isfinite(c):
            ax_a.plot(np.sqrt(r_grid), noise_floor(r_grid, level, c), "--", color=colors[level],
                      lw=1)
    dropped = runs[~runs.index.isin(good.index)]
    finite = dropped[np.isfinite(dropped["rel_error"].to_numpy(float))]
    if len(finite):
        ax_a.plot(np.sqrt(finite["r"].to_numpy(float)), finite["rel_error"], "x", color="grey",
                  label=f"not converged ({len(dropped)} runs, excluded)")
    if np.isfinite(c):
        ax_a.plot([], [], "k--", lw=1,
                  label=rf"fit of Theorem 2's form: $c\sqrt{{r}}\,\sigma/E_y$, c = {c:.3g}")
        ax_b.plot(np.sqrt(r_grid), noise_floor(r_grid, 1.0, c), "k--", lw=1,
                  label=rf"fit: $c\sqrt{{r}}$, c = {c:.3g}")
    ax_a.set_yscale("log")
    ax_a.set(xlabel=r"$\sqrt{r}$", ylabel=r"relative error $\|\hat W - W^*\|_F / \|W^*\|_F$",
             title="Fig. 5(a): AGD error floor against sqrt(r), one line per noise level")
    ax_b.set(xlabel=r"$\sqrt{r}$", ylabel=r"relative error / noise level $(\sigma/E_y)$",
             title="Fig. 5(b): error / noise level collapses onto one line")
    ax_b.set_ylim(bottom=0)
    for ax in (ax_a, ax_b):
        ax.legend(fontsize=7)
    save_figure(fig, path_stem)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    good = converged(runs)
    n_good, n_all = len(good), len(runs)
    excluded = runs.loc[~runs.index.isin(good.index), "outcome"].value_counts()
    out.append(claim(
        "AGD reaches the noisy local minimizer (Theorem 2: linear convergence to the floor)",
        f">= {MIN_CONVERGED:.0%} of runs end within {GAP_TOL:.0%} of their error's limit",
        f"{n_good} of {n_all} runs converged; excluded from the fits: "
        f"{ {k: int(v) for k, v in excluded.items()} }",
        n_all > 0 and n_good >= MIN_CONVERGED * n_all))
    for level, group in good.groupby("noise_level"):
        text = f"noise {level:g}: relative error is linear in sqrt(r) (Theorem 2)"
        predicted = f"slope of error against sqrt(r) > 0, R^2 >= {MIN_R2}"
        if group["r"].nunique() < 3:
            out.append(claim(text, predicted, f"only {group['r'].nunique()} values of r with "
                             "converged runs", False))
            continue
        r = group["r"].to_numpy(float)
        err = group["rel_error"].to_numpy(float)
        fit = fit_line(np.sqrt(r), err)
        power = fit_line(np.log(r), np.log(err))
        out.append(claim(text, predicted,
                         f"slope {format_interval(fit.slope, fit.slope_ci)}, intercept "
                         f"{fit.intercept:.2e}, R^2 = {fit.r2:.3f} ({fit.n} runs); log-log "
                         f"exponent in r {format_interval(power.slope, power.slope_ci)}",
                         fit.slope_ci[0] > 0 and fit.r2 >= MIN_R2))
    text = "relative error is proportional to the noise level (Theorem 2)"
    predicted = (f"exponent of error against noise level = 1 (within CI +- {NOISE_SLOPE_TOL}), "
                 "one intercept per r")
    if good["noise_level"].nunique() < 2:
        out.append(claim(text, predicted, "fewer than 2 noise levels with converged runs", False))
    else:
        slope, ci, n = fixed_effect_slope(np.log(good["noise_level"].to_numpy(float)),
                                          np.log(good["rel_error"].to_numpy(float)),
                                          good["r"].to_numpy())
        passed = bool(np.isfinite(slope)
                      and ci[0] - NOISE_SLOPE_TOL <= 1.0 <= ci[1] + NOISE_SLOPE_TOL)
        c = fit_constant(good)
        out.append(claim(text, predicted,
                         f"exponent {format_interval(slope, ci)} ({n} runs); fitted c = {c:.3g}",
                         passed))
    return out


def contradicting_runs() -> pd.DataFrame:
    """Converged runs whose error falls with r and grows like the square of the noise level."""
    rng = np.random.default_rng(0)
    rows = []
    for r in (5, 10, 20, 30):
        for level in (0.01, 0.02, 0.05, 0.1):
            for trial in range(4):
                error = 5.0 * level**2 / np.sqrt(r) * np.exp(0.04 * rng.normal())
                rows.append({"N": 1000, "d": 300, "K": 10, "eta": 0.5, "beta": 0.2, "lam": 0.1,
                             "max_iter": 10000, "noise_level": level, "r": r, "trial": trial,
                             "rel_error": error, "outcome": "converged"})
    return pd.DataFrame(rows)


COMMON = {"N": [1000], "d": [300], "K": [10], "eta": [0.5], "beta": [0.2], "lam": [0.1],
          "max_iter": [10000], "noise_level": [0.01, 0.02, 0.05, 0.1]}

EXPERIMENT = register(Experiment(
    name="noise",
    paper="Zhang et al. 2021 (NeurIPS), Fig. 5",
    description="AGD's error floor on noisy labels against sqrt(r), per noise level",
    quick=Size(grids=[{**COMMON, "r": [5, 10, 20, 30]}], trials=2, estimate="~40 s"),
    full=Size(grids=[{**COMMON, "r": [5, 10, 15, 20, 25, 30]}], trials=100,
              estimate="~45 min"),
    run_cell=run_cell, plot=plot, claims=claims, contradicting_runs=contradicting_runs,
    params={**AGD_PARAMS, "noise_level": Param("float", low=0, low_open=True)},
    notes="The paper's r grid and noise levels were not recoverable; choices from pilots "
          "(K = 10, N = 1000, d = 300, lam = 0.1, 10^4 iterations). Noise levels sigma/E_y in "
          "{0.01, 0.02, 0.05, 0.1}: at 1e-3 the stopping rule's resolution (a step of 1e-8 "
          "means a distance ~1e-5) is 2% of the error at r = 10, and AGD ends 36-41% short of "
          "the minimizer at r = 40. r in 5..30 (K r / N <= 0.3): after 10^4 iterations the "
          "error is within 0.1-0.5% of its value at 4 x 10^4 for r <= 30, but 0.5-4.5% short at "
          "r = 40 and 1.3-6% at r = 50 (2-3 slow modes; Aitken then underestimates the rest by "
          "up to 5x), and as K r nears N the least-squares factor ~1/sqrt(1 - K r / N_eff) "
          "bends the curve up (exact minimizer error / (sqrt(r) noise): 0.21 at r = 5, 0.27 at "
          "r = 30, 0.62 at r = 80), so the log-log exponent in r is above 1/2 (~0.6-0.7). "
          "Start at lam = 0.1 (AGD from a point of the convex region, as in Theorem 2); the "
          "floor does not depend on the start (from W* itself, r = 10: the final points differ by "
          "0.3% of the error). A 4 x 10^4-iteration run polished by Gauss-Newton confirmed that AGD "
          "ends at the local minimizer (distance 1e-5 of its error at r = 20).",
))
