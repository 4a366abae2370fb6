"""The result type shared by every subset-sum solver, and input checks for the solvers.

Plain subset sum (Lueker 1998): ``min_{delta in {0,1}^n} |sum_i delta_i x_i - z|``.
Epsilon-perturbed subset sum (Xiong, Liao, Kyrillidis, AISTATS 2023, Sec. 1.2 of the spec):
``min_{delta in {0,1}^n, y in [-eps, eps]^n} |sum_i delta_i (x_i + y_i) - z|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lottery_common import check_array, check_float


@dataclass(frozen=True)
class SubsetSumSolution:
    """What a solver found: the error, the mask, and the perturbation that achieve it.

    ``value = sum_i mask_i (x_i + perturbation_i)`` and ``error = |value - z|``. For plain subset
    sum the perturbation is all zeros. ``lower_bound`` is a certified lower bound on the optimum
    (equal to ``error`` for exact solvers; smaller for the rounded DP). ``proven_optimal`` says
    whether the solver certifies that ``error`` is the optimum; ``status`` says why not (e.g.
    ``"not proven optimal (time limit 60 s reached)"`` from :func:`milp_subset_sum`).
    """

    error: float
    mask: np.ndarray
    perturbation: np.ndarray
    value: float
    lower_bound: float
    proven_optimal: bool = True
    status: str = "optimal"

    @property
    def size(self) -> int:
        """Number of selected elements |S|."""
        return int(np.count_nonzero(self.mask))


def check_instance(x: object, z: object, *, max_n: int | None = None) -> tuple[np.ndarray, float]:
    """Validate the coefficients ``x`` (1-d, finite, n >= 1) and the target ``z`` (finite)."""
    x = check_array("x", x, ndim=1)
    if x.size == 0:
        raise ValueError("x must hold at least one coefficient (n >= 1), got n = 0")
    if max_n is not None and x.size > max_n:
        raise ValueError(f"x has n = {x.size} coefficients; this solver allows n <= {max_n}")
    return x, check_float("z", z)


def check_eps(eps: object, name: str = "eps") -> float:
    """Validate a perturbation radius or tolerance: finite and >= 0."""
    return check_float(name, eps, low=0.0)


def check_range(a: object, b: object) -> tuple[float, float]:
    """Validate a query interval [a, b] (finite, non-empty)."""
    a = check_float("a", a)
    b = check_float("b", b)
    if b < a:
        raise ValueError(f"the interval [a, b] = [{a}, {b}] is empty (need a <= b)")
    return a, b


def solution_from_mask(x: np.ndarray, z: float, mask: np.ndarray, perturbation: np.ndarray | None,
                       lower_bound: float | None = None) -> SubsetSumSolution:
    """Build a solution, recomputing value and error from the mask (never trusting a kernel)."""
    mask = np.asarray(mask, dtype=bool)
    y = np.zeros_like(x) if perturbation is None else np.asarray(perturbation, dtype=np.float64)
    y = np.where(mask, y, 0.0)
    value = float(np.sum(x[mask]) + np.sum(y[mask]))
    error = abs(value - z)
    return SubsetSumSolution(error=error, mask=mask, perturbation=y, value=value,
                             lower_bound=error if lower_bound is None else float(lower_bound))


def spread_perturbation(x: np.ndarray, z: float, mask: np.ndarray, eps: float) -> np.ndarray:
    """Best perturbation for a fixed mask: sum_S y = clip(z - sum_S x, +-|S| eps), spread evenly.

    For fixed S the perturbed sums fill exactly [sum_S x - |S| eps, sum_S x + |S| eps]
    (spec Sec. 3.2).
    """
    y = np.zeros_like(x)
    size = int(np.count_nonzero(mask))
    if size == 0 or eps == 0.0:
        return y
    shift = float(np.clip(z - np.sum(x[mask]), -size * eps, size * eps))
    y[mask] = np.clip(shift / size, -eps, eps)
    return y
