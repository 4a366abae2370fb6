"""How many random coefficients cover [a, b] to accuracy eta (spec Sec. 1.1, 1.2, 3.3).

A trial draws x_1..x_{n_max} i.i.d. Unif[-1, 1] and records n* = the first k at which the
tolerance-eta reachable set U_k (perturbation radius eps) contains [a, b] in one interval, i.e.
every z in [a, b] has an eta-approximation by a (perturbed) subset of x_1..x_k. This is exact:
coverage is monotone in k. The required n at confidence 1 - delta is the (1 - delta)-quantile of
n* over trials; its distribution-free confidence interval comes from order statistics and the
Binomial(T, 1 - delta) law of the number of trials below the true quantile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from lottery_common import as_generator, check_array, check_float, check_int

from .perturbed import MAX_INTERVALS, coverage_steps
from .sup_error import sup_error


def draw_coefficients(n: int, seed: int | np.random.Generator) -> np.ndarray:
    """x_1..x_n i.i.d. Unif[-1, 1] from an explicit seed."""
    n = check_int("n", n, minimum=1)
    return as_generator(seed).uniform(-1.0, 1.0, size=n)


def covering_size(eta: float, eps: float, seed: int | np.random.Generator, n_max: int = 80,
                  a: float = -1.0, b: float = 1.0, max_intervals: int = MAX_INTERVALS) -> int:
    """n* for one random sequence of length ``n_max``; returns ``n_max + 1`` if it never covers.

    A tiny ``eta`` (and eps) lets the DP grow like 2^k before intervals merge; a step that
    would hold more than ``max_intervals`` intervals is refused with a ValueError.
    """
    eta = check_float("eta", eta, low=0.0, low_open=True)
    eps = check_float("eps", eps, low=0.0)
    x = draw_coefficients(n_max, seed)
    steps = coverage_steps(x, eps, eta, a, b, max_intervals=max_intervals)
    return n_max + 1 if steps < 0 else steps


def random_sup_error(n: int, eps: float, seed: int | np.random.Generator, a: float = -1.0,
                     b: float = 1.0, max_intervals: int = MAX_INTERVALS) -> float:
    """sup_{z in [a, b]} eta*(z) for n fresh Unif[-1, 1] coefficients (exact midpoint formula).

    Guarded like :func:`sup_error` (about n <= 24 at eps = 0 with the default ``max_intervals``).
    """
    return sup_error(draw_coefficients(n, seed), eps=eps, a=a, b=b, max_intervals=max_intervals)


def quantile_ci(values: np.ndarray, q: float = 0.9,
                level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high) of the q-quantile: order statistics X_(ceil(qT)) and a binomial CI.

    The CI [X_(l), X_(u)] uses l = Binom(T, q).ppf((1 - level) / 2) and
    u = Binom(T, q).ppf((1 + level) / 2) + 1 (1-based, clipped to [1, T]); it covers the true
    quantile with probability >= level for continuous data and conservatively for ties.
    """
    values = np.sort(check_array("values", values, ndim=1))
    q = check_float("q", q, low=0.0, high=1.0, low_open=True, high_open=True)
    level = check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    count = values.size
    if count == 0:
        raise ValueError("values must hold at least one trial, got none")
    estimate = values[max(int(np.ceil(q * count)) - 1, 0)]
    low_rank = int(stats.binom.ppf((1.0 - level) / 2.0, count, q))
    high_rank = int(stats.binom.ppf((1.0 + level) / 2.0, count, q)) + 1
    low_rank = min(max(low_rank, 1), count)
    high_rank = min(max(high_rank, 1), count)
    return float(estimate), float(values[low_rank - 1]), float(values[high_rank - 1])


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y = slope x + intercept; returns (slope, intercept, R^2)."""
    x = check_array("x", x, ndim=1)
    y = check_array("y", y, shape=(x.size,))
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"a line fit needs >= 2 distinct x values, got {np.unique(x).size}")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else 1.0
    return float(slope), float(intercept), r2


def bound_shape_log(eps: np.ndarray) -> np.ndarray:
    """Width factor of the slides' bound n = O(log(1/eta) / (log(1 + eps) + 1)), 1 at eps = 0."""
    return 1.0 / (1.0 + np.log1p(np.asarray(eps, dtype=np.float64)))


def bound_shape_linear(eps: np.ndarray) -> np.ndarray:
    """Width factor of the AISTATS poster's bound n = O(log(1/eta) / (1 + eps)), 1 at eps = 0."""
    return 1.0 / (1.0 + np.asarray(eps, dtype=np.float64))


def quantile_frame(runs: pd.DataFrame, by: list[str], column: str = "n_star", q: float = 0.9,
                   level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: the q-quantile of ``column`` with its binomial CI, the mean, and T."""
    rows = []
    for key, group in runs.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        estimate, low, high = quantile_ci(group[column].to_numpy(dtype=np.float64), q, level)
        rows.append({**dict(zip(by, key, strict=True)), "quantile": estimate, "ci_low": low,
                     "ci_high": high, "mean": float(group[column].mean()), "trials": len(group)})
    return pd.DataFrame(rows, columns=[*by, "quantile", "ci_low", "ci_high", "mean", "trials"])
