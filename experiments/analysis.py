"""Fits that turn saved runs into measured quantities, and the claim records built from them.

* ``fit_logistic_boundary``: the 50% success point of one column of a phase-transition grid,
  from a maximum-likelihood logistic fit ``P(success | x) = sigmoid(a + b x)``, with a
  delta-method confidence interval (the "50% curve with confidence bands" of Magni's
  phase-transition module, used for the convex-radius and sample-complexity figures).
* ``fit_boundaries``: the same fit for every column of a grid.
* ``fit_line`` / ``fit_power_law``: least-squares line (or log-log line, whose slope is a
  scaling exponent) with R^2 and a t-based confidence interval on the slope.
* ``claim`` / ``claim_in_interval``: the ``{"claim", "predicted", "measured", "verdict"}``
  records of ``validate.json``: a prediction and a verdict computed from the runs, which can fail.
* ``finding``: an observation without a prediction (``{"finding", "measured"}``), reported apart
  from the claims and never counted in pass totals.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lottery_common import check_array, check_float

STATUSES = ("ok", "separated", "all-success", "all-failure")


@dataclass(frozen=True)
class LogisticBoundary:
    """Fitted ``P(success | x) = sigmoid(intercept + slope * x)`` and its 50% point.

    ``status`` is "ok" (finite maximum-likelihood estimate, delta-method interval),
    "separated" (successes and failures are split by a threshold in x, so the unpenalized
    estimate does not exist: ``x50`` comes from the ridge-penalized fit and ``ci`` is the gap
    between the last failure and the first success, the set of thresholds consistent with the
    data), or "all-success"/"all-failure" (no boundary inside the data: ``x50`` and ``ci`` are
    NaN).
    """

    intercept: float
    slope: float
    x50: float
    ci: tuple[float, float]
    stderr: float
    status: str
    n: int
    level: float

    def probability(self, x: Any) -> np.ndarray:
        """``sigmoid(intercept + slope * x)``."""
        return _sigmoid(self.intercept + self.slope * np.asarray(x, dtype=float))

    def x_at(self, p: float) -> float:
        """The x where the fitted success probability equals ``p``: ``(logit(p) - a) / b``."""
        p = check_float("p", p, low=0.0, high=1.0, low_open=True, high_open=True)
        if not np.isfinite(self.slope) or self.slope == 0:
            return math.nan
        return (math.log(p / (1 - p)) - self.intercept) / self.slope


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -eta))


def _newton_logistic(z: np.ndarray, y: np.ndarray, ridge: float,
                     max_iter: int = 200, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Minimize ``-sum(y eta - log(1 + e^eta)) + ridge/2 |theta|^2``, ``eta = t0 + t1 z``.

    Newton's method with step halving. Returns ``theta`` and the penalized Hessian.
    """
    design = np.column_stack([np.ones_like(z), z])
    theta = np.zeros(2)

    def objective(t: np.ndarray) -> float:
        eta = design @ t
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * ridge * t @ t)

    value = objective(theta)
    hessian = np.eye(2)
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - y) + ridge * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, grad)
        scale = 1.0
        while True:
            candidate = theta - scale * step
            new_value = objective(candidate)
            if new_value <= value + 1e-12 * abs(value) or scale < 1e-10:
                break
            scale *= 0.5
        theta, converged = candidate, abs(value - new_value) <= tol * (1 + abs(value))
        value = new_value
        if converged and np.max(np.abs(scale * step)) < 1e-8:
            break
    p = _sigmoid(design @ theta)
    hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
    return theta, hessian


