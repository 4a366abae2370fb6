"""Exact sup over z in [a, b] of the approximation error (spec Sec. 3.2, "gap-midpoint formula").

``eta*(z) = dist(z, U)`` is piecewise linear in z with slope +-1; its local maxima sit at the
midpoints of the gaps between consecutive intervals of U. So

    sup_{z in [a, b]} dist(z, U)
        = max( dist(a, U), dist(b, U), dist(clip(m_g, a, b), U) over gaps g ).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .perturbed import MAX_INTERVALS, _distance, interval_sets, interval_union
from .solution import check_instance, check_range


@njit(cache=True)
def _sup_distance(lo: np.ndarray, hi: np.ndarray, a: float, b: float) -> float:
    best = max(_distance(lo, hi, a), _distance(lo, hi, b))
    for g in range(lo.size - 1):
        mid = 0.5 * (hi[g] + lo[g + 1])
        if hi[g] < b and lo[g + 1] > a:
            mid = min(max(mid, a), b)
            best = max(best, _distance(lo, hi, mid))
    return best


def sup_distance(lo: np.ndarray, hi: np.ndarray, a: float, b: float) -> float:
    """sup_{z in [a, b]} dist(z, ∪ [lo_i, hi_i]) for sorted disjoint intervals (exact)."""
    a, b = check_range(a, b)
    lo = np.ascontiguousarray(lo, dtype=np.float64)
    hi = np.ascontiguousarray(hi, dtype=np.float64)
    if lo.size == 0:
        raise ValueError("the union of intervals is empty; the distance is infinite")
    return float(_sup_distance(lo, hi, a, b))


def sup_error(x: np.ndarray, eps: float = 0.0, a: float = -1.0, b: float = 1.0,
              tol: float = 0.0, max_intervals: int = MAX_INTERVALS) -> float:
    """sup_{z in [a, b]} min_{delta, |y| <= eps} |sum delta_i (x_i + y_i) - z|.

    ``tol`` fattens the reachable set as in :func:`perturbed_subset_sum`. With eps = tol = 0
    the DP can hold up to 2^n intervals; a run that would hold more than ``max_intervals`` at
    once is refused with a ValueError before it allocates them (the default allows about
    n <= 24 for Unif[-1, 1] coefficients).
    """
    x, _ = check_instance(x, 0.0)
    lo, hi = interval_union("sup_error", x, eps, tol, a, b, None, max_intervals)
    return sup_distance(lo, hi, a, b)


def sup_error_path(x: np.ndarray, eps: float = 0.0, a: float = -1.0, b: float = 1.0,
                   tol: float = 0.0, max_intervals: int = MAX_INTERVALS) -> np.ndarray:
    """sup error of the prefixes x[:k] for k = 1..n from one DP run (length n).

    Keeps every U_k, so ``max_intervals`` bounds their total (refused like :func:`sup_error`).
    """
    x, _ = check_instance(x, 0.0)
    a, b = check_range(a, b)
    sets = interval_sets("sup_error_path", x, eps, tol, a, b, None, max_intervals)
    return np.array([_sup_distance(*sets.U(k), a, b) for k in range(1, sets.n + 1)])
