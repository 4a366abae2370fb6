"""Lueker (1998) random subset sum: n needed to cover [-1, 1] to accuracy eta (spec Sec. 1.1, 8.1).

Claim: with X_i i.i.d. Unif[-1, 1], n = O(log(1/eta)) coefficients give every z in [-1, 1] an
eta-approximation w.h.p. (Lueker 1998, as quoted on Xiong et al.'s slides p.8). Measured:

* ``measure = "coverage"``: n* = the first n at which the tolerance-eta reachable set covers
  [-1, 1] (exact interval DP); n_req(eta) = its 90% quantile over trials, with a binomial CI;
  claimed linear in log2(1/eta).
* ``measure = "sup_error"``: sup_{z in [-1, 1]} min_S |z - sum_S X_i| for n coefficients (exact
  gap-midpoint formula); its median is claimed to decay like 2^(-c n), c ~ 0.85 (spec Sec. 10).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from subset_sum.coverage import covering_size, quantile_frame, random_sup_error

from ..analysis import claim, fit_line
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Param, Size, register

N_MAX = 80
QUANTILE = 0.9
SUP_ERROR_RATE = 0.85  # spec Sec. 10: median sup error ~ 2^(-0.85 n)


MEASURES = {"coverage": "eta", "sup_error": "n"}  # measure -> the parameter it needs
N_SUP_MAX = 24  # the exact reachable set of n coefficients holds up to 2^n intervals


def check_measure(cell: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Each measure needs its own parameter: coverage reads eta, sup_error reads n."""
    needed = MEASURES.get(cell["measure"])
    if needed is not None and needed not in cell:
        grids = ", ".join(f"{m!r} (with {p})" for m, p in MEASURES.items())
        yield ("measure", f"measure {cell['measure']!r} needs {needed}, which this grid does not "
                          f"set; each grid takes its own measure: {grids}")


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One random sequence: its covering size n* (coverage) or its sup error (sup_error)."""
    if params["measure"] == "coverage":
        n_star = covering_size(params["eta"], 0.0, seed, n_max=N_MAX)
        return {"n_star": n_star, "covered": n_star <= N_MAX}
    if params["measure"] == "sup_error":
        return {"sup_error": random_sup_error(params["n"], 0.0, seed)}
    raise ValueError(f"measure must be 'coverage' or 'sup_error', got {params['measure']!r}")


def _coverage(runs: pd.DataFrame) -> pd.DataFrame:
    rows = runs[(runs["measure"] == "coverage")
                & np.isfinite(runs.get("n_star", pd.Series(np.nan, runs.index)).to_numpy(float))]
    table = quantile_frame(rows, ["eta"], "n_star", QUANTILE)
    table["bits"] = np.log2(1.0 / table["eta"])
    return table.sort_values("bits")


def _sup_errors(runs: pd.DataFrame) -> pd.DataFrame:
    rows = runs[(runs["measure"] == "sup_error")
                & np.isfinite(runs.get("sup_error", pd.Series(np.nan, runs.index)).to_numpy(float))]
    grouped = rows.groupby("n")["sup_error"]
    return pd.DataFrame({"median": grouped.median(), "q90": grouped.quantile(QUANTILE),
                         "trials": grouped.size()}).reset_index().sort_values("n")


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """(a) n_req(eta) at the 90% quantile against log2(1/eta); (b) sup error against n."""
    fig, (left, right) = figure(1, 2, figsize=(10.0, 4.2))
    cov = _coverage(runs)
    if len(cov):
        err = np.vstack([cov["quantile"] - cov["ci_low"], cov["ci_high"] - cov["quantile"]])
        left.errorbar(cov["bits"], cov["quantile"], yerr=err, fmt="o", capsize=3,
                      label="90% quantile of n* (95% binomial CI)")
        left.plot(cov["bits"], cov["mean"], "s", mfc="none", label="mean n*")
        if len(cov) >= 3:
            fit = fit_line(cov["bits"].to_numpy(), cov["quantile"].to_numpy())
            xs = np.linspace(0, cov["bits"].max() * 1.05, 50)
            left.plot(xs, fit.intercept + fit.slope * xs, "k--",
                      label=f"fit: linear in log2(1/eta), slope {fit.slope:.2f}, "
                            f"R^2 {fit.r2:.3f}")
    left.set_xlabel("log2(1/eta)")
    left.set_ylabel("n needed to cover [-1, 1] to accuracy eta")
    left.set_title("(a) Lueker coverage, 90% of trials (spec Sec. 8.1)")
    legend(left, loc="upper left")
    sup = _sup_errors(runs)
    if len(sup):
        right.semilogy(sup["n"], sup["median"], "o-", label="median sup error")
        right.semilogy(sup["n"], sup["q90"], "^-", label="90% quantile")
        ns = sup["n"].to_numpy(dtype=np.float64)
        anchor = sup["median"].iloc[0] * 2.0 ** (SUP_ERROR_RATE * ns[0])
        right.semilogy(ns, anchor * 2.0 ** (-SUP_ERROR_RATE * ns), "k--",
                       label=f"spec rate 2^(-{SUP_ERROR_RATE} n), through the first median")
    right.set_xlabel("n (number of Unif[-1, 1] coefficients)")
    right.set_ylabel("sup over z in [-1, 1] of min_S |z - sum_S X_i|")
    right.set_title("(b) exact sup error against n")
    legend(right)
    fig.suptitle("Random subset sum (Lueker 1998; Xiong et al. 2023 slides p.8)")
    save_figure(fig, path_stem)


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Linear n_req in log2(1/eta); exponential decay of the median sup error."""
    out = []
    cov = _coverage(runs)
    text = "n_req(eta) at the 90% quantile is linear in log2(1/eta) (Lueker: n = O(log 1/eta))"
    predicted = ("linear: R^2 >= 0.95, positive slope (spec Sec. 10: about 3.5-4 per decade, "
                 "i.e. 1.05-1.2 per bit)")
    if len(cov) >= 3:
        fit = fit_line(cov["bits"].to_numpy(), cov["quantile"].to_numpy())
        quantiles = "; ".join(f"eta={r.eta:g}: {r.quantile:g} [{r.ci_low:g}, {r.ci_high:g}]"
                              for r in cov.itertuples())
        out.append(claim(
            text, predicted,
            f"slope {fit.slope:.3f} per bit [{fit.slope_ci[0]:.3f}, {fit.slope_ci[1]:.3f}], "
            f"R^2 {fit.r2:.4f}; 90% quantiles with 95% CIs: {quantiles}",
            fit.r2 >= 0.95 and fit.slope > 0))
    else:
        out.append(claim(text, predicted, f"only {len(cov)} values of eta", False))
    sup = _sup_errors(runs)
    text = "median sup error decays like 2^(-c n)"
    predicted = f"c = {SUP_ERROR_RATE} (spec Sec. 10); pass if 0.7 <= c <= 1.0 and R^2 >= 0.95"
    if len(sup) >= 3:
        fit = fit_line(sup["n"].to_numpy(dtype=np.float64), np.log2(sup["median"].to_numpy()))
        rate = -fit.slope
        out.append(claim(
            text, predicted,
            f"c = {rate:.3f} [{-fit.slope_ci[1]:.3f}, {-fit.slope_ci[0]:.3f}], R^2 {fit.r2:.4f}",
            0.7 <= rate <= 1.0 and fit.r2 >= 0.95))
    else:
        out.append(claim(text, predicted, f"only {len(sup)} values of n", False))
    return out