def fit_logistic_boundary(x: Any, success: Any, *, level: float = 0.95,
                          ridge: float = 1e-6) -> LogisticBoundary:
    """Maximum-likelihood logistic fit of success (0/1) against x; its 50% point with a CI.

    The model is ``P(success | x) = sigmoid(a + b x)``; the boundary is ``x50 = -a / b``. The
    fit runs on standardized x with a tiny ridge penalty ``ridge/2 * |theta|^2`` (so separated
    data still give a finite estimate). The interval is the delta method,
    ``x50 +- z_{(1+level)/2} * sqrt(g' C g)`` with ``g = (-1/b, a/b^2)`` and ``C`` the inverse
    (penalized) Fisher information. See ``LogisticBoundary`` for the separated cases.
    """
    x = check_array("x", x, ndim=1)
    y = check_array("success", success, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and success must have the same length, got {len(x)} and {len(y)}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("success must contain only 0/1 (or booleans)")
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    ridge = check_float("ridge", ridge, low=0.0)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        raise ValueError(f"x must hold at least two distinct values, got {np.unique(x).tolist()}")
    nan_ci = (math.nan, math.nan)
    if y.min() == y.max():
        status = "all-success" if y[0] == 1 else "all-failure"
        return LogisticBoundary(math.nan, math.nan, math.nan, nan_ci, math.nan, status, n, level)

    fail_x, win_x = x[y == 0], x[y == 1]
    if fail_x.max() <= win_x.min():
        gap, status = (float(fail_x.max()), float(win_x.min())), "separated"
    elif win_x.max() <= fail_x.min():
        gap, status = (float(win_x.max()), float(fail_x.min())), "separated"
    else:
        gap, status = nan_ci, "ok"
    if status == "separated" and ridge == 0:
        ridge = 1e-6

    center, scale = float(np.mean(x)), float(np.std(x))
    theta, hessian = _newton_logistic((x - center) / scale, y, ridge)
    a_z, b_z = theta
    slope = b_z / scale
    intercept = a_z - b_z * center / scale
    z50 = -a_z / b_z
    x50 = center + scale * z50
    if status == "separated":
        return LogisticBoundary(float(intercept), float(slope), float(np.clip(x50, *gap)), gap,
                                math.nan, status, n, level)
    covariance = np.linalg.inv(hessian)
    gradient = np.array([-1.0 / b_z, a_z / b_z**2])
    stderr = scale * math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
    half = stats.norm.ppf(0.5 + level / 2) * stderr
    return LogisticBoundary(float(intercept), float(slope), float(x50),
                            (float(x50 - half), float(x50 + half)), float(stderr), status, n,
                            level)


def fit_boundaries(runs: pd.DataFrame, *, by: str, x: str, success: str,
                   level: float = 0.95) -> pd.DataFrame:
    """``fit_logistic_boundary`` of ``success`` against ``x`` for each value of ``by``.

    Returns one row per value of ``by`` (sorted) with ``x50``, ``ci_low``, ``ci_high``,
    ``stderr``, ``slope``, ``status`` and ``n`` (status "single-x" when the column holds
    one x value only).
    """
    for column in (by, x, success):
        if column not in runs.columns:
            raise ValueError(f"column {column!r} not in runs; columns: {', '.join(runs.columns)}")
    rows = []
    for value, group in runs.groupby(by, sort=True):
        if group[x].nunique() < 2:
            fit = None
        else:
            fit = fit_logistic_boundary(group[x].to_numpy(float),
                                        group[success].to_numpy(float), level=level)
        rows.append({by: value, "x50": fit.x50 if fit else math.nan,
                     "ci_low": fit.ci[0] if fit else math.nan,
                     "ci_high": fit.ci[1] if fit else math.nan,
                     "stderr": fit.stderr if fit else math.nan,
                     "slope": fit.slope if fit else math.nan,
                     "status": fit.status if fit else "single-x", "n": len(group)})
    return pd.DataFrame(rows, columns=[by, "x50", "ci_low", "ci_high", "stderr", "slope",
                                      "status", "n"])


@dataclass(frozen=True)
class LineFit:
    """Least-squares line ``y = intercept + slope * x`` with R^2 and a slope interval."""

    slope: float
    intercept: float
    r2: float
    slope_stderr: float
    intercept_stderr: float
    slope_ci: tuple[float, float]
    n: int
    level: float


def fit_line(x: Any, y: Any, *, level: float = 0.95) -> LineFit:
    """Ordinary least squares (``scipy.stats.linregress``) with a t interval on the slope.

    ``slope_ci = slope +- t_{n-2, (1+level)/2} * stderr``; needs at least 3 points with two
    distinct x values.
    """
    x = check_array("x", x, ndim=1)
    y = check_array("y", y, ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) < 3 or np.ptp(x) == 0:
        raise ValueError(f"a line fit needs at least 3 points and 2 distinct x, got {len(x)} "
                         f"points with x = {np.unique(x).tolist()}")
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 2) * fit.stderr
    return LineFit(float(fit.slope), float(fit.intercept), float(fit.rvalue**2),
                   float(fit.stderr), float(fit.intercept_stderr),
                   (float(fit.slope - half), float(fit.slope + half)), len(x), level)


