"""Does gradient descent make the optimal-mask error descend? (Xiong, Liao, Kyrillidis 2023,
slides p.17 "next step"; spec Sec. 7 and 8 item 5.)

Data x_1..x_m ~ N(0, I_d) (rows of X), target w ~ Unif[-1, 1]^d, start U_0 ~ Unif[-1, 1]^(n x d).
GD on L(U) = sum_i (1^T U x_i - w^T x_i)^2 = ||X (U^T 1 - w)||^2, optionally projected onto the
box ||U - U_0||_max <= eps (an entrywise clip). The optimal-mask error

    e_t = min over 0/1 masks M of ||w - (U_t * M)^T 1||_2 = sqrt(sum_j min_S |w_j - sum_{k in S} U_kj|^2)

is d independent exact subset sums, one per column (meet in the middle, ``subset_sum``).

Analysis (spec Sec. 7): grad L = 2 * 1 (X^T X (U^T 1 - w))^T, so every row of U gets the same
update and column j's entries are shifted by a common c_j(t); without projection U_t^T 1 -> w
(X has full column rank), the all-ones mask becomes exact and e_t -> 0. Claims: (1) unprojected
GD ends with e_T / ||w|| <= ``FINAL_TOLERANCE``; (2) the realized updates U_{t+1} - U_t have equal
rows to ``ROW_TOLERANCE`` (relative); (3) the projected iterate stays in the box. The open
question, whether e_{t+1} < e_t at every step, has no prediction: the share of runs with an
increase and the share of increasing steps are reported as findings, with and without projection.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from subset_sum.meet_in_middle import meet_in_the_middle_batch

from ..analysis import claim, finding
from ..plotting import figure, legend, save_figure
from ..registry import Experiment, Param, Size, register

N_MAX = 24  # meet in the middle: 2 * 2^12 sums per column and step
PATH_POINTS = 60  # stored points of the error path (t = 0 and geometrically spaced t >= 1)
FINAL_TOLERANCE = 1e-8  # claim (1): final optimal-mask error / ||w|| without projection
ROW_TOLERANCE = 1e-9  # claim (2): max_j (max_k - min_k of dU_kj) / max |dU|, per step
ROW_CHECK_FLOOR = 1e-5
"""Claim (2) checks the steps with max |dU| > ROW_CHECK_FLOOR * max |U_t|: the realized increment
of an entry carries a rounding error up to ~1e-16 |U|, so smaller steps are rounding noise."""
BALL_TOLERANCE = 1e-9  # claim (3): max_t ||U_t - U_0||_max <= eps * (1 + BALL_TOLERANCE)
INCREASE_TOLERANCE = 1e-12
"""A step increases (decreases) e_t when e_{t+1} - e_t > (<) +-INCREASE_TOLERANCE * ||w||; smaller
changes are rounding noise once e_t has converged (~1e-16)."""
SHOWN_RUNS = 2  # error paths drawn per configuration and lr
LINE_STYLES = ("-", "--", ":", "-.")


def loss(U: np.ndarray, X: np.ndarray, w: np.ndarray) -> float:
    """L(U) = sum_i (1^T U x_i - w^T x_i)^2."""
    residual = X @ (U.sum(axis=0) - w)
    return float(residual @ residual)


def gradient(U: np.ndarray, X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dL/dU_kj = 2 sum_i r_i x_ij with r_i = 1^T U x_i - w^T x_i: the same row for every k."""
    residual = X @ (U.sum(axis=0) - w)
    return 2.0 * np.ones((U.shape[0], 1)) * (X.T @ residual)[None, :]


def lipschitz(X: np.ndarray, n: int) -> float:
    """L = 2 n lambda_max(X^T X), the largest eigenvalue of the Hessian 2 (1 1^T) kron X^T X."""
    return 2.0 * n * float(np.linalg.eigvalsh(X.T @ X)[-1])


def project(U: np.ndarray, U0: np.ndarray, eps: float | None) -> np.ndarray:
    """Euclidean projection onto {||U - U_0||_max <= eps} (entrywise clip); None: no projection."""
    return U if eps is None else np.clip(U, U0 - eps, U0 + eps)


