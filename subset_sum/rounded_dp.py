"""Rounded sum-set DP for large-n plain subset sum, with an error certificate (spec Sec. 3.1.3).

Each x_i is rounded to the grid g Z, r_i = round(x_i / g), and a table over the integer range
[sum of negative r_i, sum of positive r_i] records the first step at which each grid sum became
reachable (``reach |= shift(reach, r_i)``, remembering when). The best grid sum is traced back to a
mask. Certificate: for every subset S, |sum_S x - z| >= |g sum_S r - z| - sum_i |x_i - g r_i|, so

    lower_bound = max(0, min_S |g sum_S r - z| - sum_i |x_i - g r_i|)   <=   eta*   <=   error,

and ``error - lower_bound <= 2 sum_i |x_i - g r_i| <= n g``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from lottery_common import check_float, check_int

from .solution import SubsetSumSolution, check_instance, solution_from_mask


@njit(cache=True)
def _first_reach(r: np.ndarray, offset: np.int64, size: np.int64) -> np.ndarray:
    """first[b] = step (1-based) at which grid sum b - offset became reachable; 0 at the origin."""
    first = np.full(size, -1, dtype=np.int32)
    first[offset] = 0
    low = offset
    high = offset  # reachable bins lie in [low, high]
    for k in range(r.size):
        shift = r[k]
        step = np.int32(k + 1)
        if shift > 0:
            for bin_ in range(high, low - 1, -1):
                if 0 <= first[bin_] < step and first[bin_ + shift] == -1:
                    first[bin_ + shift] = step
            high += shift
        elif shift < 0:
            for bin_ in range(low, high + 1):
                if 0 <= first[bin_] < step and first[bin_ + shift] == -1:
                    first[bin_ + shift] = step
            low += shift
    return first


def rounded_dp(x: np.ndarray, z: float, grid: float = 1e-5,
               max_bins: int = 50_000_000) -> SubsetSumSolution:
    """Approximate plain subset sum on the grid ``grid``; ``lower_bound`` certifies the optimum.

    The table has ``(sum |x_i|) / grid + 1`` bins (refused above ``max_bins``); time O(n * bins).
    """
    x, z = check_instance(x, z)
    grid = check_float("grid", grid, low=0.0, low_open=True)
    max_bins = check_int("max_bins", max_bins, minimum=1, maximum=2**53)
    # A lower bound on the bin count, in floating point, before rounding: a grid tiny enough to
    # overflow the int64 rounding would otherwise wrap the count around and slip past the check.
    at_least = float(np.abs(x).sum()) / grid - 0.5 * x.size + 1.0
    if at_least > max_bins:
        raise ValueError(f"grid = {grid} needs at least {at_least:.3g} bins for sum |x_i| = "
                         f"{np.abs(x).sum():.3g}; allowed max_bins = {max_bins} (use a coarser "
                         f"grid)")
    r = np.rint(x / grid).astype(np.int64)
    neg = int(r[r < 0].sum())
    pos = int(r[r > 0].sum())
    size = pos - neg + 1
    if size > max_bins:
        raise ValueError(f"grid = {grid} needs {size} bins for sum |x_i| = {np.abs(x).sum():.3g}; "
                         f"allowed max_bins = {max_bins} (use a coarser grid)")
    first = _first_reach(r, np.int64(-neg), np.int64(size))
    reachable = np.flatnonzero(first >= 0)
    grid_error = np.abs((reachable + neg) * grid - z)
    best = int(reachable[np.argmin(grid_error)])
    mask = np.zeros(x.size, dtype=bool)
    bin_ = best
    while first[bin_] > 0:
        k = int(first[bin_]) - 1
        mask[k] = True
        bin_ -= int(r[k])
    rounding = float(np.abs(x - grid * r).sum())
    lower = max(0.0, float(grid_error.min()) - rounding)
    solution = solution_from_mask(x, z, mask, None, lower_bound=lower)
    if solution.error <= lower:
        return solution
    return replace(solution, proven_optimal=False,
                   status=f"not proven optimal (rounded to grid = {grid:g}: optimum >= lower_bound)")