def fit_power_law(x: Any, y: Any, *, level: float = 0.95) -> LineFit:
    """Fit ``y = c * x^p`` as the line ``log y = log c + p log x``; ``slope`` is ``p``."""
    x = check_array("x", x, ndim=1)
    y = check_array("y", y, ndim=1)
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a power-law fit needs positive x and y")
    return fit_line(np.log(x), np.log(y), level=level)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_json_scalar(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return value
    raise ValueError(f"claim values must be numbers or strings, got {value!r}")


def claim(text: str, predicted: Any, measured: Any, passed: bool) -> dict[str, Any]:
    """One ``validate.json`` record: ``{"claim", "predicted", "measured", "verdict"}``."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"claim text must be a non-empty string, got {text!r}")
    return {"claim": text, "predicted": _json_scalar(predicted),
            "measured": _json_scalar(measured), "verdict": "pass" if bool(passed) else "fail"}


def finding(text: str, measured: Any) -> dict[str, Any]:
    """One observation without a prediction: ``{"finding", "measured"}`` (no verdict)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"finding text must be a non-empty string, got {text!r}")
    return {"finding": text, "measured": _json_scalar(measured)}


def throughput_finding(runs: pd.DataFrame) -> dict[str, Any] | None:
    """The mean training throughput of the runs (``images_per_second``) and their devices, as a
    finding; None when the table has no throughput column."""
    if "images_per_second" not in runs.columns:
        return None
    speed = pd.to_numeric(runs["images_per_second"], errors="coerce")
    devices = sorted(str(d) for d in runs.get("device", pd.Series(dtype=str)).dropna().unique())
    return finding("training throughput (images/s, mean over runs) and device",
                   f"{speed.mean():.0f} on {', '.join(devices) or 'unknown'}")


def format_interval(estimate: float, ci: Sequence[float], digits: int = 3) -> str:
    """``"1.98 [1.90, 2.05]"``."""
    return f"{estimate:.{digits}g} [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"


def claim_in_interval(text: str, predicted: float, estimate: float, ci: Sequence[float], *,
                      tolerance: float = 0.0, digits: int = 3) -> dict[str, Any]:
    """Pass when ``predicted`` lies in ``[ci_low - tolerance, ci_high + tolerance]``."""
    predicted = check_float("predicted", predicted)
    tolerance = check_float("tolerance", tolerance, low=0.0)
    low, high = float(ci[0]), float(ci[1])
    passed = bool(np.isfinite(low) and np.isfinite(high)
                  and low - tolerance <= predicted <= high + tolerance)
    measured = format_interval(estimate, (low, high), digits)
    if tolerance:
        measured += f" (tolerance {tolerance:.{digits}g})"
    return claim(text, predicted, measured, passed)


def fixed_effect_slope(x: Any, y: Any, groups: Any,
                       level: float = 0.95) -> tuple[float, tuple[float, float], int]:
    """Common slope of ``y = a_g + b x`` with one intercept per group (within-group OLS).

    ``b = sum (x - xbar_g)(y - ybar_g) / sum (x - xbar_g)^2``; its t interval uses
    ``n - G - 1`` degrees of freedom (NaN when ``x`` is constant within every group or too
    few points remain). Returns ``b``, the interval and the number of points.
    """
    x = check_array("x", x, ndim=1)
    y = check_array("y", y, shape=x.shape)
    groups = np.asarray(groups)
    if groups.shape != x.shape:
        raise ValueError(f"groups must have the shape of x {x.shape}, got {groups.shape}")
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    frame = pd.DataFrame({"x": x, "y": y, "g": groups})
    xc = frame["x"] - frame.groupby("g")["x"].transform("mean")
    yc = frame["y"] - frame.groupby("g")["y"].transform("mean")
    sxx = float(xc @ xc)
    dof = len(frame) - frame["g"].nunique() - 1
    if sxx == 0 or dof < 1:
        return float("nan"), (float("nan"), float("nan")), len(frame)
    slope = float(xc @ yc) / sxx
    resid = yc - slope * xc
    stderr = np.sqrt(float(resid @ resid) / dof / sxx)
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * stderr
    return slope, (slope - half, slope + half), len(frame)
