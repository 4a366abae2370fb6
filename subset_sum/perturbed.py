"""Exact epsilon-perturbed subset sum by the interval-union DP (spec Sec. 3.2).

For a fixed subset S the perturbed sums ``sum_S (x_i + y_i)``, ``|y_i| <= eps``, fill exactly
``[sum_S x - |S| eps, sum_S x + |S| eps]``. Hence the reachable set is the union of intervals

    U_k = U_{k-1}  ∪  (U_{k-1} + [x_k - eps, x_k + eps]),     U_0 = [-tau, tau],

and the optimum is ``eta*(z) = dist(z, U_n)`` (tau = 0). U_k is kept as a sorted list of disjoint
closed intervals. A tolerance tau > 0 fattens every reachable point by tau, which merges intervals
early; it answers ``max(0, eta* - tau)`` (and eps = 0 gives plain subset sum).

Pruning (exact): with N / P the sums of the negative / positive remaining elements and m of them
left, the descendants of [lo, hi] stay inside [lo + N - m eps, hi + P + m eps]; an interval whose
descendants cannot come within ``margin`` of the query range [a, b] is dropped. For a single target
the margin shrinks to the best distance found so far (branch and bound: U_k ⊆ U_n because the
zero shift is always allowed).

Mask recovery (backtracking): every U_k is stored; from the nearest point z* of U_n, for
k = n..1: if z* ∈ U_{k-1} then delta_k = 0, else delta_k = 1 and z* moves to the nearest point p of
U_{k-1} to z* - x_k, with y_k = z* - x_k - p ∈ [-eps, eps].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from sparse_teacher._validation import check_array, check_int

from .solution import (
    SubsetSumSolution,
    check_eps,
    check_instance,
    check_range,
    solution_from_mask,
)

_SLACK = 1e-12  # absolute slack added to pruning margins against rounding
MAX_INTERVALS = 20_000_000  # stored intervals (lo, hi) allowed by default: 320 MB


@njit(cache=True)
def _reach(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """How far the elements after step k can still move a sum: low[k] = N - m eps and
    high[k] = P + m eps, with N, P the sums of the negative / positive x_i for i > k and
    m = n - k - 1 of them (each perturbed by at most eps)."""
    n = x.size
    low = np.zeros(n)
    high = np.zeros(n)
    for k in range(n - 2, -1, -1):
        low[k] = low[k + 1] + min(x[k + 1], 0.0) - eps
        high[k] = high[k + 1] + max(x[k + 1], 0.0) + eps
    return low, high


@njit(cache=True)
def _step(lo: np.ndarray, hi: np.ndarray, shift: float, eps: float, low_reach: float,
          high_reach: float, a: float, b: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """One DP step: merge U with U + [shift - eps, shift + eps], coalesce, prune.

    ``low_reach`` / ``high_reach`` are N - m eps and P + m eps of the remaining elements.
    """
    m = lo.size
    out_lo = np.empty(2 * m)
    out_hi = np.empty(2 * m)
    count = 0
    i = 0  # next interval of U
    j = 0  # next interval of the shifted copy
    block_lo = 0.0
    block_hi = -np.inf  # block maximum starts at -inf (spec pitfall: never 0)
    started = False
    while i < m or j < m:
        if j >= m or (i < m and lo[i] <= lo[j] + shift - eps):
            cur_lo = lo[i]
            cur_hi = hi[i]
            i += 1
        else:
            cur_lo = lo[j] + shift - eps
            cur_hi = hi[j] + shift + eps
            j += 1
        if started and cur_lo <= block_hi:
            if cur_hi > block_hi:
                block_hi = cur_hi
            continue
        if started and (block_lo + low_reach <= b + margin and block_hi + high_reach >= a - margin):
            out_lo[count] = block_lo
            out_hi[count] = block_hi
            count += 1
        block_lo = cur_lo
        block_hi = cur_hi
        started = True
    if started and (block_lo + low_reach <= b + margin and block_hi + high_reach >= a - margin):
        out_lo[count] = block_lo
        out_hi[count] = block_hi
        count += 1
    return out_lo[:count].copy(), out_hi[:count].copy()


@njit(cache=True)
def _distance(lo: np.ndarray, hi: np.ndarray, z: float) -> float:
    """dist(z, union of [lo_i, hi_i]) for sorted disjoint intervals (inf if there are none)."""
    m = lo.size
    if m == 0:
        return np.inf
    i = np.searchsorted(lo, z, side="right") - 1  # last interval with lo <= z
    best = np.inf
    if i >= 0:
        if z <= hi[i]:
            return 0.0
        best = z - hi[i]
    if i + 1 < m:
        best = min(best, lo[i + 1] - z)
    return best


@njit(cache=True)
def _nearest_point(lo: np.ndarray, hi: np.ndarray, z: float) -> float:
    """The point of the union nearest to z (ties go to the lower point)."""
    i = np.searchsorted(lo, z, side="right") - 1
    if i >= 0 and z <= hi[i]:
        return z
    below = hi[i] if i >= 0 else -np.inf
    above = lo[i + 1] if i + 1 < lo.size else np.inf
    return below if z - below <= above - z else above


@njit(cache=True)
def _interval_dp(x: np.ndarray, eps: float, tau: float, a: float, b: float, margin: float,
                 adaptive: bool, max_total: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the DP; returns all U_0..U_n concatenated (lo, hi) with offsets (n + 2,).

    ``adaptive`` (single target, a == b): the margin shrinks to the best distance so far.
    If more than ``max_total`` intervals would be stored, returns offsets[0] = -1 instead.
    """
    n = x.size
    low, high = _reach(x, eps)
    lo = np.array([-tau])
    hi = np.array([tau])
    los = [lo]
    his = [hi]
    total = 1
    for k in range(n):
        lo, hi = _step(lo, hi, x[k], eps, low[k], high[k], a, b, margin)
        if adaptive:
            d = _distance(lo, hi, a)
            margin = min(margin, d * (1.0 + 1e-9) + 1e-12)
        los.append(lo)
        his.append(hi)
        total += lo.size
        if total > max_total:
            failed = np.zeros(n + 2, dtype=np.int64)
            failed[0] = -1
            return np.empty(0), np.empty(0), failed
    all_lo = np.empty(total)
    all_hi = np.empty(total)
    offsets = np.zeros(n + 2, dtype=np.int64)
    for k in range(n + 1):
        s = offsets[k]
        e = s + los[k].size
        all_lo[s:e] = los[k]
        all_hi[s:e] = his[k]
        offsets[k + 1] = e
    return all_lo, all_hi, offsets


