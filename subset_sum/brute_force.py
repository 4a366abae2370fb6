"""Brute-force subset sum by enumerating all 2^n subset sums (spec Sec. 3.1, item 1).

The sums are built by doubling: ``sums = [0]``, then ``sums = concat(sums, sums + x_k)`` for each
k, so bit k of an index is the membership of ``x_k``. For the epsilon-perturbed problem the
closed form ``min_y |sum_S (x_i + y_i) - z| = max(0, |sum_S x_i - z| - |S| eps)`` (spec Sec. 3.2)
is evaluated for every subset.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .solution import (
    SubsetSumSolution,
    check_eps,
    check_instance,
    solution_from_mask,
    spread_perturbation,
)

MAX_N = 22  # 2^22 doubles = 32 MiB


@njit(cache=True)
def all_subset_sums(x: np.ndarray) -> np.ndarray:
    """All 2^n subset sums; entry ``i`` is the sum over the set bits of ``i``."""
    n = x.size
    sums = np.zeros(1 << n)
    size = 1
    for k in range(n):
        xk = x[k]
        for i in range(size):
            sums[size + i] = sums[i] + xk
        size *= 2
    return sums


@njit(cache=True)
def _subset_sizes(n: int) -> np.ndarray:
    sizes = np.zeros(1 << n, dtype=np.int64)
    size = 1
    for _ in range(n):
        for i in range(size):
            sizes[size + i] = sizes[i] + 1
        size *= 2
    return sizes


def index_to_mask(index: int, n: int) -> np.ndarray:
    """Boolean mask of the subset whose bit pattern is ``index`` (bit k = element k)."""
    return ((int(index) >> np.arange(n)) & 1).astype(bool)


def brute_force(x: np.ndarray, z: float) -> SubsetSumSolution:
    """Exact plain subset sum by enumeration; n <= 22."""
    x, z = check_instance(x, z, max_n=MAX_N)
    sums = all_subset_sums(x)
    best = int(np.argmin(np.abs(sums - z)))
    return solution_from_mask(x, z, index_to_mask(best, x.size), None)


def brute_force_perturbed(x: np.ndarray, z: float, eps: float) -> SubsetSumSolution:
    """Exact epsilon-perturbed subset sum by enumeration with the closed form; n <= 22."""
    x, z = check_instance(x, z, max_n=MAX_N)
    eps = check_eps(eps)
    sums = all_subset_sums(x)
    errors = np.maximum(0.0, np.abs(sums - z) - _subset_sizes(x.size) * eps)
    best = int(np.argmin(errors))
    mask = index_to_mask(best, x.size)
    solution = solution_from_mask(x, z, mask, spread_perturbation(x, z, mask, eps))
    return SubsetSumSolution(error=solution.error, mask=solution.mask,
                             perturbation=solution.perturbation, value=solution.value,
                             lower_bound=float(errors[best]))
