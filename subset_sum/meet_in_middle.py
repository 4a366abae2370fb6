"""Meet-in-the-middle plain subset sum (Horowitz-Sahni; spec Sec. 3.1, item 2).

Split x into halves A and B, enumerate both halves' 2^(n/2) subset sums already sorted (by
merging, see :func:`sorted_subset_sums`), and sweep with two pointers: for increasing a in A the
best partner z - a in B moves monotonically down. Cost O(2^(n/2)) time and memory.
``meet_in_the_middle_batch`` solves many independent instances in one call (used by the
strong-lottery-ticket construction, one instance per target weight).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lottery_common import check_array

from .solution import SubsetSumSolution, check_instance, solution_from_mask

MAX_N = 44


@njit(cache=True)
def sorted_subset_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All 2^n subset sums in ascending order with their bit codes, without a sort.

    S_0 = [0]; S_k = merge(S_{k-1}, S_{k-1} + x_k): both lists are sorted, so one linear merge
    per element gives O(2^n) total work (instead of O(2^n n) for sorting).
    """
    n = x.size
    size = 1 << n
    sums = np.zeros(size)
    codes = np.zeros(size, dtype=np.int64)
    buf_sums = np.empty(size)
    buf_codes = np.empty(size, dtype=np.int64)
    m = 1
    for k in range(n):
        xk = x[k]
        bit = np.int64(1) << k
        i = 0
        j = 0
        out = 0
        while i < m or j < m:
            if j >= m or (i < m and sums[i] <= sums[j] + xk):
                buf_sums[out] = sums[i]
                buf_codes[out] = codes[i]
                i += 1
            else:
                buf_sums[out] = sums[j] + xk
                buf_codes[out] = codes[j] | bit
                j += 1
            out += 1
        m *= 2
        sums, buf_sums = buf_sums, sums
        codes, buf_codes = buf_codes, codes
    return sums, codes


@njit(cache=True)
def _mitm_kernel(x: np.ndarray, z: float) -> tuple[float, np.int64, np.int64]:
    """Best |a + b - z| over subset sums a of x[:h] and b of x[h:]; returns (error, ia, ib)."""
    h = x.size // 2
    a_sums, a_codes = sorted_subset_sums(np.ascontiguousarray(x[:h]))
    b_sums, b_codes = sorted_subset_sums(np.ascontiguousarray(x[h:]))
    best = np.inf
    best_a = np.int64(0)
    best_b = np.int64(0)
    j = b_sums.size - 1
    for i in range(a_sums.size):
        a = a_sums[i]
        # largest b with a + b <= z (b descends as a ascends)
        while j > 0 and a + b_sums[j] > z:
            j -= 1
        for q in (j, j + 1):
            if q < b_sums.size:
                err = abs(a + b_sums[q] - z)
                if err < best:
                    best = err
                    best_a = a_codes[i]
                    best_b = b_codes[q]
    return best, best_a, best_b


@njit(cache=True)
def _mitm_batch_kernel(xs: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve row p of ``xs`` against ``zs[p]`` for every p; returns (errors, masks)."""
    count, n = xs.shape
    h = n // 2
    errors = np.empty(count)
    masks = np.zeros((count, n), dtype=np.bool_)
    for p in range(count):
        err, ia, ib = _mitm_kernel(np.ascontiguousarray(xs[p]), zs[p])
        errors[p] = err
        for k in range(h):
            masks[p, k] = (ia >> k) & 1
        for k in range(n - h):
            masks[p, h + k] = (ib >> k) & 1
    return errors, masks


def _indices_to_mask(ia: int, ib: int, n: int) -> np.ndarray:
    h = n // 2
    low = ((int(ia) >> np.arange(h)) & 1).astype(bool)
    high = ((int(ib) >> np.arange(n - h)) & 1).astype(bool)
    return np.concatenate([low, high])


def meet_in_the_middle(x: np.ndarray, z: float) -> SubsetSumSolution:
    """Exact plain subset sum by meet in the middle; n <= 44."""
    x, z = check_instance(x, z, max_n=MAX_N)
    _, ia, ib = _mitm_kernel(x, z)
    return solution_from_mask(x, z, _indices_to_mask(ia, ib, x.size), None)


def meet_in_the_middle_batch(xs: np.ndarray, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact plain subset sum for each row: ``xs`` (P, n), ``zs`` (P,) -> errors (P,), masks (P, n).

    The returned errors are recomputed from the masks as ``|xs[p] @ mask - z|``.
    """
    xs = check_array("xs", xs, ndim=2)
    zs = check_array("zs", zs, shape=(xs.shape[0],))
    if xs.shape[1] == 0 or xs.shape[1] > MAX_N:
        raise ValueError(f"xs must have 1 <= n <= {MAX_N} columns, got n = {xs.shape[1]}")
    _, masks = _mitm_batch_kernel(xs, zs)
    errors = np.abs(np.einsum("pn,pn->p", xs, masks.astype(np.float64)) - zs)
    return errors, masks