@njit(cache=True)
def _final_union(x: np.ndarray, eps: float, tau: float, a: float, b: float,
                 margin: float) -> tuple[np.ndarray, np.ndarray]:
    """U_n only (no history kept), pruned to the window [a - margin, b + margin]."""
    n = x.size
    low, high = _reach(x, eps)
    lo = np.array([-tau])
    hi = np.array([tau])
    for k in range(n):
        lo, hi = _step(lo, hi, x[k], eps, low[k], high[k], a, b, margin)
    return lo, hi


@njit(cache=True)
def _backtrack(x: np.ndarray, eps: float, all_lo: np.ndarray, all_hi: np.ndarray,
               offsets: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Recover (delta, y) for the point of U_n nearest to z."""
    n = x.size
    mask = np.zeros(n, dtype=np.bool_)
    y = np.zeros(n)
    point = _nearest_point(all_lo[offsets[n]:offsets[n + 1]], all_hi[offsets[n]:offsets[n + 1]], z)
    for k in range(n, 0, -1):
        lo = all_lo[offsets[k - 1]:offsets[k]]
        hi = all_hi[offsets[k - 1]:offsets[k]]
        if _distance(lo, hi, point) == 0.0:
            continue
        mask[k - 1] = True
        p = _nearest_point(lo, hi, point - x[k - 1])
        y[k - 1] = min(max(point - x[k - 1] - p, -eps), eps)
        point = p
    return mask, y


@njit(cache=True)
def _perturbed_batch_kernel(xs: np.ndarray, zs: np.ndarray, eps: float,
                            max_total: np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Row p of ``xs`` against ``zs[p]`` (tau = 0); returns masks and perturbations."""
    count, n = xs.shape
    masks = np.zeros((count, n), dtype=np.bool_)
    ys = np.zeros((count, n))
    for p in range(count):
        x = np.ascontiguousarray(xs[p])
        z = zs[p]
        margin = abs(z) * (1.0 + 1e-9) + _SLACK
        lo, hi, offsets = _interval_dp(x, eps, 0.0, z, z, margin, True, max_total)
        if offsets[0] < 0:
            raise ValueError("the interval DP exceeded max_intervals on a row of xs; use "
                             "meet_in_the_middle_batch for eps = 0")
        mask, y = _backtrack(x, eps, lo, hi, offsets, z)
        masks[p] = mask
        ys[p] = y
    return masks, ys


@njit(cache=True)
def _coverage_steps(x: np.ndarray, eps: float, tau: float, a: float, b: float) -> np.int64:
    """First k with [a, b] inside one interval of U_k (0 if already in U_0), or -1 if never.

    Exact with margin 0: coverage of [a, b] only needs intervals whose descendants can touch it.
    """
    if -tau <= a and b <= tau:
        return 0
    n = x.size
    low, high = _reach(x, eps)
    lo = np.array([-tau])
    hi = np.array([tau])
    for k in range(n):
        lo, hi = _step(lo, hi, x[k], eps, low[k], high[k], a, b, _SLACK)
        i = np.searchsorted(lo, a, side="right") - 1
        if i >= 0 and hi[i] >= b:
            return k + 1
    return -1


@dataclass(frozen=True)
class ReachableSets:
    """The DP's stored sets U_0..U_n (pruned to the query window); ``U(k)`` returns (lo, hi)."""

    lo: np.ndarray
    hi: np.ndarray
    offsets: np.ndarray

    def U(self, k: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: N802  (the spec's symbol)
        s, e = self.offsets[k], self.offsets[k + 1]
        return self.lo[s:e], self.hi[s:e]

    @property
    def n(self) -> int:
        return int(self.offsets.size - 2)

    def counts(self) -> np.ndarray:
        """Number of intervals in U_0..U_n."""
        return np.diff(self.offsets)


def _check_max(max_intervals: int) -> np.int64:
    return np.int64(check_int("max_intervals", max_intervals, minimum=1))


def _raise_if_failed(offsets: np.ndarray, max_intervals: int) -> None:
    if offsets[0] < 0:
        raise ValueError(f"the interval DP needs more than max_intervals = {max_intervals} stored "
                         "intervals (2^k points for eps = tol = 0); use meet_in_the_middle for "
                         "eps = 0, a tolerance tol > 0, or a larger max_intervals")


def reachable_sets(x: np.ndarray, eps: float = 0.0, tol: float = 0.0, a: float = -1.0,
                   b: float = 1.0, margin: float | None = None,
                   max_intervals: int = MAX_INTERVALS) -> ReachableSets:
    """U_0..U_n for the range [a, b], pruned with ``margin`` (default max(|a|, |b|)).

    Distances from any z in [a, b] to the returned U_k are exact whenever they are <= margin;
    the default margin is always enough because 0 ∈ U_k.
    """
    x, _ = check_instance(x, 0.0)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    a, b = check_range(a, b)
    if margin is None:
        margin = max(abs(a), abs(b))
    margin = check_eps(margin, "margin")
    lo, hi, offsets = _interval_dp(x, eps, tol, a, b, margin + _SLACK, False,
                                   _check_max(max_intervals))
    _raise_if_failed(offsets, max_intervals)
    return ReachableSets(lo, hi, offsets)


def reachable_union(x: np.ndarray, eps: float = 0.0, tol: float = 0.0, a: float = -1.0,
                    b: float = 1.0, margin: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """U_n alone as (lo, hi), pruned like :func:`reachable_sets`, without the history."""
    x, _ = check_instance(x, 0.0)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    a, b = check_range(a, b)
    if margin is None:
        margin = max(abs(a), abs(b))
    margin = check_eps(margin, "margin")
    return _final_union(x, eps, tol, a, b, margin + _SLACK)


def distance_to_union(lo: np.ndarray, hi: np.ndarray, z: float) -> float:
    """dist(z, ∪ [lo_i, hi_i]) for sorted, disjoint intervals."""
    return float(_distance(np.ascontiguousarray(lo, dtype=np.float64),
                           np.ascontiguousarray(hi, dtype=np.float64), float(z)))


def perturbed_subset_sum(x: np.ndarray, z: float, eps: float, tol: float = 0.0,
                         max_intervals: int = MAX_INTERVALS) -> SubsetSumSolution:
    """Exact epsilon-perturbed subset sum (eps = 0: plain subset sum) by the interval DP.

    With ``tol = tau > 0`` the DP answers ``max(0, eta* - tau)`` (stored as ``lower_bound``) and the
    recovered mask and perturbation achieve an error ``<= max(eta*, tau)``. With ``tol = 0`` the
    mask is optimal. Memory grows with the interval counts (16 bytes each, refused above
    ``max_intervals``): with eps = tol = 0 they can reach 2^n, so keep n <= ~26 there.
    """
    x, z = check_instance(x, z)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    margin = max(abs(z) - tol, 0.0) * (1.0 + 1e-9) + _SLACK
    lo, hi, offsets = _interval_dp(x, eps, tol, z, z, margin, True, _check_max(max_intervals))
    _raise_if_failed(offsets, max_intervals)
    dist = float(_distance(lo[offsets[-2]:offsets[-1]], hi[offsets[-2]:offsets[-1]], z))
    mask, y = _backtrack(x, eps, lo, hi, offsets, z)
    return solution_from_mask(x, z, mask, y, lower_bound=dist)


def perturbed_subset_sum_batch(xs: np.ndarray, zs: np.ndarray, eps: float,
                               max_intervals: int = MAX_INTERVALS
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact perturbed subset sum per row: ``xs`` (P, n), ``zs`` (P,) -> errors, masks, y.

    Errors are recomputed from the recovered masks and perturbations.
    """
    xs = check_array("xs", xs, ndim=2)
    zs = check_array("zs", zs, shape=(xs.shape[0],))
    if xs.shape[1] == 0:
        raise ValueError("xs must have n >= 1 columns, got n = 0")
    eps = check_eps(eps)
    masks, ys = _perturbed_batch_kernel(xs, zs, eps, _check_max(max_intervals))
    errors = np.abs(np.einsum("pn,pn->p", xs + ys, masks.astype(np.float64)) - zs)
    return errors, masks, ys


def coverage_steps(x: np.ndarray, eps: float, tol: float, a: float = -1.0,
                   b: float = 1.0) -> int:
    """n* = the first k with [a, b] inside one interval of U_k (tolerance ``tol``); -1 if none.

    Coverage is monotone in k (U_{k-1} ⊆ U_k), so this is the number of coefficients needed for
    every z in [a, b] to have a ``tol``-approximation (spec Sec. 3.3).
    """
    x, _ = check_instance(x, 0.0)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    a, b = check_range(a, b)
    return int(_coverage_steps(x, eps, tol, a, b))