def optimal_mask_error(U: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """(min_M ||w - (U * M)^T 1||_2, the optimal mask (n, d)): one exact subset sum per column."""
    errors, masks = meet_in_the_middle_batch(np.ascontiguousarray(U.T), np.asarray(w, float))
    return float(np.sqrt(errors @ errors)), masks.T


def path_steps(iterations: int) -> np.ndarray:
    """The stored iterations: 0 and up to PATH_POINTS - 1 geometrically spaced t in [1, T]."""
    spaced = np.round(np.geomspace(1, iterations, PATH_POINTS - 1)).astype(np.int64)
    return np.unique(np.concatenate([[0], spaced]))


def descent_path(U0: np.ndarray, X: np.ndarray, w: np.ndarray, alpha: float, iterations: int,
                 eps: float | None = None) -> dict[str, Any]:
    """Run (projected) GD for ``iterations`` steps from U_0; e_t at every t, the row spread of
    every realized update and the largest distance to U_0."""
    U = U0.copy()
    errors = np.empty(iterations + 1)
    errors[0] = optimal_mask_error(U, w)[0]
    deviation, checked, drift = 0.0, 0, 0.0
    for t in range(iterations):
        new = project(U - alpha * gradient(U, X, w), U0, eps)
        step = new - U
        size = float(np.abs(step).max())
        if size > ROW_CHECK_FLOOR * float(np.abs(U).max()):
            deviation = max(deviation, float(np.ptp(step, axis=0).max()) / size)
            checked += 1
        U = new
        drift = max(drift, float(np.abs(U - U0).max()))
        errors[t + 1] = optimal_mask_error(U, w)[0]
    return {"errors": errors, "U": U, "row_deviation": deviation, "row_checked_steps": checked,
            "max_drift": drift}


def _eps(params: dict[str, Any]) -> float | None:
    eps = params.get("eps")
    return None if eps is None or not math.isfinite(float(eps)) else float(eps)


def run_cell(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """One instance (X, w, U_0) from ``seed``; GD with step lr / L, projected when eps is set."""
    n, d, m = int(params["n"]), int(params["d"]), int(params["m"])
    iterations, eps = int(params["iterations"]), _eps(params)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    w = rng.uniform(-1.0, 1.0, d)
    U0 = rng.uniform(-1.0, 1.0, (n, d))
    alpha = float(params["lr"]) / lipschitz(X, n)
    path = descent_path(U0, X, w, alpha, iterations, eps)
    errors = path["errors"]
    w_norm = float(np.linalg.norm(w))
    change = np.diff(errors)
    tol = INCREASE_TOLERANCE * w_norm
    increases, decreases = int(np.sum(change > tol)), int(np.sum(change < -tol))
    steps = path_steps(iterations)
    return {
        "w_norm": w_norm,
        "initial_error": float(errors[0]),
        "final_error": float(errors[-1]),
        "final_all_ones_error": float(np.linalg.norm(path["U"].sum(axis=0) - w)),
        "min_error": float(errors.min()),
        "increases": increases,
        "decreases": decreases,
        "increase_share": increases / iterations,
        "first_increase": int(np.argmax(change > tol)) + 1 if increases else 0,
        "row_deviation": path["row_deviation"],
        "row_checked_steps": path["row_checked_steps"],
        "max_drift": path["max_drift"],
        "drift_over_eps": path["max_drift"] / eps if eps is not None else math.nan,
        "path_steps": [int(s) for s in steps],
        "path_error": [float(e) for e in errors[steps]],
    }


# ----------------------------------------------------------------------------- tables


def projected(runs: pd.DataFrame) -> pd.Series:
    """Rows run with a projection (a finite eps)."""
    if "eps" not in runs.columns:
        return pd.Series(False, index=runs.index)
    return pd.to_numeric(runs["eps"], errors="coerce").notna()


def _config(runs: pd.DataFrame) -> pd.Series:
    """"no projection" or "eps = ..." per row."""
    flag = projected(runs)
    eps = _finite(runs["eps"]) if "eps" in runs.columns else np.full(len(runs), math.nan)
    return pd.Series([f"eps = {e:g}" if f else "no projection" for f, e in zip(flag, eps,
                                                                                strict=True)],
                     index=runs.index, dtype=object)


def _finite(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(float)


def increase_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (configuration, lr): runs, runs with an increase, increasing / changing / all steps."""
    if not len(runs):
        return pd.DataFrame(columns=["config", "lr", "runs", "runs_increasing", "increases",
                                     "changes", "steps"])
    table = pd.DataFrame({
        "config": _config(runs),
        "eps": _finite(runs["eps"]) if "eps" in runs.columns else math.nan,
        "lr": _finite(runs["lr"]) if "lr" in runs.columns else math.nan,
        "increases": _finite(runs["increases"]),
        "changes": _finite(runs["increases"]) + _finite(runs["decreases"]),
        "steps": _finite(runs["iterations"]) if "iterations" in runs.columns else math.nan})
    table["increasing"] = table["increases"] > 0
    grouped = table.groupby(["config", "lr"], dropna=False, sort=False)
    out = grouped.agg(eps=("eps", "first"), runs=("increases", "size"),
                      runs_increasing=("increasing", "sum"), increases=("increases", "sum"),
                      changes=("changes", "sum"), steps=("steps", "sum")).reset_index()
    out["order"] = out["eps"].fillna(-1.0)
    return out.sort_values(["order", "lr"]).drop(columns="order").reset_index(drop=True)


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else math.nan


# ----------------------------------------------------------------------------- plot


def _paths(ax: Any, rows: pd.DataFrame, color_by: str, title: str) -> None:
    """The first SHOWN_RUNS paths of each (color_by, lr): one color per value, one line style
    per lr (solid: the largest)."""
    keys = sorted(rows[color_by].dropna().unique()) if len(rows) else []
    rates = sorted(rows["lr"].dropna().unique(), reverse=True) if "lr" in rows and len(rows) \
        else []
    for i, key in enumerate(keys):
        for r, lr in enumerate(rates):
            group = rows[(rows[color_by] == key) & (rows["lr"] == lr)]
            if "trial" in group.columns:
                group = group.sort_values("trial")
            for k, row in enumerate(group.head(SHOWN_RUNS).itertuples()):
                steps = np.asarray(row.path_steps, dtype=float)
                errors = np.asarray(row.path_error, dtype=float)
                if steps.shape != errors.shape:
                    continue
                ax.plot(steps, np.maximum(errors, 1e-17), LINE_STYLES[r % len(LINE_STYLES)],
                        color=f"C{i}", lw=1, alpha=0.8,
                        label=f"{color_by} = {key:g}, lr = {lr:g}" if k == 0 else None)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("optimal-mask error e_t = min_M ||w - (U_t * M)^T 1||")
    ax.set_title(title)
    legend(ax, fontsize=7)


def plot(runs: pd.DataFrame, path_stem: Path) -> None:
    """(a) e_t without projection, per n; (b) with projection, per eps; (c) increasing shares."""
    fig, axes = figure(1, 3, figsize=(15.5, 4.6))
    flag = projected(runs)
    _paths(axes[0], runs[~flag], "n", "(a) GD without projection; theory: e_t -> 0")
    boxed = runs[flag]
    if len(boxed) and boxed["n"].notna().any():
        boxed = boxed[boxed["n"] == boxed["n"].max()]
    n_text = f", n = {boxed['n'].iloc[0]:g}" if len(boxed) else ""
    _paths(axes[1], boxed, "eps", f"(b) projected GD, ||U - U_0||_max <= eps{n_text}")
    ax = axes[2]
    table = increase_table(runs)
    if len(table):
        rates = sorted(table["lr"].dropna().unique())
        configs = list(dict.fromkeys(table["config"]))
        width = 0.8 / max(len(rates), 1)
        for i, lr in enumerate(rates):
            rows = table[table["lr"] == lr].set_index("config").reindex(configs)
            x = np.arange(len(configs)) + (i - (len(rates) - 1) / 2) * width
            steps = [_share(a, b) for a, b in zip(rows["increases"], rows["changes"], strict=True)]
            share = [_share(a, b) for a, b in zip(rows["runs_increasing"], rows["runs"],
                                                  strict=True)]
            ax.bar(x, np.nan_to_num(steps), width, color=f"C{i}",
                   label=f"lr = {lr:g}: increasing / changing steps")
            ax.plot(x, share, "k^", ms=6, label="share of runs with >= 1 increase" if i == 0
                    else None)
        ax.set_xticks(np.arange(len(configs)), configs, rotation=20, fontsize=8)
        ax.set_ylim(0.0, 1.4)  # room above the shares for the legend
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("share")
    ax.set_title("(c) open question: steps where e_{t+1} > e_t")
    legend(ax, fontsize=7, loc="upper center", ncol=2)
    fig.suptitle("GD on min_U sum_i (1^T U x_i - w^T x_i)^2: does the optimal-mask error descend? "
                 "(Xiong et al. 2023, slides p.17; spec Sec. 7)")
    save_figure(fig, path_stem)


# ----------------------------------------------------------------------------- claims


def _ratio_text(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return "no finite value"
    return f"largest {finite.max():.2e}, median {np.median(finite):.2e}"


def claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Claims (1)-(3) on the runs; the descent question as findings (failed or diverged runs,
    NaN or inf, fail the claims without warnings)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _claims(runs)


def _claims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    flag = projected(runs)
    plain, boxed = runs[~flag], runs[flag]

    text = ("without projection GD drives the optimal-mask error to 0 (U_t^T 1 -> w: the "
            "all-ones mask becomes exact)")
    predicted = f"final error / ||w|| <= {FINAL_TOLERANCE:g} in every unprojected run"
    if len(plain):
        ratio = _finite(plain["final_error"]) / _finite(plain["w_norm"])
        ones = _finite(plain["final_all_ones_error"]) / _finite(plain["w_norm"])
        within = int(np.sum(ratio <= FINAL_TOLERANCE))
        out.append(claim(text, predicted,
                         f"{within} of {len(plain)} runs within; final error / ||w||: "
                         f"{_ratio_text(ratio)}; all-ones mask error / ||w||: {_ratio_text(ones)}",
                         within == len(plain)))
    else:
        out.append(claim(text, predicted, "no run without projection", False))

    text = ("every row of U receives the same GD update (the loss depends on U through U^T 1 "
            "only)")
    predicted = (f"max_j (max_k - min_k of (U_(t+1) - U_t)_kj) / max |U_(t+1) - U_t| <= "
                 f"{ROW_TOLERANCE:g} at every checked step of every unprojected run")
    if len(plain):
        deviation = _finite(plain["row_deviation"])
        checked = _finite(plain["row_checked_steps"])
        good = int(np.sum((deviation <= ROW_TOLERANCE) & (checked > 0)))
        worst = float(np.nanmax(deviation)) if np.isfinite(deviation).any() else math.nan
        extra = ""
        if len(boxed):
            extra = (f"; projected runs (not claimed): largest "
                     f"{float(np.nanmax(_finite(boxed['row_deviation']))):.1e}"
                     if np.isfinite(_finite(boxed["row_deviation"])).any() else "")
        out.append(claim(text, predicted,
                         f"{good} of {len(plain)} runs within; largest relative row deviation "
                         f"{worst:.1e} over {int(np.nansum(checked))} checked steps{extra}",
                         good == len(plain)))
    else:
        out.append(claim(text, predicted, "no run without projection", False))

    text = "the projected iterate stays in the box ||U_t - U_0||_max <= eps"
    predicted = f"max_t ||U_t - U_0||_max / eps <= 1 + {BALL_TOLERANCE:g} in every projected run"
    if len(boxed):
        ratio = _finite(boxed["drift_over_eps"])
        inside = int(np.sum(ratio <= 1.0 + BALL_TOLERANCE))
        touch = int(np.sum(ratio >= 1.0 - 1e-9))
        out.append(claim(text, predicted,
                         f"{inside} of {len(boxed)} runs inside; {touch} reach the boundary; "
                         f"||U_t - U_0||_max / eps: {_ratio_text(ratio)}",
                         inside == len(boxed)))
    else:
        out.append(claim(text, predicted, "no projected run", False))

    table = increase_table(runs)
    for name, rows in (("without projection", table[table["config"] == "no projection"]),
                       ("with projection", table[table["config"] != "no projection"])):
        out.append(finding(
            f"open question, {name}: is e_(t+1) < e_t at every step? (an increase: e_(t+1) - e_t "
            f"> {INCREASE_TOLERANCE:g} ||w||)", _increase_text(rows)))
    if len(boxed):
        start, end = _finite(boxed["initial_error"]), _finite(boxed["final_error"])
        ratio = end / start
        per_eps = pd.Series(ratio, index=boxed.index).groupby(_finite(boxed["eps"])).median()
        out.append(finding(
            "with projection: final / initial optimal-mask error, median per eps (it vanishes "
            "only when the box holds a U with U^T 1 = w)",
            ", ".join(f"eps={e:g}: {r:.2e}" for e, r in per_eps.items())
            + f"; {int(np.sum(end > start))} of {len(boxed)} projected runs end above their start"))
    return out


def _increase_text(rows: pd.DataFrame) -> str:
    if not len(rows):
        return "no runs"
    parts = []
    for row in rows.itertuples():
        parts.append(
            f"{row.config}, lr={row.lr:g}: {int(row.runs_increasing)} of {int(row.runs)} runs "
            f"with an increase ({_share(row.runs_increasing, row.runs):.0%}); "
            f"{int(row.increases)} increasing of {int(row.changes)} changing steps "
            f"({_share(row.increases, row.changes):.1%}; "
            f"{_share(row.increases, row.steps):.2%} of all {int(row.steps)} steps)")
    return " | ".join(parts)


def contradicting_runs() -> pd.DataFrame:
    """Unprojected runs that stall at a positive error with unequal row updates, and projected
    runs that leave the box."""
    rows = []
    steps = path_steps(100)
    for n in (8, 12):
        for trial in range(3):
            base = {"n": n, "d": 5, "m": 200, "iterations": 100, "lr": 1.0, "trial": trial,
                    "w_norm": 1.2, "initial_error": 1e-2, "min_error": 1e-3,
                    "increases": 4 + trial, "decreases": 20, "increase_share": (4 + trial) / 100,
                    "first_increase": 3, "row_checked_steps": 30, "max_drift": 0.2,
                    "path_steps": [int(s) for s in steps],
                    "path_error": [float(1e-2 / (1 + s)) + 1e-3 for s in steps]}
            rows.append({**base, "final_error": 1e-3, "final_all_ones_error": 0.1,
                         "row_deviation": 1e-3, "drift_over_eps": math.nan})
            for eps in (0.01, 0.1):
                rows.append({**base, "eps": eps, "final_error": 5e-3,
                             "final_all_ones_error": 0.3, "row_deviation": 1e-3,
                             "max_drift": 1.5 * eps, "drift_over_eps": 1.5})
    return pd.DataFrame(rows)


_GRID = {"d": [5], "m": [200], "iterations": [1000], "lr": [1.0, 0.1]}
_EPS = [0.01, 0.03, 0.1, 0.3]

EXPERIMENT = register(Experiment(
    name="gd-mask-descent",
    paper="Xiong, Liao, Kyrillidis, AISTATS 2023: slides p.17 (next step); spec Sec. 7, 8 item 5",
    description="optimal-mask error min_M ||w - (U_t * M)^T 1|| along (projected) GD on "
                "sum_i (1^T U x_i - w^T x_i)^2: is it monotone? Rows get equal updates; without "
                "projection the all-ones mask becomes exact",
    quick=Size(grids=[{"n": [8, 12], **_GRID}, {"n": [8, 12], **_GRID, "eps": _EPS}],
               trials=20, estimate="~20 s"),
    full=Size(grids=[{"n": [8, 12, 16], **_GRID}, {"n": [8, 12, 16], **_GRID, "eps": _EPS}],
              trials=50, estimate="~45 s"),
    run_cell=run_cell,
    plot=plot,
    claims=claims,
    contradicting_runs=contradicting_runs,
    params={"n": Param("int", low=1, high=N_MAX), "d": Param("int", low=1),
            "m": Param("int", low="d"), "iterations": Param("int", low=1),
            "lr": Param("float", low=0, high=2, low_open=True, high_open=True),
            "eps": Param("float", low=0, low_open=True)},
    notes="x_i ~ N(0, I_d), w ~ Unif[-1, 1]^d, U_0 ~ Unif[-1, 1]^(n x d), drawn per trial (the "
          "slides fix none of them). Loss as a sum over the m points (slides); step alpha = lr / "
          "L with L = 2 n lambda_max(X^T X), the Lipschitz constant of the gradient (lr = 1: the "
          "stable step 1/L; lr = 0.1 a slower path with more steps to inspect). Projection: "
          "entrywise clip to U_0 +- eps, eps in the units of U_0's entries (scale 1); the "
          "unprojected grid has no eps. m >= d so X has full column rank. e_t is exact (one "
          "meet-in-the-middle subset sum per column, every step). An increase (decrease) is a "
          f"change above {INCREASE_TOLERANCE:g} ||w|| (below is rounding noise after "
          f"convergence); paths are stored at t = 0 and {PATH_POINTS - 1} geometrically spaced "
          "iterations, the counts use every step. The row check uses the realized updates "
          f"U_(t+1) - U_t of steps larger than {ROW_CHECK_FLOOR:g} max |U_t|.",
    version=1,
))
