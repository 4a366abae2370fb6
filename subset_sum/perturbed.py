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

from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from lottery_common import check_array, check_int

from .solution import (
    SubsetSumSolution,
    check_eps,
    check_instance,
    check_range,
    solution_from_mask,
)

_SLACK = 1e-12  # absolute slack added to pruning margins against rounding
# Memory guard shared by every entry point of the DP: ``max_intervals`` bounds the intervals
# (lo, hi) the DP holds at once, counting the sets it keeps plus the buffer of the next step
# (up to twice the current set). It is checked before each step allocates, so a run that would
# need more stops with a ValueError instead of exhausting memory (with eps = tol = 0 nothing
# merges and U_k can hold up to 2^k intervals).
# The default, 2^25 intervals of 16 bytes (537 MB; at most about 1.1 GB at the peak), lets every
# eps = 0 union of n <= 24 coefficients through (at most 2^23 intervals before its last step).
MAX_INTERVALS = 2**25
INTERVAL_BYTES = 16


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
    If the stored sets plus the next step's buffer (2 |U_k|) would exceed ``max_total`` intervals,
    stops before that step and returns offsets[0] = -1, offsets[1] = the step (1-based) instead.
    """
    n = x.size
    low, high = _reach(x, eps)
    lo = np.array([-tau])
    hi = np.array([tau])
    los = [lo]
    his = [hi]
    total = 1
    for k in range(n):
        if total + 2 * lo.size > max_total:
            failed = np.zeros(n + 2, dtype=np.int64)
            failed[0] = -1
            failed[1] = k + 1
            return np.empty(0), np.empty(0), failed
        lo, hi = _step(lo, hi, x[k], eps, low[k], high[k], a, b, margin)
        if adaptive:
            d = _distance(lo, hi, a)
            margin = min(margin, d * (1.0 + 1e-9) + 1e-12)
        los.append(lo)
        his.append(hi)
        total += lo.size
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
def _final_union(x: np.ndarray, eps: float, tau: float, a: float, b: float, margin: float,
                 max_total: np.int64) -> tuple[np.ndarray, np.ndarray, np.int64]:
    """U_n only (no history kept), pruned to the window [a - margin, b + margin].

    Returns (lo, hi, 0), or (U_{k-1}, k) when step k would hold more than ``max_total``
    intervals (the current set plus the step's buffer of twice its size); k is 1-based.
    """
    n = x.size
    low, high = _reach(x, eps)
    lo = np.array([-tau])
    hi = np.array([tau])
    for k in range(n):
        if 3 * lo.size > max_total:
            return lo, hi, np.int64(k + 1)
        lo, hi = _step(lo, hi, x[k], eps, low[k], high[k], a, b, margin)
    return lo, hi, np.int64(0)


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
def _perturbed_batch_kernel(xs: np.ndarray, zs: np.ndarray, eps: float, max_total: np.int64
                            ) -> tuple[np.ndarray, np.ndarray, np.int64, np.int64]:
    """Row p of ``xs`` against ``zs[p]`` (tau = 0); returns masks, perturbations, and
    (-1, 0) or, when a row would exceed ``max_total`` intervals, (that row, the step)."""
    count, n = xs.shape
    masks = np.zeros((count, n), dtype=np.bool_)
    ys = np.zeros((count, n))
    for p in range(count):
        x = np.ascontiguousarray(xs[p])
        z = zs[p]
        margin = abs(z) * (1.0 + 1e-9) + _SLACK
        lo, hi, offsets = _interval_dp(x, eps, 0.0, z, z, margin, True, max_total)
        if offsets[0] < 0:
            return masks, ys, np.int64(p), offsets[1]
        mask, y = _backtrack(x, eps, lo, hi, offsets, z)
        masks[p] = mask
        ys[p] = y
    return masks, ys, np.int64(-1), np.int64(0)


@njit(cache=True)
def _coverage_steps(x: np.ndarray, eps: float, tau: float, a: float, b: float,
                    max_total: np.int64) -> tuple[np.int64, np.int64]:
    """First k with [a, b] inside one interval of U_k (0 if already in U_0), or -1 if never;
    with the 1-based step that would exceed ``max_total`` intervals (as in :func:`_final_union`),
    or 0 if none did.

    Exact with margin 0: coverage of [a, b] only needs intervals whose descendants can touch it.
    """
    if -tau <= a and b <= tau:
        return np.int64(0), np.int64(0)
    n = x.size
    low, high = _reach(x, eps)
    lo = np.array([-tau])
    hi = np.array([tau])
    for k in range(n):
        if 3 * lo.size > max_total:
            return np.int64(-1), np.int64(k + 1)
        lo, hi = _step(lo, hi, x[k], eps, low[k], high[k], a, b, _SLACK)
        i = np.searchsorted(lo, a, side="right") - 1
        if i >= 0 and hi[i] >= b:
            return np.int64(k + 1), np.int64(0)
    return np.int64(-1), np.int64(0)


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


def _bytes(count: float) -> str:
    return f"{count / 1e9:.3g} GB" if count >= 1e9 else f"{count / 1e6:.3g} MB"


# What to use instead, per kind of entry point (the end of the guard's message).
INSTEAD_TARGET = ("meet_in_the_middle for eps = 0 (exact, n <= 44), a tolerance tol > 0, or fewer "
                  "coefficients")
INSTEAD_RANGE = ("a tolerance tol > 0 or eps > 0 (nearby intervals merge), or fewer coefficients "
                 "(about n <= 24 for Unif[-1, 1] at eps = tol = 0)")
INSTEAD_BATCH = "meet_in_the_middle_batch for eps = 0 (exact, n <= 44), or fewer columns"


def interval_limit_error(what: str, n: int, eps: float, tol: float, step: int,
                         max_intervals: int, instead: str) -> ValueError:
    """The one-line refusal of every interval-DP entry point (the shared memory guard).

    ``step`` is the (1-based) DP step that would have held more than ``max_intervals``
    intervals; it is refused before that step allocates.
    """
    text = (f"{what}: stopped before step {step} of {n}: the interval DP on n = {n} coefficients "
            f"(eps = {eps:g}, tol = {tol:g}) would hold more than max_intervals = "
            f"{max_intervals} intervals ({_bytes(INTERVAL_BYTES * max_intervals)})")
    worst = 2.0 ** n
    if eps == 0.0 and tol == 0.0 and worst > max_intervals:
        text += (f"; nothing merges at eps = tol = 0, so it can grow to 2^{n} = {worst:.3g} "
                 f"intervals ({_bytes(INTERVAL_BYTES * worst)})")
    return ValueError(f"{text}; use {instead}, or pass a larger max_intervals "
                      f"({INTERVAL_BYTES} bytes per interval)")


def _raise_if_failed(what: str, x: np.ndarray, eps: float, tol: float, offsets: np.ndarray,
                     max_intervals: int, instead: str) -> None:
    if offsets[0] < 0:
        raise interval_limit_error(what, x.size, eps, tol, int(offsets[1]), max_intervals, instead)


def _window(a: float, b: float, margin: float | None) -> tuple[float, float, float]:
    a, b = check_range(a, b)
    if margin is None:
        margin = max(abs(a), abs(b))
    return a, b, check_eps(margin, "margin")


def interval_sets(what: str, x: np.ndarray, eps: float, tol: float, a: float, b: float,
                  margin: float | None, max_intervals: int) -> ReachableSets:
    """:func:`reachable_sets` for the entry point ``what`` (named in the guard's message)."""
    x, _ = check_instance(x, 0.0)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    a, b, margin = _window(a, b, margin)
    lo, hi, offsets = _interval_dp(x, eps, tol, a, b, margin + _SLACK, False,
                                   _check_max(max_intervals))
    _raise_if_failed(what, x, eps, tol, offsets, max_intervals, INSTEAD_RANGE)
    return ReachableSets(lo, hi, offsets)


def interval_union(what: str, x: np.ndarray, eps: float, tol: float, a: float, b: float,
                   margin: float | None, max_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reachable_union` for the entry point ``what`` (named in the guard's message)."""
    x, _ = check_instance(x, 0.0)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    a, b, margin = _window(a, b, margin)
    lo, hi, step = _final_union(x, eps, tol, a, b, margin + _SLACK, _check_max(max_intervals))
    if step:
        raise interval_limit_error(what, x.size, eps, tol, int(step), max_intervals,
                                   INSTEAD_RANGE)
    return lo, hi


def reachable_sets(x: np.ndarray, eps: float = 0.0, tol: float = 0.0, a: float = -1.0,
                   b: float = 1.0, margin: float | None = None,
                   max_intervals: int = MAX_INTERVALS) -> ReachableSets:
    """U_0..U_n for the range [a, b], pruned with ``margin`` (default max(|a|, |b|)).

    Distances from any z in [a, b] to the returned U_k are exact whenever they are <= margin;
    the default margin is always enough because 0 ∈ U_k. Refused (ValueError) when the stored
    sets plus the next step's buffer would exceed ``max_intervals`` (see ``MAX_INTERVALS``).
    """
    return interval_sets("reachable_sets", x, eps, tol, a, b, margin, max_intervals)


def reachable_union(x: np.ndarray, eps: float = 0.0, tol: float = 0.0, a: float = -1.0,
                    b: float = 1.0, margin: float | None = None,
                    max_intervals: int = MAX_INTERVALS) -> tuple[np.ndarray, np.ndarray]:
    """U_n alone as (lo, hi), pruned like :func:`reachable_sets`, without the history.

    Refused (ValueError) when a step would hold more than ``max_intervals`` intervals (the
    current set plus the step's buffer of twice its size).
    """
    return interval_union("reachable_union", x, eps, tol, a, b, margin, max_intervals)


def distance_to_union(lo: np.ndarray, hi: np.ndarray, z: float) -> float:
    """dist(z, ∪ [lo_i, hi_i]) for sorted, disjoint intervals."""
    return float(_distance(np.ascontiguousarray(lo, dtype=np.float64),
                           np.ascontiguousarray(hi, dtype=np.float64), float(z)))


def perturbed_subset_sum(x: np.ndarray, z: float, eps: float, tol: float = 0.0,
                         max_intervals: int = MAX_INTERVALS) -> SubsetSumSolution:
    """Exact epsilon-perturbed subset sum (eps = 0: plain subset sum) by the interval DP.

    With ``tol = tau > 0`` the DP answers ``max(0, eta* - tau)`` (stored as ``lower_bound``) and the
    recovered mask and perturbation achieve an error ``<= max(eta*, tau)``. With ``tol = 0`` the
    mask is optimal. Memory grows with the interval counts (16 bytes each, refused with a
    ValueError before a step would hold more than ``max_intervals``): with eps = tol = 0 they
    can reach 2^n, so use :func:`meet_in_the_middle` there.
    """
    x, z = check_instance(x, z)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    margin = max(abs(z) - tol, 0.0) * (1.0 + 1e-9) + _SLACK
    lo, hi, offsets = _interval_dp(x, eps, tol, z, z, margin, True, _check_max(max_intervals))
    _raise_if_failed("perturbed_subset_sum", x, eps, tol, offsets, max_intervals, INSTEAD_TARGET)
    dist = float(_distance(lo[offsets[-2]:offsets[-1]], hi[offsets[-2]:offsets[-1]], z))
    mask, y = _backtrack(x, eps, lo, hi, offsets, z)
    solution = solution_from_mask(x, z, mask, y, lower_bound=dist)
    if tol == 0.0 or solution.error <= dist:
        return solution
    return replace(solution, proven_optimal=False,
                   status=f"not proven optimal (tolerance tol = {tol:g}: error <= max(optimum, "
                          f"tol), optimum >= lower_bound)")


def perturbed_subset_sum_batch(xs: np.ndarray, zs: np.ndarray, eps: float,
                               max_intervals: int = MAX_INTERVALS
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact perturbed subset sum per row: ``xs`` (P, n), ``zs`` (P,) -> errors, masks, y.

    Errors are recomputed from the recovered masks and perturbations. A row whose DP would
    hold more than ``max_intervals`` intervals is refused with a ValueError naming it.
    """
    xs = check_array("xs", xs, ndim=2)
    zs = check_array("zs", zs, shape=(xs.shape[0],))
    if xs.shape[1] == 0:
        raise ValueError("xs must have n >= 1 columns, got n = 0")
    eps = check_eps(eps)
    masks, ys, row, step = _perturbed_batch_kernel(xs, zs, eps, _check_max(max_intervals))
    if row >= 0:
        raise interval_limit_error(f"perturbed_subset_sum_batch (row {row} of xs)", xs.shape[1],
                                   eps, 0.0, int(step), max_intervals, INSTEAD_BATCH)
    errors = np.abs(np.einsum("pn,pn->p", xs + ys, masks.astype(np.float64)) - zs)
    return errors, masks, ys


def coverage_steps(x: np.ndarray, eps: float, tol: float, a: float = -1.0, b: float = 1.0,
                   max_intervals: int = MAX_INTERVALS) -> int:
    """n* = the first k with [a, b] inside one interval of U_k (tolerance ``tol``); -1 if none.

    Coverage is monotone in k (U_{k-1} ⊆ U_k), so this is the number of coefficients needed for
    every z in [a, b] to have a ``tol``-approximation (spec Sec. 3.3). Refused (ValueError)
    when a step would hold more than ``max_intervals`` intervals (tiny tol and eps: up to 2^k).
    """
    x, _ = check_instance(x, 0.0)
    eps, tol = check_eps(eps), check_eps(tol, "tol")
    a, b = check_range(a, b)
    steps, failed = _coverage_steps(x, eps, tol, a, b, _check_max(max_intervals))
    if failed:
        raise interval_limit_error("coverage_steps", x.size, eps, tol, int(failed), max_intervals,
                                   "a larger tolerance tol or eps > 0 (nearby intervals merge), "
                                   "or fewer coefficients")
    return int(steps)