def contradicting_runs() -> pd.DataFrame:
    """n* that falls as eta shrinks, and a sup error decaying only like 2^(-0.2 n)."""
    rows = []
    for eta in (1e-1, 1e-2, 1e-3, 1e-4):
        for trial in range(40):
            n_star = int(round(30 - 2 * np.log2(1 / eta))) + trial % 4
            rows.append({"measure": "coverage", "eta": eta, "trial": trial, "n_star": n_star,
                         "covered": n_star <= N_MAX})
    for n in (4, 6, 8, 10, 12, 14, 16, 18):
        for trial in range(40):
            rows.append({"measure": "sup_error", "n": n, "trial": trial,
                         "sup_error": 2.0 ** (-0.2 * n) * (1 + 0.01 * (trial % 5))})
    return pd.DataFrame(rows)


EXPERIMENT = register(Experiment(
    name="lueker",
    paper="Lueker 1998 random subset sum, as used by Pensia et al. 2020 and Xiong et al. 2023 "
          "(slides p.8); spec Sec. 8.1",
    description="n needed for 90% coverage of [-1, 1] to accuracy eta against log2(1/eta), and "
                "the exact sup error against n",
    quick=Size(grids=[{"measure": ["coverage"], "eta": [1e-1, 1e-2, 1e-3, 1e-4]},
                      {"measure": ["sup_error"], "n": [4, 6, 8, 10, 12, 14, 16, 18]}],
               trials=200, estimate="~30 s"),
    full=Size(grids=[{"measure": ["coverage"], "eta": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]},
                     {"measure": ["sup_error"], "n": [4, 6, 8, 10, 12, 14, 16, 18, 20, 22]}],
              trials=1000, estimate="~10 min"),
    run_cell=run_cell,
    plot=plot,
    claims=claims,
    contradicting_runs=contradicting_runs,
    params={"measure": Param("str", choices=MEASURES), "eta": Param("float", low=0, high=1, low_open=True),
            "n": Param("int", low=1, high=N_SUP_MAX)},
    check=check_measure,
    notes="Coverage range [-1, 1] (the theorems state [-1/2, 1/2]); X_i ~ Unif[-1, 1]; n* from the "
          "exact tolerance-eta interval DP on a sequence of 80 coefficients (n* = 81 if never "
          "covered); n_req = 90% quantile of n* (delta = 0.1 as on Xiong's poster) with a "
          "distribution-free 95% binomial CI. Sup error: exact gap-midpoint formula, no grid.",
))
